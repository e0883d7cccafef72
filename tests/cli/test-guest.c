/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Synthetic guest (tools/guest.c): deterministic contents, the page mix, the writers' rate,
 * that every write is recorded in the bitmap, and that nothing is written after stop().
 */
#include "guest.h"

#include <math.h>
#include <string.h>

#define PAGE 4096u

static MfrGuest *make_guest(uint64_t size, unsigned blocks, double rate, uint64_t seed)
{
    MfrGuestOptions o;
    mfr_guest_options_init(&o);
    o.size = size;
    o.nblocks = blocks;
    o.dirty_rate_mbps = rate;
    o.seed = seed;
    g_autoptr(GError) error = NULL;
    MfrGuest *g = mfr_guest_new(&o, &error);
    g_assert_no_error(error);
    g_assert_nonnull(g);
    return g;
}

static uint64_t guest_digest(MfrGuest *g)
{
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    uint64_t d = 0;
    for (unsigned i = 0; i < n; i++) {
        d = d * 31 + mfr_digest(b[i].host, b[i].length);
    }
    return d;
}

/* Writer threads alive now (a thread names itself once running, so only a count of zero
 * is exact): none may be left once stop() returned, since it joins them, which is what "no
 * page changes after stop" rests on; a count, not a wait for writes that would not come. */
static unsigned writer_threads(void)
{
    GDir *d = g_dir_open("/proc/self/task", 0, NULL);
    g_assert_nonnull(d);
    unsigned n = 0;
    const char *tid;
    while ((tid = g_dir_read_name(d))) {
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", tid);
        g_autofree char *comm = NULL;
        if (g_file_get_contents(path, &comm, NULL, NULL) &&
            g_str_has_prefix(comm, "guest-writer")) {
            g_autofree char *st_path = g_strdup_printf("/proc/self/task/%s/status", tid);
            g_autofree char *status = NULL;
            /* joined already: the kernel drops the map a moment before the entry */
            if (g_file_get_contents(st_path, &status, NULL, NULL) &&
                strstr(status, "\nVmSize:")) {
                n++;
            }
        }
    }
    g_dir_close(d);
    return n;
}

/* Waits until the writers dirtied more than n pages: the writers' own progress, however
 * slowly a loaded host runs them (bounded, so a writer that never writes fails). */
static uint64_t wait_dirtied_above(MfrGuest *g, uint64_t n)
{
    gint64 deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (mfr_guest_pages_dirtied(g) <= n && g_get_monotonic_time() < deadline) {
        g_usleep(1000);
    }
    uint64_t got = mfr_guest_pages_dirtied(g);
    g_assert_cmpuint(got, >, n);
    return got;
}

static void test_guest_blocks(void)
{
    g_autoptr(MfrGuest) g = make_guest(10 * PAGE, 3, 0, 1);
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    g_assert_cmpuint(n, ==, 3);
    /* 10 pages over 3 blocks: 4, 3, 3. */
    g_assert_cmpstr(b[0].name, ==, "ram0");
    g_assert_cmpstr(b[2].name, ==, "ram2");
    g_assert_cmpuint(b[0].length, ==, 4 * PAGE);
    g_assert_cmpuint(b[1].length, ==, 3 * PAGE);
    g_assert_cmpuint(b[2].length, ==, 3 * PAGE);
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpuint(b[i].page_size, ==, PAGE);
        g_assert_cmpuint((uintptr_t)b[i].host % PAGE, ==, 0);
    }
}

static void test_guest_deterministic(void)
{
    g_autoptr(MfrGuest) a = make_guest(8u << 20, 2, 0, 7);
    g_autoptr(MfrGuest) b = make_guest(8u << 20, 2, 0, 7);
    g_autoptr(MfrGuest) c = make_guest(8u << 20, 2, 0, 8);
    g_assert_cmpuint(guest_digest(a), ==, guest_digest(b));
    g_assert_cmpuint(guest_digest(a), !=, guest_digest(c));
    unsigned n;
    const MfrRamBlock *bb = mfr_guest_blocks(b, &n);
    g_autoptr(GError) error = NULL;
    g_assert_true(mfr_guest_compare(a, bb, n, &error));
    g_assert_no_error(error);
}

/* Classify every page: zero, text-like (its 512-byte line repeats), or random. */
static void test_guest_mix(void)
{
    MfrGuestOptions o;
    mfr_guest_options_init(&o);
    o.size = 64u << 20;
    o.dirty_rate_mbps = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(mfr_guest_parse_mix("50:30:20", &o, &error));
    g_autoptr(MfrGuest) g = mfr_guest_new(&o, &error);
    g_assert_no_error(error);
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    uint64_t pages = b[0].length / PAGE, zero = 0, text = 0, random = 0;
    for (uint64_t p = 0; p < pages; p++) {
        const uint8_t *page = (const uint8_t *)b[0].host + p * PAGE;
        if (mfr_buffer_is_zero(page, PAGE)) {
            zero++;
        } else if (memcmp(page, page + 512, PAGE - 512) == 0) {
            text++;
        } else {
            random++;
        }
    }
    g_assert_cmpuint(zero + text + random, ==, pages);
    /* 16384 pages: each share within 2 points of its target. */
    g_assert_cmpfloat(fabs(100.0 * zero / pages - 20), <, 2);
    g_assert_cmpfloat(fabs(100.0 * text / pages - 30), <, 2);
    g_assert_cmpfloat(fabs(100.0 * random / pages - 50), <, 2);
}

static void test_guest_bad_mix(void)
{
    MfrGuestOptions o;
    mfr_guest_options_init(&o);
    g_autoptr(GError) error = NULL;
    g_assert_false(mfr_guest_parse_mix("40:40", &o, &error));
    g_assert_error(error, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_cmpstr(error->message, ==,
                    "'40:40' is not random:compressible:zero percentages summing to 100 "
                    "(example: 40:40:20)");
    g_clear_error(&error);
    g_assert_false(mfr_guest_parse_mix("50:50:10", &o, &error));
    g_assert_error(error, MFR_ERROR, MFR_ERROR_USAGE);
    /* Untouched on failure. */
    g_assert_cmpuint(o.pct_random, ==, 40);
}

static void test_guest_bad_size(void)
{
    MfrGuestOptions o;
    mfr_guest_options_init(&o);
    o.size = 4096 * 3 + 100;
    g_autoptr(GError) error = NULL;
    g_assert_null(mfr_guest_new(&o, &error));
    g_assert_error(error, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_cmpstr(error->message, ==,
                    "guest: size 12388 must be a non-zero multiple of the 4096-byte page size "
                    "with at least one page per block (1 blocks)");
}

/* Writers at 16 MB/s until they dirtied 8 MiB: the count matches the rate over the writers'
 * own running time, every modified page is marked in the bitmap, and no writer is left once
 * stop() returned. */
static void test_guest_writers(void)
{
    const uint64_t size = 32u << 20;
    g_autoptr(MfrGuest) g = make_guest(size, 2, 16, 3);
    g_autoptr(MfrGuest) ref = make_guest(size, 2, 0, 3);
    g_autoptr(GError) error = NULL;
    g_assert_true(mfr_guest_start(g, &error));
    wait_dirtied_above(g, 2047);
    mfr_guest_stop(g);
    g_assert_cmpuint(writer_threads(), ==, 0);
    uint64_t dirtied = mfr_guest_pages_dirtied(g);
    double secs = mfr_guest_writer_seconds(g);
    double expect = 16e6 * secs / PAGE;
    g_test_message("dirtied %" G_GUINT64_FORMAT " pages in %.3f s (expected %.0f)", dirtied,
                   secs, expect);
    g_assert_cmpfloat(dirtied, >, expect * 0.6); /* a loaded CI host oversleeps */
    g_assert_cmpfloat(dirtied, <, expect * 1.1);

    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    const MfrRamBlock *rb = mfr_guest_blocks(ref, &n);
    const MfrDirtyOps *ops = mfr_guest_dirty_ops();
    uint64_t marked = 0, changed = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t pages = b[i].length / PAGE;
        g_autofree uint64_t *bm = g_new0(uint64_t, (pages + 63) / 64);
        ops->harvest(g, i, bm, pages);
        for (uint64_t p = 0; p < pages; p++) {
            bool is_marked = bm[p / 64] >> (p % 64) & 1;
            bool differs = memcmp((uint8_t *)b[i].host + p * PAGE,
                                  (uint8_t *)rb[i].host + p * PAGE, PAGE) != 0;
            g_assert_true(is_marked || !differs); /* a change without a mark is lost data */
            marked += is_marked;
            changed += differs;
        }
        /* Harvest moved the bits: a second one is empty. */
        memset(bm, 0, (pages + 63) / 64 * 8);
        ops->harvest(g, i, bm, pages);
        for (uint64_t w = 0; w < (pages + 63) / 64; w++) {
            g_assert_cmpuint(bm[w], ==, 0);
        }
    }
    g_assert_cmpuint(changed, ==, marked);
    g_assert_cmpuint(marked, <=, dirtied);
    /* Distinct pages hit by `dirtied` uniform draws over 8192 pages. */
    double distinct = 8192.0 * (1.0 - pow(1.0 - 1.0 / 8192.0, (double)dirtied));
    g_assert_cmpfloat(fabs((double)marked - distinct), <, distinct * 0.05);

    g_assert_cmpuint(mfr_guest_pages_dirtied(g), ==, dirtied);
}

/* The engine's stop/resume: resume restarts writers that the owner started. */
static void test_guest_ops_stop_resume(void)
{
    g_autoptr(MfrGuest) g = make_guest(4u << 20, 1, 8, 5);
    const MfrDirtyOps *ops = mfr_guest_dirty_ops();
    g_assert_true(mfr_guest_start(g, NULL));
    wait_dirtied_above(g, 0);
    ops->stop(g);
    uint64_t stopped = mfr_guest_pages_dirtied(g);
    g_assert_cmpuint(writer_threads(), ==, 0);
    ops->resume(g);
    wait_dirtied_above(g, stopped);
    mfr_guest_stop(g);
    uint64_t final = mfr_guest_pages_dirtied(g);
    /* After the owner's stop, resume() must not restart anything. */
    ops->resume(g);
    g_assert_cmpuint(writer_threads(), ==, 0);
    g_assert_cmpuint(mfr_guest_pages_dirtied(g), ==, final);
}

static void test_guest_compare_bad_byte(void)
{
    g_autoptr(MfrGuest) a = make_guest(1u << 20, 2, 0, 9);
    g_autoptr(MfrGuest) b = make_guest(1u << 20, 2, 0, 9);
    unsigned n;
    const MfrRamBlock *bb = mfr_guest_blocks(b, &n);
    uint8_t *p = (uint8_t *)bb[1].host + 0x2345;
    uint8_t old = *p;
    *p = (uint8_t)(old ^ 0xff);
    g_autoptr(GError) error = NULL;
    g_assert_false(mfr_guest_compare(a, bb, n, &error));
    g_assert_error(error, MFR_ERROR, MFR_ERROR_VERIFY);
    g_autofree char *expect = g_strdup_printf(
        "memcmp: block ram1 differs at offset 0x2345 (page 2): source 0x%02x, destination "
        "0x%02x", old, (uint8_t)(old ^ 0xff));
    g_assert_cmpstr(error->message, ==, expect);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/guest/blocks", test_guest_blocks);
    g_test_add_func("/guest/deterministic", test_guest_deterministic);
    g_test_add_func("/guest/mix", test_guest_mix);
    g_test_add_func("/guest/bad_mix", test_guest_bad_mix);
    g_test_add_func("/guest/bad_size", test_guest_bad_size);
    g_test_add_func("/guest/writers", test_guest_writers);
    g_test_add_func("/guest/ops_stop_resume", test_guest_ops_stop_resume);
    g_test_add_func("/guest/compare_bad_byte", test_guest_compare_bad_byte);
    return g_test_run();
}
