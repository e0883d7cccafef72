/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared dirty bitmaps between a client's writer threads and the migration thread: writers
 * mark pages after writing them, harvest() moves the marks into the migration's private
 * bitmap. Lock-free with GCC __atomic builtins on plain uint64_t words (the client owns the
 * array, so it cannot be required to be _Atomic).
 */
#include "mfrdma.h"

/* Writer side. The release orders the caller's earlier writes to the page before the bit
 * becomes visible: pairs with the acquire in mfr_bitmap_harvest(), so whoever harvests the
 * bit and then reads the page sees at least the data written before this mark. */
void mfr_bitmap_mark(uint64_t *shared, uint64_t page)
{
    __atomic_fetch_or(&shared[page / 64], UINT64_C(1) << (page % 64), __ATOMIC_RELEASE);
}

/* Moves the bits of pages 0..npages-1 from shared into out (OR), clearing them in shared
 * in the same atomic step so a mark racing with the harvest lands either in this harvest or
 * in shared for the next one, never nowhere. Bits beyond npages in the last word belong
 * to no page: they are neither reported nor cleared. */
void mfr_bitmap_harvest(uint64_t *shared, uint64_t *out, uint64_t npages)
{
    uint64_t full = npages / 64;
    unsigned rest = (unsigned)(npages % 64);

    for (uint64_t i = 0; i < full; i++) {
        /* Skip clean words with a plain load: an exchange would take every cache line
         * exclusive and bounce it away from the writers for nothing. A mark missed here
         * stays set for the next harvest. */
        if (__atomic_load_n(&shared[i], __ATOMIC_RELAXED) == 0) {
            continue;
        }
        /* Acquire: pairs with the release in mfr_bitmap_mark(). */
        out[i] |= __atomic_exchange_n(&shared[i], 0, __ATOMIC_ACQUIRE);
    }
    if (rest) {
        uint64_t mask = (UINT64_C(1) << rest) - 1;

        if (__atomic_load_n(&shared[full], __ATOMIC_RELAXED) & mask) {
            /* Acquire: pairs with the release in mfr_bitmap_mark(). */
            out[full] |= __atomic_fetch_and(&shared[full], ~mask, __ATOMIC_ACQUIRE) & mask;
        }
    }
}
