/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Registration of a side's RAM with its transport domain, chunk by chunk into a region table
 * (regions.h), in parallel threads: the source's blocks whole (one chunk each) and waited
 * for, since its guest RAM is backed already; the destination's in chunks in the background,
 * each populated first (pinning fresh memory is first touch, the dominant setup cost) and
 * published as soon as it is registered.
 */
#include "engine.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* requested, or one per online CPU; at most MFR_REGISTER_MAX_THREADS */
static unsigned register_cpu_threads(unsigned requested)
{
    unsigned n = requested;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    return MIN(n, MFR_REGISTER_MAX_THREADS);
}

unsigned mfr_register_threads(unsigned requested, unsigned nchunks)
{
    /* more threads than chunks only cost thread start-ups */
    return MIN(register_cpu_threads(requested), MAX(nchunks, 1u));
}

bool mfr_register_budget(const MfrRegisterJob *job, GError **error)
{
    uint64_t bytes = 0;
    for (unsigned b = 0; b < job->nblocks; b++) {
        bytes += job->blocks[b].length;
    }
    uint64_t staging = job->channel_staging * job->channels;
    GError *xerr = NULL;
    if (!xp_region_budget(job->dom, bytes + staging, job->channels, &xerr)) {
        g_autofree char *rings = staging ? g_strdup_printf(
            " and staging %s (%.1f MiB)", g_str_equal(job->side, "source") ? "buffers" : "rings",
            staging / 1048576.0) : g_strdup("");
        g_autofree char *what = g_strdup_printf(
            "%s: cannot pin %u block%s (%.1f MiB) and %u channels' buffers%s", job->side,
            job->nblocks, job->nblocks == 1 ? "" : "s", bytes / 1048576.0, job->channels,
            rings);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    return true;
}

/* Populate steps inside a chunk: a few ms each even at first-touch speed. */
#define MFR_POPULATE_PIECE (2ull << 20)

struct MfrRegisterBg {
    MfrRegisterChunksJob job;
    unsigned nthreads;
    GThread *t[MFR_REGISTER_MAX_THREADS];
    atomic_uint next;      /* flat chunk hand-out; relaxed: each index is taken once */
    atomic_bool failed;    /* one of ours failed: the others stop too */
    GMutex lock;
    double t0, t_end;      /* t_end, cpu_s: under lock */
    double cpu_s;
    unsigned done;         /* chunks registered, under lock */
};

static void chunk_locate(const MfrChunkMap *m, uint32_t c, unsigned *block, uint32_t *chunk)
{
    unsigned b = 0;
    while (b + 1 < m->nblocks && c >= m->first[b + 1]) {
        b++;
    }
    *block = b;
    *chunk = c - m->first[b];
}

/* Best effort: before Linux 5.14 (EINVAL) registration faults the pages itself. In pieces,
 * because populating holds the process's mmap lock for reading: a long call would stall
 * every mmap() meanwhile, e.g. the buffers of a channel being accepted, and with them the
 * start of the migration this overlaps with. */
static void chunk_populate(uint8_t *addr, uint64_t len)
{
    for (uint64_t p = 0; p < len; p += MFR_POPULATE_PIECE) {
        (void)madvise(addr + p, MIN(MFR_POPULATE_PIECE, len - p), MADV_POPULATE_WRITE);
    }
}

/* Registers flat chunk c (block b, chunk k) into the table; false with the error. */
static bool chunk_register(MfrRegisterBg *bg, uint32_t c, unsigned b, uint32_t k,
                           GError **error)
{
    const MfrRegisterChunksJob *job = &bg->job;
    const MfrRegisterJob *base = &job->base;
    uint64_t off, len;
    mfr_region_table_chunk_range(job->table, b, k, &off, &len);
    uint8_t *addr = (uint8_t *)base->blocks[b].host + off;
    if (base->prefault) {
        chunk_populate(addr, len);
    }
    if (job->delay_ms) {
        g_usleep(job->delay_ms * 1000ull);
    }
    GError *xerr = NULL;
    XpRegion *r = NULL;
    bool ok;
    if ((int64_t)c == job->inject_fail) {
        xerr = g_error_new_literal(XP_ERROR, XP_ERROR_FAILED,
                                   "registration failed (injected by the test seam)");
        ok = false;
    } else {
        ok = xp_region_register(base->dom, addr, len, base->access, &r, &xerr);
    }
    if (!ok) {
        /* a block of one chunk is named as a whole */
        g_autofree char *what =
            mfr_region_table_map(job->table)->layout[b].chunks == 1
                ? g_strdup_printf("%s: block '%s'", base->side, base->blocks[b].name)
                : g_strdup_printf("%s: block '%s' chunk %u (offset 0x%" G_GINT64_MODIFIER
                                  "x, %.1f MiB)", base->side, base->blocks[b].name, k, off,
                                  len / 1048576.0);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    mfr_region_table_set_local(job->table, b, k, r);
    return true;
}

static gpointer chunk_worker(gpointer opaque)
{
    MfrRegisterBg *bg = opaque;
    const MfrRegisterChunksJob *job = &bg->job;
    const MfrChunkMap *map = mfr_region_table_map(job->table);
    double cpu0 = mfr_thread_cpu_s();
    unsigned done = 0;
    for (;;) {
        uint32_t c = atomic_fetch_add_explicit(&bg->next, 1, memory_order_relaxed);
        if (c >= map->total || atomic_load(&bg->failed) || mfr_failed(job->fail)) {
            break;
        }
        unsigned b;
        uint32_t k;
        chunk_locate(map, c, &b, &k);
        GError *err = NULL;
        if (!chunk_register(bg, c, b, k, &err)) {
            atomic_store(&bg->failed, true);
            mfr_fail_set(job->fail, err);
            break;
        }
        done++;
        if (!mfr_region_table_ready(job->table, b, k, job->publish, job->publish_opaque,
                                    &err)) {
            atomic_store(&bg->failed, true);
            if (err) {
                mfr_fail_echo(job->fail, err);
            }
            break;
        }
    }
    double cpu = mfr_thread_cpu_s() - cpu0;
    g_mutex_lock(&bg->lock);
    bg->cpu_s += cpu;
    bg->done += done;
    bg->t_end = MAX(bg->t_end, mfr_now_s());
    g_mutex_unlock(&bg->lock);
    return NULL;
}

MfrRegisterBg *mfr_register_chunks_start(const MfrRegisterChunksJob *job, GError **error)
{
    const MfrRegisterJob *base = &job->base;
    unsigned n = mfr_register_threads(base->threads, mfr_region_table_map(job->table)->total);
    MfrRegisterBg *bg = g_new0(MfrRegisterBg, 1);
    bg->job = *job;
    g_mutex_init(&bg->lock);
    bg->t0 = bg->t_end = mfr_now_s();
    for (unsigned i = 0; i < n; i++) {
        GError *err = NULL;
        bg->t[bg->nthreads] = xp_thread_new_on("mfr-register", chunk_worker, bg,
                                               base->numa_node, NULL, &err);
        if (!bg->t[bg->nthreads]) {
            if (bg->nthreads == 0) {
                g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED,
                            "%s: cannot start a registration thread: %s", base->side,
                            err->message);
                g_error_free(err);
                g_mutex_clear(&bg->lock);
                g_free(bg);
                return NULL;
            }
            g_clear_error(&err); /* fewer threads only makes it slower */
            break;
        }
        bg->nthreads++;
    }
    return bg;
}

bool mfr_register_chunks_join(MfrRegisterBg *bg, MfrRegisterResult *res)
{
    if (!bg) {
        return false;
    }
    for (unsigned i = 0; i < bg->nthreads; i++) {
        g_thread_join(bg->t[i]);
    }
    bool ok = bg->done == mfr_region_table_map(bg->job.table)->total;
    res->ms = (bg->t_end - bg->t0) * 1000;
    res->cpu_s = res->helper_cpu_s = bg->cpu_s;
    res->threads = bg->nthreads;
    g_mutex_clear(&bg->lock);
    g_free(bg);
    return ok;
}

bool mfr_register_blocks(const MfrRegisterJob *job, MfrRegionTable *table,
                         MfrRegisterResult *res, GError **error)
{
    *res = (MfrRegisterResult){ 0 };
    if (!mfr_register_budget(job, error)) {
        return false;
    }
    /* a latch of its own: the caller gets the first failure as its error */
    MfrFail fail;
    mfr_fail_init(&fail, NULL, NULL);
    MfrRegisterChunksJob cj = { .base = *job, .table = table, .fail = &fail,
                                .inject_fail = -1 };
    MfrRegisterBg *bg = mfr_register_chunks_start(&cj, error);
    bool ok = bg && mfr_register_chunks_join(bg, res);
    if (bg && !ok) {
        mfr_fail_propagate(&fail, error);
    }
    mfr_fail_clear(&fail);
    return ok;
}
