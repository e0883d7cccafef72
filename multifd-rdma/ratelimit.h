/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The source's bandwidth cap (MfrSourceConfig.max_bandwidth): one token bucket shared by
 * all channel threads of a session, charged once per packet with its bytes on the wire.
 * Lock-free (one CAS per packet); a throttled thread sleeps in short slices so a failure or
 * a cancel never waits for the cap.
 */
#pragma once

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

G_BEGIN_DECLS

/* Time source of a limiter; tests inject a fake one whose sleep advances its clock. */
typedef struct {
    int64_t (*now_ns)(void *opaque);       /* monotonic */
    void (*sleep_ns)(void *opaque, int64_t ns);
    void *opaque;
} MfrClock;

/* Bytes a limiter lets through at once after an idle spell, as time at the cap: short, so
 * the cap holds over any window longer than a few packets. */
#define MFR_RATE_BURST_NS (10 * 1000 * 1000)
/* A throttled sender looks at its stop condition at least this often. */
#define MFR_RATE_SLICE_NS (10 * 1000 * 1000)

typedef struct MfrRateLimit MfrRateLimit;

/* rate: bytes per second, 0 = unlimited. clock NULL: CLOCK_MONOTONIC and nanosleep(). */
MfrRateLimit *mfr_ratelimit_new(uint64_t rate, const MfrClock *clock);
void mfr_ratelimit_free(MfrRateLimit *rl);
/* Thread-safe, any time: the new rate applies to every packet charged from now on, and a
 * sender waiting under the old one stops waiting (its packet goes at once). */
void mfr_ratelimit_set(MfrRateLimit *rl, uint64_t rate);
uint64_t mfr_ratelimit_get(MfrRateLimit *rl);
/* Charges bytes and returns once they may go: at once when unlimited or within the burst,
 * else after sleeping until the bucket has room. 0, or -ECANCELED as soon as stop(opaque)
 * is true while waiting. Any thread; stop may be NULL. */
int mfr_ratelimit_take(MfrRateLimit *rl, uint64_t bytes, bool (*stop)(void *), void *opaque);
/* Totals since new(): nanoseconds senders slept, bytes charged while a cap was set. */
uint64_t mfr_ratelimit_waited_ns(MfrRateLimit *rl);
uint64_t mfr_ratelimit_bytes(MfrRateLimit *rl);

G_END_DECLS
