/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Source data channels: each thread takes the batch the producer handed over, detects zero
 * pages, coalesces contiguous data pages into segments, compresses them when zstd was
 * negotiated and it pays, and sends one packet (header part + segments) through the
 * transport. Mirrors recv.c section by section.
 */
#include "channel.h"

#include <errno.h>
#include <string.h>

/* ---------- packet building ---------- */

unsigned mfr_send_packet_layout(const MfrBatch *b, const uint8_t *host, uint32_t page_size,
                                bool zero_detect, XpRegion *region, XpRemote *const *remotes,
                                uint64_t chunk_size, uint64_t *offsets, uint32_t *normal,
                                XpSeg *segs)
{
    uint64_t zeros[MFR_MAX_PAGES_PER_PACKET];
    unsigned nseg = 0;
    uint32_t nn = 0, nz = 0;

    for (unsigned i = 0; i < b->npages; i++) {
        uint64_t off = b->offsets[i];
        const uint8_t *p = host + off;
        if (zero_detect && mfr_buffer_is_zero(p, page_size)) {
            zeros[nz++] = off;
            continue;
        }
        offsets[nn++] = off;
        /* a chunk boundary starts a new segment: the next chunk is another remote region
         * (chunks are whole pages, so no page straddles one) */
        uint64_t chunk = chunk_size ? off / chunk_size : 0;
        uint64_t in_chunk = chunk_size ? off % chunk_size : off;
        /* same offset on both sides: contiguous here means contiguous there */
        if (nseg && (const uint8_t *)segs[nseg - 1].addr + segs[nseg - 1].len == p &&
            in_chunk != 0) {
            segs[nseg - 1].len += page_size;
            continue;
        }
        segs[nseg++] = (XpSeg){
            .addr = p,
            .len = page_size,
            .region = region,
            .remote = remotes ? remotes[chunk] : NULL,
            .remote_offset = in_chunk,
        };
    }
    memcpy(offsets + nn, zeros, nz * sizeof(uint64_t));
    *normal = nn;
    return nseg;
}

/* ---------- compression ---------- */

/* The first `bytes` bytes of the packet's nseg segments as c->ziov; returns the count. */
static unsigned send_channel_ziov(MfrSendChannel *c, unsigned nseg, uint64_t bytes)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nseg && bytes; i++) {
        size_t len = (size_t)MIN((uint64_t)c->segs[i].len, bytes);
        c->ziov[n++] = (struct iovec){ .iov_base = (void *)c->segs[i].addr, .iov_len = len };
        bytes -= len;
    }
    return n;
}

/* The first bytes of the packet's nseg segments compressed into out, timed for the policy
 * (*wall_s) and its CPU counted in the stats: the frame's length, or <= 0 when it did not
 * shrink enough or zstd failed. */
static int64_t send_channel_zstd(MfrSendChannel *c, unsigned nseg, uint64_t bytes,
                                 uint8_t *out, double *wall_s)
{
    unsigned n = send_channel_ziov(c, nseg, bytes);
    double cpu0 = mfr_thread_cpu_s();
    int64_t t0 = g_get_monotonic_time();
    int64_t z = mfr_compress_iov(c->zc, c->ziov, n, bytes, out, MFR_COMP_MAX_KEEP(bytes));
    *wall_s = (double)(g_get_monotonic_time() - t0) / 1e6;
    c->zstats.cpu_s += mfr_thread_cpu_s() - cpu0;
    return z;
}

/* auto's probe after a pause: the packet's first sample bytes compressed into out (which is
 * free: the caller holds its slot) and judged. True when the whole packet is worth trying;
 * false: it goes raw, the sample's CPU counted. */
static bool send_channel_sample(MfrSendChannel *c, unsigned nseg, uint64_t sample,
                                uint8_t *out)
{
    double wall_s;
    int64_t z = send_channel_zstd(c, nseg, sample, out, &wall_s);
    bool whole = mfr_comp_policy_sampled(&c->policy, sample, z > 0 ? (uint64_t)z : sample,
                                         wall_s);
    c->zstats.pauses = c->policy.backoffs;
    return whole;
}

/* Whether the packet's data pages (its nseg segments, raw bytes) go compressed: compressed
 * into zbuf when eligible and the policy says try, kept when they shrank to 7/8 or less;
 * *clen is then the frame's length. Counts the outcome. */
static bool send_channel_compress(MfrSendChannel *c, unsigned nseg, uint64_t raw,
                                  uint8_t *out, uint64_t *clen)
{
    double wall_s;
    int64_t z = send_channel_zstd(c, nseg, raw, out, &wall_s);
    /* a zstd failure (never seen: allocation is done) sends the pages as they are */
    mfr_comp_policy_tried(&c->policy, raw, z > 0 ? (uint64_t)z : raw, wall_s);
    c->zstats.pauses = c->policy.backoffs;
    if (z <= 0) {
        c->zstats.packets_not_shrunk++;
        c->zstats.bytes_not_shrunk += raw;
        return false;
    }
    c->zstats.packets++;
    c->zstats.raw_bytes += raw;
    c->zstats.compressed_bytes += (uint64_t)z;
    *clen = (uint64_t)z;
    if (atomic_exchange(&c->inject_bad_frame, false)) {
        memset(out, 0xa5, 4); /* no zstd magic: the destination must refuse the frame */
    }
    return true;
}

/* ---------- staging ring (placed transports) ---------- */

/* The channel's first message: the destination's ring. Its slots are imported, and as many
 * local ones (the compression buffer) registered. */
static bool send_channel_ring_setup(MfrSendChannel *c, GError **error)
{
    const MfrRamView *ram = c->ram;
    size_t len = 0;
    int r = xp_recv_msg(c->xp, c->rmsg, sizeof(c->rmsg), &len, (int)ram->timeout_ms);
    if (r < 0) {
        g_set_error(error, MFR_ERROR, r == -ETIMEDOUT ? MFR_ERROR_TIMEOUT : MFR_ERROR_TRANSPORT,
                    "source: channel %u to %s: no staging ring from the destination: %s",
                    c->index, xp_channel_peer(c->xp), g_strerror(-r));
        return false;
    }
    MfrRingMsg m;
    if (!mfr_wire_unpack_ring(c->rmsg, len, MFR_RING_DESC, c->zslot, c->zslot, &m, error)) {
        g_prefix_error(error, "source: channel %u from %s: ", c->index, xp_channel_peer(c->xp));
        return false;
    }
    c->slots = m.slots;
    GError *xerr = NULL;
    g_autofree char *what = g_strdup_printf("source: channel %u: staging ring", c->index);
    if (!xp_remote_import(ram->dom, m.desc, (uint64_t)m.slots * c->zslot, &c->ring, &xerr)) {
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    c->zbuf = g_realloc(c->zbuf, m.slots * c->zslot);
    if (!xp_region_register(ram->dom, c->zbuf, m.slots * c->zslot, XP_REGION_LOCAL,
                            &c->zregion, &xerr)) {
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    return true;
}

/* Returns when a slot is free (reading CREDITs while none is), 0; or the transport's error,
 * or -EBADMSG once the session failed here with the reason (a bad CREDIT, none in time). */
static int send_channel_slot(MfrSendChannel *c)
{
    while (c->used - c->freed >= c->slots) {
        size_t len = 0;
        int r = xp_recv_msg(c->xp, c->rmsg, sizeof(c->rmsg), &len, (int)c->ram->timeout_ms);
        if (r == -ETIMEDOUT) {
            mfr_fail(c->ram->fail, MFR_ERROR_TIMEOUT, "source: channel %u to %s: no staging "
                     "slot returned within %u ms", c->index, xp_channel_peer(c->xp),
                     c->ram->timeout_ms);
            return -EBADMSG;
        }
        if (r < 0) {
            return r;
        }
        MfrRingMsg m;
        g_autoptr(GError) err = NULL;
        if (!mfr_wire_unpack_ring(c->rmsg, len, MFR_RING_CREDIT, c->freed + 1, c->used, &m,
                                  &err)) {
            mfr_fail(c->ram->fail, MFR_ERROR_PROTOCOL, "source: channel %u from %s: %s",
                     c->index, xp_channel_peer(c->xp), err->message);
            return -EBADMSG;
        }
        c->freed = m.freed;
    }
    return 0;
}

/* ---------- packet sending ---------- */

/* Hands the packet to the transport. A data packet is timed for the auto policy: how long
 * its wire bytes take to leave is the link's speed as this channel sees it (a full socket
 * buffer or missing credits count, and so must the wait of a bandwidth cap: it belongs
 * inside this timed section). Returns 1 when the cap's wait ended because the session failed
 * or the channel quits: nothing was sent, and that is not this packet's error. */
static int send_channel_post(MfrSendChannel *c, size_t len, unsigned nseg, uint64_t wire)
{
    int64_t t0 = g_get_monotonic_time();
    if (mfr_send_channel_throttle(c, wire) < 0) {
        return 1;
    }
    int r = xp_send_msg(c->xp, c->msg, len, c->segs, nseg);
    if (r == 0 && c->zc && nseg) {
        mfr_comp_policy_sent(&c->policy, wire, (double)(g_get_monotonic_time() - t0) / 1e6);
    }
    return r;
}

/* The packet compressed into one segment when eligible, tried and shrunk: into the next
 * staging slot over a placed transport (its remote twin the target), else the buffer. Returns
 * the segment count, < 0 on failure. */
static int send_channel_compressed(MfrSendChannel *c, MfrPacketHdr *h, unsigned nseg,
                                   uint64_t raw)
{
    if (!c->zc || raw == 0 || raw > c->ram->comp_raw_max) {
        return (int)nseg;
    }
    if (!mfr_comp_policy_try(&c->policy)) {
        c->zstats.packets_skipped++;
        return (int)nseg;
    }
    uint32_t slot = 0;
    if (c->ring) {
        int r = send_channel_slot(c);
        if (r < 0) {
            return r;
        }
        slot = (uint32_t)(c->used % c->slots);
    }
    uint8_t *out = c->zbuf + slot * c->zslot;
    uint64_t sample = mfr_comp_policy_sample(&c->policy, raw);
    if (sample < raw && !send_channel_sample(c, nseg, sample, out)) {
        c->zstats.packets_skipped++; /* sent raw on its sample's word */
        return (int)nseg;
    }
    uint64_t clen;
    if (!send_channel_compress(c, nseg, raw, out, &clen)) {
        return (int)nseg;
    }
    h->flags |= MFR_PACKET_COMPRESSED;
    h->payload_len = clen;
    c->segs[0] = (XpSeg){ .addr = out, .len = clen, .region = c->zregion, .remote = c->ring,
                          .remote_offset = slot * c->zslot };
    if (c->ring) {
        h->slot = slot;
        c->used++;
    }
    return 1;
}

/* The data pages of b as segments (and the header's counts and offsets); compressed into
 * one segment when that pays. Returns the segment count, < 0 on failure. */
static int send_channel_pages(MfrSendChannel *c, const MfrBatch *b, MfrPacketHdr *h)
{
    const MfrRamView *ram = c->ram;
    uint32_t ps = ram->page_size;
    XpRemote *const *remotes = NULL;
    uint64_t chunk_size = 0;
    if (ram->remote) {
        remotes = mfr_region_table_remotes(ram->remote, b->block);
        chunk_size = mfr_region_table_map(ram->remote)->layout[b->block].chunk_size;
    }
    /* the source registers its blocks whole: chunk 0 is the block */
    XpRegion *region = ram->local ? mfr_region_table_local(ram->local, b->block, 0) : NULL;
    unsigned nseg = mfr_send_packet_layout(b, ram->blocks[b->block].host, ps,
                                           ram->zero_detect, region, remotes, chunk_size,
                                           c->offsets, &h->normal_pages, c->segs);
    h->zero_pages = b->npages - h->normal_pages;
    uint64_t raw = (uint64_t)h->normal_pages * ps;
    h->payload_len = raw;
    c->stats.pages += h->normal_pages;
    c->stats.zero_pages += h->zero_pages;
    c->stats.bytes += raw;
    return send_channel_compressed(c, h, nseg, raw);
}

static int send_channel_packet(MfrSendChannel *c, const MfrBatch *b)
{
    MfrPacketHdr h = {
        .magic = MFR_PACKET_MAGIC,
        .version = MFR_WIRE_VERSION,
        .flags = b->flags,
        .packet_num = ++c->packet_num,
        .round = b->round,
        .block = b->block,
    };
    int nseg = 0;

    if (!(b->flags & MFR_PACKET_SYNC)) {
        nseg = send_channel_pages(c, b, &h);
        if (nseg < 0) {
            return nseg;
        }
    }
    size_t len = mfr_wire_pack_packet(&h, c->offsets, c->msg, sizeof(c->msg));
    g_assert(len > 0);
    int r = send_channel_post(c, len, (unsigned)nseg, len + h.payload_len);
    if (r > 0) {
        return 0; /* the session failed or the channel quits: not this packet's error */
    }
    if (r < 0) {
        return r;
    }
    c->stats.packets++;
    c->stats.wire_bytes += len + h.payload_len;
    if (b->flags & MFR_PACKET_SYNC) {
        /* One-sided WRITEs fail asynchronously: wait for this round's work to be
         * acknowledged, so an error completion fails the session now, with its status,
         * instead of the destination only seeing its QP flushed. The barrier waits for the
         * destination's ack anyway, so this costs no throughput. */
        r = xp_channel_drain(c->xp, (int)c->ram->timeout_ms);
    }
    return r;
}

/* ---------- thread ---------- */

static gpointer send_channel_thread(gpointer opaque)
{
    MfrSendChannel *c = opaque;
    for (;;) {
        while (sem_wait(&c->go) != 0 && errno == EINTR) {
        }
        if (atomic_load(&c->quit)) {
            break;
        }
        /* pairs with the release store in mfr_send_channel_hand() */
        if (!atomic_load_explicit(&c->pending, memory_order_acquire)) {
            continue;
        }
        if (!mfr_failed(c->ram->fail)) {
            int r = send_channel_packet(c, c->batch);
            /* -EBADMSG: failed here already, with the reason */
            if (r < 0 && r != -EBADMSG && !atomic_load(&c->quit)) {
                g_autofree char *what = g_strdup_printf("channel %u to %s", c->index,
                                                        xp_channel_peer(c->xp));
                mfr_fail_transport(c->ram->fail, what, r, xp_channel_error_detail(c->xp));
            }
        }
        /* pairs with the acquire load in the producer's idle-channel scan */
        atomic_store_explicit(&c->pending, false, memory_order_release);
        sem_post(c->ready);
    }
    c->stats.busy_s = mfr_thread_cpu_s();
    return NULL;
}

/* ---------- lifetime ---------- */

MfrSendChannel *mfr_send_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     sem_t *ready, GError **error)
{
    MfrSendChannel *c = g_new0(MfrSendChannel, 1);
    c->index = index;
    c->xp = xp;
    c->ram = ram;
    c->ready = ready;
    c->batch = g_new0(MfrBatch, 1);
    sem_init(&c->go, 0, 0);
    if (ram->compress) {
        mfr_comp_policy_init(&c->policy, ram->comp_adaptive,
                             !xp_channel_has_cap(xp, XP_CAP_PLACED_PAYLOAD));
        c->zc = mfr_compressor_new(ram->comp_level, error);
        if (!c->zc) {
            g_prefix_error(error, "source: channel %u: ", index);
            mfr_send_channel_free(c);
            return NULL;
        }
        c->zslot = mfr_comp_slot_size(ram->comp_raw_max);
        c->zbuf = g_malloc(c->zslot);
        if (xp_channel_has_cap(xp, XP_CAP_PLACED_PAYLOAD) && !send_channel_ring_setup(c, error)) {
            mfr_send_channel_free(c);
            return NULL;
        }
    }
    g_autofree char *name = g_strdup_printf("mfr-send-%u", index);
    GError *terr = NULL;
    c->thread = xp_thread_new_on(name, send_channel_thread, c, ram->numa_node, &c->place, &terr);
    if (!c->thread) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "source: channel %u: %s", index,
                    terr->message);
        g_error_free(terr);
        mfr_send_channel_free(c);
        return NULL;
    }
    return c;
}

void mfr_send_channel_hand(MfrSendChannel *c, MfrBatch **batch)
{
    MfrBatch *spare = c->batch;
    c->batch = *batch;
    *batch = spare;
    atomic_store_explicit(&c->pending, true, memory_order_release);
    sem_post(&c->go);
}

void mfr_send_channel_free(MfrSendChannel *c)
{
    if (!c) {
        return;
    }
    if (c->thread) {
        atomic_store(&c->quit, true);
        xp_channel_shutdown(c->xp);
        sem_post(&c->go);
        g_thread_join(c->thread);
    }
    xp_channel_close(c->xp);
    sem_destroy(&c->go);
    /* after the channel: no WRITE of the staging buffer is in flight any more */
    xp_remote_free(c->ram->dom, c->ring);
    xp_region_deregister(c->ram->dom, c->zregion);
    mfr_compressor_free(c->zc);
    g_free(c->zbuf);
    g_free(c->batch);
    g_free(c);
}
