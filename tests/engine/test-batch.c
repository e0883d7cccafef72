/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The source's batching and hand-off, without threads or a transport: cutting dirty bitmaps
 * into batches (mfr_batch_fill), picking idle channels round-robin across rounds
 * (mfr_send_channel_pick, mfr_send_channel_hand) and the packet a batch becomes on each side
 * (zero split, segment and iovec coalescing). The integration tests cannot see these cuts.
 */
#include "channel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PS 4096u

/* ---------- batch filling ---------- */

static uint64_t *bitmap_new(uint64_t npages)
{
    return g_new0(uint64_t, (npages + 63) / 64);
}

static void bitmap_set(uint64_t *bm, uint64_t page)
{
    bm[page / 64] |= UINT64_C(1) << (page % 64);
}

static void assert_bitmap_clear(const uint64_t *bm, uint64_t npages)
{
    for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
        g_assert_cmphex(bm[w], ==, 0);
    }
}

/* Cuts one block's bitmap into batches and checks them against the dirty pages expected, in
 * order: every batch full but the last, none empty, all of this block and round. Returns the
 * number of batches. */
static unsigned fill_expect(uint64_t *bm, uint64_t npages, uint32_t block, uint32_t page_size,
                            uint32_t max_pages, const uint64_t *pages, uint64_t npages_dirty)
{
    MfrDirtyScan sc;
    MfrBatch *b = g_new0(MfrBatch, 1);
    uint64_t taken = 0;
    unsigned batches = 0;
    uint32_t n;

    mfr_dirty_scan_init(&sc, bm, npages);
    memset(b, 0xa5, sizeof(*b)); /* a reused batch: stale fields must not survive */
    while ((n = mfr_batch_fill(b, &sc, block, 7, page_size, max_pages)) > 0) {
        g_assert_cmpuint(n, ==, b->npages);
        g_assert_cmpuint(n, ==, MIN((uint64_t)max_pages, npages_dirty - taken));
        g_assert_cmpuint(b->flags, ==, 0);
        g_assert_cmpuint(b->block, ==, block);
        g_assert_cmpuint(b->round, ==, 7);
        for (uint32_t i = 0; i < n; i++) {
            g_assert_cmpuint(taken + i, <, npages_dirty);
            g_assert_cmphex(b->offsets[i], ==, pages[taken + i] * page_size);
        }
        taken += n;
        batches++;
        memset(b->offsets, 0xa5, sizeof(b->offsets));
    }
    g_assert_cmpuint(b->npages, ==, 0);
    g_assert_cmpuint(taken, ==, npages_dirty);
    /* done stays done */
    g_assert_cmpuint(mfr_batch_fill(b, &sc, block, 7, page_size, max_pages), ==, 0);
    assert_bitmap_clear(bm, npages);
    g_free(b);
    return batches;
}

static void test_fill_empty(void)
{
    static const uint64_t sizes[] = { 1, 63, 64, 65, 1000 };
    for (unsigned k = 0; k < G_N_ELEMENTS(sizes); k++) {
        uint64_t *bm = bitmap_new(sizes[k]);
        g_assert_cmpuint(fill_expect(bm, sizes[k], 3, PS, 128, NULL, 0), ==, 0);
        g_free(bm);
    }
}

/* Round 1: every page, including the tail of a partial last word (harvest masked the rest). */
static void test_fill_all_dirty(void)
{
    static const uint64_t sizes[] = { 1, 64, 127, 128, 129, 1000 };
    for (unsigned k = 0; k < G_N_ELEMENTS(sizes); k++) {
        uint64_t np = sizes[k];
        uint64_t *bm = bitmap_new(np);
        uint64_t *pages = g_new(uint64_t, np);
        for (uint64_t p = 0; p < np; p++) {
            bitmap_set(bm, p);
            pages[p] = p;
        }
        unsigned batches = fill_expect(bm, np, 0, PS, 128, pages, np);
        g_assert_cmpuint(batches, ==, (np + 127) / 128);
        g_free(pages);
        g_free(bm);
    }
}

/* Runs that straddle 64-bit words, cut by a batch limit that falls inside words and runs. */
static void test_fill_word_boundary(void)
{
    const uint64_t np = 400;
    static const struct {
        uint64_t first, last;
    } runs[] = { { 60, 70 }, { 127, 129 }, { 190, 260 }, { 319, 320 }, { 383, 384 } };
    uint64_t pages[400];
    uint64_t n = 0;
    for (unsigned r = 0; r < G_N_ELEMENTS(runs); r++) {
        for (uint64_t p = runs[r].first; p <= runs[r].last; p++) {
            pages[n++] = p;
        }
    }
    static const uint32_t limits[] = { 1, 4, 5, 64, 65, 128, 512 };
    for (unsigned k = 0; k < G_N_ELEMENTS(limits); k++) {
        uint64_t *bm = bitmap_new(np);
        for (uint64_t i = 0; i < n; i++) {
            bitmap_set(bm, pages[i]);
        }
        unsigned batches = fill_expect(bm, np, 1, PS, limits[k], pages, n);
        g_assert_cmpuint(batches, ==, (n + limits[k] - 1) / limits[k]);
        g_free(bm);
    }
    /* limit 5 puts 60..64 in the first batch: it ends on the first page of word 1 */
    uint64_t *bm = bitmap_new(np);
    for (uint64_t i = 0; i < n; i++) {
        bitmap_set(bm, pages[i]);
    }
    MfrDirtyScan sc;
    MfrBatch b;
    mfr_dirty_scan_init(&sc, bm, np);
    g_assert_cmpuint(mfr_batch_fill(&b, &sc, 1, 1, PS, 5), ==, 5);
    g_assert_cmphex(b.offsets[0], ==, 60 * PS);
    g_assert_cmphex(b.offsets[4], ==, 64 * PS);
    /* word 0 was taken whole, word 1 is loaded with page 64 gone; nothing beyond is read */
    g_assert_cmphex(bm[0], ==, 0);
    g_assert_cmphex(bm[1], ==, 0);
    g_assert_cmpuint(sc.next, ==, 2);
    g_assert_cmphex(sc.bits, ==, (UINT64_C(0x3f) << 1) | (UINT64_C(1) << 63));
    g_assert_cmphex(bm[2], !=, 0);
    g_free(bm);
}

/* Only the first or the last page of a block, at every kind of block length. */
static void test_fill_edges(void)
{
    static const uint64_t sizes[] = { 1, 2, 63, 64, 65, 128, 129, 4097 };
    for (unsigned k = 0; k < G_N_ELEMENTS(sizes); k++) {
        uint64_t np = sizes[k];
        uint64_t last = np - 1, first = 0;
        uint64_t *bm = bitmap_new(np);
        bitmap_set(bm, last);
        g_assert_cmpuint(fill_expect(bm, np, 2, PS, 128, &last, 1), ==, 1);
        bitmap_set(bm, first);
        g_assert_cmpuint(fill_expect(bm, np, 2, PS, 128, &first, 1), ==, 1);
        if (np > 1) {
            uint64_t both[2] = { first, last };
            bitmap_set(bm, first);
            bitmap_set(bm, last);
            g_assert_cmpuint(fill_expect(bm, np, 2, PS, 1, both, 2), ==, 2);
        }
        g_free(bm);
    }
}

/* Batch size limits: 1, exactly full, one over, the protocol maximum. */
static void test_fill_limits(void)
{
    const uint64_t np = 2 * MFR_MAX_PAGES_PER_PACKET + 1;
    uint64_t *pages = g_new(uint64_t, np);
    for (uint64_t p = 0; p < np; p++) {
        pages[p] = p;
    }
    static const struct {
        uint32_t max;
        uint64_t dirty;
        unsigned batches;
    } cases[] = {
        { 1, 3, 3 },
        { 128, 128, 1 }, /* exactly one full batch, then no empty one */
        { 128, 129, 2 },
        { MFR_MAX_PAGES_PER_PACKET, MFR_MAX_PAGES_PER_PACKET, 1 },
        { MFR_MAX_PAGES_PER_PACKET, 2 * MFR_MAX_PAGES_PER_PACKET + 1, 3 },
    };
    for (unsigned k = 0; k < G_N_ELEMENTS(cases); k++) {
        uint64_t *bm = bitmap_new(np);
        for (uint64_t p = 0; p < cases[k].dirty; p++) {
            bitmap_set(bm, p);
        }
        g_assert_cmpuint(fill_expect(bm, np, 0, PS, cases[k].max, pages, cases[k].dirty), ==,
                         cases[k].batches);
        g_free(bm);
    }
    g_free(pages);
}

/* Offsets are 64-bit: a page beyond 4 GiB into the block, and 2 MiB pages. */
static void test_fill_large_offsets(void)
{
    const uint64_t np = (UINT64_C(1) << 20) + 64;
    uint64_t *bm = bitmap_new(np);
    uint64_t pages[2] = { UINT64_C(1) << 20, np - 1 };
    bitmap_set(bm, pages[0]);
    bitmap_set(bm, pages[1]);
    g_assert_cmpuint(fill_expect(bm, np, 0, PS, 128, pages, 2), ==, 1);
    g_assert_cmpuint(pages[0] * PS, ==, UINT64_C(0x100000000));
    uint64_t huge[1] = { 3000 };
    bitmap_set(bm, huge[0]);
    g_assert_cmpuint(fill_expect(bm, np, 0, 2u << 20, 128, huge, 1), ==, 1);
    g_free(bm);
}

/* Random bitmaps, lengths and limits against a plain bit-by-bit walk. */
static void test_fill_random(void)
{
    GRand *r = g_rand_new_with_seed(0x6d667264);
    for (unsigned iter = 0; iter < 300; iter++) {
        uint64_t np = g_rand_int_range(r, 1, 3000);
        uint32_t max = g_rand_int_range(r, 1, MFR_MAX_PAGES_PER_PACKET + 1);
        int density = g_rand_int_range(r, 0, 101);
        uint64_t *bm = bitmap_new(np);
        uint64_t *pages = g_new(uint64_t, np);
        uint64_t n = 0;
        for (uint64_t p = 0; p < np; p++) {
            if (g_rand_int_range(r, 0, 100) < density) {
                bitmap_set(bm, p);
                pages[n++] = p;
            }
        }
        g_assert_cmpuint(fill_expect(bm, np, iter % MFR_MAX_BLOCKS, PS, max, pages, n), ==,
                         (n + max - 1) / max);
        g_free(pages);
        g_free(bm);
    }
    g_rand_free(r);
}

/* ---------- channel pick and hand-off ---------- */

typedef struct {
    unsigned n;
    MfrSendChannel *chan[8];
    sem_t ready;
} Producer;

static void producer_init(Producer *p, unsigned n)
{
    g_assert_cmpuint(n, <=, G_N_ELEMENTS(p->chan));
    p->n = n;
    sem_init(&p->ready, 0, 0);
    for (unsigned i = 0; i < n; i++) {
        MfrSendChannel *c = g_new0(MfrSendChannel, 1);
        c->index = i;
        c->ready = &p->ready;
        c->batch = g_new0(MfrBatch, 1);
        atomic_init(&c->pending, false);
        atomic_init(&c->quit, false);
        sem_init(&c->go, 0, 0);
        p->chan[i] = c;
    }
}

static void producer_clear(Producer *p)
{
    for (unsigned i = 0; i < p->n; i++) {
        sem_destroy(&p->chan[i]->go);
        g_free(p->chan[i]->batch);
        g_free(p->chan[i]);
    }
    sem_destroy(&p->ready);
}

/* What the channel thread does once it has sent a handed-over batch. */
static void channel_done(MfrSendChannel *c)
{
    g_assert_cmpint(sem_trywait(&c->go), ==, 0);
    atomic_store(&c->pending, false);
}

static unsigned pick_index(Producer *p, unsigned *rr)
{
    MfrSendChannel *c = mfr_send_channel_pick(p->chan, p->n, rr);
    g_assert_nonnull(c);
    return c->index;
}

static void test_pick_round_robin(void)
{
    Producer p;
    producer_init(&p, 4);
    unsigned rr = 0;
    /* rounds of one batch each, every channel idle at a round's start (after the barrier):
     * consecutive rounds go to consecutive channels, so a page re-dirtied every round never
     * travels twice in a row on the same connection */
    for (unsigned round = 0; round < 9; round++) {
        g_assert_cmpuint(pick_index(&p, &rr), ==, round % 4);
        g_assert_cmpuint(rr, ==, (round + 1) % 4);
    }
    /* the next pick starts after the last channel used, even when all are idle */
    rr = 2;
    g_assert_cmpuint(pick_index(&p, &rr), ==, 2);
    producer_clear(&p);
}

static void test_pick_skips_busy(void)
{
    Producer p;
    producer_init(&p, 4);
    unsigned rr = 1;
    atomic_store(&p.chan[1]->pending, true);
    g_assert_cmpuint(pick_index(&p, &rr), ==, 2);
    g_assert_cmpuint(rr, ==, 3);
    /* wraps: 3 busy, 0 idle */
    atomic_store(&p.chan[3]->pending, true);
    g_assert_cmpuint(pick_index(&p, &rr), ==, 0);
    g_assert_cmpuint(rr, ==, 1);
    producer_clear(&p);
}

static void test_pick_bad_all_busy(void)
{
    Producer p;
    producer_init(&p, 3);
    for (unsigned i = 0; i < 3; i++) {
        atomic_store(&p.chan[i]->pending, true);
    }
    unsigned rr = 2;
    g_assert_null(mfr_send_channel_pick(p.chan, p.n, &rr));
    g_assert_cmpuint(rr, ==, 2);
    atomic_store(&p.chan[1]->pending, false);
    g_assert_cmpuint(pick_index(&p, &rr), ==, 1);
    g_assert_cmpuint(rr, ==, 2);
    producer_clear(&p);
}

static void test_pick_one_channel(void)
{
    Producer p;
    producer_init(&p, 1);
    unsigned rr = 0;
    for (unsigned i = 0; i < 3; i++) {
        g_assert_cmpuint(pick_index(&p, &rr), ==, 0);
        g_assert_cmpuint(rr, ==, 0);
    }
    atomic_store(&p.chan[0]->pending, true);
    g_assert_null(mfr_send_channel_pick(p.chan, p.n, &rr));
    producer_clear(&p);
}

/* The hand-off is a pointer swap: the producer gets the channel's spare, nothing is copied. */
static void test_hand_swaps(void)
{
    Producer p;
    producer_init(&p, 2);
    MfrBatch *mine = g_new0(MfrBatch, 1);
    MfrBatch *first = mine;
    MfrBatch *spare0 = p.chan[0]->batch, *spare1 = p.chan[1]->batch;
    unsigned rr = 0;

    mine->npages = 3;
    mine->offsets[2] = 42 * PS;
    mfr_send_channel_hand(mfr_send_channel_pick(p.chan, p.n, &rr), &mine);
    g_assert_true(p.chan[0]->batch == first);
    g_assert_true(mine == spare0);
    g_assert_true(atomic_load(&p.chan[0]->pending));
    g_assert_cmpuint(p.chan[0]->batch->offsets[2], ==, 42 * PS);
    /* woken exactly once */
    int v = -1;
    g_assert_cmpint(sem_getvalue(&p.chan[0]->go, &v), ==, 0);
    g_assert_cmpint(v, ==, 1);
    /* a busy channel is not picked: the next batch goes to channel 1 */
    mfr_send_channel_hand(mfr_send_channel_pick(p.chan, p.n, &rr), &mine);
    g_assert_true(p.chan[1]->batch == spare0);
    g_assert_true(mine == spare1);
    g_assert_null(mfr_send_channel_pick(p.chan, p.n, &rr));
    channel_done(p.chan[0]);
    g_assert_cmpint(sem_trywait(&p.chan[0]->go), ==, -1);
    g_assert_cmpint(errno, ==, EAGAIN);
    g_assert_cmpuint(pick_index(&p, &rr), ==, 0);
    channel_done(p.chan[1]);
    g_free(mine);
    producer_clear(&p);
}

/* ---------- packet layout ---------- */

typedef struct {
    uint8_t *src, *dst;
    uint64_t npages;
} Ram;

/* Source pages: page i is zero when zero[i], else filled from i (one byte may do it). */
static void ram_init(Ram *r, uint64_t npages, const bool *zero)
{
    r->npages = npages;
    r->src = aligned_alloc(PS, npages * PS);
    r->dst = aligned_alloc(PS, npages * PS);
    g_assert_nonnull(r->src);
    g_assert_nonnull(r->dst);
    memset(r->dst, 0xdd, npages * PS);
    for (uint64_t i = 0; i < npages; i++) {
        uint8_t *p = r->src + i * PS;
        memset(p, 0, PS);
        if (!zero[i]) {
            /* a single non-zero byte, last in the page when i is odd */
            p[i % 2 ? PS - 1 : i % PS] = (uint8_t)(i | 1);
        }
    }
}

static void ram_clear(Ram *r)
{
    free(r->src);
    free(r->dst);
}

/* Lays out a batch on both sides, moves the bytes the way the transports would (segment i
 * into iovec i, then the zero pages) and checks that every page of the batch arrived. */
static void layout_check(Ram *r, const MfrBatch *b, bool zero_detect, unsigned want_segs,
                         uint32_t want_normal)
{
    int region_dummy, remote_dummy;
    XpRegion *region = (XpRegion *)&region_dummy;
    XpRemote *remote = (XpRemote *)&remote_dummy;
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    XpSeg segs[MFR_MAX_PAGES_PER_PACKET];
    struct iovec iov[MFR_MAX_PAGES_PER_PACKET];
    uint32_t normal = UINT32_MAX;

    unsigned nseg = mfr_send_packet_layout(b, r->src, PS, zero_detect, region, &remote, 0,
                                           offsets, &normal, segs);
    g_assert_cmpuint(nseg, ==, want_segs);
    g_assert_cmpuint(normal, ==, want_normal);
    /* the offset list holds every page of the batch once: data in order, then zeros in order */
    uint64_t prev_data = 0, prev_zero = 0;
    for (uint32_t i = 0; i < b->npages; i++) {
        bool is_zero = zero_detect && mfr_buffer_is_zero(r->src + offsets[i], PS);
        g_assert_cmpint(is_zero, ==, i >= normal);
        if (i < normal) {
            g_assert_true(i == 0 || offsets[i] > prev_data);
            prev_data = offsets[i];
        } else {
            g_assert_true(i == normal || offsets[i] > prev_zero);
            prev_zero = offsets[i];
        }
        bool found = false;
        for (uint32_t j = 0; j < b->npages; j++) {
            found |= b->offsets[j] == offsets[i];
        }
        g_assert_true(found);
    }
    /* segments: maximal runs of adjacent data pages, covering the data pages exactly */
    uint64_t covered = 0;
    for (unsigned s = 0; s < nseg; s++) {
        g_assert_true(segs[s].region == region);
        g_assert_true(segs[s].remote == remote);
        g_assert_true((const uint8_t *)segs[s].addr == r->src + segs[s].remote_offset);
        g_assert_cmpuint(segs[s].len % PS, ==, 0);
        g_assert_cmphex(segs[s].remote_offset, ==, offsets[covered]);
        for (uint64_t k = 0; k < segs[s].len / PS; k++) {
            g_assert_cmphex(offsets[covered + k], ==, segs[s].remote_offset + k * PS);
        }
        covered += segs[s].len / PS;
        if (s > 0) {
            g_assert_cmphex(segs[s - 1].remote_offset + segs[s - 1].len, <,
                            segs[s].remote_offset);
        }
    }
    g_assert_cmpuint(covered, ==, normal);

    /* the receiver's iovecs mirror the sender's segments one for one */
    unsigned niov = mfr_recv_packet_layout(r->dst, PS, offsets, normal, iov);
    g_assert_cmpuint(niov, ==, nseg);
    for (unsigned s = 0; s < niov; s++) {
        g_assert_true((uint8_t *)iov[s].iov_base == r->dst + segs[s].remote_offset);
        g_assert_cmpuint(iov[s].iov_len, ==, segs[s].len);
        memcpy(iov[s].iov_base, segs[s].addr, segs[s].len);
    }
    for (uint32_t i = normal; i < b->npages; i++) {
        memset(r->dst + offsets[i], 0, PS);
    }
    for (uint32_t i = 0; i < b->npages; i++) {
        uint64_t off = b->offsets[i];
        g_assert_cmpint(memcmp(r->dst + off, r->src + off, PS), ==, 0);
    }
}

static void batch_of(MfrBatch *b, const uint64_t *pages, uint32_t n);

/* Destination chunks of 4 pages: a run of data pages splits at every chunk boundary, each
 * piece goes to its chunk's remote at an offset relative to the chunk. */
static void test_layout_chunks(void)
{
    bool zero[16] = { false };
    zero[9] = true;
    Ram r;
    ram_init(&r, 16, zero);
    MfrBatch *b = g_new0(MfrBatch, 1);
    int region_dummy, remote_dummy[4];
    XpRegion *region = (XpRegion *)&region_dummy;
    XpRemote *remotes[4];
    for (unsigned i = 0; i < 4; i++) {
        remotes[i] = (XpRemote *)&remote_dummy[i];
    }
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    XpSeg segs[MFR_MAX_PAGES_PER_PACKET];
    uint32_t normal = 0;

    /* pages 2-7 (chunks 0 and 1), 8 and 10-12 around zero page 9 (chunks 2 and 3) */
    static const uint64_t pages[] = { 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    batch_of(b, pages, G_N_ELEMENTS(pages));
    unsigned nseg = mfr_send_packet_layout(b, r.src, PS, true, region, remotes, 4 * PS, offsets,
                                           &normal, segs);
    g_assert_cmpuint(normal, ==, 10);
    static const struct { unsigned remote; uint64_t off, pages; } want[] = {
        { 0, 2 * PS, 2 }, { 1, 0, 4 }, { 2, 0, 1 }, { 2, 2 * PS, 2 }, { 3, 0, 1 },
    };
    g_assert_cmpuint(nseg, ==, G_N_ELEMENTS(want));
    for (unsigned i = 0; i < nseg; i++) {
        g_assert_true(segs[i].remote == remotes[want[i].remote]);
        g_assert_true(segs[i].region == region);
        g_assert_cmphex(segs[i].remote_offset, ==, want[i].off);
        g_assert_cmpuint(segs[i].len, ==, want[i].pages * PS);
        g_assert_true((const uint8_t *)segs[i].addr ==
                      r.src + want[i].remote * 4 * PS + want[i].off);
    }
    g_free(b);
    ram_clear(&r);
}

static void batch_of(MfrBatch *b, const uint64_t *pages, uint32_t n)
{
    memset(b, 0, sizeof(*b));
    b->npages = n;
    for (uint32_t i = 0; i < n; i++) {
        b->offsets[i] = pages[i] * PS;
    }
}

static void test_layout_coalesce(void)
{
    bool zero[16] = { false };
    zero[5] = zero[12] = zero[13] = true;
    Ram r;
    ram_init(&r, 16, zero);
    MfrBatch *b = g_new0(MfrBatch, 1);

    /* 0-2 run, 4 alone, 5 zero splits 4 from 6-7, 9 alone, 11 then zeros 12-13, then 14-15 */
    static const uint64_t pages[] = { 0, 1, 2, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15 };
    batch_of(b, pages, G_N_ELEMENTS(pages));
    layout_check(&r, b, true, 6, 10);
    /* without zero detection zero pages are data, and runs join across them */
    memset(r.dst, 0xdd, r.npages * PS);
    layout_check(&r, b, false, 4, G_N_ELEMENTS(pages));
    /* a single page, a single zero page */
    static const uint64_t one[] = { 15 }, one_zero[] = { 12 };
    batch_of(b, one, 1);
    layout_check(&r, b, true, 1, 1);
    batch_of(b, one_zero, 1);
    layout_check(&r, b, true, 0, 0);
    g_free(b);
    ram_clear(&r);
}

static void test_layout_all_zero_and_all_data(void)
{
    const uint64_t n = MFR_MAX_PAGES_PER_PACKET;
    bool *zero = g_new(bool, n);
    uint64_t *pages = g_new(uint64_t, n);
    for (uint64_t i = 0; i < n; i++) {
        zero[i] = true;
        pages[i] = i;
    }
    Ram r;
    ram_init(&r, n, zero);
    MfrBatch *b = g_new0(MfrBatch, 1);
    batch_of(b, pages, n);
    layout_check(&r, b, true, 0, 0);
    ram_clear(&r);

    /* a full batch of adjacent data pages is one segment of the whole batch */
    memset(zero, 0, n * sizeof(bool));
    ram_init(&r, n, zero);
    layout_check(&r, b, true, 1, n);
    /* every other page: no two adjacent */
    uint32_t k = 0;
    for (uint64_t i = 0; i < n; i += 2) {
        pages[k++] = i;
    }
    batch_of(b, pages, k);
    layout_check(&r, b, true, k, k);
    g_free(b);
    ram_clear(&r);
    g_free(pages);
    g_free(zero);
}

/* The producer end to end for one round: bitmaps of several blocks -> batches -> packets. */
static void test_round_blocks(void)
{
    const uint64_t np[3] = { 70, 64, 300 };
    bool *zero = g_new0(bool, 300);
    for (uint64_t i = 0; i < 300; i += 7) {
        zero[i] = true;
    }
    Ram ram[3];
    uint64_t *bm[3];
    for (unsigned k = 0; k < 3; k++) {
        ram_init(&ram[k], np[k], zero);
        bm[k] = bitmap_new(np[k]);
    }
    /* block 0: pages 62..69 (across a word, up to the last page); block 1: clean;
     * block 2: everything */
    for (uint64_t p = 62; p < 70; p++) {
        bitmap_set(bm[0], p);
    }
    for (uint64_t p = 0; p < 300; p++) {
        bitmap_set(bm[2], p);
    }
    MfrBatch *b = g_new0(MfrBatch, 1);
    unsigned batches[3] = { 0 };
    uint64_t pages_sent[3] = { 0 };
    for (unsigned k = 0; k < 3; k++) {
        MfrDirtyScan sc;
        mfr_dirty_scan_init(&sc, bm[k], np[k]);
        uint32_t n;
        while ((n = mfr_batch_fill(b, &sc, k, 2, PS, 128)) > 0) {
            g_assert_cmpuint(b->block, ==, k);
            uint32_t normal = 0;
            for (uint32_t i = 0; i < n; i++) {
                normal += !zero[b->offsets[i] / PS];
            }
            /* runs are broken only by the zero pages (every 7th) */
            unsigned want_segs = 0;
            for (uint32_t i = 0; i < n; i++) {
                uint64_t pg = b->offsets[i] / PS;
                want_segs += !zero[pg] && (i == 0 || zero[pg - 1] ||
                                           b->offsets[i - 1] != b->offsets[i] - PS);
            }
            layout_check(&ram[k], b, true, want_segs, normal);
            batches[k]++;
            pages_sent[k] += n;
        }
        assert_bitmap_clear(bm[k], np[k]);
    }
    g_assert_cmpuint(batches[0], ==, 1);
    g_assert_cmpuint(pages_sent[0], ==, 8);
    g_assert_cmpuint(batches[1], ==, 0);
    g_assert_cmpuint(batches[2], ==, 3);
    g_assert_cmpuint(pages_sent[2], ==, 300);
    /* what was sent of block 0 arrived; the rest of it was not touched */
    g_assert_cmpint(memcmp(ram[0].dst + 62 * PS, ram[0].src + 62 * PS, 8 * PS), ==, 0);
    for (uint64_t i = 0; i < 62 * PS; i++) {
        g_assert_cmpuint(ram[0].dst[i], ==, 0xdd);
    }
    g_assert_cmpint(memcmp(ram[2].dst, ram[2].src, 300 * PS), ==, 0);
    g_assert_cmpuint(mfr_digest(ram[2].dst, 300 * PS), ==, mfr_digest(ram[2].src, 300 * PS));
    for (unsigned k = 0; k < 3; k++) {
        ram_clear(&ram[k]);
        g_free(bm[k]);
    }
    g_free(b);
    g_free(zero);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/batch/fill/empty", test_fill_empty);
    g_test_add_func("/batch/fill/all_dirty", test_fill_all_dirty);
    g_test_add_func("/batch/fill/word_boundary", test_fill_word_boundary);
    g_test_add_func("/batch/fill/edges", test_fill_edges);
    g_test_add_func("/batch/fill/limits", test_fill_limits);
    g_test_add_func("/batch/fill/large_offsets", test_fill_large_offsets);
    g_test_add_func("/batch/fill/random", test_fill_random);
    g_test_add_func("/batch/pick/round_robin", test_pick_round_robin);
    g_test_add_func("/batch/pick/skips_busy", test_pick_skips_busy);
    g_test_add_func("/batch/pick/bad_all_busy", test_pick_bad_all_busy);
    g_test_add_func("/batch/pick/one_channel", test_pick_one_channel);
    g_test_add_func("/batch/hand/swaps", test_hand_swaps);
    g_test_add_func("/batch/layout/coalesce", test_layout_coalesce);
    g_test_add_func("/batch/layout/chunks", test_layout_chunks);
    g_test_add_func("/batch/layout/all_zero_and_all_data", test_layout_all_zero_and_all_data);
    g_test_add_func("/batch/round/blocks", test_round_blocks);
    return g_test_run();
}
