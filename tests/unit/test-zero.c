/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Zero-page detection (multifd-rdma/zero.c): every variant, at every 64-byte alignment
 * within a page and at odd byte addresses, every length up to two pages (the contract:
 * any address, length a multiple of 64), with non-zero guard bytes around the range; a
 * single non-zero byte at every position must be found. (Its rate: mfrdma-bench zero_scan_gb_s.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "mfrdma.h"

/* The variants are not in a header (the dispatcher is the API); zero.c declares them the
 * same way. */
bool mfr_buffer_is_zero_u64(const void *buf, size_t len);
#if defined(__x86_64__) || defined(__i386__)
bool mfr_buffer_is_zero_sse2(const void *buf, size_t len);
bool mfr_buffer_is_zero_avx2(const void *buf, size_t len);
#endif

typedef bool (*ZeroFn)(const void *buf, size_t len);

typedef struct {
    const char *name;
    ZeroFn fn;
    bool need_avx2;
} Variant;

static const Variant variants[] = {
    { "dispatch", mfr_buffer_is_zero, false },
    { "u64", mfr_buffer_is_zero_u64, false },
#if defined(__x86_64__) || defined(__i386__)
    { "sse2", mfr_buffer_is_zero_sse2, false },
    { "avx2", mfr_buffer_is_zero_avx2, true },
#endif
};

#define PAGE 4096u
#define MAXLEN (2 * PAGE)
/* Guard space before and after the largest range at the largest offset. */
#define AREA (64 + PAGE + MAXLEN + 64)

static bool variant_usable(const Variant *v)
{
#if defined(__x86_64__) || defined(__i386__)
    if (v->need_avx2 && !__builtin_cpu_supports("avx2")) {
        g_test_skip("CPU has no AVX2");
        return false;
    }
#endif
    return true;
}

static uint8_t *guarded_area(void)
{
    uint8_t *a = aligned_alloc(64, AREA);

    g_assert_nonnull(a);
    memset(a, 0xff, AREA);
    return a;
}

/* Zero range [64 + off, 64 + off + len) inside 0xff guards: always zero. */
static void test_all_zero(gconstpointer data)
{
    const Variant *v = data;
    uint8_t *a;

    if (!variant_usable(v)) {
        return;
    }
    a = guarded_area();
    for (size_t off = 0; off < PAGE; off += 64) {
        for (size_t len = 0; len <= MAXLEN; len += 64) {
            uint8_t *p = a + 64 + off;

            memset(p, 0, len);
            g_assert_true(v->fn(p, len));
            /* Restore the guard so the next length starts from 0xff again. */
            memset(p, 0xff, len);
        }
    }
    free(a);
}

/* One non-zero byte at every position of a two-page range, at a few alignments, with the
 * value varied so every bit position of a byte is covered. */
static void test_single_byte(gconstpointer data)
{
    const Variant *v = data;
    static const size_t offs[] = { 0, 64, 192, PAGE - 64 };
    uint8_t *a;

    if (!variant_usable(v)) {
        return;
    }
    a = guarded_area();
    for (unsigned k = 0; k < G_N_ELEMENTS(offs); k++) {
        uint8_t *p = a + 64 + offs[k];

        memset(p, 0, MAXLEN);
        for (size_t pos = 0; pos < MAXLEN; pos++) {
            p[pos] = (uint8_t)(1u << (pos % 8));
            g_assert_false(v->fn(p, MAXLEN));
            /* Shorter ranges that end before the byte do not see it. */
            g_assert_true(v->fn(p, pos & ~(size_t)63));
            p[pos] = 0;
        }
        g_assert_true(v->fn(p, MAXLEN));
        memset(p, 0xff, MAXLEN);
    }
    free(a);
}

/* Every length and alignment with the non-zero byte in the last 64-byte chunk (the tail
 * paths of the vector loops) and in the first. */
static void test_last_and_first_chunk(gconstpointer data)
{
    const Variant *v = data;
    uint8_t *a;

    if (!variant_usable(v)) {
        return;
    }
    a = guarded_area();
    for (size_t off = 0; off < PAGE; off += 64) {
        for (size_t len = 64; len <= MAXLEN; len += 64) {
            uint8_t *p = a + 64 + off;

            memset(p, 0, len);
            p[len - 1] = 0x80;
            g_assert_false(v->fn(p, len));
            p[len - 1] = 0;
            p[0] = 0x01;
            g_assert_false(v->fn(p, len));
            memset(p, 0xff, len);
        }
    }
    free(a);
}

/* Start addresses that no vector load is aligned to, up to the end of a page. */
static const size_t odd_offs[] = { 1, 3, 7, 8, 15, 16, 31, 32, 33, 48, 63, 65, 127,
                                   PAGE - 65, PAGE - 33, PAGE - 1 };
static const size_t odd_lens[] = { 64, 128, 192, 256, PAGE - 64, PAGE, PAGE + 64, MAXLEN };

/* Zero ranges at every byte offset of the first 128 and the odd ones: always zero, however
 * the 0xff bytes right before and after the range line up with the loads. */
static void test_unaligned_all_zero(gconstpointer data)
{
    const Variant *v = data;
    uint8_t *a;

    if (!variant_usable(v)) {
        return;
    }
    a = guarded_area();
    for (size_t k = 0; k < 128 + G_N_ELEMENTS(odd_offs); k++) {
        size_t off = k < 128 ? k : odd_offs[k - 128];
        for (size_t len = 0; len <= MAXLEN; len += 64) {
            uint8_t *p = a + 64 + off;

            memset(p, 0, len);
            g_assert_cmpuint(p[-1], ==, 0xff);
            g_assert_cmpuint(p[len], ==, 0xff);
            g_assert_true(v->fn(p, len));
            memset(p, 0xff, len);
        }
    }
    free(a);
}

/* At odd start addresses, one non-zero byte at each of the first and last 70 positions of
 * every length (where the first, second and last vector of a scan meet the edges), and at
 * every position of a two-page range. */
static void test_unaligned_single_byte(gconstpointer data)
{
    const Variant *v = data;
    uint8_t *a;

    if (!variant_usable(v)) {
        return;
    }
    a = guarded_area();
    for (unsigned k = 0; k < G_N_ELEMENTS(odd_offs); k++) {
        uint8_t *p = a + 64 + odd_offs[k];

        for (unsigned l = 0; l < G_N_ELEMENTS(odd_lens); l++) {
            size_t len = odd_lens[l];

            memset(p, 0, len);
            for (size_t pos = 0; pos < len; pos++) {
                if (pos >= 70 && pos + 70 < len) {
                    continue;
                }
                p[pos] = (uint8_t)(0x80u >> (pos % 8));
                g_assert_false(v->fn(p, len));
                p[pos] = 0;
            }
            g_assert_true(v->fn(p, len));
            memset(p, 0xff, len);
        }
        memset(p, 0, MAXLEN);
        for (size_t pos = 0; pos < MAXLEN; pos++) {
            p[pos] = (uint8_t)(1u << (pos % 8));
            g_assert_false(v->fn(p, MAXLEN));
            /* a range that ends before the byte does not see it, one that covers it does */
            g_assert_true(v->fn(p, pos & ~(size_t)63));
            g_assert_false(v->fn(p, (pos + 64) & ~(size_t)63));
            p[pos] = 0;
        }
        g_assert_true(v->fn(p, MAXLEN));
        memset(p, 0xff, MAXLEN);
    }
    free(a);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    for (unsigned i = 0; i < G_N_ELEMENTS(variants); i++) {
        g_autofree char *p1 = g_strdup_printf("/zero/%s/all_zero", variants[i].name);
        g_autofree char *p2 = g_strdup_printf("/zero/%s/single_byte", variants[i].name);
        g_autofree char *p3 = g_strdup_printf("/zero/%s/first_last_chunk", variants[i].name);

        g_test_add_data_func(p1, &variants[i], test_all_zero);
        g_test_add_data_func(p2, &variants[i], test_single_byte);
        g_autofree char *p4 = g_strdup_printf("/zero/%s/unaligned_all_zero", variants[i].name);
        g_autofree char *p5 = g_strdup_printf("/zero/%s/unaligned_single_byte",
                                              variants[i].name);

        g_test_add_data_func(p3, &variants[i], test_last_and_first_chunk);
        g_test_add_data_func(p4, &variants[i], test_unaligned_all_zero);
        g_test_add_data_func(p5, &variants[i], test_unaligned_single_byte);
    }
    return g_test_run();
}
