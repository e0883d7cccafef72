/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared dirty bitmap helpers (multifd-rdma/bitmap.c): exact bits harvested, OR into out,
 * bits beyond npages neither reported nor cleared, and concurrent writers against a
 * harvesting thread: no lost mark and no stale data (the release/acquire pairing).
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "mfrdma.h"

static void test_mark_harvest(void)
{
    uint64_t shared[3] = { 0 }, out[3] = { 0 };
    const uint64_t npages = 130; /* two full words and two pages of the third */

    mfr_bitmap_mark(shared, 0);
    mfr_bitmap_mark(shared, 63);
    mfr_bitmap_mark(shared, 64);
    mfr_bitmap_mark(shared, 129);
    mfr_bitmap_mark(shared, 129); /* twice: still one bit */
    g_assert_cmphex(shared[0], ==, 0x8000000000000001ull);
    g_assert_cmphex(shared[1], ==, 0x1);
    g_assert_cmphex(shared[2], ==, 0x2);

    mfr_bitmap_harvest(shared, out, npages);
    g_assert_cmphex(out[0], ==, 0x8000000000000001ull);
    g_assert_cmphex(out[1], ==, 0x1);
    g_assert_cmphex(out[2], ==, 0x2);
    g_assert_cmphex(shared[0] | shared[1] | shared[2], ==, 0);

    /* Nothing new: out unchanged. */
    mfr_bitmap_harvest(shared, out, npages);
    g_assert_cmphex(out[0], ==, 0x8000000000000001ull);
    g_assert_cmphex(out[2], ==, 0x2);
}

/* harvest() ORs: bits already in out stay. */
static void test_harvest_ors(void)
{
    uint64_t shared[2] = { 0 }, out[2] = { 0xf0, 0x1 };

    mfr_bitmap_mark(shared, 0);
    mfr_bitmap_mark(shared, 100);
    mfr_bitmap_harvest(shared, out, 128);
    g_assert_cmphex(out[0], ==, 0xf1);
    g_assert_cmphex(out[1], ==, 0x1 | (1ull << 36));
}

/* Bits at or beyond npages in the last word are no page: not reported, not cleared. Words
 * entirely beyond npages are not touched at all. */
static void test_harvest_beyond_npages(void)
{
    uint64_t shared[3] = { 0, 0, 0xdeadbeef }, out[3] = { 0 };

    mfr_bitmap_mark(shared, 69);  /* page 69 of 70: reported */
    mfr_bitmap_mark(shared, 70);  /* beyond */
    mfr_bitmap_mark(shared, 127); /* beyond */
    mfr_bitmap_harvest(shared, out, 70);
    g_assert_cmphex(out[1], ==, 1ull << 5);
    g_assert_cmphex(shared[1], ==, (1ull << 6) | (1ull << 63));
    g_assert_cmphex(out[2], ==, 0);
    g_assert_cmphex(shared[2], ==, 0xdeadbeef);

    /* npages a multiple of 64 and 0: exact word boundary, nothing beyond touched. */
    memset(out, 0, sizeof(out));
    shared[0] = 0x5;
    mfr_bitmap_harvest(shared, out, 64);
    g_assert_cmphex(out[0], ==, 0x5);
    g_assert_cmphex(out[1], ==, 0);
    g_assert_cmphex(shared[1], ==, (1ull << 6) | (1ull << 63));
    shared[0] = 0x7;
    mfr_bitmap_harvest(shared, out, 0);
    g_assert_cmphex(shared[0], ==, 0x7);
}

/* ---------- concurrency ---------- */

#define NPAGES ((1u << 16) + 37)
#define WRITERS 3

typedef struct {
    uint64_t shared[(NPAGES + 63) / 64];
    uint64_t data[NPAGES];     /* "page contents", written before the page is marked */
    int writers_done;          /* release by each writer, acquire by the harvester */
    int go;                    /* start line, so writers and harvester overlap */
} Shared;

typedef struct {
    Shared *s;
    unsigned id;
} Writer;

/* Writer: writes each page it owns once, then marks it. Pages are interleaved between
 * writers so the writers sweep the same bitmap words at the same time. */
static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;

    while (!__atomic_load_n(&w->s->go, __ATOMIC_ACQUIRE)) {
        g_thread_yield();
    }
    for (uint64_t p = w->id; p < NPAGES; p += WRITERS) {
        __atomic_store_n(&w->s->data[p], p + 1, __ATOMIC_RELAXED);
        mfr_bitmap_mark(w->s->shared, p);
        /* Pace the writers (a guest writes more than one word per page) so that many
         * harvests overlap the marking instead of the writers finishing first. */
        for (volatile unsigned k = 0; k < 100; k++) {
        }
    }
    __atomic_fetch_add(&w->s->writers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Harvester: like the migration thread, harvest and "send" (read) each dirty page while
 * the writers run. Every page is marked exactly once, so it must be reported exactly once
 * (a lost mark: never; a non-atomic clear could also report twice) and, by the
 * release/acquire pairing, its data must already be visible when it is reported. */
static unsigned concurrent_once(void)
{
    Shared *s = g_new0(Shared, 1);
    Writer w[WRITERS];
    GThread *t[WRITERS];
    uint8_t *reported = g_new0(uint8_t, NPAGES);
    uint64_t *out = g_new(uint64_t, G_N_ELEMENTS(s->shared));
    unsigned harvests = 0, busy = 0;
    bool done = false;

    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (Writer){ s, i };
        t[i] = g_thread_new("writer", writer_thread, &w[i]);
    }
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE);
    while (!done) {
        unsigned found = 0;

        /* Read the flag before harvesting, so the final pass sees every mark. */
        done = __atomic_load_n(&s->writers_done, __ATOMIC_ACQUIRE) == WRITERS;
        memset(out, 0, sizeof(s->shared));
        mfr_bitmap_harvest(s->shared, out, NPAGES);
        harvests++;
        for (unsigned i = 0; i < G_N_ELEMENTS(s->shared); i++) {
            for (uint64_t bits = out[i]; bits; bits &= bits - 1) {
                uint64_t p = i * 64ull + (uint64_t)__builtin_ctzll(bits);

                g_assert_cmpuint(p, <, NPAGES);
                g_assert_cmpuint(__atomic_load_n(&s->data[p], __ATOMIC_RELAXED), ==, p + 1);
                g_assert_cmpuint(reported[p], ==, 0);
                reported[p] = 1;
                found++;
            }
        }
        busy += found != 0;
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        g_thread_join(t[i]);
    }
    for (uint64_t p = 0; p < NPAGES; p++) {
        g_assert_cmpuint(reported[p], ==, 1);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(s->shared); i++) {
        g_assert_cmphex(s->shared[i], ==, 0);
    }
    g_test_message("%u harvests (%u non-empty) raced %u writers", harvests, busy, WRITERS);
    g_free(out);
    g_free(reported);
    g_free(s);
    return busy;
}

/* How much the harvests overlap the marking is up to the scheduler (2 shared cores, often
 * busy with other tests): repeat, for up to 30 s, until enough harvests found pages
 * mid-flight for the checks above to have bitten; under heavy load fewer overlaps still
 * prove the race was exercised. */
static void test_concurrent(void)
{
    unsigned busy = 0;
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    while (busy < 500 && g_get_monotonic_time() < end) {
        busy += concurrent_once();
    }
    g_test_message("%u non-empty harvests in all", busy);
    g_assert_cmpuint(busy, >=, 50);
}

/* Many threads marking distinct bits of the same few words: fetch_or loses none. */
static gpointer dense_marker(gpointer opaque)
{
    Writer *w = opaque;

    for (uint64_t p = w->id; p < 256; p += 8) {
        mfr_bitmap_mark(w->s->shared, p);
    }
    return NULL;
}

static void test_concurrent_same_words(void)
{
    for (unsigned rep = 0; rep < 200; rep++) {
        Shared *s = g_new0(Shared, 1);
        Writer w[8];
        GThread *t[8];
        uint64_t out[4] = { 0 };

        for (unsigned i = 0; i < 8; i++) {
            w[i] = (Writer){ s, i };
            t[i] = g_thread_new("marker", dense_marker, &w[i]);
        }
        for (unsigned i = 0; i < 8; i++) {
            g_thread_join(t[i]);
        }
        mfr_bitmap_harvest(s->shared, out, 256);
        for (unsigned i = 0; i < 4; i++) {
            g_assert_cmphex(out[i], ==, UINT64_MAX);
        }
        g_free(s);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/bitmap/mark_harvest", test_mark_harvest);
    g_test_add_func("/bitmap/harvest_ors", test_harvest_ors);
    g_test_add_func("/bitmap/harvest_beyond_npages", test_harvest_beyond_npages);
    g_test_add_func("/bitmap/concurrent", test_concurrent);
    g_test_add_func("/bitmap/concurrent_same_words", test_concurrent_same_words);
    return g_test_run();
}
