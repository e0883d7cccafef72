/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Registration of a side's RAM blocks with its transport domain, in parallel threads: the
 * source's blocks whole and at once (its guest RAM is backed already), the destination's in
 * chunks in the background, each populated first (pinning fresh memory is first touch, the
 * dominant setup cost) and announced as soon as it is registered.
 */
#include "engine.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

typedef struct {
    const MfrRegisterJob *job;
    XpRegion **regions;
    atomic_uint next_block;           /* work hand-out; relaxed: each index is taken once */
    atomic_bool failed;               /* stop handing out work after the first error */
    GMutex lock;
    GError *first;                    /* under lock */
    double helper_cpu_s;              /* under lock: CPU of the threads other than the caller */
} MfrRegisterRun;

static void register_fail(MfrRegisterRun *run, GError *err)
{
    g_mutex_lock(&run->lock);
    if (!run->first) {
        run->first = err;
        err = NULL;
    }
    g_mutex_unlock(&run->lock);
    atomic_store(&run->failed, true);
    g_clear_error(&err);
}

static gpointer register_block_worker(gpointer opaque)
{
    MfrRegisterRun *run = opaque;
    const MfrRegisterJob *job = run->job;
    for (;;) {
        unsigned b = atomic_fetch_add_explicit(&run->next_block, 1, memory_order_relaxed);
        if (b >= job->nblocks || atomic_load(&run->failed)) {
            break;
        }
        GError *xerr = NULL;
        if (!xp_region_register(job->dom, job->blocks[b].host, job->blocks[b].length,
                                job->access, &run->regions[b], &xerr)) {
            g_autofree char *what = g_strdup_printf("%s: block '%s'", job->side,
                                                    job->blocks[b].name);
            register_fail(run, mfr_error_from_xp(xerr, what));
        }
    }
    return NULL;
}

typedef struct {
    MfrRegisterRun *run;
    GThreadFunc fn;
} MfrRegisterHelper;

static gpointer register_helper(gpointer opaque)
{
    MfrRegisterHelper *h = opaque;
    double cpu0 = mfr_thread_cpu_s();
    h->fn(h->run);
    double cpu = mfr_thread_cpu_s() - cpu0;
    g_mutex_lock(&h->run->lock);
    h->run->helper_cpu_s += cpu;
    g_mutex_unlock(&h->run->lock);
    return NULL;
}

/* Runs fn on `threads` threads (the caller's included) and waits for them. */
static void register_parallel(MfrRegisterRun *run, unsigned threads, GThreadFunc fn)
{
    GThread *t[MFR_REGISTER_MAX_THREADS];
    MfrRegisterHelper helper = { .run = run, .fn = fn };
    unsigned started = 0;
    for (unsigned i = 1; i < threads; i++) {
        GError *err = NULL;
        t[started] = xp_thread_new("mfr-register", register_helper, &helper, &err);
        if (!t[started]) {
            g_clear_error(&err); /* fewer helpers only makes it slower */
            break;
        }
        started++;
    }
    fn(run);
    for (unsigned i = 0; i < started; i++) {
        g_thread_join(t[i]);
    }
}

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

unsigned mfr_register_threads(unsigned requested, unsigned nblocks)
{
    /* more threads than blocks only cost thread start-ups */
    return MIN(register_cpu_threads(requested), MAX(nblocks, 1u));
}

bool mfr_register_budget(const MfrRegisterJob *job, GError **error)
{
    uint64_t bytes = 0;
    for (unsigned b = 0; b < job->nblocks; b++) {
        bytes += job->blocks[b].length;
    }
    GError *xerr = NULL;
    if (!xp_region_budget(job->dom, bytes, job->channels, &xerr)) {
        g_autofree char *what = g_strdup_printf(
            "%s: cannot pin %u block%s (%.1f MiB) and %u channels' buffers", job->side,
            job->nblocks, job->nblocks == 1 ? "" : "s", bytes / 1048576.0, job->channels);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    return true;
}

bool mfr_register_blocks(const MfrRegisterJob *job, XpRegion **regions, MfrRegisterResult *res,
                         GError **error)
{
    g_return_val_if_fail(!job->prefault, false); /* populating is the chunked path's */
    double t0 = mfr_now_s(), cpu0 = mfr_thread_cpu_s();
    if (!mfr_register_budget(job, error)) {
        return false;
    }
    unsigned threads = mfr_register_threads(job->threads, job->nblocks);
    MfrRegisterRun run = { .job = job, .regions = regions };
    g_mutex_init(&run.lock);
    register_parallel(&run, threads, register_block_worker);
    g_mutex_clear(&run.lock);
    res->ms = (mfr_now_s() - t0) * 1000;
    res->helper_cpu_s = run.helper_cpu_s;
    res->cpu_s = mfr_thread_cpu_s() - cpu0 + run.helper_cpu_s;
    res->threads = threads;
    if (run.first) {
        g_propagate_error(error, run.first);
        return false;
    }
    return true;
}

/* ---------- chunks in the background (pipelined with the first round) ---------- */

/* Populate steps inside a chunk: a few ms each even at first-touch speed. */
#define MFR_POPULATE_PIECE (2ull << 20)

unsigned mfr_register_chunk_threads(unsigned requested)
{
    return register_cpu_threads(requested);
}

void mfr_chunk_map_init(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n,
                        uint64_t chunk_bytes, unsigned threads)
{
    uint64_t want = chunk_bytes;
    if (want == 0) {
        /* The source waits for the first chunk, and the threads finish their first chunks
         * together: with RAM / threads below a few chunks nothing would overlap. */
        uint64_t total = 0;
        for (unsigned b = 0; b < n; b++) {
            total += blocks[b].length;
        }
        want = total / ((uint64_t)MAX(threads, 1u) * MFR_REGION_CHUNKS_PER_THREAD);
        want = CLAMP(want, MFR_REGION_CHUNK_MIN, MFR_REGION_CHUNK_DEFAULT);
    }
    memset(m, 0, sizeof(*m));
    m->nblocks = n;
    for (unsigned b = 0; b < n; b++) {
        uint64_t ps = blocks[b].page_size, len = blocks[b].length;
        /* fewer, larger chunks where a block would need too many REGION messages */
        uint64_t cs = MAX(want, mfr_chunk_count(len, MFR_MAX_CHUNKS_PER_BLOCK));
        cs = MIN(cs, len);
        cs = mfr_chunk_count(cs, ps) * ps; /* whole pages: len is a multiple of ps */
        m->layout[b] = (MfrChunkLayout){ .chunk_size = cs,
                                         .chunks = (uint32_t)mfr_chunk_count(len, cs) };
        m->first[b] = m->total;
        m->total += m->layout[b].chunks;
    }
}

void mfr_chunk_map_from_layout(MfrChunkMap *m, const MfrChunkLayout *layout, unsigned n)
{
    memset(m, 0, sizeof(*m));
    m->nblocks = n;
    for (unsigned b = 0; b < n; b++) {
        m->layout[b] = layout[b];
        m->first[b] = m->total;
        m->total += layout[b].chunks;
    }
}

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

static gpointer chunk_worker(gpointer opaque)
{
    MfrRegisterBg *bg = opaque;
    const MfrRegisterChunksJob *job = &bg->job;
    const MfrRegisterJob *base = &job->base;
    double cpu0 = mfr_thread_cpu_s();
    unsigned done = 0;
    for (;;) {
        uint32_t c = atomic_fetch_add_explicit(&bg->next, 1, memory_order_relaxed);
        if (c >= job->map->total || atomic_load(&bg->failed) || mfr_failed(job->fail)) {
            break;
        }
        unsigned b;
        uint32_t k;
        chunk_locate(job->map, c, &b, &k);
        const MfrChunkLayout *l = &job->map->layout[b];
        uint64_t off = (uint64_t)k * l->chunk_size;
        uint64_t len = MIN(l->chunk_size, base->blocks[b].length - off);
        uint8_t *addr = (uint8_t *)base->blocks[b].host + off;
        if (base->prefault) {
            /* Best effort: before Linux 5.14 (EINVAL) registration faults the pages itself. In
             * pieces, because populating holds the process's mmap lock for reading: a long
             * call would stall every mmap() meanwhile, e.g. the buffers of a channel being
             * accepted, and with them the start of the migration this overlaps with. */
            for (uint64_t p = 0; p < len; p += MFR_POPULATE_PIECE) {
                (void)madvise(addr + p, MIN(MFR_POPULATE_PIECE, len - p), MADV_POPULATE_WRITE);
            }
        }
        if (job->delay_ms) {
            g_usleep(job->delay_ms * 1000ull);
        }
        GError *xerr = NULL;
        bool ok;
        if ((int64_t)c == job->inject_fail) {
            xerr = g_error_new_literal(XP_ERROR, XP_ERROR_FAILED,
                                       "registration failed (injected by the test seam)");
            ok = false;
        } else {
            ok = xp_region_register(base->dom, addr, len, base->access, &job->regions[c],
                                    &xerr);
        }
        if (!ok) {
            g_autofree char *what = g_strdup_printf(
                "%s: block '%s' chunk %u (offset 0x%" G_GINT64_MODIFIER "x, %.1f MiB)",
                base->side, base->blocks[b].name, k, off, len / 1048576.0);
            atomic_store(&bg->failed, true);
            mfr_fail_set(job->fail, mfr_error_from_xp(xerr, what));
            break;
        }
        done++;
        job->ready(job->ready_opaque, b, k);
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
    unsigned n = MIN(mfr_register_chunk_threads(base->threads), MAX(job->map->total, 1u));
    MfrRegisterBg *bg = g_new0(MfrRegisterBg, 1);
    bg->job = *job;
    g_mutex_init(&bg->lock);
    bg->t0 = bg->t_end = mfr_now_s();
    for (unsigned i = 0; i < n; i++) {
        GError *err = NULL;
        bg->t[bg->nthreads] = xp_thread_new("mfr-register", chunk_worker, bg, &err);
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
    bool ok = bg->done == bg->job.map->total;
    res->ms = (bg->t_end - bg->t0) * 1000;
    res->cpu_s = res->helper_cpu_s = bg->cpu_s;
    res->threads = bg->nthreads;
    g_mutex_clear(&bg->lock);
    g_free(bg);
    return ok;
}
