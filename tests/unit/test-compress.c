/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the zstd codec of packet payloads (round trips over contiguous and scattered
 * pages, the shrink limit, every way a hostile frame can lie, writes fenced to the pages)
 * and of the auto policy's decisions (pause, backoff growth and reset, link vs CPU speed).
 */
#include "compress.h"
#include "mfrdma.h"

#include <string.h>
#include <sys/mman.h>
#include <zstd.h>

#define PS 4096u

static void fill_text(uint8_t *p, size_t len, unsigned seed)
{
    static const char *const w[] = { "page ", "dirty ", "round ", "channel ", "zstd " };
    size_t n = 0;
    while (n < len) {
        const char *s = w[(n / 7 + seed) % G_N_ELEMENTS(w)];
        for (size_t i = 0; s[i] && n < len; i++) {
            p[n++] = (uint8_t)s[i];
        }
    }
}

static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)g_random_int();
    }
}

/* [fence][npages][fence]: the pages, fenced by PROT_NONE */
static uint8_t *fenced(unsigned npages)
{
    uint8_t *m = mmap(NULL, (npages + 2) * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(m != MAP_FAILED);
    g_assert_cmpint(mprotect(m + PS, npages * PS, PROT_READ | PROT_WRITE), ==, 0);
    return m + PS;
}

static void unfence(uint8_t *p, unsigned npages)
{
    munmap(p - PS, (npages + 2) * PS);
}

/* pages 0, 2, 3 of src (compressed from their own iovecs) land in pages 1, 4, 5 of dst:
 * scattered on both sides, one-shot when contiguous */
static void roundtrip(bool scattered)
{
    uint8_t *src = fenced(4), *dst = fenced(6);
    fill_text(src, 4 * PS, 1);
    fill_random(src + 2 * PS, PS);
    struct iovec in[3] = { { src, PS }, { src + 2 * PS, 2 * PS } };
    struct iovec out[3];
    unsigned nout;
    if (scattered) {
        out[0] = (struct iovec){ dst + PS, PS };
        out[1] = (struct iovec){ dst + 4 * PS, 2 * PS };
        nout = 2;
    } else {
        out[0] = (struct iovec){ dst, 3 * PS };
        nout = 1;
    }
    memset(dst, 0x5a, 6 * PS);
    g_autoptr(GError) err = NULL;
    MfrCompressor *c = mfr_compressor_new(0, &err);
    g_assert_no_error(err);
    size_t cap = mfr_comp_bound(3 * PS);
    g_autofree uint8_t *frame = g_malloc(cap);
    int64_t n = mfr_compress_iov(c, in, 2, 3 * PS, frame, MFR_COMP_MAX_KEEP(3 * PS));
    g_assert_cmpint(n, >, 0);
    g_assert_cmpint(n, <, 3 * PS / 2); /* two text pages shrink, the random one does not */
    g_assert_cmpuint(ZSTD_getFrameContentSize(frame, (size_t)n), ==, 3 * PS);
    MfrDecompressor *d = mfr_decompressor_new(&err);
    g_assert_true(mfr_decompress_iov(d, frame, (size_t)n, out, nout, 3 * PS, &err));
    g_assert_no_error(err);
    uint8_t *o0 = scattered ? dst + PS : dst, *o1 = scattered ? dst + 4 * PS : dst + PS;
    g_assert_cmpmem(o0, PS, src, PS);
    g_assert_cmpmem(o1, 2 * PS, src + 2 * PS, 2 * PS);
    if (scattered) {
        static const unsigned untouched[] = { 0, 2, 3 };
        for (unsigned k = 0; k < G_N_ELEMENTS(untouched); k++) {
            for (unsigned i = 0; i < PS; i++) {
                g_assert_cmpuint(dst[untouched[k] * PS + i], ==, 0x5a);
            }
        }
    }
    /* the context is reused: a second packet compresses the same */
    int64_t n2 = mfr_compress_iov(c, in, 2, 3 * PS, frame, MFR_COMP_MAX_KEEP(3 * PS));
    g_assert_cmpint(n2, ==, n);
    mfr_compressor_free(c);
    mfr_decompressor_free(d);
    unfence(src, 4);
    unfence(dst, 6);
}

static void test_roundtrip_flat(void)
{
    roundtrip(false);
}

static void test_roundtrip_scattered(void)
{
    roundtrip(true);
}

static void test_not_shrunk(void)
{
    uint8_t *src = fenced(8);
    fill_random(src, 8 * PS);
    struct iovec in = { src, 8 * PS };
    MfrCompressor *c = mfr_compressor_new(1, NULL);
    g_autofree uint8_t *frame = g_malloc(mfr_comp_bound(8 * PS));
    /* stopped at the limit, nothing written beyond it */
    size_t limit = MFR_COMP_MAX_KEEP(8 * PS);
    memset(frame, 0x77, mfr_comp_bound(8 * PS));
    g_assert_cmpint(mfr_compress_iov(c, &in, 1, 8 * PS, frame, limit), ==, 0);
    for (size_t i = limit; i < mfr_comp_bound(8 * PS); i++) {
        g_assert_cmpuint(frame[i], ==, 0x77);
    }
    /* with room for the whole bound it goes through (just larger than raw) */
    int64_t n = mfr_compress_iov(c, &in, 1, 8 * PS, frame, mfr_comp_bound(8 * PS));
    g_assert_cmpint(n, >, 8 * PS - 64);
    mfr_compressor_free(c);
    unfence(src, 8);
}

static void test_level(void)
{
    int min, max;
    g_assert_true(mfr_comp_level_ok(1, &min, &max));
    g_assert_true(mfr_comp_level_ok(-5, &min, &max));
    g_assert_cmpint(min, <, 0);
    g_assert_false(mfr_comp_level_ok(max + 1, &min, &max));
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_compression_check(MFR_COMPRESSION_ZSTD, max + 1, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_true(mfr_compression_check(MFR_COMPRESSION_AUTO, 0, NULL));
}

/* Every lie of a hostile frame: named error, nothing outside the target pages touched (the
 * fences would fault). */
static void bad_frame(const void *frame, size_t len, bool scattered, const char *expect)
{
    uint8_t *dst = fenced(3);
    struct iovec out[2] = { { dst, PS }, { dst + 2 * PS, PS } };
    if (!scattered) {
        out[0].iov_len = 2 * PS;
    }
    memset(dst + PS, 0x5a, PS);
    MfrDecompressor *d = mfr_decompressor_new(NULL);
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_decompress_iov(d, frame, len, out, scattered ? 2 : 1, 2 * PS, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    if (!strstr(err->message, expect)) {
        g_error("'%s' does not say '%s'", err->message, expect);
    }
    if (scattered) {
        for (unsigned i = 0; i < PS; i++) {
            g_assert_cmpuint(dst[PS + i], ==, 0x5a);
        }
    }
    /* the context recovers for the next (valid) frame */
    uint8_t ok_src[2 * PS];
    fill_text(ok_src, sizeof(ok_src), 3);
    uint8_t ok[2 * PS];
    size_t n = ZSTD_compress(ok, sizeof(ok), ok_src, sizeof(ok_src), 1);
    g_assert_true(mfr_decompress_iov(d, ok, n, out, scattered ? 2 : 1, 2 * PS, NULL));
    mfr_decompressor_free(d);
    unfence(dst, 3);
}

static void test_bad_frames(void)
{
    uint8_t src[4 * PS], frame[5 * PS];
    fill_text(src, sizeof(src), 2);
    for (int sc = 0; sc < 2; sc++) {
        size_t n = ZSTD_compress(frame, sizeof(frame), src, PS, 1);
        bad_frame(frame, n, sc, "decompresses to 4096 bytes, announced 8192");
        n = ZSTD_compress(frame, sizeof(frame), src, 3 * PS, 1);
        bad_frame(frame, n, sc, "decompresses to more than the announced 8192 bytes");
        n = ZSTD_compress(frame, sizeof(frame), src, 2 * PS, 1);
        bad_frame(frame, n - 3, sc, sc ? "frame truncated" : "not a valid zstd frame");
        /* a valid frame followed by garbage, or by a second frame */
        frame[n] = 0x13;
        bad_frame(frame, n + 1, sc, sc ? "not a valid zstd frame" : "not a valid zstd frame");
        size_t m = ZSTD_compress(frame + n, sizeof(frame) - n, src, 64, 1);
        bad_frame(frame, n + m, sc, "decompresses to more than the announced 8192 bytes");
        memset(frame, 0xab, 64);
        bad_frame(frame, 64, sc, "64 bytes are not a valid zstd frame");
        bad_frame(frame, 0, sc, sc ? "its 0 bytes decompress to only 0 of the announced 8192"
                                : "decompresses to 0 bytes, announced 8192");
    }
}

/* A frame asking for a window beyond MFR_COMP_MAX_RAW is refused before any allocation. */
static void test_bad_window(void)
{
    size_t big = 8u << 20;
    g_autofree uint8_t *src = g_malloc0(big);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 23);
    g_autofree uint8_t *frame = g_malloc(ZSTD_compressBound(big));
    /* streaming without a pledged size: the frame names its window, not its content size */
    ZSTD_inBuffer ib = { src, big, 0 };
    ZSTD_outBuffer ob = { frame, ZSTD_compressBound(big), 0 };
    g_assert_cmpuint(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end), ==, 0);
    ZSTD_freeCCtx(c);
    uint8_t *dst = fenced(2);
    struct iovec out[2] = { { dst, PS }, { dst + PS, PS } };
    MfrDecompressor *d = mfr_decompressor_new(NULL);
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_decompress_iov(d, frame, ob.pos, out, 2, 2 * PS, &err));
    g_assert_nonnull(strstr(err->message, "not a valid zstd frame"));
    mfr_decompressor_free(d);
    unfence(dst, 2);
}

/* ---------- auto policy ---------- */

static void test_policy_fixed(void)
{
    MfrCompPolicy p;
    mfr_comp_policy_init(&p, false, true);
    for (int i = 0; i < 100; i++) {
        g_assert_true(mfr_comp_policy_try(&p));
        mfr_comp_policy_tried(&p, 1000, 1000, 1); /* incompressible, slow */
        mfr_comp_policy_sent(&p, 1000, 1e-6);
    }
    g_assert_cmpuint(p.backoffs, ==, 0);
}

/* tries until skipped; returns how many packets were skipped in a row */
static unsigned skipped_run(MfrCompPolicy *p)
{
    unsigned n = 0;
    while (!mfr_comp_policy_try(p)) {
        n++;
    }
    return n;
}

static void test_policy_incompressible(void)
{
    MfrCompPolicy p;
    mfr_comp_policy_init(&p, true, true);
    g_assert_cmpuint(skipped_run(&p), ==, 1); /* the first packet measures the link */
    mfr_comp_policy_tried(&p, 1 << 19, 1 << 19, 1e-4); /* did not shrink */
    g_assert_cmpuint(p.backoffs, ==, 1);
    g_assert_cmpuint(skipped_run(&p), ==, MFR_COMP_BACKOFF_MIN);
    /* the retry fails again, far from paying (nothing shrank): 8 times as long each time */
    mfr_comp_policy_tried(&p, 1 << 19, 1 << 19, 1e-4);
    g_assert_cmpuint(skipped_run(&p), ==, MFR_COMP_BACKOFF_FAR * MFR_COMP_BACKOFF_MIN);
    mfr_comp_policy_tried(&p, 1 << 19, 1 << 19, 1e-4);
    g_assert_cmpuint(skipped_run(&p),
                     ==, MFR_COMP_BACKOFF_FAR * MFR_COMP_BACKOFF_FAR * MFR_COMP_BACKOFF_MIN);
    /* data became compressible: the retry pays, no pause, and the backoff is reset */
    mfr_comp_policy_tried(&p, 1 << 19, 1 << 15, 1e-4);
    g_assert_true(mfr_comp_policy_pays(&p));
    g_assert_true(mfr_comp_policy_try(&p));
    g_assert_cmpuint(p.backoff, ==, MFR_COMP_BACKOFF_MIN);
    g_assert_cmpuint(p.backoffs, ==, 3);
    /* the backoff never grows past its cap */
    for (int i = 0; i < 20; i++) {
        mfr_comp_policy_tried(&p, 1 << 19, 1 << 19, 1e-4);
        skipped_run(&p);
    }
    g_assert_cmpuint(p.backoff, ==, MFR_COMP_BACKOFF_MAX);
}

static void test_policy_link(void)
{
    MfrCompPolicy p;
    mfr_comp_policy_init(&p, true, true);
    g_assert_false(mfr_comp_policy_try(&p)); /* the first packet measures the link */
    /* halves the data at 500 MB/s: saves 250 MB/s of link time */
    mfr_comp_policy_tried(&p, 500000, 250000, 1e-3);
    g_assert_cmpuint(p.backoffs, ==, 0);
    /* a 125 MB/s link: compressing pays */
    mfr_comp_policy_sent(&p, 125000, 1e-3);
    mfr_comp_policy_tried(&p, 500000, 250000, 1e-3);
    g_assert_true(mfr_comp_policy_pays(&p));
    g_assert_cmpuint(p.backoffs, ==, 0);
    /* a link at 5 GB/s (loopback): compressing costs more than it saves */
    for (int i = 0; i < 20; i++) {
        mfr_comp_policy_sent(&p, 5000000, 1e-3);
    }
    g_assert_false(mfr_comp_policy_pays(&p));
    mfr_comp_policy_tried(&p, 500000, 250000, 1e-3);
    g_assert_cmpuint(p.backoffs, ==, 1);
    g_assert_cmpuint(skipped_run(&p), ==, MFR_COMP_BACKOFF_MIN);
}

/* The whole decision, fed the timings of a loopback link, then of a capped one: when auto
 * pauses, how long, what a probe compresses, and the counters. Deterministic: no clock. */
#define PKT (512u << 10) /* 128 pages */

static void test_policy_decisions(void)
{
    MfrCompPolicy p;
    mfr_comp_policy_init(&p, true, true);
    /* first packet: sent raw, it measures the link (4 GB/s) */
    g_assert_false(mfr_comp_policy_try(&p));
    mfr_comp_policy_sent(&p, PKT, PKT / 4e9);
    /* second: a probe; its sample halves at 400 MB/s (saves 200 MB/s of link time): far
     * from paying, the packet goes raw */
    g_assert_true(mfr_comp_policy_try(&p));
    g_assert_cmpuint(mfr_comp_policy_sample(&p, PKT), ==, MFR_COMP_SAMPLE);
    g_assert_false(mfr_comp_policy_sampled(&p, MFR_COMP_SAMPLE, MFR_COMP_SAMPLE / 2,
                                           MFR_COMP_SAMPLE / 400e6));
    g_assert_false(mfr_comp_policy_pays(&p));
    g_assert_cmpuint(p.backoffs, ==, 1);
    mfr_comp_policy_sent(&p, PKT, PKT / 4e9);
    /* the raw packets of the pause keep the link measured at 4 GB/s */
    unsigned skipped = 0;
    while (!mfr_comp_policy_try(&p)) {
        skipped++;
        mfr_comp_policy_sent(&p, PKT, PKT / 4e9);
    }
    g_assert_cmpuint(skipped, ==, MFR_COMP_BACKOFF_MIN);
    /* the probe compresses a sample only; it fails: raw packet, a pause 8x as long */
    g_assert_true(p.probing);
    g_assert_cmpuint(mfr_comp_policy_sample(&p, PKT), ==, MFR_COMP_SAMPLE);
    g_assert_false(mfr_comp_policy_sampled(&p, MFR_COMP_SAMPLE, MFR_COMP_SAMPLE / 2,
                                           MFR_COMP_SAMPLE / 400e6));
    g_assert_cmpuint(p.probes, ==, 2);
    g_assert_cmpuint(p.probes_failed, ==, 2);
    g_assert_cmpuint(p.backoffs, ==, 2);
    g_assert_cmpuint(skipped_run(&p), ==, MFR_COMP_BACKOFF_FAR * MFR_COMP_BACKOFF_MIN);
    /* 1 GiB over 4 channels is 512 packets per channel: two samples (64 KiB each) were
     * compressed in its first 75 packets, none whole; the next comes after 512 more */
    g_assert_cmpuint(p.backoff, ==, MFR_COMP_BACKOFF_MAX / 2);

    /* the link slows to a 125 MB/s cap shared by 4 channels (31 MB/s each): the next probe's
     * sample pays, so the whole packet is compressed, and the backoff is reset */
    for (int i = 0; i < 30; i++) {
        mfr_comp_policy_sent(&p, PKT, PKT / 31e6);
    }
    g_assert_true(mfr_comp_policy_sampled(&p, MFR_COMP_SAMPLE, MFR_COMP_SAMPLE / 2,
                                          MFR_COMP_SAMPLE / 400e6));
    g_assert_cmpuint(p.probes, ==, 3);
    g_assert_cmpuint(p.probes_failed, ==, 2);
    g_assert_false(p.probing);
    g_assert_cmpuint(p.backoff, ==, MFR_COMP_BACKOFF_MIN);
    mfr_comp_policy_tried(&p, PKT, PKT / 2, PKT / 400e6);
    /* from now on every packet is compressed whole: no pause, no sample */
    for (int i = 0; i < 100; i++) {
        g_assert_true(mfr_comp_policy_try(&p));
        g_assert_cmpuint(mfr_comp_policy_sample(&p, PKT), ==, PKT);
        mfr_comp_policy_sent(&p, PKT / 2, (PKT / 2) / 31e6);
        mfr_comp_policy_tried(&p, PKT, PKT / 2, PKT / 400e6);
    }
    g_assert_cmpuint(p.backoffs, ==, 2);
    /* a rate limiter's burst lets one packet in four leave at once: the link is still as
     * slow as the others say (bytes over seconds, not an average of speeds) */
    for (int i = 0; i < 100; i++) {
        g_assert_true(mfr_comp_policy_try(&p));
        mfr_comp_policy_sent(&p, PKT / 2, i % 4 == 0 ? 1e-6 : (PKT / 2) / 20e6);
        mfr_comp_policy_tried(&p, PKT, PKT / 2, PKT / 400e6);
    }
    g_assert_cmpuint(p.backoffs, ==, 2);
    g_assert_cmpfloat(p.link_bps, <, 40e6);

    /* a narrow miss (saves 200 MB/s, link 300 MB/s): the pause only doubles */
    MfrCompPolicy q;
    mfr_comp_policy_init(&q, true, true);
    g_assert_false(mfr_comp_policy_try(&q));
    mfr_comp_policy_sent(&q, PKT, PKT / 300e6);
    mfr_comp_policy_tried(&q, PKT, PKT / 2, PKT / 400e6);
    g_assert_cmpuint(skipped_run(&q), ==, MFR_COMP_BACKOFF_MIN);
    g_assert_cmpuint(q.backoff, ==, 2 * MFR_COMP_BACKOFF_MIN);

    /* zstd mode (not adaptive): never a sample, never a pause */
    MfrCompPolicy z;
    mfr_comp_policy_init(&z, false, true);
    mfr_comp_policy_sent(&z, PKT, PKT / 4e9);
    mfr_comp_policy_tried(&z, PKT, PKT, PKT / 400e6);
    g_assert_true(mfr_comp_policy_try(&z));
    g_assert_cmpuint(mfr_comp_policy_sample(&z, PKT), ==, PKT);
    g_assert_cmpuint(z.backoffs + z.probes, ==, 0);

    /* rdma (a post says nothing about the link): the first packet is compressed whole */
    MfrCompPolicy r;
    mfr_comp_policy_init(&r, true, false);
    g_assert_true(mfr_comp_policy_try(&r));
    g_assert_cmpuint(mfr_comp_policy_sample(&r, PKT), ==, PKT);
    mfr_comp_policy_tried(&r, PKT, PKT / 30, PKT / 400e6);
    g_assert_true(mfr_comp_policy_pays(&r));
    g_assert_cmpuint(r.backoffs, ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/compress/roundtrip_flat", test_roundtrip_flat);
    g_test_add_func("/compress/roundtrip_scattered", test_roundtrip_scattered);
    g_test_add_func("/compress/not_shrunk", test_not_shrunk);
    g_test_add_func("/compress/level", test_level);
    g_test_add_func("/compress/bad_frames", test_bad_frames);
    g_test_add_func("/compress/bad_window", test_bad_window);
    g_test_add_func("/compress/policy_fixed", test_policy_fixed);
    g_test_add_func("/compress/policy_incompressible", test_policy_incompressible);
    g_test_add_func("/compress/policy_link", test_policy_link);
    g_test_add_func("/compress/policy_decisions", test_policy_decisions);
    return g_test_run();
}
