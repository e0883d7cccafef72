/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The synthetic guest: named blocks of anonymous memory filled with a deterministic mix of
 * random, compressible and zero pages, plus writer threads that dirty random pages at a set
 * rate and record them in per-block bitmaps. It stands in for a VM in the tool, tests and bench.
 */
#pragma once

#include <mfrdma.h>

G_BEGIN_DECLS

typedef struct {
    uint64_t size;             /* total bytes over all blocks; multiple of the page size */
    unsigned nblocks;          /* "ram0", "ram1", ...; default 1 */
    bool hugetlb;              /* MAP_HUGETLB, 2 MiB pages (needs reserved huge pages) */
    bool thp;                  /* madvise(MADV_HUGEPAGE): faster first touch; default true */
    unsigned pct_random;       /* page mix in percent; the three sum to 100 */
    unsigned pct_compressible;
    unsigned pct_zero;
    uint64_t seed;             /* same seed, same contents */
    double dirty_rate_mbps;    /* dirtied page bytes per second / 1e6 over all writers; 0 idle */
    unsigned writers;          /* writer threads; default 1 */
    unsigned fill_threads;     /* default 2 */
} MfrGuestOptions;

typedef struct MfrGuest MfrGuest;

void mfr_guest_options_init(MfrGuestOptions *o);
/* Allocates and fills every block; writers are not started yet. */
MfrGuest *mfr_guest_new(const MfrGuestOptions *o, GError **error);
/* Safe with NULL; stops the writers first. */
void mfr_guest_free(MfrGuest *g);

const MfrRamBlock *mfr_guest_blocks(MfrGuest *g, unsigned *n);
/* Dirty-tracking table to hand to mfr_source_new() with the guest as opaque. */
const MfrDirtyOps *mfr_guest_dirty_ops(void);

/* Starts the writers (no-op when the rate is 0 or they already run). */
bool mfr_guest_start(MfrGuest *g, GError **error);
/* Stops and joins the writers: no guest write happens after it returns. Idempotent. */
void mfr_guest_stop(MfrGuest *g);
/* Pages written by writers since mfr_guest_new(). */
uint64_t mfr_guest_pages_dirtied(MfrGuest *g);
/* Seconds the writers have been running in total (for the measured dirty rate). */
double mfr_guest_writer_seconds(MfrGuest *g);
double mfr_guest_fill_seconds(MfrGuest *g);

/* Byte-for-byte comparison with another copy (same names and lengths, same order).
 * On mismatch the error names the block and the first differing offset. */
bool mfr_guest_compare(MfrGuest *g, const MfrRamBlock *other, unsigned n, GError **error);

/* Parses "R:C:Z" percentages (e.g. "40:40:20") into o; the error says what to fix. */
bool mfr_guest_parse_mix(const char *text, MfrGuestOptions *o, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MfrGuest, mfr_guest_free)

G_END_DECLS
