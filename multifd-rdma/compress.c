/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * zstd codec of packet payloads (compress scattered pages into one frame, decompress a
 * hostile frame into exactly the announced pages) and the `auto` policy's arithmetic. No I/O
 * and no engine state: send.c and recv.c call these from their channel threads.
 */
#include "compress.h"

#include "mfrdma.h"

#include <errno.h>
#include <stdarg.h>
#include <zstd.h>
#include <zstd_errors.h>

G_STATIC_ASSERT((1u << MFR_COMP_WINDOW_LOG) == MFR_COMP_MAX_RAW);

struct MfrCompressor {
    ZSTD_CCtx *cctx;
};

struct MfrDecompressor {
    ZSTD_DCtx *dctx;
};

size_t mfr_comp_bound(uint64_t raw)
{
    return ZSTD_compressBound((size_t)MIN(raw, (uint64_t)MFR_COMP_MAX_RAW));
}

size_t mfr_comp_slot_size(uint64_t raw_max)
{
    return (mfr_comp_bound(raw_max) + 63) & ~(size_t)63;
}

bool mfr_comp_level_ok(int level, int *min, int *max)
{
    *min = ZSTD_minCLevel();
    *max = ZSTD_maxCLevel();
    return level >= *min && level <= *max;
}

/* ---------- compress ---------- */

MfrCompressor *mfr_compressor_new(int level, GError **error)
{
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "zstd: cannot allocate a compressor");
        return NULL;
    }
    size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel,
                                      level ? level : MFR_COMP_DEFAULT_LEVEL);
    if (ZSTD_isError(r)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "zstd: compression level %d: %s", level,
                    ZSTD_getErrorName(r));
        ZSTD_freeCCtx(cctx);
        return NULL;
    }
    MfrCompressor *z = g_new0(MfrCompressor, 1);
    z->cctx = cctx;
    return z;
}

void mfr_compressor_free(MfrCompressor *z)
{
    if (z) {
        ZSTD_freeCCtx(z->cctx);
        g_free(z);
    }
}

int64_t mfr_compress_iov(MfrCompressor *z, const struct iovec *in, unsigned n, uint64_t raw,
                         void *out, size_t limit)
{
    /* a session-only reset keeps the level and the allocated tables: the context is reused
     * for every packet of the channel */
    ZSTD_CCtx_reset(z->cctx, ZSTD_reset_session_only);
    /* the frame records its content size, and zstd sizes its window to it */
    if (ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z->cctx, raw))) {
        return -EIO;
    }
    /* out is only limit bytes long as far as zstd knows: an incompressible packet stops as
     * soon as it outgrows it, instead of being compressed whole for nothing */
    ZSTD_outBuffer ob = { .dst = out, .size = limit, .pos = 0 };
    for (unsigned i = 0; i < n; i++) {
        ZSTD_inBuffer ib = { .src = in[i].iov_base, .size = in[i].iov_len, .pos = 0 };
        bool last = i + 1 == n;
        for (;;) {
            size_t r = ZSTD_compressStream2(z->cctx, &ob, &ib,
                                            last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(r)) {
                return -EIO;
            }
            if (last ? r == 0 : ib.pos == ib.size) {
                break;
            }
            if (ob.pos == ob.size) {
                return 0; /* did not shrink enough */
            }
        }
    }
    return (int64_t)ob.pos;
}

/* ---------- decompress ---------- */

MfrDecompressor *mfr_decompressor_new(GError **error)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "zstd: cannot allocate a decompressor");
        return NULL;
    }
    /* A frame may ask for any window; a packet never needs more than its own raw size, so a
     * hostile frame cannot make this side allocate more than that. */
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, MFR_COMP_WINDOW_LOG);
    MfrDecompressor *z = g_new0(MfrDecompressor, 1);
    z->dctx = dctx;
    return z;
}

void mfr_decompressor_free(MfrDecompressor *z)
{
    if (z) {
        ZSTD_freeDCtx(z->dctx);
        g_free(z);
    }
}

G_GNUC_PRINTF(2, 3)
static bool decomp_fail(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL, "compressed payload: %s", msg);
    return false;
}

/* One contiguous target: zstd's one-shot decoder, which writes straight into it and never
 * past dst_cap; a frame with more content fails with dstSize_tooSmall. */
static bool decompress_flat(MfrDecompressor *z, const void *in, size_t len, void *dst,
                            uint64_t raw, GError **error)
{
    size_t r = ZSTD_decompressDCtx(z->dctx, dst, raw, in, len);
    if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) {
        return decomp_fail(error, "decompresses to more than the announced %" G_GUINT64_FORMAT
                           " bytes", raw);
    }
    if (ZSTD_isError(r)) {
        return decomp_fail(error, "%zu bytes are not a valid zstd frame (%s)", len,
                           ZSTD_getErrorName(r));
    }
    if (r != raw) {
        return decomp_fail(error, "decompresses to %zu bytes, announced %" G_GUINT64_FORMAT,
                           r, raw);
    }
    return true;
}

/* Scattered pages: the streaming decoder, one output buffer per piece. Each call writes at
 * most the piece's remaining bytes, so a page's iovec is a hard bound by construction; zstd
 * keeps the frame's history in its own window (<= MFR_COMP_MAX_RAW), so pieces need not be
 * contiguous. A call that moves neither input nor output means the input ran out. */
static bool decompress_scattered(MfrDecompressor *z, const void *in, size_t len,
                                 const struct iovec *out, unsigned n, uint64_t raw,
                                 GError **error)
{
    ZSTD_DCtx_reset(z->dctx, ZSTD_reset_session_only);
    ZSTD_inBuffer ib = { .src = in, .size = len, .pos = 0 };
    uint64_t done = 0;
    size_t r = 1;
    for (unsigned i = 0; i < n; i++) {
        ZSTD_outBuffer ob = { .dst = out[i].iov_base, .size = out[i].iov_len, .pos = 0 };
        while (ob.pos < ob.size) {
            size_t in0 = ib.pos, out0 = ob.pos, ended = r == 0;
            r = ZSTD_decompressStream(z->dctx, &ob, &ib);
            if (ZSTD_isError(r)) {
                return decomp_fail(error, "%zu bytes are not a valid zstd frame (%s)", len,
                                   ZSTD_getErrorName(r));
            }
            /* no progress: the input ran out, at the end of a frame (short) or within one */
            if (ib.pos == in0 && ob.pos == out0 && !ended) {
                return decomp_fail(error, "frame truncated: its %zu bytes decompress to only %"
                                   G_GUINT64_FORMAT " of the announced %" G_GUINT64_FORMAT
                                   " bytes", len, done + ob.pos, raw);
            }
            if (ib.pos == in0 && ob.pos == out0) {
                return decomp_fail(error, "decompresses to %" G_GUINT64_FORMAT " bytes, "
                                   "announced %" G_GUINT64_FORMAT, done + ob.pos, raw);
            }
        }
        done += ob.size;
    }
    /* every announced byte is written: the input must end here, with its frame */
    for (;;) {
        uint8_t extra;
        ZSTD_outBuffer ob = { .dst = &extra, .size = 1, .pos = 0 };
        size_t in0 = ib.pos;
        if (r == 0 && ib.pos == ib.size) {
            return true;
        }
        r = ZSTD_decompressStream(z->dctx, &ob, &ib);
        if (ZSTD_isError(r)) {
            return decomp_fail(error, "%zu bytes are not a valid zstd frame (%s)", len,
                               ZSTD_getErrorName(r));
        }
        if (ob.pos) {
            return decomp_fail(error, "decompresses to more than the announced %"
                               G_GUINT64_FORMAT " bytes", raw);
        }
        if (ib.pos == in0 && r != 0) {
            return decomp_fail(error, "frame truncated: its %zu bytes end before the frame",
                               len);
        }
    }
}

bool mfr_decompress_iov(MfrDecompressor *z, const void *in, size_t len,
                        const struct iovec *out, unsigned n, uint64_t raw, GError **error)
{
    if (n == 1) {
        return decompress_flat(z, in, len, out[0].iov_base, raw, error);
    }
    return decompress_scattered(z, in, len, out, n, raw, error);
}

/* ---------- auto policy ---------- */

#define POLICY_WEIGHT 0.25 /* of a new sample in the moving averages */

static double policy_avg(double avg, double sample, bool fresh)
{
    return fresh ? sample : avg + POLICY_WEIGHT * (sample - avg);
}

void mfr_comp_policy_init(MfrCompPolicy *p, bool adaptive, bool measure_first)
{
    *p = (MfrCompPolicy){ .adaptive = adaptive, .fresh = true, .ratio = 1,
                          .backoff = MFR_COMP_BACKOFF_MIN };
    if (adaptive && measure_first) {
        /* the first packet goes raw and measures the link; the second is a probe (a
         * sample), judged against it: a link compression cannot help never sees a whole
         * packet compressed */
        p->skip_left = 1;
        p->probing = true;
    }
}

bool mfr_comp_policy_try(MfrCompPolicy *p)
{
    if (p->skip_left) {
        p->skip_left--;
        return false;
    }
    return true;
}

uint64_t mfr_comp_policy_sample(const MfrCompPolicy *p, uint64_t raw)
{
    return p->adaptive && p->probing ? MIN(raw, (uint64_t)MFR_COMP_SAMPLE) : raw;
}

bool mfr_comp_policy_pays(const MfrCompPolicy *p)
{
    if (p->ratio > 7.0 / 8.0) {
        return false;
    }
    /* an unmeasured link: assume compressing pays until the first send says otherwise */
    return p->link_bps <= 0 || p->comp_bps * (1 - p->ratio) > p->link_bps;
}

/* Not paying by a wide margin: the link time it would save is under a quarter of the time
 * it costs, or the data does not shrink. */
static bool policy_far(const MfrCompPolicy *p)
{
    return p->ratio > 7.0 / 8.0 ||
           (p->link_bps > 0 && 4 * p->comp_bps * (1 - p->ratio) < p->link_bps);
}

void mfr_comp_policy_tried(MfrCompPolicy *p, uint64_t raw, uint64_t out, double seconds)
{
    if (raw == 0) {
        return;
    }
    p->ratio = policy_avg(p->ratio, (double)out / (double)raw, p->fresh);
    p->comp_bytes = policy_avg(p->comp_bytes, (double)raw, p->fresh);
    p->comp_s = policy_avg(p->comp_s, MAX(seconds, 1e-9), p->fresh);
    p->comp_bps = p->comp_bytes / p->comp_s;
    p->fresh = false;
    if (!p->adaptive) {
        return;
    }
    if (mfr_comp_policy_pays(p)) {
        p->backoff = MFR_COMP_BACKOFF_MIN;
        p->probing = false;
        return;
    }
    p->skip_left = p->backoff;
    uint32_t grow = policy_far(p) ? MFR_COMP_BACKOFF_FAR : 2;
    p->backoff = MIN(p->backoff * grow, MFR_COMP_BACKOFF_MAX);
    p->backoffs++;
    p->probing = true;
    /* the retry after the pause judges the data of its time, not this average */
    p->fresh = true;
}

bool mfr_comp_policy_sampled(MfrCompPolicy *p, uint64_t sample, uint64_t out, double seconds)
{
    p->probes++;
    mfr_comp_policy_tried(p, sample, out, seconds);
    if (p->probing) {
        p->probes_failed++;
        return false;
    }
    return true;
}

void mfr_comp_policy_sent(MfrCompPolicy *p, uint64_t wire, double seconds)
{
    if (wire == 0) {
        return;
    }
    bool first = p->link_bps <= 0;
    p->link_bytes = policy_avg(p->link_bytes, (double)wire, first);
    p->link_s = policy_avg(p->link_s, MAX(seconds, 1e-9), first);
    p->link_bps = p->link_bytes / p->link_s;
}
