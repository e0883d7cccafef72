/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bandwidth cap as a virtual-time token bucket (GCRA): `tat` is the moment the bytes
 * charged so far will have drained at the cap. A packet moves tat by its cost and may go
 * once tat minus the burst allowance has come, so the channels of a session share one
 * atomic and never a lock.
 */
#include "ratelimit.h"

#include "channel.h"

#include <errno.h>
#include <time.h>

struct MfrRateLimit {
    _Atomic uint64_t rate;  /* bytes/s; 0 unlimited */
    _Atomic int64_t tat;    /* ns on clock */
    _Atomic uint64_t gen;   /* bumped by set(): waiting senders let go */
    _Atomic uint64_t waited_ns, bytes;
    MfrClock clock;
};

static int64_t real_now_ns(void *opaque)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void real_sleep_ns(void *opaque, int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
    /* an early wake-up (signal) only means one more look at the clock */
    nanosleep(&ts, NULL);
}

MfrRateLimit *mfr_ratelimit_new(uint64_t rate, const MfrClock *clock)
{
    MfrRateLimit *rl = g_new0(MfrRateLimit, 1);
    rl->clock = clock ? *clock : (MfrClock){ real_now_ns, real_sleep_ns, NULL };
    atomic_init(&rl->rate, rate);
    atomic_init(&rl->tat, rl->clock.now_ns(rl->clock.opaque));
    return rl;
}

void mfr_ratelimit_free(MfrRateLimit *rl)
{
    g_free(rl);
}

void mfr_ratelimit_set(MfrRateLimit *rl, uint64_t rate)
{
    /* What was reserved at the old rate is forgotten: a cap raised from 1 MB/s must not
     * keep senders behind reservations made at 1 MB/s. */
    atomic_store(&rl->tat, rl->clock.now_ns(rl->clock.opaque));
    atomic_store(&rl->rate, rate);
    atomic_fetch_add(&rl->gen, 1);
}

uint64_t mfr_ratelimit_get(MfrRateLimit *rl)
{
    return atomic_load_explicit(&rl->rate, memory_order_relaxed);
}

/* ns the bytes take at rate, saturating far beyond any wait that matters */
static int64_t cost_ns(uint64_t bytes, uint64_t rate)
{
    unsigned __int128 ns = (unsigned __int128)bytes * 1000000000u / rate;
    return ns > (unsigned __int128)(INT64_MAX / 4) ? INT64_MAX / 4 : (int64_t)ns;
}

int mfr_ratelimit_take(MfrRateLimit *rl, uint64_t bytes, bool (*stop)(void *), void *opaque)
{
    uint64_t gen = atomic_load(&rl->gen);
    uint64_t rate = atomic_load_explicit(&rl->rate, memory_order_relaxed);
    if (rate == 0) {
        return 0;
    }
    atomic_fetch_add_explicit(&rl->bytes, bytes, memory_order_relaxed);
    int64_t now = rl->clock.now_ns(rl->clock.opaque);
    int64_t cost = cost_ns(bytes, rate);
    int64_t old = atomic_load(&rl->tat), tat;
    do {
        /* an idle bucket holds at most the burst: tat never lags behind now */
        tat = (old > now ? old : now) + cost;
    } while (!atomic_compare_exchange_weak(&rl->tat, &old, tat));
    int64_t go = tat - MFR_RATE_BURST_NS;
    int64_t t0 = now;
    int r = 0;
    while (now < go) {
        if (stop && stop(opaque)) {
            r = -ECANCELED;
            break;
        }
        if (atomic_load(&rl->gen) != gen) {
            break; /* the cap changed: this reservation was made under the old one */
        }
        int64_t left = go - now;
        rl->clock.sleep_ns(rl->clock.opaque, left < MFR_RATE_SLICE_NS ? left : MFR_RATE_SLICE_NS);
        now = rl->clock.now_ns(rl->clock.opaque);
    }
    atomic_fetch_add_explicit(&rl->waited_ns, (uint64_t)(now - t0), memory_order_relaxed);
    return r;
}

uint64_t mfr_ratelimit_waited_ns(MfrRateLimit *rl)
{
    return atomic_load_explicit(&rl->waited_ns, memory_order_relaxed);
}

uint64_t mfr_ratelimit_bytes(MfrRateLimit *rl)
{
    return atomic_load_explicit(&rl->bytes, memory_order_relaxed);
}

/* ---------- the source's channels ---------- */

static bool send_channel_stopping(void *opaque)
{
    MfrSendChannel *c = opaque;
    return mfr_failed(c->ram->fail) || atomic_load(&c->quit);
}

int mfr_send_channel_throttle(MfrSendChannel *c, uint64_t wire_bytes)
{
    return c->ram->rate ? mfr_ratelimit_take(c->ram->rate, wire_bytes, send_channel_stopping, c)
                        : 0;
}
