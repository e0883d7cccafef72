/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bandwidth cap end to end (tcp here, rdma inside the soft-RoCE VM): a capped
 * migration's rate on the wire stays near the cap, a cap raised or lowered mid-migration
 * takes effect at once, and a cancel while throttled ends the session promptly. The upper
 * bounds are tight (the limiter must never let more through); the lower ones are loose (a
 * loaded host may be slower than the cap).
 */
#include "harness.h"

#include <string.h>

typedef struct {
    MfrSource *src;
    uint64_t change_after;  /* guest bytes sent when the progress callback changes the cap */
    uint64_t new_rate;
    bool changed;
    double t_changed;       /* monotonic s */
} TCap;

static void tcap_progress(const MfrProgress *p, void *opaque)
{
    TCap *c = opaque;
    if (c->src && !c->changed && c->change_after && p->sent_bytes >= c->change_after) {
        mfr_source_set_max_bandwidth(c->src, c->new_rate);
        c->changed = true;
        c->t_changed = g_get_monotonic_time() / 1e6;
    }
}

typedef struct {
    MfrStats st;
    GError *err;
    bool ok;
    double seconds;         /* run() */
} TCapRun;

/* Migrates a fresh guest of one block of size bytes (3/4 non-zero) capped at rate. */
static void tcap_run(const TCase *tc, uint64_t size, uint64_t rate, TCap *cap, TCapRun *r)
{
    uint8_t token[16];
    ttoken(token, 11);
    TGuest *g = tguest_new(1, size, 11);
    TDest *t = tdest_start(tc->listen_uri, token, 0);
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    cfg.uri = mfr_dest_uri(t->dst);
    memcpy(cfg.token, token, 16);
    cfg.max_bandwidth = rate;
    cfg.progress = tcap_progress;
    cfg.progress_opaque = cap;
    MfrSource *s = mfr_source_new(&cfg, g->block, g->nblocks, &tguest_dirty_ops, g, &r->err);
    g_assert_no_error(r->err);
    cap->src = s;
    double t0 = g_get_monotonic_time() / 1e6;
    r->ok = mfr_source_run(s, &r->err);
    r->seconds = g_get_monotonic_time() / 1e6 - t0;
    mfr_source_get_stats(s, &r->st);
    tdest_join(t);
    if (r->ok) {
        g_assert_true(t->ok);
        tcompare_ram(g, t->dst);
    }
    mfr_source_free(s);
    tdest_free(t);
    tguest_free(g);
}

/* bytes/s on the wire while data moved */
static double twire_rate(const MfrStats *st)
{
    g_assert_cmpfloat(st->transfer_ms, >, 0);
    return (double)st->wire_bytes / (st->transfer_ms / 1000);
}

/* cap for about 1.5 s of transfer: 3/4 of the block is sent */
static uint64_t tcap_rate(const TCase *tc)
{
    return tc->size / 2;
}

static void test_capped(gconstpointer data)
{
    const TCase *tc = data;
    uint64_t rate = tcap_rate(tc);
    TCap cap = { 0 };
    TCapRun r = { 0 };
    tcap_run(tc, tc->size, rate, &cap, &r);
    g_assert_no_error(r.err);
    double got = twire_rate(&r.st);
    g_test_message("cap %.1f MB/s: %.1f MB/s on the wire (%.1f MiB in %.0f ms)", rate / 1e6,
                   got / 1e6, r.st.wire_bytes / 1048576.0, r.st.transfer_ms);
    g_assert_cmpfloat(got, <=, 1.10 * (double)rate);
    g_assert_cmpfloat(got, >=, 0.60 * (double)rate);
}

/* the cap lifted once 1/8 of the block went: the rest goes at the link's speed */
static void test_raise(gconstpointer data)
{
    const TCase *tc = data;
    uint64_t rate = tcap_rate(tc) / 8; /* capped all the way: about 12 s */
    TCap cap = { .change_after = tc->size / 8, .new_rate = 0 };
    TCapRun r = { 0 };
    tcap_run(tc, tc->size, rate, &cap, &r);
    g_assert_no_error(r.err);
    g_assert_true(cap.changed);
    double capped_s = 0.75 * (double)tc->size / (double)rate;
    g_test_message("capped all the way: %.1f s; lifted after 1/8: %.1f s", capped_s, r.seconds);
    g_assert_cmpfloat(r.seconds, <, capped_s / 2);
}

/* the cap lowered to 1/8 once 1/8 of the block went: the rest takes far longer */
static void test_lower(gconstpointer data)
{
    const TCase *tc = data;
    uint64_t rate = tcap_rate(tc) * 2; /* about 0.75 s capped all the way */
    TCap cap = { .change_after = tc->size / 8, .new_rate = rate / 8 };
    TCapRun r = { 0 };
    tcap_run(tc, tc->size, rate, &cap, &r);
    g_assert_no_error(r.err);
    g_assert_true(cap.changed);
    /* after the change at most 0.75 - 1/8 - what one progress tick lets through */
    double after_s = 0.4 * (double)tc->size / (double)(rate / 8);
    g_test_message("lowered after 1/8: %.1f s (at least %.1f s expected)", r.seconds, after_s);
    g_assert_cmpfloat(r.seconds, >=, after_s);
}

typedef struct {
    MfrSource *src;
    double t_cancel;
} TCancel;

static void tcancel_progress(const MfrProgress *p, void *opaque)
{
    TCancel *c = opaque;
    if (p->phase == MFR_PHASE_PRECOPY && p->sent_bytes > 0 && !c->t_cancel) {
        c->t_cancel = g_get_monotonic_time() / 1e6;
        mfr_source_cancel(c->src);
    }
}

/* A cancel while every channel sleeps under a tiny cap (a packet takes seconds): run()
 * ends within a second, not after the packets' reservations (the default timeout is 5 s). */
static void test_cancel_throttled(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 12);
    TGuest *g = tguest_new(1, tc->size, 12);
    TDest *t = tdest_start(tc->listen_uri, token, 0);
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    cfg.uri = mfr_dest_uri(t->dst);
    memcpy(cfg.token, token, 16);
    cfg.max_bandwidth = 256 * 1024; /* a 512 KiB packet: 2 s; four channels: 8 s */
    TCancel c = { 0 };
    cfg.progress = tcancel_progress;
    cfg.progress_opaque = &c;
    GError *err = NULL;
    MfrSource *s = mfr_source_new(&cfg, g->block, g->nblocks, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    c.src = s;
    g_assert_false(mfr_source_run(s, &err));
    double took = g_get_monotonic_time() / 1e6 - c.t_cancel;
    g_assert_error(err, MFR_ERROR, MFR_ERROR_CANCELLED);
    g_clear_error(&err);
    g_test_message("run() returned %.3f s after the cancel", took);
    g_assert_cmpfloat(c.t_cancel, >, 0);
    g_assert_cmpfloat(took, <, 1.0);
    tdest_join(t);
    g_assert_false(t->ok);
    mfr_source_free(s);
    tdest_free(t);
    tguest_free(g);
}

int main(int argc, char **argv)
{
    TCase *cases[2];
    if (!ttest_init(&argc, &argv, 48u << 20, 8u << 20, cases)) {
        return 0;
    }
    for (unsigned i = 0; i < 2; i++) {
        const TCase *tc = cases[i];
        if (!tc) {
            continue;
        }
        ttest_add("ratelimit", tc, "capped", test_capped);
        ttest_add("ratelimit", tc, "raise", test_raise);
        ttest_add("ratelimit", tc, "lower", test_lower);
        ttest_add("ratelimit", tc, "cancel_throttled", test_cancel_throttled);
    }
    return g_test_run();
}
