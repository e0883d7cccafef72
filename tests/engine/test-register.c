/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Parallel block registration (register.c) against a fake transport that records every
 * region_register() call: each block registered exactly once whatever the thread count, the
 * pinning budget asked once for the whole session before anything is pinned, the first
 * failure named with its side and block, and populating that leaves the bytes as they were.
 */
#include "engine.h"

#include <string.h>
#include <sys/mman.h>

typedef struct {
    XpDomain base;
    GMutex lock;
    unsigned registered[8];   /* calls per block index */
    uint64_t budget_bytes;    /* what region_budget() was asked */
    unsigned budget_channels;
    unsigned budget_calls;
    unsigned calls_before_budget;
    int fail_block;           /* region_register() of this block fails; -1 none */
    bool budget_fails;
    const MfrRamBlock *blocks;
    unsigned nblocks;
} FakeDom;

typedef struct {
    unsigned block;
} FakeRegion;

static int fake_block_of(FakeDom *d, void *addr)
{
    for (unsigned i = 0; i < d->nblocks; i++) {
        if (d->blocks[i].host == addr) {
            return (int)i;
        }
    }
    return -1;
}

static bool fake_register(XpDomain *xd, void *addr, size_t len, uint32_t access, XpRegion **out,
                          GError **error)
{
    FakeDom *d = (FakeDom *)xd;
    int b = fake_block_of(d, addr);
    g_assert_cmpint(b, >=, 0);
    g_assert_cmpuint(len, ==, d->blocks[b].length);
    g_assert_cmphex(access, ==, XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL);
    g_mutex_lock(&d->lock);
    d->registered[b]++;
    if (d->budget_calls == 0) {
        d->calls_before_budget++;
    }
    g_mutex_unlock(&d->lock);
    if (b == d->fail_block) {
        g_set_error(error, XP_ERROR, XP_ERROR_MEMLOCK, "injected pinning failure");
        return false;
    }
    FakeRegion *r = g_new0(FakeRegion, 1);
    r->block = (unsigned)b;
    *out = (XpRegion *)r;
    return true;
}

static bool fake_budget(XpDomain *xd, uint64_t bytes, unsigned channels, GError **error)
{
    FakeDom *d = (FakeDom *)xd;
    g_mutex_lock(&d->lock);
    d->budget_calls++;
    d->budget_bytes = bytes;
    d->budget_channels = channels;
    g_mutex_unlock(&d->lock);
    if (d->budget_fails) {
        g_set_error(error, XP_ERROR, XP_ERROR_MEMLOCK, "need more than RLIMIT_MEMLOCK");
        return false;
    }
    return true;
}

static const XpOps fake_ops = {
    .version = XP_OPS_VERSION,
    .name = "fake",
    .caps = XP_CAP_REGIONS,
    .region_register = fake_register,
    .region_budget = fake_budget,
};

typedef struct {
    MfrRamBlock blocks[8];
    unsigned n;
} Ram;

/* Blocks of awkward sizes (not chunk multiples), filled with a pattern. */
static void ram_init(Ram *r, unsigned n)
{
    static const uint64_t mib[] = { 3, 70, 1, 129, 5, 64, 2, 9 };
    r->n = n;
    for (unsigned i = 0; i < n; i++) {
        uint64_t len = mib[i] << 20;
        uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        g_assert_true(p != MAP_FAILED);
        for (uint64_t off = 0; off < len; off += 4096 * 7) {
            p[off] = (uint8_t)(off / 4096 + i);
        }
        r->blocks[i] = (MfrRamBlock){ .name = g_strdup_printf("ram%u", i), .host = p,
                                      .length = len, .page_size = 4096 };
    }
}

static void ram_check_and_free(Ram *r)
{
    for (unsigned i = 0; i < r->n; i++) {
        uint8_t *p = r->blocks[i].host;
        /* populating (MADV_POPULATE_WRITE) must never change a byte */
        for (uint64_t off = 0; off < r->blocks[i].length; off += 4096) {
            uint8_t want = off % (4096 * 7) == 0 ? (uint8_t)(off / 4096 + i) : 0;
            if (p[off] != want) {
                g_error("block %u byte at 0x%" G_GINT64_MODIFIER "x changed", i, off);
            }
        }
        munmap(p, r->blocks[i].length);
        g_free((char *)r->blocks[i].name);
    }
}

static void fake_init(FakeDom *d, const Ram *r)
{
    memset(d, 0, sizeof(*d));
    d->base.ops = &fake_ops;
    g_mutex_init(&d->lock);
    d->fail_block = -1;
    d->blocks = r->blocks;
    d->nblocks = r->n;
}

static MfrRegisterJob job_for(FakeDom *d, const Ram *r, unsigned threads)
{
    return (MfrRegisterJob){ .ops = &fake_ops, .dom = &d->base, .blocks = r->blocks,
                             .nblocks = r->n, .access = XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL,
                             .prefault = true, .threads = threads, .channels = 4,
                             .side = "destination" };
}

static void regions_free(XpRegion **regions, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        g_free(regions[i]);
    }
}

static void test_each_block_once(void)
{
    for (unsigned threads = 1; threads <= 4; threads++) {
        Ram r;
        ram_init(&r, 8);
        FakeDom d;
        fake_init(&d, &r);
        MfrRegisterJob job = job_for(&d, &r, threads);
        XpRegion *regions[8] = { 0 };
        MfrRegisterResult res;
        g_autoptr(GError) err = NULL;
        g_assert_true(mfr_register_blocks(&job, regions, &res, &err));
        g_assert_no_error(err);
        uint64_t total = 0;
        for (unsigned i = 0; i < r.n; i++) {
            g_assert_cmpuint(d.registered[i], ==, 1);
            g_assert_nonnull(regions[i]);
            g_assert_cmpuint(((FakeRegion *)regions[i])->block, ==, i);
            total += r.blocks[i].length;
        }
        /* one budget question for everything, before the first pin */
        g_assert_cmpuint(d.budget_calls, ==, 1);
        g_assert_cmpuint(d.calls_before_budget, ==, 0);
        g_assert_cmpuint(d.budget_bytes, ==, total);
        g_assert_cmpuint(d.budget_channels, ==, 4);
        g_assert_cmpuint(res.threads, ==, threads);
        g_assert_cmpfloat(res.ms, >, 0);
        g_assert_cmpfloat(res.cpu_s, >=, res.helper_cpu_s);
        regions_free(regions, r.n);
        ram_check_and_free(&r);
        g_mutex_clear(&d.lock);
    }
}

static void test_bad_budget(void)
{
    Ram r;
    ram_init(&r, 3);
    FakeDom d;
    fake_init(&d, &r);
    d.budget_fails = true;
    MfrRegisterJob job = job_for(&d, &r, 2);
    XpRegion *regions[8] = { 0 };
    MfrRegisterResult res;
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_register_blocks(&job, regions, &res, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "destination: cannot pin 3 blocks (74.0 MiB) and 4 "
                                      "channels' buffers: need more than RLIMIT_MEMLOCK");
    for (unsigned i = 0; i < r.n; i++) {
        g_assert_cmpuint(d.registered[i], ==, 0); /* nothing pinned */
    }
    ram_check_and_free(&r);
    g_mutex_clear(&d.lock);
}

static void test_bad_block(void)
{
    Ram r;
    ram_init(&r, 4);
    FakeDom d;
    fake_init(&d, &r);
    d.fail_block = 2;
    MfrRegisterJob job = job_for(&d, &r, 1); /* one thread: blocks in order, stops at 2 */
    XpRegion *regions[8] = { 0 };
    MfrRegisterResult res;
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_register_blocks(&job, regions, &res, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "destination: block 'ram2': injected pinning failure");
    /* what was registered stays for the caller's cleanup; nothing after the failure */
    g_assert_nonnull(regions[0]);
    g_assert_nonnull(regions[1]);
    g_assert_null(regions[2]);
    g_assert_cmpuint(d.registered[3], ==, 0);
    regions_free(regions, r.n);
    ram_check_and_free(&r);
    g_mutex_clear(&d.lock);
}

static void test_threads(void)
{
    /* 0 = one per CPU, never more than pieces of work, capped */
    g_assert_cmpuint(mfr_register_threads(3, 1, 1 << 20, false), ==, 1);
    g_assert_cmpuint(mfr_register_threads(3, 5, 1 << 20, false), ==, 3);
    g_assert_cmpuint(mfr_register_threads(4, 1, 1ull << 30, true), ==, 4); /* 16 chunks */
    g_assert_cmpuint(mfr_register_threads(4, 1, 100ull << 20, true), ==, 2); /* 2 chunks */
    g_assert_cmpuint(mfr_register_threads(64, 64, 64ull << 30, true), ==,
                     MFR_REGISTER_MAX_THREADS);
    g_assert_cmpuint(mfr_register_threads(0, 64, 64ull << 30, true), >=, 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/register/each_block_once", test_each_block_once);
    g_test_add_func("/register/bad_budget", test_bad_budget);
    g_test_add_func("/register/bad_block", test_bad_block);
    g_test_add_func("/register/threads", test_threads);
    return g_test_run();
}
