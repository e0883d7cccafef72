/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stepwise API end to end (tcp here, rdma inside the soft-RoCE VM): a client-driven
 * precopy loop checked byte for byte, the destination served in library threads and
 * watched through its eventfd, a late token, every misuse with its exact error, abort at
 * each point (no thread, no pinned page left), and that every library thread blocks signals.
 */
#include "engine.h"
#include "harness.h"
#include "xp.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

/* A destination served by mfr_dest_start(), allocating fresh zeroed blocks on announce. */
typedef struct {
    MfrDest *dst;
    void *maps[4];
    uint64_t map_len[4];
    unsigned nmaps;
} TStepDest;

static bool tstep_alloc(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                        void **host, GError **error)
{
    TStepDest *t = opaque;
    g_assert_cmpuint(t->nmaps, <, 4);
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(p != MAP_FAILED);
    t->maps[t->nmaps] = p;
    t->map_len[t->nmaps++] = length;
    *host = p;
    return true;
}

static TStepDest *tstep_dest_new(const TCase *tc, const uint8_t *token)
{
    TStepDest *t = g_new0(TStepDest, 1);
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    cfg.uri = tc->listen_uri;
    if (token) {
        memcpy(cfg.token, token, 16);
    }
    cfg.alloc_block = tstep_alloc;
    cfg.alloc_opaque = t;
    cfg.memory_zeroed = true;
    GError *err = NULL;
    t->dst = mfr_dest_new(&cfg, &err);
    g_assert_no_error(err);
    return t;
}

static void tstep_dest_free(TStepDest *t)
{
    mfr_dest_free(t->dst);
    for (unsigned i = 0; i < t->nmaps; i++) {
        munmap(t->maps[i], t->map_len[i]);
    }
    g_free(t);
}

/* Whether the destination's eventfd is readable within timeout_ms. */
static bool tstep_ended(MfrDest *dst, int timeout_ms)
{
    struct pollfd p = { .fd = mfr_dest_event_fd(dst), .events = POLLIN };
    int r = poll(&p, 1, timeout_ms);
    g_assert_cmpint(r, >=, 0);
    return r == 1 && (p.revents & POLLIN);
}

static MfrSource *tstep_source_new(TGuest *g, MfrDest *dst, const uint8_t *token,
                                   unsigned channels)
{
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    cfg.uri = mfr_dest_uri(dst);
    if (token) {
        memcpy(cfg.token, token, 16);
    }
    cfg.channels = channels;
    GError *err = NULL;
    MfrSource *s = mfr_source_new(&cfg, g->block, g->nblocks, NULL, NULL, &err);
    g_assert_no_error(err);
    return s;
}

/* err is MFR_ERROR code (with text in its message, if given); cleared for the next call. */
static void tassert_err(GError **err, int code, const char *text)
{
    g_assert_error(*err, MFR_ERROR, code);
    if (text) {
        g_assert_nonnull(strstr((*err)->message, text));
    }
    g_clear_error(err);
}

/* One session's pieces: a guest, a started destination, a source (started if asked), all on
 * the token made from seed. */
typedef struct {
    TGuest *g;
    TStepDest *d;
    MfrSource *s;
} TStep;

static void tstep_open(TStep *t, const TCase *tc, unsigned nblocks, uint64_t size,
                       uint8_t seed, unsigned channels, bool start)
{
    uint8_t token[16];
    ttoken(token, seed);
    t->g = tguest_new(nblocks, size, seed);
    t->d = tstep_dest_new(tc, token);
    GError *err = NULL;
    g_assert_true(mfr_dest_start(t->d->dst, &err));
    g_assert_no_error(err);
    t->s = tstep_source_new(t->g, t->d->dst, token, channels);
    if (start) {
        g_assert_true(mfr_source_start(t->s, &err));
        g_assert_no_error(err);
    }
}

static void tstep_close(TStep *t)
{
    mfr_source_free(t->s);
    tstep_dest_free(t->d);
    tguest_free(t->g);
}

/* Overwrites every step-th page of a block with new bytes (the guest dirtying it). */
static void tstep_redirty(TGuest *g, unsigned b, unsigned step, uint8_t fill)
{
    for (uint64_t off = 0; off < g->block[b].length; off += (uint64_t)step * 4096) {
        memset((uint8_t *)g->block[b].host + off, fill, 4096);
    }
}

static void tstep_queue_redirtied(MfrSource *s, TGuest *g, unsigned b, unsigned step)
{
    /* newest-first order: queue_page() takes pages in any order */
    int64_t npages = (int64_t)(g->block[b].length / 4096);
    for (int64_t p = (npages - 1) / step * step; p >= 0; p -= step) {
        g_assert_cmpint(mfr_source_queue_page(s, b, (uint64_t)p * 4096), ==, 0);
    }
}

/* The client-driven loop: everything, barrier, re-dirty, barrier, stop, the rest, complete. */
static void test_loop(gconstpointer data)
{
    TStep t;
    tstep_open(&t, data, 2, ((const TCase *)data)->size, 31, 3, true);
    TGuest *g = t.g;
    TStepDest *d = t.d;
    MfrSource *s = t.s;
    GError *err = NULL;
    g_assert_false(tstep_ended(d->dst, 0));
    int b1 = mfr_source_block_index(s, "ram1");
    g_assert_cmpint(b1, ==, 1);
    g_assert_cmpint(mfr_source_block_index(s, "nope"), ==, -1);
    /* round 1: block 0 page by page, block 1 in runs of uneven length */
    for (uint64_t off = 0; off < g->block[0].length; off += 4096) {
        g_assert_cmpint(mfr_source_queue_page(s, 0, off), ==, 0);
    }
    uint64_t npages1 = g->block[1].length / 4096, run = 1;
    for (uint64_t p = 0; p < npages1; p += run, run = run % 300 + 7) {
        g_assert_cmpint(mfr_source_queue_pages(s, b1, p * 4096, MIN(run, npages1 - p)), ==, 0);
    }
    g_assert_true(mfr_source_barrier(s, &err));
    g_assert_no_error(err);
    /* the snapshot published by the barrier: one round, the channels, no end yet */
    MfrStats mid;
    mfr_source_get_stats(s, &mid);
    g_assert_cmpuint(mid.rounds, ==, 1);
    g_assert_cmpuint(mid.channels, ==, 3);
    g_assert_cmpfloat(mid.transfer_ms, >, 0);
    g_assert_cmpfloat(mid.total_ms, ==, 0);
    /* round 2: the same pages again, with new contents, on whatever channels */
    tstep_redirty(g, 0, 3, 0xa5);
    tstep_redirty(g, 1, 5, 0x5a);
    tstep_queue_redirtied(s, g, 0, 3);
    tstep_queue_redirtied(s, g, 1, 5);
    g_assert_true(mfr_source_barrier(s, &err));
    g_assert_no_error(err);
    /* switchover: the guest stops after one more write; the rest goes with complete() */
    tstep_redirty(g, 0, 7, 0x3c);
    mfr_source_mark_stopped(s);
    tstep_queue_redirtied(s, g, 0, 7);
    g_assert_true(mfr_source_complete(s, &err));
    g_assert_no_error(err);
    g_assert_false(mfr_source_error(s, &err));
    g_assert_no_error(err);
    MfrStats st;
    mfr_source_get_stats(s, &st);
    g_assert_true(st.verified);
    g_assert_cmpuint(st.rounds, ==, 3);
    uint64_t n0 = g->block[0].length / 4096;
    g_assert_cmpuint(st.normal_pages + st.zero_pages, ==,
                     n0 + npages1 + (n0 - 1) / 3 + 1 + (npages1 - 1) / 5 + 1 + (n0 - 1) / 7 + 1);
    g_assert_cmpfloat(st.downtime_ms, >, 0);

    g_assert_true(tstep_ended(d->dst, 10000));
    g_assert_true(mfr_dest_wait(d->dst, &err));
    g_assert_no_error(err);
    /* asking again gives the same answer */
    g_assert_true(mfr_dest_wait(d->dst, &err));
    MfrStats dst;
    mfr_dest_get_stats(d->dst, &dst);
    g_assert_true(dst.verified);
    g_assert_cmpuint(dst.rounds, ==, 3);
    tcompare_ram(g, d->dst);
    tstep_close(&t);
}

/* The round barrier orders two copies of a page sent on different channels. The seam holds
 * destination channel 0 on the old copy until the other channel finished a packet after it:
 * with the barrier that packet is channel 1's SYNC, so the old copy lands, is acknowledged,
 * and only then is the new one sent; without the barrier it would be the new copy, and the
 * old one would land over it (verification fails, and the bytes differ). */
static void test_ordering_held(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 30);
    TGuest *g = tguest_new(1, 1 << 20, 40);
    memset(g->block[0].host, 0, g->block[0].length); /* one page is all that moves */
    TStepDest *d = tstep_dest_new(tc, token);
    mfr_dest_inject_hold(d->dst, 0);
    GError *err = NULL;
    g_assert_true(mfr_dest_start(d->dst, &err));
    MfrSource *s = tstep_source_new(g, d->dst, token, 2);
    g_assert_true(mfr_source_start(s, &err));
    g_assert_no_error(err);
    uint8_t *page = (uint8_t *)g->block[0].host + 5 * 4096;
    memset(page, 0x11, 4096);
    g_assert_cmpint(mfr_source_queue_page(s, 0, 5 * 4096), ==, 0); /* channel 0 */
    g_assert_true(mfr_source_barrier(s, &err));
    g_assert_no_error(err);
    /* the old copy has reached destination channel 0 (with the barrier, long since) */
    mfr_dest_hold_wait(d->dst);
    memset(page, 0x22, 4096);
    g_assert_cmpint(mfr_source_queue_page(s, 0, 5 * 4096), ==, 0); /* channel 1 */
    bool ok = mfr_source_complete(s, &err);
    g_assert_no_error(err);
    g_assert_true(ok);
    g_assert_true(mfr_dest_wait(d->dst, &err));
    g_assert_no_error(err);
    unsigned n = 0;
    const MfrRamBlock *db = mfr_dest_blocks(d->dst, &n);
    g_assert_cmpuint(((uint8_t *)db[0].host)[5 * 4096 + 100], ==, 0x22);
    tcompare_ram(g, d->dst);
    MfrStats st;
    mfr_dest_get_stats(d->dst, &st);
    g_assert_cmpuint(st.channel[0].pages, ==, 1);
    g_assert_cmpuint(st.channel[1].pages, ==, 1);
    mfr_source_free(s);
    tstep_dest_free(d);
    tguest_free(g);
}

/* A caller that stops its workload in round 1 after touching two pages: over rdma the
 * chunks it never needed are taken before SYNC(1) (in the switchover), the rest of RAM is
 * zero on both sides, and verification holds. */
static void test_partial_round(gconstpointer data)
{
    const TCase *tc = data;
    TStep t;
    tstep_open(&t, tc, 2, tc->size, 41, 2, false);
    for (unsigned b = 0; b < 2; b++) {
        memset(t.g->block[b].host, 0, t.g->block[b].length);
    }
    uint64_t last = t.g->block[1].length - 4096;
    memset(t.g->block[0].host, 0x5c, 4096);
    memset((uint8_t *)t.g->block[1].host + last, 0xc5, 4096);
    GError *err = NULL;
    g_assert_true(mfr_source_start(t.s, &err));
    g_assert_no_error(err);
    g_assert_cmpint(mfr_source_queue_page(t.s, 0, 0), ==, 0);
    mfr_source_mark_stopped(t.s);
    g_assert_cmpint(mfr_source_queue_page(t.s, 1, last), ==, 0);
    bool ok = mfr_source_complete(t.s, &err);
    g_assert_no_error(err);
    g_assert_true(ok);
    MfrStats st;
    mfr_source_get_stats(t.s, &st);
    g_assert_true(st.verified);
    g_assert_cmpuint(st.rounds, ==, 1);
    g_assert_cmpuint(st.normal_pages, ==, 2);
    g_assert_true(mfr_dest_wait(t.d->dst, &err));
    g_assert_no_error(err);
    tcompare_ram(t.g, t.d->dst);
    tstep_close(&t);
}

/* mfr_dest_run() and mfr_source_run() still pair with the stepwise halves. */
static void test_run_composed(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 22);
    TGuest *g = tguest_new(1, tc->size, 32);
    TStepDest *d = tstep_dest_new(tc, token);
    GError *err = NULL;
    g_assert_true(mfr_dest_start(d->dst, &err));
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    cfg.uri = mfr_dest_uri(d->dst);
    memcpy(cfg.token, token, 16);
    MfrSource *s = mfr_source_new(&cfg, g->block, 1, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    g_assert_true(mfr_source_run(s, &err));
    g_assert_no_error(err);
    /* run() started the session: the stepwise calls see it ended */
    g_assert_false(mfr_source_start(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    g_assert_true(mfr_dest_wait(d->dst, &err));
    g_assert_no_error(err);
    tcompare_ram(g, d->dst);
    mfr_source_free(s);
    tstep_dest_free(d);
    tguest_free(g);
}

/* The token arrives after mfr_dest_new(): the old one is refused, the new one served. */
static void test_token_late(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t old[16] = { 0 }, token[16];
    ttoken(token, 23);
    TGuest *g = tguest_new(1, tc->size / 4, 33);
    TStepDest *d = tstep_dest_new(tc, NULL);
    mfr_dest_set_token(d->dst, token);
    GError *err = NULL;
    g_assert_true(mfr_dest_start(d->dst, &err));

    MfrSource *bad = tstep_source_new(g, d->dst, old, 1);
    g_assert_false(mfr_source_start(bad, &err));
    tassert_err(&err, MFR_ERROR_REJECTED, "bad token");
    mfr_source_free(bad);
    g_assert_false(tstep_ended(d->dst, 0));

    MfrSource *s = tstep_source_new(g, d->dst, token, 1);
    g_assert_true(mfr_source_start(s, &err));
    g_assert_no_error(err);
    g_assert_cmpint(mfr_source_queue_pages(s, 0, 0, g->block[0].length / 4096), ==, 0);
    g_assert_true(mfr_source_complete(s, &err));
    g_assert_no_error(err);
    g_assert_true(mfr_dest_wait(d->dst, &err));
    g_assert_no_error(err);
    tcompare_ram(g, d->dst);
    mfr_source_free(s);
    tstep_dest_free(d);
    tguest_free(g);
}

static void tassert_source_error(MfrSource *s, int code, const char *text)
{
    GError *err = NULL;
    g_assert_true(mfr_source_error(s, &err));
    tassert_err(&err, code, text);
}

/* Control-path calls in the wrong order: MFR_ERROR_USAGE, the session untouched. */
static void test_bad_order(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 24);
    TGuest *g = tguest_new(1, tc->size / 4, 34);
    TStepDest *d = tstep_dest_new(tc, token);
    GError *err = NULL;
    g_assert_false(mfr_dest_wait(d->dst, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    g_assert_true(mfr_dest_start(d->dst, &err));
    g_assert_false(mfr_dest_start(d->dst, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);

    MfrSource *s = tstep_source_new(g, d->dst, token, 2);
    g_assert_false(mfr_source_barrier(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, "before mfr_source_start()");
    g_assert_false(mfr_source_complete(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    g_assert_false(mfr_source_run(s, &err)); /* no dirty tracking */
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    g_assert_false(mfr_source_error(s, &err));
    g_assert_true(mfr_source_start(s, &err));
    g_assert_no_error(err);
    g_assert_false(mfr_source_start(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, "called twice");
    /* none of that hurt the session */
    g_assert_cmpint(mfr_source_queue_pages(s, 0, 0, g->block[0].length / 4096), ==, 0);
    g_assert_true(mfr_source_complete(s, &err));
    g_assert_no_error(err);
    g_assert_true(mfr_dest_wait(d->dst, &err));
    tcompare_ram(g, d->dst);

    /* after the end: the control path refuses, the hot path fails the (ended) session */
    g_assert_false(mfr_source_barrier(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, "after the session ended");
    g_assert_false(mfr_source_complete(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    g_assert_cmpint(mfr_source_queue_page(s, 0, 0), ==, -EINVAL);
    tassert_source_error(s, MFR_ERROR_USAGE, "after the session ended");
    mfr_source_abort(s); /* nothing left to end */
    mfr_source_free(s);
    tstep_dest_free(d);
    tguest_free(g);
}

/* A page queued before start(): -EINVAL, and start() reports the misuse. */
static void test_bad_queue_before_start(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(1, tc->size / 4, 35);
    TStepDest *d = tstep_dest_new(tc, NULL);
    MfrSource *s = tstep_source_new(g, d->dst, NULL, 1);
    g_assert_cmpint(mfr_source_queue_page(s, 0, 0), ==, -EINVAL);
    tassert_source_error(s, MFR_ERROR_USAGE, "before mfr_source_start()");
    GError *err = NULL;
    g_assert_false(mfr_source_start(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    mfr_source_free(s);
    tstep_dest_free(d);
    tguest_free(g);
}

/* Pages outside their block, or not on a page boundary: -EINVAL and MFR_ERROR_USAGE, the
 * session fails (barrier and later pages report it), the destination hears of it. */
static void test_bad_page(gconstpointer data)
{
    const TCase *tc = data;
    uint64_t len = tc->size / 4;
    struct {
        unsigned block;
        uint64_t offset, npages;
        const char *text;
    } bad[] = {
        { 1, 0, 1, "block 1, the source has 1 blocks" },
        { 0, len, 1, "are not whole" },
        { 0, 4095, 1, "are not whole" },
        { 0, 100, 1, "are not whole" },
        { 0, len - 4096, 2, "are not whole" },
        { 0, 0, 0, "are not whole" },
        { 0, 4096, UINT64_MAX / 2, "are not whole" },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
        TStep t;
        tstep_open(&t, tc, 1, len, 36, 2, true);
        TStepDest *d = t.d;
        MfrSource *s = t.s;
        GError *err = NULL;
        g_assert_cmpint(mfr_source_queue_pages(s, 0, 0, 3), ==, 0);
        int r = bad[i].npages == 1 ? mfr_source_queue_page(s, bad[i].block, bad[i].offset)
                                   : mfr_source_queue_pages(s, bad[i].block, bad[i].offset,
                                                            bad[i].npages);
        g_assert_cmpint(r, ==, -EINVAL);
        tassert_source_error(s, MFR_ERROR_USAGE, bad[i].text);
        g_assert_cmpint(mfr_source_queue_page(s, 0, 0), ==, -EINVAL);
        g_assert_false(mfr_source_barrier(s, &err));
        tassert_err(&err, MFR_ERROR_USAGE, NULL);
        g_assert_false(mfr_source_complete(s, &err));
        tassert_err(&err, MFR_ERROR_USAGE, NULL);
        g_assert_true(tstep_ended(d->dst, 10000));
        g_assert_false(mfr_dest_wait(d->dst, &err));
        tassert_err(&err, MFR_ERROR_PEER, NULL);
        tstep_close(&t);
    }
}

/* After a failure (here a cancel) barrier and queue report it, with its errno. */
static void test_bad_barrier_after_failure(gconstpointer data)
{
    const TCase *tc = data;
    TStep t;
    tstep_open(&t, tc, 1, tc->size / 4, 37, 2, true);
    TStepDest *d = t.d;
    MfrSource *s = t.s;
    GError *err = NULL;
    g_assert_cmpint(mfr_source_queue_pages(s, 0, 0, 5), ==, 0);
    g_assert_true(mfr_source_barrier(s, &err));
    mfr_source_cancel(s);
    g_assert_cmpint(mfr_source_queue_page(s, 0, 4096), ==, -ECANCELED);
    g_assert_false(mfr_source_barrier(s, &err));
    tassert_err(&err, MFR_ERROR_CANCELLED, NULL);
    tassert_source_error(s, MFR_ERROR_CANCELLED, NULL);
    g_assert_true(tstep_ended(d->dst, 10000));
    g_assert_false(mfr_dest_wait(d->dst, &err));
    tassert_err(&err, MFR_ERROR_CANCELLED, NULL);
    mfr_source_abort(s);
    tstep_close(&t);
}

/* The destination's eventfd fires when it fails too (here: the source dies unannounced,
 * its control connection closing under the destination). */
static void test_event_fd_failure(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 27);
    TStepDest *d = tstep_dest_new(tc, token);
    GError *err = NULL;
    g_assert_true(mfr_dest_start(d->dst, &err));
    g_assert_false(tstep_ended(d->dst, 0));
    mfr_dest_cancel(d->dst);
    g_assert_true(tstep_ended(d->dst, 10000));
    g_assert_false(mfr_dest_wait(d->dst, &err));
    tassert_err(&err, MFR_ERROR_CANCELLED, NULL);
    tstep_dest_free(d);
}

typedef enum {
    ABORT_NEW,       /* never started */
    ABORT_STARTED,   /* channels up, nothing queued */
    ABORT_QUEUED,    /* a partial batch and batches in flight */
    ABORT_BARRIERED, /* after a round */
    ABORT_STOPPED,   /* in the switchover */
} TAbortPoint;

/* abort() at each point: the source returns to its thread count and pins nothing, the
 * destination ends with the peer's cancel. */
static void tabort_at(const TCase *tc, TAbortPoint at)
{
    unsigned threads0 = tthread_count();
    uint64_t pinned0 = tpinned_bytes();
    TStep t;
    tstep_open(&t, tc, 2, tc->size / 2, 38, 4, at >= ABORT_STARTED);
    TGuest *g = t.g;
    TStepDest *d = t.d;
    MfrSource *s = t.s;
    GError *err = NULL;
    if (at >= ABORT_QUEUED) {
        g_assert_cmpint(mfr_source_queue_pages(s, 1, 4096, g->block[1].length / 4096 - 1),
                        ==, 0);
        g_assert_cmpint(mfr_source_queue_page(s, 0, 0), ==, 0);
    }
    if (at >= ABORT_BARRIERED) {
        g_assert_true(mfr_source_barrier(s, &err));
    }
    if (at >= ABORT_STOPPED) {
        mfr_source_mark_stopped(s);
        g_assert_cmpint(mfr_source_queue_page(s, 0, 4096), ==, 0);
    }
    mfr_source_abort(s);
    mfr_source_abort(s);
    tassert_source_error(s, MFR_ERROR_CANCELLED, "aborted");
    g_assert_cmpint(mfr_source_queue_page(s, 0, 0), ==, -ECANCELED);
    g_assert_false(mfr_source_complete(s, &err));
    tassert_err(&err, MFR_ERROR_USAGE, NULL);
    if (at == ABORT_NEW) {
        mfr_dest_cancel(d->dst); /* nobody will come */
    }
    g_assert_false(mfr_dest_wait(d->dst, &err));
    tassert_err(&err, MFR_ERROR_CANCELLED, at == ABORT_NEW ? "destination: migration cancelled"
                                                          : "cancelled by peer");
    /* both sides ended (the source object still exists): no thread, no pinned page left */
    g_assert_cmpuint(tthread_wait_count(threads0), ==, threads0);
    g_assert_cmpuint(tpinned_bytes(), ==, pinned0);
    tstep_close(&t);
}

static void test_abort(gconstpointer data)
{
    for (TAbortPoint at = ABORT_NEW; at <= ABORT_STOPPED; at++) {
        tabort_at(data, at);
    }
}

/* SigBlk of every thread named mfr-*; the number of such threads. */
static unsigned tlibrary_threads_blocking(void)
{
    GDir *dir = g_dir_open("/proc/self/task", 0, NULL);
    g_assert_nonnull(dir);
    unsigned n = 0;
    const char *tid;
    while ((tid = g_dir_read_name(dir))) {
        g_autofree char *comm_path = g_strdup_printf("/proc/self/task/%s/comm", tid);
        g_autofree char *status_path = g_strdup_printf("/proc/self/task/%s/status", tid);
        g_autofree char *comm = NULL, *status = NULL;
        if (!g_file_get_contents(comm_path, &comm, NULL, NULL) ||
            !g_file_get_contents(status_path, &status, NULL, NULL)) {
            continue; /* the thread ended meanwhile */
        }
        if (!g_str_has_prefix(comm, "mfr-")) {
            continue;
        }
        const char *p = strstr(status, "SigBlk:");
        g_assert_nonnull(p);
        uint64_t blk = g_ascii_strtoull(p + strlen("SigBlk:"), NULL, 16);
        /* every signal a process can be sent, except those nobody can block */
        int sigs[] = { SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM,
                       SIGCHLD, SIGCONT, SIGIO, SIGWINCH, SIGRTMIN, SIGRTMAX };
        for (unsigned i = 0; i < G_N_ELEMENTS(sigs); i++) {
            if (!(blk & (1ULL << (sigs[i] - 1)))) {
                g_error("thread %s (%s) does not block signal %d: SigBlk %016" G_GINT64_MODIFIER
                        "x", tid, g_strchomp(comm), sigs[i], blk);
            }
        }
        n++;
    }
    g_dir_close(dir);
    return n;
}

/* During a migration every thread of the library, on both sides, blocks all signals. */
static void test_signals_blocked(gconstpointer data)
{
    const TCase *tc = data;
    TStep t;
    tstep_open(&t, tc, 1, tc->size / 4, 39, 3, true);
    TGuest *g = t.g;
    TStepDest *d = t.d;
    MfrSource *s = t.s;
    GError *err = NULL;
    g_assert_cmpint(mfr_source_queue_pages(s, 0, 0, g->block[0].length / 4096), ==, 0);
    g_assert_true(mfr_source_barrier(s, &err));
    /* source: 3 senders + control reader; destination: session + 3 receivers + control
     * reader (registration threads, on rdma, may have ended already) */
    g_assert_cmpuint(tlibrary_threads_blocking(), >=, 3 + 1 + 1 + 3 + 1);
    g_assert_true(mfr_source_complete(s, &err));
    g_assert_true(mfr_dest_wait(d->dst, &err));
    g_assert_no_error(err);
    tstep_close(&t);
}

int main(int argc, char **argv)
{
    TCase *cases[2];
    if (!ttest_init(&argc, &argv, 8 << 20, 4 << 20, cases)) {
        return 0;
    }
    for (unsigned i = 0; i < 2; i++) {
        TCase *tc = cases[i];
        if (!tc) {
            continue;
        }
#define ADD(name, fn) ttest_add("stepwise", tc, name, fn)
        ADD("loop", test_loop);
        ADD("partial_round", test_partial_round);
        ADD("abort", test_abort);
        ADD("signals_blocked", test_signals_blocked);
        if (tc == cases[0]) {
            /* transport-independent API checks: once is enough */
            ADD("run_composed", test_run_composed);
            /* the seam delays landing, which rdma does before the header arrives */
            ADD("ordering_held", test_ordering_held);
            ADD("token_late", test_token_late);
            ADD("event_fd_failure", test_event_fd_failure);
            ADD("bad_order", test_bad_order);
            ADD("bad_queue_before_start", test_bad_queue_before_start);
            ADD("bad_page", test_bad_page);
            ADD("bad_barrier_after_failure", test_bad_barrier_after_failure);
        }
#undef ADD
    }
    return g_test_run();
}
