/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Parallel block registration (register.c) against a fake transport that records every
 * region_register() call: each block registered exactly once whatever the thread count, the
 * pinning budget asked once for the whole session before anything is pinned, the first
 * failure named with its side and block, and populating that leaves the bytes as they were;
 * then the chunked background registration of pipelined setups: the layout, each chunk
 * registered and reported once, a failing chunk named, a failed session stopping it.
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

static void fake_deregister(XpRegion *r)
{
    g_free(r);
}

static const XpOps fake_ops = {
    .version = XP_OPS_VERSION,
    .name = "fake",
    .caps = XP_CAP_REGIONS,
    .region_register = fake_register,
    .region_deregister = fake_deregister,
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
    return (MfrRegisterJob){ .dom = &d->base, .blocks = r->blocks,
                             .nblocks = r->n, .access = XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL,
                             .prefault = false, .threads = threads, .channels = 4,
                             .side = "destination", .numa_node = -1 };
}

/* The whole blocks of r as a region table, as the source registers its RAM. */
static MfrRegionTable *whole_table(FakeDom *d, const Ram *r)
{
    MfrChunkMap whole;
    mfr_chunk_map_whole(&whole, r->blocks, r->n);
    g_assert_cmpuint(whole.total, ==, r->n);
    return mfr_region_table_new(&d->base, MFR_REGIONS_LOCAL, r->blocks, &whole, "the test");
}

static void test_each_block_once(void)
{
    for (unsigned threads = 1; threads <= 4; threads++) {
        Ram r;
        ram_init(&r, 8);
        FakeDom d;
        fake_init(&d, &r);
        MfrRegisterJob job = job_for(&d, &r, threads);
        MfrRegionTable *t = whole_table(&d, &r);
        MfrRegisterResult res;
        g_autoptr(GError) err = NULL;
        g_assert_true(mfr_register_blocks(&job, t, &res, &err));
        g_assert_no_error(err);
        g_assert_cmpuint(mfr_region_table_missing(t), ==, 0);
        uint64_t total = 0;
        for (unsigned i = 0; i < r.n; i++) {
            g_assert_cmpuint(d.registered[i], ==, 1);
            FakeRegion *fr = (FakeRegion *)mfr_region_table_local(t, i, 0);
            g_assert_nonnull(fr);
            g_assert_cmpuint(fr->block, ==, i);
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
        mfr_region_table_free(t);
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
    MfrRegionTable *t = whole_table(&d, &r);
    MfrRegisterResult res;
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_register_blocks(&job, t, &res, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "destination: cannot pin 3 blocks (74.0 MiB) and 4 "
                                      "channels' buffers: need more than RLIMIT_MEMLOCK");
    for (unsigned i = 0; i < r.n; i++) {
        g_assert_cmpuint(d.registered[i], ==, 0); /* nothing pinned */
    }
    mfr_region_table_free(t);
    ram_check_and_free(&r);
    g_mutex_clear(&d.lock);
}

/* Compressing over a placed transport, each channel also pins its staging ring (or the
 * source its staging buffer): the one up-front check asks for blocks + rings, and a refusal
 * names the rings. */
static void test_budget_staging(void)
{
    Ram r;
    ram_init(&r, 2); /* 73 MiB */
    FakeDom d;
    fake_init(&d, &r);
    MfrRegisterJob job = job_for(&d, &r, 1);
    job.channel_staging = 2u << 20;
    g_autoptr(GError) err = NULL;
    g_assert_true(mfr_register_budget(&job, &err));
    g_assert_cmpuint(d.budget_bytes, ==, (73u << 20) + 4 * (2u << 20));
    g_assert_cmpuint(d.budget_channels, ==, 4);
    d.budget_fails = true;
    g_assert_false(mfr_register_budget(&job, &err));
    g_assert_cmpstr(err->message, ==, "destination: cannot pin 2 blocks (73.0 MiB) and 4 "
                                      "channels' buffers and staging rings (8.0 MiB): need "
                                      "more than RLIMIT_MEMLOCK");
    g_clear_error(&err);
    job.side = "source";
    g_assert_false(mfr_register_budget(&job, &err));
    g_assert_nonnull(strstr(err->message, "and staging buffers (8.0 MiB)"));
    /* uncompressed: the blocks alone, as before */
    job.channel_staging = 0;
    d.budget_fails = false;
    g_assert_true(mfr_register_budget(&job, NULL));
    g_assert_cmpuint(d.budget_bytes, ==, 73u << 20);
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
    MfrRegionTable *t = whole_table(&d, &r);
    MfrRegisterResult res;
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_register_blocks(&job, t, &res, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "destination: block 'ram2': injected pinning failure");
    /* what was registered stays in the table for its free; nothing after the failure */
    g_assert_nonnull(mfr_region_table_local(t, 0, 0));
    g_assert_nonnull(mfr_region_table_local(t, 1, 0));
    g_assert_null(mfr_region_table_local(t, 2, 0));
    g_assert_cmpuint(mfr_region_table_missing(t), ==, 2);
    g_assert_cmpuint(d.registered[3], ==, 0);
    mfr_region_table_free(t); /* half-built: frees the two there are */
    ram_check_and_free(&r);
    g_mutex_clear(&d.lock);
}

static void test_threads(void)
{
    /* 0 = one per CPU, never more than blocks, capped */
    g_assert_cmpuint(mfr_register_threads(3, 1), ==, 1);
    g_assert_cmpuint(mfr_register_threads(3, 5), ==, 3);
    g_assert_cmpuint(mfr_register_threads(64, 64), ==, MFR_REGISTER_MAX_THREADS);
    g_assert_cmpuint(mfr_register_threads(0, 64), >=, 1);
    g_assert_cmpuint(mfr_register_threads(64, UINT32_MAX), ==, MFR_REGISTER_MAX_THREADS);
}

/* ---------- chunks in the background (pipelined registration) ---------- */

static void test_chunk_map(void)
{
    MfrRamBlock b[3] = {
        { .name = "a", .length = 3u << 20, .page_size = 4096 },
        { .name = "b", .length = (5u << 20) + 4096, .page_size = 4096 },
        { .name = "huge", .length = 8u << 20, .page_size = 2u << 20 },
    };
    MfrChunkMap m;
    mfr_chunk_map_init(&m, b, 3, 1u << 20, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, 1u << 20);
    g_assert_cmpuint(m.layout[0].chunks, ==, 3);
    g_assert_cmpuint(m.layout[1].chunks, ==, 6);         /* the last one a single page */
    g_assert_cmpuint(m.layout[2].chunk_size, ==, 2u << 20); /* whole huge pages */
    g_assert_cmpuint(m.layout[2].chunks, ==, 4);
    g_assert_cmpuint(m.first[1], ==, 3);
    g_assert_cmpuint(m.first[2], ==, 9);
    g_assert_cmpuint(m.total, ==, 13);
    /* an odd request is rounded up to whole pages */
    mfr_chunk_map_init(&m, b, 2, 5000, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, 8192);
    /* default: ~8 chunks per thread, but at least 2 MiB and at most 64 MiB */
    mfr_chunk_map_init(&m, b, 3, 0, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, MFR_REGION_CHUNK_MIN);
    MfrRamBlock big = { .name = "big", .length = 128ull << 30, .page_size = 4096 };
    mfr_chunk_map_init(&m, &big, 1, 0, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, MFR_REGION_CHUNK_DEFAULT);
    big.length = 1ull << 30;
    mfr_chunk_map_init(&m, &big, 1, 0, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, 64ull << 20); /* 1 GiB / 16 */
    mfr_chunk_map_init(&m, &big, 1, 0, 16);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, 8ull << 20);  /* 1 GiB / 128 */
    /* never more chunks per block than REGION messages allow */
    mfr_chunk_map_init(&m, &big, 1, 4096, 2);
    g_assert_cmpuint(m.layout[0].chunk_size, ==, 16384);
    g_assert_cmpuint(m.layout[0].chunks, ==, MFR_MAX_CHUNKS_PER_BLOCK);
    /* the source's view of the same layout */
    mfr_chunk_map_init(&m, b, 3, 1u << 20, 2);
    MfrChunkMap s;
    mfr_chunk_map_from_layout(&s, m.layout, 3);
    g_assert_cmpmem(&s, sizeof(s), &m, sizeof(m));
}

typedef struct {
    XpDomain base;
    GMutex lock;
    const MfrRamBlock *blocks;
    unsigned nblocks;
    unsigned calls;
    uint8_t *seen;          /* per flat chunk: region_register() calls */
    const MfrChunkMap *map;
} ChunkDom;

typedef struct {
    unsigned flat;
} ChunkRegion;

static bool chunk_register(XpDomain *xd, void *addr, size_t len, uint32_t access,
                           XpRegion **out, GError **error)
{
    ChunkDom *d = (ChunkDom *)xd;
    for (unsigned b = 0; b < d->nblocks; b++) {
        uint8_t *host = d->blocks[b].host;
        if ((uint8_t *)addr < host || (uint8_t *)addr >= host + d->blocks[b].length) {
            continue;
        }
        const MfrChunkLayout *l = &d->map->layout[b];
        uint64_t off = (uint64_t)((uint8_t *)addr - host);
        g_assert_cmpuint(off % l->chunk_size, ==, 0);
        g_assert_cmpuint(len, ==, MIN(l->chunk_size, d->blocks[b].length - off));
        ChunkRegion *r = g_new0(ChunkRegion, 1);
        r->flat = d->map->first[b] + (unsigned)(off / l->chunk_size);
        g_mutex_lock(&d->lock);
        d->seen[r->flat]++;
        d->calls++;
        g_mutex_unlock(&d->lock);
        *out = (XpRegion *)r;
        return true;
    }
    g_assert_not_reached();
}

static const XpOps chunk_ops = {
    .version = XP_OPS_VERSION,
    .name = "fake-chunks",
    .caps = XP_CAP_REGIONS,
    .region_register = chunk_register,
    .region_deregister = fake_deregister,
};

typedef struct {
    GMutex lock;
    MfrRegionTable *table;
    const MfrChunkMap *map;
    uint8_t *ready;          /* per flat chunk: publish() calls */
    uint32_t published[8];   /* per block: chunks published so far */
} ChunkSink;

/* Called under the table's lock, in chunk order per block whatever the thread count. */
static bool chunk_publish(void *opaque, unsigned block, uint32_t chunk, GError **error)
{
    ChunkSink *k = opaque;
    unsigned flat = k->map->first[block] + chunk;
    g_mutex_lock(&k->lock);
    /* the region is in place before it is published */
    ChunkRegion *r = (ChunkRegion *)mfr_region_table_local(k->table, block, chunk);
    g_assert_nonnull(r);
    g_assert_cmpuint(r->flat, ==, flat);
    g_assert_cmpuint(chunk, ==, k->published[block]);
    k->published[block]++;
    k->ready[flat]++;
    g_mutex_unlock(&k->lock);
    return true;
}

static void no_on_fail(void *opaque, const GError *err, bool quiet)
{
}

/* Runs a background registration of r's blocks in 1 MiB chunks; returns join's verdict. */
static bool run_chunks(Ram *r, unsigned threads, int64_t inject, MfrFail *fail, ChunkDom *d,
                       ChunkSink *k, MfrChunkMap *map, MfrRegisterResult *res)
{
    mfr_chunk_map_init(map, r->blocks, r->n, 1u << 20, threads);
    memset(d, 0, sizeof(*d));
    d->base.ops = &chunk_ops;
    g_mutex_init(&d->lock);
    d->blocks = r->blocks;
    d->nblocks = r->n;
    d->map = map;
    d->seen = g_new0(uint8_t, map->total);
    memset(k, 0, sizeof(*k));
    g_mutex_init(&k->lock);
    k->table = mfr_region_table_new(&d->base, MFR_REGIONS_LOCAL, r->blocks, map,
                                    "the test");
    k->map = map;
    k->ready = g_new0(uint8_t, map->total);
    MfrRegisterChunksJob job = {
        .base = { .dom = &d->base, .blocks = r->blocks, .nblocks = r->n,
                  .access = XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL, .prefault = true,
                  .threads = threads, .channels = 4, .side = "destination",
                  .numa_node = -1 },
        .table = k->table, .fail = fail, .publish = chunk_publish, .publish_opaque = k,
        .inject_fail = inject,
    };
    g_autoptr(GError) err = NULL;
    MfrRegisterBg *bg = mfr_register_chunks_start(&job, &err);
    g_assert_no_error(err);
    g_assert_nonnull(bg);
    return mfr_register_chunks_join(bg, res);
}

static void chunks_free(ChunkDom *d, ChunkSink *k, const MfrChunkMap *map)
{
    mfr_region_table_free(k->table);
    g_free(k->ready);
    g_free(d->seen);
    g_mutex_clear(&d->lock);
    g_mutex_clear(&k->lock);
}

static void test_chunks_each_once(void)
{
    for (unsigned threads = 1; threads <= 4; threads++) {
        Ram r;
        ram_init(&r, 4); /* 3 + 70 + 1 + 129 MiB: 203 chunks */
        MfrFail fail;
        mfr_fail_init(&fail, no_on_fail, NULL);
        ChunkDom d;
        ChunkSink k;
        MfrChunkMap map;
        MfrRegisterResult res = { 0 };
        g_assert_true(run_chunks(&r, threads, -1, &fail, &d, &k, &map, &res));
        g_assert_false(mfr_failed(&fail));
        g_assert_cmpuint(map.total, ==, 203);
        g_assert_cmpuint(d.calls, ==, 203);
        for (unsigned i = 0; i < map.total; i++) {
            g_assert_cmpuint(d.seen[i], ==, 1);
            g_assert_cmpuint(k.ready[i], ==, 1);
        }
        g_assert_cmpuint(res.threads, ==, threads);
        g_assert_cmpfloat(res.ms, >=, 0);
        chunks_free(&d, &k, &map);
        mfr_fail_clear(&fail);
        ram_check_and_free(&r);
    }
}

/* The first failing chunk fails the session with its name; one thread stops right there. */
static void test_bad_chunk(void)
{
    Ram r;
    ram_init(&r, 2); /* 3 + 70 MiB */
    MfrFail fail;
    mfr_fail_init(&fail, no_on_fail, NULL);
    ChunkDom d;
    ChunkSink k;
    MfrChunkMap map;
    MfrRegisterResult res = { 0 };
    g_assert_false(run_chunks(&r, 1, 3 + 5, &fail, &d, &k, &map, &res));
    g_assert_true(mfr_failed(&fail));
    g_autoptr(GError) err = NULL;
    mfr_fail_propagate(&fail, &err);
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "destination: block 'ram1' chunk 5 (offset 0x500000, 1.0 "
                                      "MiB): registration failed (injected by the test seam)");
    g_assert_cmpuint(d.calls, ==, 8);
    g_assert_cmpuint(k.ready[7], ==, 1);
    g_assert_cmpuint(k.ready[8], ==, 0);
    g_assert_null(mfr_region_table_local(k.table, 1, 5));
    g_assert_cmpuint(d.seen[9], ==, 0);
    chunks_free(&d, &k, &map);
    mfr_fail_clear(&fail);
    ram_check_and_free(&r);
}

/* A session that failed elsewhere (cancel) stops the threads: nothing more is pinned. */
static void test_chunks_stop_on_failure(void)
{
    Ram r;
    ram_init(&r, 2);
    MfrFail fail;
    mfr_fail_init(&fail, no_on_fail, NULL);
    mfr_fail(&fail, MFR_ERROR_CANCELLED, "cancelled");
    ChunkDom d;
    ChunkSink k;
    MfrChunkMap map;
    MfrRegisterResult res = { 0 };
    g_assert_false(run_chunks(&r, 2, -1, &fail, &d, &k, &map, &res));
    g_assert_cmpuint(d.calls, ==, 0);
    chunks_free(&d, &k, &map);
    mfr_fail_clear(&fail);
    ram_check_and_free(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/register/each_block_once", test_each_block_once);
    g_test_add_func("/register/bad_budget", test_bad_budget);
    g_test_add_func("/register/budget_staging", test_budget_staging);
    g_test_add_func("/register/bad_block", test_bad_block);
    g_test_add_func("/register/threads", test_threads);
    g_test_add_func("/register/chunk_map", test_chunk_map);
    g_test_add_func("/register/chunks_each_once", test_chunks_each_once);
    g_test_add_func("/register/bad_chunk", test_bad_chunk);
    g_test_add_func("/register/chunks_stop_on_failure", test_chunks_stop_on_failure);
    return g_test_run();
}
