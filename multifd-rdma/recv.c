/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Destination data channels: each thread receives packets, validates every field against the
 * session's blocks before touching memory, lands the payload in guest RAM (stream transports
 * read it in place; RDMA already wrote it; a compressed payload is decompressed into them),
 * applies zero pages and reports SYNC to the session's barrier. Mirrors send.c section by
 * section.
 */
#include "channel.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* The extent a huge page backs (PMD-mapped THP, 2 MiB hugetlbfs); a larger huge page is
 * populated in several calls, still far fewer than one per run of pages. */
#define MFR_PREFAULT_HUGE (2u << 20)

/* ---------- received bookkeeping ---------- */

static void recv_mark_received(const MfrRamView *ram, uint32_t block, uint64_t off)
{
    uint64_t page = off / ram->page_size;
    /* relaxed: the round barrier orders these against later zero-page checks */
    __atomic_fetch_or(&ram->received[block][page / 64], 1ULL << (page % 64), __ATOMIC_RELAXED);
}

static void recv_mark_zero_seen(const MfrRamView *ram, uint32_t block, uint64_t off)
{
    uint64_t page = off / ram->page_size;
    /* relaxed: read by the session thread at COMPLETE, after the last round's barrier */
    __atomic_fetch_or(&ram->zero_seen[block][page / 64], 1ULL << (page % 64), __ATOMIC_RELAXED);
}

static bool recv_was_received(const MfrRamView *ram, uint32_t block, uint64_t off)
{
    uint64_t page = off / ram->page_size;
    return __atomic_load_n(&ram->received[block][page / 64], __ATOMIC_RELAXED) &
           (1ULL << (page % 64));
}

/* Whether any page of [p0, p1) of the block received data. */
static bool recv_any_received(const MfrRamView *ram, uint32_t block, uint64_t p0, uint64_t p1)
{
    const uint64_t *map = ram->received[block];
    while (p0 < p1) {
        uint64_t w = p0 / 64, b = p0 % 64, n = MIN(64 - b, p1 - p0);
        uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
        if (__atomic_load_n(&map[w], __ATOMIC_RELAXED) & mask) {
            return true;
        }
        p0 += n;
    }
    return false;
}

/* Huge-page-backed memory: the first touch of any page allocates (and clears) its whole
 * huge page, so one populate per never-touched huge-page extent does what a populate per run
 * of pages did, in 1/25 of the calls with the default mix (one per 2 MiB instead of one per
 * run between zero pages: 43 k madvise calls per GiB). An extent some page of which
 * received data is mapped already; one whose huge page the kernel could not allocate is
 * populated with small pages, zero pages' included (memory, not correctness). */
static void recv_prefault_huge(const MfrRamView *ram, uint32_t block, uint8_t *host,
                               const uint64_t *offsets, uint32_t n)
{
    uint32_t ps = ram->page_size;
    uintptr_t base = (uintptr_t)host, end = base + ram->block_len[block], last = 0;
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t a = (base + offsets[i]) & ~(uintptr_t)(MFR_PREFAULT_HUGE - 1);
        if (a == last) {
            continue;
        }
        last = a;
        uintptr_t s = MAX(a, base), e = MIN(a + MFR_PREFAULT_HUGE, end);
        if (!recv_any_received(ram, block, (s - base) / ps, (e - base + ps - 1) / ps)) {
            (void)madvise((void *)s, e - s, MADV_POPULATE_WRITE);
        }
    }
}

/* Never-received pages of fresh destination memory would otherwise fault in one by one
 * inside the transport's copy (an exception, a VMA lookup and a fixup per 4 KiB page); one
 * MADV_POPULATE_WRITE per run of them allocates the same pages in a single call, ~35% less
 * CPU for first touch plus copy here. Best effort: on failure (a kernel before 5.14) the
 * copy faults them in as before. Pages received before are mapped already: skipped. */
static void recv_prefault(const MfrRamView *ram, uint32_t block, uint8_t *host,
                          const uint64_t *offsets, uint32_t n)
{
    if (ram->prefault_huge) {
        recv_prefault_huge(ram, block, host, offsets, n);
        return;
    }
    uint32_t ps = ram->page_size;
    uint64_t start = 0, len = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = offsets[i];
        if (recv_was_received(ram, block, off)) {
            continue;
        }
        if (len && start + len == off) {
            len += ps;
            continue;
        }
        if (len) {
            (void)madvise(host + start, len, MADV_POPULATE_WRITE);
        }
        start = off;
        len = ps;
    }
    if (len) {
        (void)madvise(host + start, len, MADV_POPULATE_WRITE);
    }
}

unsigned mfr_recv_packet_layout(uint8_t *host, uint32_t page_size, const uint64_t *offsets,
                                uint32_t normal, struct iovec *iov)
{
    unsigned niov = 0;

    for (uint32_t i = 0; i < normal; i++) {
        uint8_t *p = host + offsets[i];
        if (niov && (uint8_t *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == p) {
            iov[niov - 1].iov_len += page_size;
        } else {
            iov[niov++] = (struct iovec){ .iov_base = p, .iov_len = page_size };
        }
    }
    return niov;
}

/* ---------- staging ring (placed transports) ---------- */

uint64_t mfr_comp_staging_bytes(const XpOps *ops, const MfrRamView *ram)
{
    if (!ram->compress || !xp_has_cap(ops, XP_CAP_PLACED_PAYLOAD)) {
        return 0;
    }
    return (uint64_t)MFR_RING_SLOTS * mfr_comp_slot_size(ram->comp_raw_max);
}

/* Registers the channel's staging ring and sends its descriptor, the channel's first message
 * (docs/protocol.md 14.11). */
static bool recv_channel_ring_setup(MfrRecvChannel *c, GError **error)
{
    const MfrRamView *ram = c->ram;
    c->slots = MFR_RING_SLOTS;
    c->zslot = mfr_comp_slot_size(ram->comp_raw_max);
    size_t len = c->slots * c->zslot;
    c->ring = g_aligned_alloc(len, 1, 4096);
    GError *xerr = NULL;
    if (!xp_region_register(ram->dom, c->ring, len, XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL,
                            &c->ring_region, &xerr)) {
        g_autofree char *what = g_strdup_printf("destination: channel %u: staging ring",
                                                c->index);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    MfrRingMsg m = { .magic = MFR_RING_MAGIC, .version = MFR_WIRE_VERSION,
                     .type = MFR_RING_DESC, .slots = c->slots, .slot_size = (uint32_t)c->zslot };
    xp_region_export(ram->dom, c->ring_region, m.desc);
    mfr_wire_pack_ring(&m, c->msg);
    int r = xp_send_msg(c->xp, c->msg, MFR_RING_MSG_SIZE, NULL, 0);
    if (r < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_TRANSPORT, "destination: channel %u to %s: "
                    "staging ring: %s", c->index, xp_channel_peer(c->xp), g_strerror(-r));
        return false;
    }
    return true;
}

/* The slot just decompressed is free again: CREDIT with the count freed so far. */
static int recv_channel_credit(MfrRecvChannel *c)
{
    c->freed++;
    MfrRingMsg m = { .magic = MFR_RING_MAGIC, .version = MFR_WIRE_VERSION,
                     .type = MFR_RING_CREDIT, .freed = c->freed };
    uint8_t buf[MFR_RING_MSG_SIZE];
    mfr_wire_pack_ring(&m, buf);
    return xp_send_msg(c->xp, buf, sizeof(buf), NULL, 0);
}

/* ---------- decompression ---------- */

/* A COMPRESSED packet's frame (read into zbuf first over a stream) into its niov page runs.
 * The runs hold exactly the announced pages, and mfr_decompress_iov() never writes outside
 * them, so a hostile frame can damage nothing but those pages before the session fails.
 * -EBADMSG when the frame is bad: the session has failed with the reason already. */
static int recv_channel_decompress(MfrRecvChannel *c, const MfrPacketHdr *h, unsigned niov)
{
    const MfrRamView *ram = c->ram;
    uint64_t raw = (uint64_t)h->normal_pages * ram->page_size;
    struct iovec in = { .iov_base = c->zbuf, .iov_len = h->payload_len };
    if (c->ring) {
        /* placed: the frame is in the next slot already (the wire check bounded the slot
         * index and the length by the slot size) */
        if (h->slot != c->freed % c->slots) {
            mfr_fail(ram->fail, MFR_ERROR_PROTOCOL, "destination: channel %u from %s: packet %"
                     G_GUINT64_FORMAT ": staging slot %u, expected %u (slots are used in "
                     "order)", c->index, xp_channel_peer(c->xp), h->packet_num, h->slot,
                     (unsigned)(c->freed % c->slots));
            return -EBADMSG;
        }
        in.iov_base = c->ring + h->slot * c->zslot;
    } else {
        int r = xp_recv_payload(c->xp, &in, 1);
        if (r < 0) {
            return r;
        }
    }
    double cpu0 = mfr_thread_cpu_s();
    g_autoptr(GError) err = NULL;
    bool ok = mfr_decompress_iov(c->zd, in.iov_base, h->payload_len, c->iov, niov, raw, &err);
    c->zstats.cpu_s += mfr_thread_cpu_s() - cpu0;
    if (!ok) {
        mfr_fail(ram->fail, MFR_ERROR_PROTOCOL, "destination: channel %u from %s: packet %"
                 G_GUINT64_FORMAT ": %s", c->index, xp_channel_peer(c->xp), h->packet_num,
                 err->message);
        return -EBADMSG;
    }
    c->zstats.packets++;
    c->zstats.raw_bytes += raw;
    c->zstats.compressed_bytes += h->payload_len;
    return c->ring ? recv_channel_credit(c) : 0;
}

/* ---------- packet landing ---------- */

static int recv_channel_packet(MfrRecvChannel *c, const MfrPacketHdr *h)
{
    const MfrRamView *ram = c->ram;
    uint8_t *host = ram->blocks[h->block].host;
    uint32_t ps = ram->page_size;
    unsigned niov = mfr_recv_packet_layout(host, ps, c->offsets, h->normal_pages, c->iov);
    bool compressed = h->flags & MFR_PACKET_COMPRESSED;

    if (niov && (compressed || !xp_channel_has_cap(c->xp, XP_CAP_PLACED_PAYLOAD))) {
        recv_prefault(ram, h->block, host, c->offsets, h->normal_pages);
        int r = compressed ? recv_channel_decompress(c, h, niov)
                           : xp_recv_payload(c->xp, c->iov, niov);
        if (r < 0) {
            return r;
        }
    }
    for (uint32_t i = 0; i < h->normal_pages; i++) {
        recv_mark_received(ram, h->block, c->offsets[i]);
    }
    for (uint32_t i = 0; i < h->zero_pages; i++) {
        uint64_t off = c->offsets[h->normal_pages + i];
        recv_mark_zero_seen(ram, h->block, off);
        /* fresh memory already reads as zero: touching it would only fault it in */
        if (!ram->memory_zeroed || recv_was_received(ram, h->block, off)) {
            memset(host + off, 0, ps);
        }
    }
    /* read by dest_progress() while this thread runs */
    mfr_counter_add(&c->stats.pages, h->normal_pages);
    mfr_counter_add(&c->stats.zero_pages, h->zero_pages);
    c->stats.bytes += (uint64_t)h->normal_pages * ps;
    return 0;
}

/* ---------- hold seam ---------- */

/* Under h->lock: every other channel finished a packet since the hold began, or delivered
 * the SYNC of the held packet's round (c->round) before. */
static bool recv_hold_done(const MfrRecvHold *h, const MfrRecvChannel *c)
{
    for (unsigned j = 0; j < h->nchan && j < MFR_MAX_CHANNELS; j++) {
        if (j != c->index && !(h->finished & (1ULL << j)) && h->synced_round[j] < c->round) {
            return false;
        }
    }
    return true;
}

/* The held channel, before it lands its first data packet: waits for the others. Polls the
 * quit flag and the failure latch, since nothing else would wake it at teardown. */
static void recv_hold(MfrRecvChannel *c)
{
    MfrRecvHold *h = c->hold;
    g_mutex_lock(&h->lock);
    if (!h->holding) {
        h->holding = true;
        g_cond_broadcast(&h->cond);
        while (!recv_hold_done(h, c) && !atomic_load(&c->quit) && !mfr_failed(c->ram->fail)) {
            g_cond_wait_until(&h->cond, &h->lock, g_get_monotonic_time() + 50 * 1000);
        }
        h->released = true;
    }
    g_mutex_unlock(&h->lock);
}

/* Any other channel, after each packet it finished (sync_round: the round of a SYNC it
 * delivered, else 0). */
static void recv_hold_finished(MfrRecvChannel *c, uint64_t sync_round)
{
    MfrRecvHold *h = c->hold;
    g_mutex_lock(&h->lock);
    if (sync_round) {
        h->synced_round[c->index] = sync_round;
        g_cond_broadcast(&h->cond);
    }
    if (h->holding && !h->released) {
        h->finished |= 1ULL << c->index;
        g_cond_broadcast(&h->cond);
    }
    g_mutex_unlock(&h->lock);
}

/* ---------- thread ---------- */

static gpointer recv_channel_thread(gpointer opaque)
{
    MfrRecvChannel *c = opaque;
    const MfrRamView *ram = c->ram;
    MfrPacketLimits lim = {
        .nblocks = ram->nblocks,
        .block_len = ram->block_len,
        .page_size = ram->page_size,
        .max_pages = ram->max_pages,
        .compressed = ram->compress,
        .slots = c->slots,
    };

    while (!atomic_load(&c->quit)) {
        size_t len = 0;
        int r = xp_recv_msg(c->xp, c->msg, sizeof(c->msg), &len, -1);
        if (r < 0) {
            if (!atomic_load(&c->quit)) {
                g_autofree char *what = g_strdup_printf("destination: channel %u from %s",
                                                        c->index, xp_channel_peer(c->xp));
                mfr_fail_transport(ram->fail, what, r, xp_channel_error_detail(c->xp));
            }
            break;
        }
        MfrPacketHdr h;
        g_autoptr(GError) err = NULL;
        lim.expect_packet_num = c->packet_num + 1;
        lim.expect_round = c->round;
        if (!mfr_wire_unpack_packet(c->msg, len, &lim, &h, c->offsets, &err)) {
            mfr_fail(ram->fail, MFR_ERROR_PROTOCOL, "destination: channel %u from %s: %s",
                     c->index, xp_channel_peer(c->xp), err->message);
            break;
        }
        c->packet_num = h.packet_num;
        c->stats.packets++;
        c->stats.wire_bytes += len + h.payload_len;
        bool held = c->hold && c->hold->channel == c->index;
        if (h.flags & MFR_PACKET_SYNC) {
            /* before the barrier, which waits for the held channel too: marked after it, a
             * channel that reached its SYNC before the held one began holding (a slow thread,
             * a busy host) would wait for it forever, and it for this one */
            if (c->hold && !held) {
                recv_hold_finished(c, h.round);
            }
            if (!c->sync(c->sync_opaque, c->index, h.round)) {
                break;
            }
            c->round++;
            continue;
        }
        if (held) {
            recv_hold(c);
        }
        r = recv_channel_packet(c, &h);
        if (r < 0) {
            if (!atomic_load(&c->quit) && r != -EBADMSG) {
                g_autofree char *what = g_strdup_printf(
                    "destination: channel %u from %s: payload of packet %" G_GUINT64_FORMAT,
                    c->index, xp_channel_peer(c->xp), h.packet_num);
                mfr_fail_transport(ram->fail, what, r, xp_channel_error_detail(c->xp));
            }
            break;
        }
        if (c->hold && !held) {
            recv_hold_finished(c, 0);
        }
    }
    c->stats.busy_s = mfr_thread_cpu_s();
    return NULL;
}

/* ---------- lifetime ---------- */

MfrRecvChannel *mfr_recv_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     MfrSyncFn sync, void *sync_opaque, MfrRecvHold *hold,
                                     GError **error)
{
    MfrRecvChannel *c = g_new0(MfrRecvChannel, 1);
    c->index = index;
    c->xp = xp;
    c->ram = ram;
    c->sync = sync;
    c->sync_opaque = sync_opaque;
    c->hold = hold;
    c->round = 1;
    if (ram->compress) {
        c->zd = mfr_decompressor_new(error);
        if (!c->zd) {
            g_prefix_error(error, "destination: channel %u: ", index);
            mfr_recv_channel_free(c);
            return NULL;
        }
        if (xp_channel_has_cap(xp, XP_CAP_PLACED_PAYLOAD)) {
            if (!recv_channel_ring_setup(c, error)) {
                mfr_recv_channel_free(c);
                return NULL;
            }
        } else {
            c->zbuf = g_malloc(mfr_comp_bound(ram->comp_raw_max));
        }
    }
    g_autofree char *name = g_strdup_printf("mfr-recv-%u", index);
    GError *terr = NULL;
    c->thread = xp_thread_new_on(name, recv_channel_thread, c, ram->numa_node, &c->place, &terr);
    if (!c->thread) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "destination: channel %u: %s", index,
                    terr->message);
        g_error_free(terr);
        mfr_recv_channel_free(c);
        return NULL;
    }
    return c;
}

void mfr_recv_channel_free(MfrRecvChannel *c)
{
    if (!c) {
        return;
    }
    if (c->thread) {
        atomic_store(&c->quit, true);
        xp_channel_shutdown(c->xp);
        g_thread_join(c->thread);
    }
    xp_channel_close(c->xp);
    /* after the channel (QP) is gone: the source can no longer write into the ring */
    xp_region_deregister(c->ram->dom, c->ring_region);
    g_aligned_free(c->ring);
    mfr_decompressor_free(c->zd);
    g_free(c->zbuf);
    g_free(c);
}
