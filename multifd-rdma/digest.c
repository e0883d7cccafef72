/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfr_digest(): the 64-bit hash both sides compute per RAM block for verification at
 * COMPLETE. It only has to catch accidental corruption (a page lost, stale or misplaced),
 * not an adversary, so it is built for speed; the value is part of the protocol and must
 * be identical on every machine, hence explicit little-endian loads and fixed constants.
 *
 * Algorithm ("mfr64", version 1):
 *   K1..K5 are fixed odd 64-bit constants (K1, K2 from the hex digits of pi, K3 from the
 *   golden ratio, K4, K5 from the hex digits of e), rotl is a 64-bit left rotation.
 *   1. Four lanes start at s[i] = K3 * (i + 1) ^ K4.
 *   2. The input is consumed in 32-byte stripes; the 8-byte little-endian word w[i] of a
 *      stripe goes to lane i:   s[i] = rotl(s[i] ^ (w[i] * K1), 29) * K2
 *      Each step is a bijection of s[i] for a fixed word and of the word for a fixed s[i]
 *      (xor, rotation, odd multiplier), so a single changed word always changes its lane.
 *      The lanes have no dependency on each other: four multiply chains run in parallel.
 *   3. Merge: h = len * K3 ^ K5; for each lane i in order 0..3:
 *          h = (h ^ fold(s[i])) * K1,   fold(x) = (x ^ (x >> 32)) * K2
 *      (skipped when len < 32: no stripe was consumed).
 *   4. Tail (len % 32 bytes): each remaining 8-byte LE word w: h = rotl(h ^ (w * K2), 27) * K1;
 *      then the last 0..7 bytes as one LE word zero-extended, combined the same way but with
 *      its byte count folded in first (h ^= n) so trailing zero bytes still count.
 *   5. Avalanche: h ^= h >> 31; h *= K4; h ^= h >> 29; h *= K5; h ^= h >> 32.
 *   The length enters in step 3, so inputs that differ only by trailing zeros differ.
 */
#include "engine.h"

#include <string.h>

#define K1 UINT64_C(0x243f6a8885a308d3) /* pi */
#define K2 UINT64_C(0x13198a2e03707345) /* pi, next digits, made odd */
#define K3 UINT64_C(0x9e3779b97f4a7c15) /* 2^64 / golden ratio */
#define K4 UINT64_C(0xb7e151628aed2a6b) /* e */
#define K5 UINT64_C(0xbf7158809cf4f3c7) /* e, next digits */

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian load from any alignment; one mov on x86. */
static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT64_FROM_LE(v);
}

static inline uint64_t lane_step(uint64_t s, uint64_t w)
{
    return rotl64(s ^ (w * K1), 29) * K2;
}

static inline uint64_t fold(uint64_t x)
{
    return (x ^ (x >> 32)) * K2;
}

static inline uint64_t tail_step(uint64_t h, uint64_t w)
{
    return rotl64(h ^ (w * K2), 27) * K1;
}

void mfr_digest_init(MfrDigestState *st)
{
    for (unsigned i = 0; i < 4; i++) {
        st->s[i] = K3 * (i + 1) ^ K4;
    }
    st->len = 0;
}

void mfr_digest_update(MfrDigestState *st, const void *data, uint64_t len)
{
    const uint8_t *p = data;
    const uint8_t *last = p + (len & ~(uint64_t)31);
    uint64_t s0 = st->s[0], s1 = st->s[1], s2 = st->s[2], s3 = st->s[3];

    g_return_if_fail(len % 32 == 0);
    for (; p < last; p += 32) {
        s0 = lane_step(s0, load_le64(p));
        s1 = lane_step(s1, load_le64(p + 8));
        s2 = lane_step(s2, load_le64(p + 16));
        s3 = lane_step(s3, load_le64(p + 24));
    }
    st->s[0] = s0;
    st->s[1] = s1;
    st->s[2] = s2;
    st->s[3] = s3;
    st->len += len;
}

uint64_t mfr_digest_final(MfrDigestState *st, const void *tail, uint64_t tail_len)
{
    uint64_t stripes = tail_len & ~(uint64_t)31;
    mfr_digest_update(st, tail, stripes);
    const uint8_t *p = (const uint8_t *)tail + stripes;
    const uint8_t *end = (const uint8_t *)tail + tail_len;
    uint64_t len = st->len + (uint64_t)(end - p);
    uint64_t h = len * K3 ^ K5;

    if (len >= 32) {
        for (unsigned i = 0; i < 4; i++) {
            h = (h ^ fold(st->s[i])) * K1;
        }
    }
    for (; end - p >= 8; p += 8) {
        h = tail_step(h, load_le64(p));
    }
    if (p < end) {
        uint64_t w = 0;
        unsigned n = (unsigned)(end - p);

        for (unsigned i = 0; i < n; i++) {
            w |= (uint64_t)p[i] << (8 * i);
        }
        h = tail_step(h ^ n, w);
    }
    h ^= h >> 31;
    h *= K4;
    h ^= h >> 29;
    h *= K5;
    h ^= h >> 32;
    return h;
}

uint64_t mfr_digest(const void *data, uint64_t len)
{
    MfrDigestState st;

    mfr_digest_init(&st);
    return mfr_digest_final(&st, data, len);
}
