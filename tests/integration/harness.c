/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Implementation of the end-to-end test harness: deterministic guest memory, a writer that
 * dirties pages at a rate and marks them after writing, and a destination thread.
 */
#include <stdatomic.h>

#include "harness.h"

#include "engine.h"
#include "xp.h"

#include <dirent.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void *tmap(uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(p != MAP_FAILED);
    return p;
}

TGuest *tguest_new(unsigned nblocks, uint64_t size, uint64_t seed)
{
    uint64_t sizes[4] = { size, size, size, size };
    g_assert(nblocks <= 4);
    return tguest_new_sizes(nblocks, sizes, seed);
}

TGuest *tguest_new_sizes(unsigned nblocks, const uint64_t *sizes, uint64_t seed)
{
    g_assert(nblocks <= 4);
    TGuest *g = g_new0(TGuest, 1);
    g->nblocks = nblocks;
    g->seed = seed;
    for (unsigned b = 0; b < nblocks; b++) {
        uint64_t size = sizes[b];
        uint64_t *p = tmap(size);
        uint64_t x = seed * 131 + b;
        for (uint64_t page = 0; page < size / 4096; page++) {
            if (splitmix(&x) % 4 == 0) {
                continue; /* zero page */
            }
            uint64_t *w = p + page * 512;
            for (unsigned i = 0; i < 512; i++) {
                w[i] = splitmix(&x);
            }
        }
        g->block[b] = (MfrRamBlock){
            .name = g_strdup_printf("ram%u", b),
            .host = p,
            .length = size,
            .page_size = 4096,
        };
        g->dirty[b] = g_new0(uint64_t, (size / 4096 + 63) / 64);
    }
    return g;
}

static gpointer tguest_writer(gpointer opaque)
{
    TGuest *g = opaque;
    uint64_t x = g->seed ^ 0xabcdef;
    double t0 = g_get_monotonic_time() / 1e6;
    uint64_t bytes = 0;
    while (!atomic_load(&g->writer_stop)) {
        double allowed = (g_get_monotonic_time() / 1e6 - t0) * g->rate_mbps * 1e6;
        if (bytes > allowed) {
            g_usleep(1000);
            continue;
        }
        unsigned b = splitmix(&x) % g->nblocks;
        uint64_t npages = g->block[b].length / 4096;
        uint64_t page = splitmix(&x) % npages;
        uint64_t *w = (uint64_t *)g->block[b].host + page * 512;
        uint64_t v = splitmix(&x);
        for (unsigned i = 0; i < 512; i += 8) {
            w[i] = v + i;
        }
        /* after the write: the harvest must never see the bit before the data */
        mfr_bitmap_mark(g->dirty[b], page);
        bytes += 4096;
        atomic_fetch_add(&g->writes, 1);
    }
    return NULL;
}

void tguest_start_writer(TGuest *g, double rate_mbps)
{
    g->rate_mbps = rate_mbps;
    atomic_store(&g->writer_stop, false);
    g->writer = g_thread_new("tguest-writer", tguest_writer, g);
}

static void tguest_stop(void *opaque)
{
    TGuest *g = opaque;
    if (g->writer) {
        atomic_store(&g->writer_stop, true);
        g_thread_join(g->writer);
        g->writer = NULL;
    }
    if (g->unmarked_write) {
        ((uint8_t *)g->block[1].host)[g->unmarked_offset] ^= 0x01;
        g->unmarked_write = false;
    }
    g->stopped = true;
}

static void tguest_harvest(void *opaque, unsigned block, uint64_t *bitmap, uint64_t npages)
{
    TGuest *g = opaque;
    if (block == 0 && g->redirty_pages && !g->stopped) {
        /* ordering test: the same pages get a new version every round */
        g->redirty_round++;
        for (unsigned i = 0; i < g->redirty_pages; i++) {
            uint64_t *w = (uint64_t *)g->block[0].host + (uint64_t)i * 2 * 512;
            for (unsigned k = 0; k < 512; k++) {
                w[k] = g->redirty_round * 1000003 + k;
            }
            mfr_bitmap_mark(g->dirty[0], (uint64_t)i * 2);
        }
    }
    mfr_bitmap_harvest(g->dirty[block], bitmap, npages);
}

static void tguest_resume(void *opaque)
{
    TGuest *g = opaque;
    g->stopped = false;
}

const MfrDirtyOps tguest_dirty_ops = {
    .harvest = tguest_harvest,
    .stop = tguest_stop,
    .resume = tguest_resume,
};

void tguest_free(TGuest *g)
{
    if (!g) {
        return;
    }
    tguest_stop(g);
    for (unsigned b = 0; b < g->nblocks; b++) {
        munmap(g->block[b].host, g->block[b].length);
        g_free((char *)g->block[b].name);
        g_free(g->dirty[b]);
    }
    g_free(g);
}

/* ---------- destination ---------- */

static bool tdest_alloc(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                        void **host, GError **error)
{
    TDest *t = opaque;
    if (t->alloc_delay_ms) {
        g_usleep(t->alloc_delay_ms * 1000ull);
    }
    *host = tmap(length);
    g_assert_cmpuint(t->nmaps, <, G_N_ELEMENTS(t->maps));
    t->maps[t->nmaps] = *host;
    t->map_len[t->nmaps++] = length;
    return true;
}

static gpointer tdest_thread(gpointer opaque)
{
    TDest *t = opaque;
    t->ok = mfr_dest_run(t->dst, &t->error);
    t->t_end = g_get_monotonic_time() / 1e6;
    return NULL;
}

static TDest *tdest_start_cfg(TDest *t, MfrDestConfig *cfg, const MfrRamBlock *blocks,
                              unsigned n, const TDestOpts *o)
{
    GError *err = NULL;
    t->dst = mfr_dest_new(cfg, &err);
    g_assert_no_error(err);
    if (o && o->register_delay_ms) {
        mfr_dest_inject_register_delay(t->dst, o->register_delay_ms);
    }
    if (o && o->inject_register_failure) {
        mfr_dest_inject_register_failure(t->dst, o->inject_block, o->inject_chunk);
    }
    if (o && o->refuse_compression) {
        g_assert_true(mfr_dest_set_compression(t->dst, MFR_COMPRESSION_OFF, &err));
    }
    for (unsigned i = 0; i < n; i++) {
        g_assert_true(mfr_dest_add_block(t->dst, &blocks[i], &err));
    }
    t->thread = g_thread_new("tdest", tdest_thread, t);
    return t;
}

TDest *tdest_start(const char *uri, const uint8_t token[16], unsigned timeout_ms)
{
    TDestOpts o = { .timeout_ms = timeout_ms };
    return tdest_start_opts(uri, token, &o);
}

TDest *tdest_start_opts(const char *uri, const uint8_t token[16], const TDestOpts *o)
{
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    cfg.uri = uri;
    memcpy(cfg.token, token, 16);
    TDest *t = g_new0(TDest, 1);
    t->alloc_delay_ms = o->alloc_delay_ms;
    cfg.alloc_block = tdest_alloc;
    cfg.alloc_opaque = t;
    cfg.memory_zeroed = true;
    if (o->timeout_ms) {
        cfg.timeout_ms = o->timeout_ms;
    }
    cfg.registration_chunk = o->registration_chunk;
    cfg.transport.registration_threads = o->registration_threads;
    cfg.progress = o->progress;
    cfg.progress_opaque = o->progress_opaque;
    return tdest_start_cfg(t, &cfg, NULL, 0, o);
}

TDest *tdest_start_with(const char *uri, const uint8_t token[16], const MfrRamBlock *blocks,
                        unsigned n)
{
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    cfg.uri = uri;
    memcpy(cfg.token, token, 16);
    cfg.memory_zeroed = true;
    return tdest_start_cfg(g_new0(TDest, 1), &cfg, blocks, n, NULL);
}

void tdest_join(TDest *t)
{
    if (t->thread) {
        g_thread_join(t->thread);
        t->thread = NULL;
    }
}

void tdest_free(TDest *t)
{
    if (!t) {
        return;
    }
    if (t->thread) {
        mfr_dest_cancel(t->dst);
        tdest_join(t);
    }
    mfr_dest_free(t->dst);
    for (unsigned i = 0; i < t->nmaps; i++) {
        munmap(t->maps[i], t->map_len[i]);
    }
    g_clear_error(&t->error);
    g_free(t);
}

void tcompare_ram(TGuest *g, MfrDest *dst)
{
    unsigned n = 0;
    const MfrRamBlock *db = mfr_dest_blocks(dst, &n);
    g_assert_cmpuint(n, ==, g->nblocks);
    for (unsigned i = 0; i < g->nblocks; i++) {
        const MfrRamBlock *found = NULL;
        for (unsigned j = 0; j < n; j++) {
            if (strcmp(db[j].name, g->block[i].name) == 0) {
                found = &db[j];
            }
        }
        g_assert_nonnull(found);
        g_assert_cmpuint(found->length, ==, g->block[i].length);
        if (memcmp(found->host, g->block[i].host, found->length) != 0) {
            for (uint64_t p = 0; p < found->length / 4096; p++) {
                if (memcmp((uint8_t *)found->host + p * 4096,
                           (uint8_t *)g->block[i].host + p * 4096, 4096)) {
                    g_error("block %s differs first at page %" G_GUINT64_FORMAT,
                            found->name, p);
                }
            }
        }
    }
}

void ttoken(uint8_t token[16], uint8_t fill)
{
    for (unsigned i = 0; i < 16; i++) {
        token[i] = fill + i;
    }
}

/* Threads of this process that are not on their way out. pthread_join() returns when the
 * kernel clears the thread's tid, a moment before the thread leaves /proc/self/task; right
 * after that the kernel drops the thread's memory map, and a status without VmSize says so,
 * so a joined thread is not counted but for a window of a few instructions. */
static unsigned tthread_count_once(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/task");
    g_assert_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/status", e->d_name);
        g_autofree char *status = NULL;
        if (g_file_get_contents(path, &status, NULL, NULL) && strstr(status, "\nVmSize:")) {
            n++;
        }
    }
    closedir(d);
    return n;
}

#ifdef __SANITIZE_THREAD__
static gpointer tthread_nothing(gpointer data)
{
    return data;
}
#endif

unsigned tthread_count(void)
{
#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer starts a thread of its own with the first pthread_create(): have it
     * running before any baseline count, or the first count is one short. */
    static gsize started;
    if (g_once_init_enter(&started)) {
        g_thread_join(g_thread_new("tsan-warmup", tthread_nothing, NULL));
        g_once_init_leave(&started, 1);
    }
#endif
    return tthread_count_once();
}

unsigned tthread_wait_count(unsigned expect)
{
    /* the window above, under load: wait for the condition itself (bounded, so a leaked
     * thread fails the test instead of hanging it) */
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    unsigned n = tthread_count_once();
    while (n != expect && g_get_monotonic_time() < deadline) {
        g_usleep(1000);
        n = tthread_count_once();
    }
    return n;
}

uint64_t tpinned_bytes(void)
{
    g_autofree char *status = NULL;
    g_assert_true(g_file_get_contents("/proc/self/status", &status, NULL, NULL));
    const char *p = strstr(status, "VmPin:");
    g_assert_nonnull(p);
    return g_ascii_strtoull(p + strlen("VmPin:"), NULL, 10) * 1024;
}

bool ttest_init(int *argc, char ***argv, uint64_t tcp_size, uint64_t rdma_size,
                TCase *cases[2])
{
    static TCase tcp = { "tcp", "tcp:127.0.0.1:0", 0 }, rdma = { "rdma", NULL, 0 };
    bool rdma_only = *argc > 1 && strcmp((*argv)[*argc - 1], "--rdma-only") == 0;
    const char *addr = xp_ops_lookup("rdma") ? trdma_addr() : NULL;
    if (rdma_only) {
        (*argv)[--*argc] = NULL;
        if (!addr) {
            g_print("1..0 # SKIP MFR_TEST_RDMA_ADDR not set (no RDMA device)\n");
            return false; /* TAP: the plan line above says skip */
        }
    }
    g_test_init(argc, argv, NULL);
    tcp.size = tcp_size;
    rdma.size = rdma_size;
    if (addr) {
        /* lives as long as the process: the tests hold it */
        rdma.listen_uri = g_strdup_printf(strchr(addr, ':') ? "rdma:[%s]:0" : "rdma:%s:0",
                                          addr);
    }
    cases[0] = rdma_only ? NULL : &tcp;
    cases[1] = addr ? &rdma : NULL;
    return true;
}

void ttest_add(const char *prefix, const TCase *tc, const char *name, GTestDataFunc fn)
{
    g_autofree char *path = g_strdup_printf("/%s/%s/%s", prefix, tc->transport, name);
    g_test_add_data_func(path, tc, fn);
}

const char *trdma_addr(void)
{
    const char *a = g_getenv("MFR_TEST_RDMA_ADDR");
    return a && *a ? a : NULL;
}
