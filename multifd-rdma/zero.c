/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Zero-page detection for the channel threads: is a buffer (a page; any address, length a
 * multiple of 64) all zero? Most dirty pages are not, so every variant ORs a few vectors
 * together and leaves at the first non-zero 64-byte chunk instead of scanning the whole page.
 * The AVX2 variant is picked per call with __builtin_cpu_supports (a load and a bit test
 * of libgcc's cpu model, filled once before main), so there is no state of our own.
 */
#include "mfrdma.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MFR_ZERO_X86 1
#endif

/* Not in a header: only the dispatcher and tests/unit/test-zero.c (which declares them
 * itself to check every variant on any machine) call these directly. */
bool mfr_buffer_is_zero_u64(const void *buf, size_t len);
#ifdef MFR_ZERO_X86
bool mfr_buffer_is_zero_sse2(const void *buf, size_t len);
bool mfr_buffer_is_zero_avx2(const void *buf, size_t len);
#endif

/* Portable: eight u64 per 64-byte chunk. memcpy keeps unaligned buffers legal and
 * compiles to plain loads. */
bool mfr_buffer_is_zero_u64(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    for (size_t i = 0; i < len; i += 64) {
        uint64_t w[8];

        memcpy(w, p + i, sizeof(w));
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) {
            return false;
        }
    }
    return true;
}

#ifdef MFR_ZERO_X86

/* SSE2 is part of x86-64, so this needs no runtime check there. */
__attribute__((target("sse2")))
bool mfr_buffer_is_zero_sse2(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    const __m128i zero = _mm_setzero_si128();

    for (size_t i = 0; i < len; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(p + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(p + i + 48));
        __m128i v = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));

        if (_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero)) != 0xffff) {
            return false;
        }
    }
    return true;
}

/* Two 64-byte chunks per test while at least 128 bytes remain: vptest on the OR of four
 * 32-byte vectors; the first 64 bytes are tested alone so a non-zero page (the common
 * case) costs two loads. */
__attribute__((target("avx2")))
bool mfr_buffer_is_zero_avx2(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t i = 0;

    if (len == 0) {
        return true;
    }
    {
        __m256i a = _mm256_loadu_si256((const __m256i *)p);
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i v = _mm256_or_si256(a, b);

        if (!_mm256_testz_si256(v, v)) {
            return false;
        }
        i = 64;
    }
    for (; i + 128 <= len; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(p + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(p + i + 96));
        __m256i v = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));

        if (!_mm256_testz_si256(v, v)) {
            return false;
        }
    }
    if (i < len) { /* one 64-byte chunk left */
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i v = _mm256_or_si256(a, b);

        return _mm256_testz_si256(v, v);
    }
    return true;
}

#endif /* MFR_ZERO_X86 */

bool mfr_buffer_is_zero(const void *buf, size_t len)
{
#ifdef MFR_ZERO_X86
    if (__builtin_cpu_supports("avx2")) {
        return mfr_buffer_is_zero_avx2(buf, len);
    }
    return mfr_buffer_is_zero_sse2(buf, len);
#else
    return mfr_buffer_is_zero_u64(buf, len);
#endif
}
