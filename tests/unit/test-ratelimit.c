/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bandwidth cap's token bucket (multifd-rdma/ratelimit.c) on a fake clock, where sleeping
 * advances time, so every wait is exact: steady rate, burst after idle, a cap raised or
 * lowered mid-wait, a stop while throttled; and four real threads sharing one cap.
 */
#include "ratelimit.h"

#include <errno.h>
#include <stdatomic.h>

#define MS (1000 * 1000LL)
#define S (1000 * MS)

typedef struct {
    int64_t now;
    unsigned sleeps;
    int64_t longest;          /* longest single sleep */
    MfrRateLimit *rl;         /* for on_sleep */
    unsigned set_at_sleep;    /* 0: never; else at this sleep call set the rate... */
    uint64_t set_rate;        /* ...to this */
    int64_t stop_at;          /* stop() turns true from this time (0: never) */
} Fake;

static int64_t fake_now(void *opaque)
{
    return ((Fake *)opaque)->now;
}

static void fake_sleep(void *opaque, int64_t ns)
{
    Fake *f = opaque;
    g_assert_cmpint(ns, >, 0);
    f->now += ns;
    f->sleeps++;
    f->longest = MAX(f->longest, ns);
    if (f->set_at_sleep && f->sleeps == f->set_at_sleep) {
        mfr_ratelimit_set(f->rl, f->set_rate);
    }
}

static bool fake_stop(void *opaque)
{
    Fake *f = opaque;
    return f->stop_at && f->now >= f->stop_at;
}

static MfrRateLimit *fake_new(Fake *f, uint64_t rate)
{
    MfrClock c = { fake_now, fake_sleep, f };
    f->now = 1000 * S; /* anything but 0 */
    f->rl = mfr_ratelimit_new(rate, &c);
    return f->rl;
}

static void test_unlimited(void)
{
    Fake f = { 0 };
    MfrRateLimit *rl = fake_new(&f, 0);
    for (unsigned i = 0; i < 1000; i++) {
        g_assert_cmpint(mfr_ratelimit_take(rl, 1 << 20, NULL, NULL), ==, 0);
    }
    g_assert_cmpuint(f.sleeps, ==, 0);
    g_assert_cmpuint(mfr_ratelimit_bytes(rl), ==, 0); /* nothing charged without a cap */
    mfr_ratelimit_free(rl);
}

/* 10 MB at 1 MB/s take 10 s less the burst, to the nanosecond */
static void test_steady(void)
{
    Fake f = { 0 };
    MfrRateLimit *rl = fake_new(&f, 1000000);
    int64_t t0 = f.now;
    for (unsigned i = 0; i < 100; i++) {
        g_assert_cmpint(mfr_ratelimit_take(rl, 100000, NULL, NULL), ==, 0);
    }
    g_assert_cmpint(f.now - t0, ==, 10 * S - MFR_RATE_BURST_NS);
    g_assert_cmpint(f.longest, <=, MFR_RATE_SLICE_NS);
    g_assert_cmpuint(mfr_ratelimit_waited_ns(rl), ==, (uint64_t)(10 * S - MFR_RATE_BURST_NS));
    g_assert_cmpuint(mfr_ratelimit_bytes(rl), ==, 10000000);
    mfr_ratelimit_free(rl);
}

/* after an idle spell only the burst goes at once: idle time is not saved up */
static void test_burst(void)
{
    Fake f = { 0 };
    uint64_t rate = 100000000; /* 100 MB/s: the burst is 1 MB */
    MfrRateLimit *rl = fake_new(&f, rate);
    f.now += 60 * S;
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, NULL, NULL), ==, 0);
    g_assert_cmpuint(f.sleeps, ==, 0);
    int64_t t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 500000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now - t0, ==, 5 * MS); /* 0.5 MB at 100 MB/s */
    /* a packet larger than the burst waits for the part beyond it */
    f.now += 60 * S;
    t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 3000000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now - t0, ==, 30 * MS - MFR_RATE_BURST_NS);
    mfr_ratelimit_free(rl);
}

/* a cap lifted while a sender waits lets it go at the next slice */
static void test_raise_while_waiting(void)
{
    Fake f = { .set_at_sleep = 3, .set_rate = 0 };
    MfrRateLimit *rl = fake_new(&f, 1000); /* 1 MB would take 1000 s */
    int64_t t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now - t0, ==, 3 * MFR_RATE_SLICE_NS);
    g_assert_cmpuint(mfr_ratelimit_get(rl), ==, 0);
    /* and later packets are not charged the old reservation */
    t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now, ==, t0);
    /* raised, not lifted: the next packets pay the new rate only */
    mfr_ratelimit_set(rl, 1000);
    f.set_at_sleep = f.sleeps + 2;
    f.set_rate = 10000000; /* 10 MB/s */
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, NULL, NULL), ==, 0);
    t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 2000000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now - t0, ==, 200 * MS - MFR_RATE_BURST_NS);
    mfr_ratelimit_free(rl);
}

/* a cap lowered from unlimited applies to the next packet */
static void test_lower(void)
{
    Fake f = { 0 };
    MfrRateLimit *rl = fake_new(&f, 0);
    g_assert_cmpint(mfr_ratelimit_take(rl, 1 << 30, NULL, NULL), ==, 0);
    mfr_ratelimit_set(rl, 1000000);
    int64_t t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 2000000, NULL, NULL), ==, 0);
    g_assert_cmpint(f.now - t0, ==, 2 * S - MFR_RATE_BURST_NS);
    mfr_ratelimit_free(rl);
}

/* a stop (failure, cancel) ends a wait within one slice */
static void test_stop(void)
{
    Fake f = { 0 };
    MfrRateLimit *rl = fake_new(&f, 1000);
    f.stop_at = f.now + 55 * MS;
    int64_t t0 = f.now;
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, fake_stop, &f), ==, -ECANCELED);
    g_assert_cmpint(f.now - t0, >=, 55 * MS);
    g_assert_cmpint(f.now - t0, <=, 55 * MS + MFR_RATE_SLICE_NS);
    mfr_ratelimit_free(rl);
}

/* a stop that is true already costs no sleep when the packet must wait */
static void test_stop_at_once(void)
{
    Fake f = { 0 };
    MfrRateLimit *rl = fake_new(&f, 1000);
    f.stop_at = 1;
    g_assert_cmpint(mfr_ratelimit_take(rl, 1000000, fake_stop, &f), ==, -ECANCELED);
    g_assert_cmpuint(f.sleeps, ==, 0);
    mfr_ratelimit_free(rl);
}

typedef struct {
    MfrRateLimit *rl;
    unsigned packets;
    uint64_t bytes;
} Sender;

static gpointer sender(gpointer data)
{
    Sender *s = data;
    for (unsigned i = 0; i < s->packets; i++) {
        g_assert_cmpint(mfr_ratelimit_take(s->rl, s->bytes, NULL, NULL), ==, 0);
    }
    return NULL;
}

/* Four threads on the real clock share one cap: together never faster than it (less the
 * burst); the upper bound is loose, a loaded host may be slow to wake them. */
static void test_threads(void)
{
    uint64_t rate = 8000000;
    MfrRateLimit *rl = mfr_ratelimit_new(rate, NULL);
    Sender s = { rl, 64, 16384 };
    GThread *t[4];
    gint64 t0 = g_get_monotonic_time();
    for (unsigned i = 0; i < 4; i++) {
        t[i] = g_thread_new("sender", sender, &s);
    }
    for (unsigned i = 0; i < 4; i++) {
        g_thread_join(t[i]);
    }
    double el = (double)(g_get_monotonic_time() - t0) / 1e6;
    double ideal = 4.0 * 64 * 16384 / (double)rate;
    g_assert_cmpfloat(el, >=, ideal - (double)MFR_RATE_BURST_NS / 1e9 - 0.001);
    g_assert_cmpfloat(el, <=, ideal * 3);
    g_assert_cmpuint(mfr_ratelimit_bytes(rl), ==, 4u * 64 * 16384);
    mfr_ratelimit_free(rl);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ratelimit/unlimited", test_unlimited);
    g_test_add_func("/ratelimit/steady", test_steady);
    g_test_add_func("/ratelimit/burst", test_burst);
    g_test_add_func("/ratelimit/raise_while_waiting", test_raise_while_waiting);
    g_test_add_func("/ratelimit/lower", test_lower);
    g_test_add_func("/ratelimit/stop", test_stop);
    g_test_add_func("/ratelimit/stop_at_once", test_stop_at_once);
    g_test_add_func("/ratelimit/threads", test_threads);
    return g_test_run();
}
