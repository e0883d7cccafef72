/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfr_digest() (multifd-rdma/digest.c): the value is part of the protocol (both sides of a
 * migration compare it), so known values are pinned; every byte position, every length and
 * word order must change it; alignment must not. (Its rate: mfrdma-bench digest_gb_s.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "engine.h"

/* Deterministic filler: byte i = (i * 31 + 7) mod 256. */
static void fill(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        b[i] = (uint8_t)(i * 31 + 7);
    }
}

typedef struct {
    uint64_t len;
    uint64_t digest;
} Known;

/* Computed once with the v1 algorithm on fill()ed buffers (and cross-checked against an
 * independent script written from the algorithm comment in digest.c) and pinned: a change
 * here means old and new builds can no longer verify each other's migrations. */
static const Known known[] = {
    { 0, UINT64_C(0xf3be94bd186a2d84) },
    { 1, UINT64_C(0x837b6a8044fcb94b) },
    { 7, UINT64_C(0x5006e1070de50f90) },
    { 8, UINT64_C(0x386fa7d33edfbcc1) },
    { 31, UINT64_C(0x9abc603e1204179b) },
    { 32, UINT64_C(0x24c39bf353b4b2ac) },
    { 33, UINT64_C(0x92dc47cdbf7580cf) },
    { 100, UINT64_C(0x6ab5cb1d56cf7453) },
    { 4096, UINT64_C(0xde3ae82715a7bdca) },
    { 1048576, UINT64_C(0x8678a2d2a6605e11) },
};

static void test_known_values(void)
{
    uint8_t *b = g_malloc(1048576);

    fill(b, 1048576);
    for (unsigned i = 0; i < G_N_ELEMENTS(known); i++) {
        uint64_t d = mfr_digest(b, known[i].len);

        if (g_test_verbose()) {
            g_test_message("len %" G_GUINT64_FORMAT ": 0x%016" G_GINT64_MODIFIER "x",
                           known[i].len, d);
        }
        g_assert_cmphex(d, ==, known[i].digest);
    }
    g_free(b);
}

/* The text forms too: no dependence on the filler's pattern. */
static void test_known_strings(void)
{
    g_assert_cmphex(mfr_digest("abc", 3), ==, UINT64_C(0x5c6ab8f5b573f8f4));
    g_assert_cmphex(mfr_digest("The quick brown fox jumps over the lazy dog", 43), ==,
                    UINT64_C(0x88b70a0461f7c74e));
}

/* Flipping any bit of any byte (over stripes and tail: 131 bytes) changes the digest, and
 * all those digests differ from each other. */
static void test_every_bit(void)
{
    enum { N = 131 };
    uint8_t b[N];
    g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash, g_int64_equal);
    g_autofree gint64 *vals = g_new(gint64, N * 8 + 1);
    unsigned k = 0;

    fill(b, N);
    vals[k] = (gint64)mfr_digest(b, N);
    g_hash_table_add(seen, &vals[k++]);
    for (size_t pos = 0; pos < N; pos++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            b[pos] ^= (uint8_t)(1u << bit);
            vals[k] = (gint64)mfr_digest(b, N);
            g_assert_false(g_hash_table_contains(seen, &vals[k]));
            g_hash_table_add(seen, &vals[k++]);
            b[pos] ^= (uint8_t)(1u << bit);
        }
    }
    g_assert_cmpuint(g_hash_table_size(seen), ==, N * 8 + 1);
}

/* A single changed byte anywhere in a 64 KiB block (a page-sized error in a large block)
 * changes the digest. */
static void test_every_byte_large(void)
{
    enum { N = 65536 };
    uint8_t *b = g_malloc(N);
    uint64_t base;

    fill(b, N);
    base = mfr_digest(b, N);
    for (size_t pos = 0; pos < N; pos += 61) {
        b[pos] ^= 0x40;
        g_assert_cmphex(mfr_digest(b, N), !=, base);
        b[pos] ^= 0x40;
    }
    g_assert_cmphex(mfr_digest(b, N), ==, base);
    g_free(b);
}

/* Fed in pieces (whole stripes, then any tail), as the destination verifies a block slice
 * by slice with never-received pages from a separate zero buffer, the value is the one-shot
 * digest's for every split and length, stripe-less inputs included. */
static void test_pieces(void)
{
    enum { N = 4 * 4096 + 77 };
    uint8_t *b = g_malloc(N);
    static const uint8_t zero[4096];

    fill(b, N);
    memset(b + 4096, 0, 4096); /* page 1 reads as zero: fed from `zero` below */
    for (uint64_t len = 0; len <= N; len += len < 200 ? 1 : 997) {
        for (uint64_t piece = 32; piece <= 8192; piece *= 4) {
            MfrDigestState st;
            uint64_t off = 0;
            mfr_digest_init(&st);
            for (; len - off > piece; off += piece) {
                bool page1 = off >= 4096 && off + piece <= 8192;
                mfr_digest_update(&st, page1 ? zero : b + off, piece);
            }
            g_assert_cmphex(mfr_digest_final(&st, b + off, len - off), ==, mfr_digest(b, len));
        }
    }
    g_free(b);
}

/* Zero buffers of every length 0..600 hash differently: the length counts, trailing zero
 * bytes count. */
static void test_lengths(void)
{
    enum { N = 600 };
    uint8_t b[N] = { 0 };
    g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash, g_int64_equal);
    gint64 vals[N + 1];

    for (unsigned len = 0; len <= N; len++) {
        vals[len] = (gint64)mfr_digest(b, len);
        g_assert_false(g_hash_table_contains(seen, &vals[len]));
        g_hash_table_add(seen, &vals[len]);
    }
}

/* Swapping two words inside a stripe, two stripes, or a stripe word with a tail word
 * changes the digest: position matters, not just content. */
static void test_word_order(void)
{
    enum { N = 72 }; /* two stripes + one tail word */
    uint8_t b[N], t[8];
    uint64_t base;
    static const struct { unsigned a, b; } swaps[] = {
        { 0, 8 }, { 0, 32 }, { 24, 56 }, { 8, 64 }, { 0, 64 },
    };

    fill(b, N);
    base = mfr_digest(b, N);
    for (unsigned i = 0; i < G_N_ELEMENTS(swaps); i++) {
        uint8_t c[N];

        memcpy(c, b, N);
        memcpy(t, c + swaps[i].a, 8);
        memmove(c + swaps[i].a, c + swaps[i].b, 8);
        memcpy(c + swaps[i].b, t, 8);
        g_assert_cmphex(mfr_digest(c, N), !=, base);
    }
}

/* Loads are byte-exact at any alignment. */
static void test_alignment(void)
{
    enum { N = 1000 };
    uint8_t *b = g_malloc(N + 16);
    uint64_t want;

    fill(b, N);
    want = mfr_digest(b, N);
    for (unsigned off = 1; off < 16; off++) {
        memmove(b + off, b + off - 1, N);
        g_assert_cmphex(mfr_digest(b + off, N), ==, want);
    }
    g_free(b);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/digest/known_values", test_known_values);
    g_test_add_func("/digest/known_strings", test_known_strings);
    g_test_add_func("/digest/every_bit", test_every_bit);
    g_test_add_func("/digest/every_byte_large", test_every_byte_large);
    g_test_add_func("/digest/lengths", test_lengths);
    g_test_add_func("/digest/word_order", test_word_order);
    g_test_add_func("/digest/alignment", test_alignment);
    g_test_add_func("/digest/pieces", test_pieces);
    return g_test_run();
}
