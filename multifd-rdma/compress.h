/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * zstd codec of a packet's data pages and the `auto` policy that decides, per packet and per
 * channel, whether compressing is worth trying. Pure transforms: no I/O, no engine state; the
 * channel threads (send.c, recv.c) own one codec each and call these per packet.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

G_BEGIN_DECLS

/* Largest raw payload (normal_pages * page_size) a compressed packet may announce: bounds
 * every compression buffer, the destination's staging slots and the decoder's window. */
#define MFR_COMP_MAX_RAW (2u << 20)
#define MFR_COMP_WINDOW_LOG 21 /* log2(MFR_COMP_MAX_RAW) */
/* A packet goes compressed only if it shrinks to at most 7/8 of its raw size. */
#define MFR_COMP_MAX_KEEP(raw) ((raw) - (raw) / 8)
#define MFR_COMP_DEFAULT_LEVEL 1

/* Largest compressed payload of raw bytes (ZSTD_compressBound()); raw <= MFR_COMP_MAX_RAW. */
size_t mfr_comp_bound(uint64_t raw);
/* Bytes of one staging slot for packets of up to raw_max raw bytes: the bound, rounded up to
 * a cache line. Both sides compute it; a destination's ring must have exactly this size. */
size_t mfr_comp_slot_size(uint64_t raw_max);
/* Whether level is a zstd compression level of the linked library (negative: faster). */
bool mfr_comp_level_ok(int level, int *min, int *max);

typedef struct MfrCompressor MfrCompressor;
typedef struct MfrDecompressor MfrDecompressor;

/* level 0 means MFR_COMP_DEFAULT_LEVEL. NULL with MFR_ERROR_FAILED when zstd cannot allocate. */
MfrCompressor *mfr_compressor_new(int level, GError **error);
void mfr_compressor_free(MfrCompressor *z); /* NULL-safe */
/* Compresses the n pieces of in (raw bytes in all, <= MFR_COMP_MAX_RAW) as one zstd frame
 * that records its content size into out. Returns the frame's length when it is at most
 * limit bytes (limit <= cap), 0 when it is not (compression stopped as soon as out passed
 * limit: the packet goes raw), -EIO when zstd failed. */
int64_t mfr_compress_iov(MfrCompressor *z, const struct iovec *in, unsigned n, uint64_t raw,
                         void *out, size_t limit);

MfrDecompressor *mfr_decompressor_new(GError **error);
void mfr_decompressor_free(MfrDecompressor *z); /* NULL-safe */
/* Decompresses in[0..len) into the n pieces of out, which hold exactly raw bytes in all. The
 * input is hostile: anything but frames that decompress to exactly raw bytes (fewer, more,
 * malformed, truncated, trailing garbage) fails with MFR_ERROR_PROTOCOL naming the cause,
 * and nothing is ever written outside out's pieces (their contents are then undefined). */
bool mfr_decompress_iov(MfrDecompressor *z, const void *in, size_t len,
                        const struct iovec *out, unsigned n, uint64_t raw, GError **error);

/* ---------- auto policy ---------- */

/* Per channel. Compression pays when the time it saves on the link exceeds the time it
 * costs: with r = compressed/raw, C = compression speed (raw bytes per second) and L = link
 * speed (wire bytes per second of sending), compressing raw bytes costs raw/C and saves
 * raw(1-r)/L, so it pays while C(1-r) > L. Both speeds and r are moving averages over the
 * channel's recent packets. When it does not pay (or r > 7/8: incompressible data) the
 * channel stops trying for `backoff` packets, then probes again. Each failed probe makes
 * the next pause longer, up to MFR_COMP_BACKOFF_MAX: twice as long when compression missed
 * narrowly, MFR_COMP_BACKOFF_FAR times when it was far from paying (it would save less than
 * a quarter of what it costs, as on loopback, or the data did not shrink at all), so a link
 * compression cannot help stops costing within a few probes. A packet that pays resets it.
 *
 * A probe (the first packet after a pause) compresses only a sample of the packet, its first
 * MFR_COMP_SAMPLE bytes, to measure r and C; only if the sample says it pays is the whole
 * packet compressed. So a failed probe costs a sample, not a packet. Over a stream
 * transport the first packet of a channel goes raw (it measures the link) and the second is
 * a probe. */
#define MFR_COMP_BACKOFF_MIN 8u
#define MFR_COMP_BACKOFF_MAX 1024u
#define MFR_COMP_BACKOFF_FAR 8u
#define MFR_COMP_SAMPLE (64u << 10)

typedef struct {
    bool adaptive;      /* auto; without it every eligible packet is tried */
    bool fresh;         /* the next sample replaces the averages (first one, after a pause) */
    bool probing;       /* a pause ran: the next try compresses a sample first */
    double ratio;       /* compressed / raw of tried packets (1 for a packet that did not
                         * shrink enough) */
    /* Speeds are ratios of moving sums (bytes / seconds over recent packets), not averages
     * of per-packet speeds: a packet that left at once inside a rate limiter's burst must
     * not outweigh the ones that waited for it. */
    double comp_bytes, comp_s; /* raw bytes compressed, wall seconds it took */
    double link_bytes, link_s; /* wire bytes sent, wall seconds of sending */
    double comp_bps;    /* comp_bytes / comp_s */
    double link_bps;    /* link_bytes / link_s; 0: not measured yet */
    uint32_t skip_left; /* packets still to send without trying */
    uint32_t backoff;   /* length of the next pause */
    uint64_t backoffs;  /* pauses so far */
    uint64_t probes;    /* samples compressed after a pause */
    uint64_t probes_failed; /* of those, samples that said it does not pay: packet sent raw */
} MfrCompPolicy;

/* measure_first: the channel's first packet goes raw and its send measures the link, the
 * second is a probe (a stream transport, whose send returns once the bytes are queued at
 * link speed). Without it (RDMA: a post returns before the data left, so one post says
 * nothing about the link) the first packet is compressed whole, assumed to pay. */
void mfr_comp_policy_init(MfrCompPolicy *p, bool adaptive, bool measure_first);
/* Per eligible packet: whether to try compressing it (false: a pause is running; counts it). */
bool mfr_comp_policy_try(MfrCompPolicy *p);
/* After a true try(): how many of the packet's raw bytes to compress first as a sample;
 * raw itself when no sample is due (the whole packet is compressed at once). */
uint64_t mfr_comp_policy_sample(const MfrCompPolicy *p, uint64_t raw);
/* A sample of `sample` bytes compressed to `out` (= sample when it did not shrink enough) in
 * seconds: judged like a tried packet (may start a pause). True when the whole packet should
 * now be compressed; false: send it raw (counted as a failed probe). */
bool mfr_comp_policy_sampled(MfrCompPolicy *p, uint64_t sample, uint64_t out, double seconds);
/* A tried packet: raw bytes became out bytes (out = raw when it did not shrink enough) in
 * seconds of compressing. May start a pause. */
void mfr_comp_policy_tried(MfrCompPolicy *p, uint64_t raw, uint64_t out, double seconds);
/* Any packet sent: wire bytes took seconds to hand to the transport (including any wait for
 * the link or a rate limit). */
void mfr_comp_policy_sent(MfrCompPolicy *p, uint64_t wire, double seconds);
/* Whether compressing pays by the averages (C(1-r) > L and r <= 7/8). */
bool mfr_comp_policy_pays(const MfrCompPolicy *p);

G_END_DECLS
