/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Synthetic guest (see guest.h). Contents are a pure function of (seed, block, page) so two
 * runs with one seed are identical whatever the fill thread count; writers draw from their own
 * generators and record every write in the block's shared bitmap after the store.
 */
#include "guest.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#define GUEST_PAGE_SIZE 4096u
#define GUEST_HUGE_PAGE_SIZE (2u << 20)
#define GUEST_MAX_BLOCKS 64u
#define FILL_CHUNK_BYTES (2u << 20)

struct MfrGuest {
    MfrGuestOptions opts;
    uint32_t page_size;
    unsigned nblocks;
    MfrRamBlock blocks[GUEST_MAX_BLOCKS];
    char *names[GUEST_MAX_BLOCKS];
    uint64_t *dirty[GUEST_MAX_BLOCKS];      /* shared with the migration thread's harvest() */
    uint64_t first_page[GUEST_MAX_BLOCKS + 1]; /* global page index where each block starts */
    double fill_s;

    /* Writer control. lock serialises start/stop/resume, which may come from the migration
     * thread (stop, resume) and the owner (start, stop, free) at once. */
    GMutex lock;
    GThread **writers;
    bool running;          /* writer threads exist */
    bool wanted;           /* started by the owner: resume() restarts them */
    uint64_t generation;   /* fresh random streams for every (re)start */
    gint64 run_started_us;
    double run_s;
    atomic_bool stop;      /* writers poll it between pages */
    atomic_uint_fast64_t pages_dirtied;
};

/* splitmix64: tiny, fast, good enough to make pages incompressible. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return mix64(*state);
}

static uint64_t page_seed(const MfrGuest *g, unsigned block, uint64_t page)
{
    return mix64(g->opts.seed ^ mix64(((uint64_t)block << 48) ^ page ^ 0x5eedull));
}

typedef enum { PAGE_RANDOM, PAGE_COMPRESSIBLE, PAGE_ZERO } PageKind;

static PageKind page_kind(const MfrGuest *g, uint64_t seed)
{
    unsigned pct = (unsigned)(seed % 100);
    if (pct < g->opts.pct_random) {
        return PAGE_RANDOM;
    }
    if (pct < g->opts.pct_random + g->opts.pct_compressible) {
        return PAGE_COMPRESSIBLE;
    }
    return PAGE_ZERO;
}

static void fill_random(uint8_t *p, uint32_t len, uint64_t state)
{
    uint64_t *w = (uint64_t *)p;
    for (uint32_t i = 0; i < len / 8; i++) {
        w[i] = rng_next(&state);
    }
}

/* Text-like content: a 512-byte line of words repeated over the page, so zstd shrinks it by
 * an order of magnitude, as it would a page of logs or source. */
static void fill_compressible(uint8_t *p, uint32_t len, uint64_t state)
{
    static const char *const words[] = {
        "migration", "page", "dirty", "round", "channel", "memory", "the", "of", "and",
        "guest", "block", "barrier", "send", "write", "queue", "zero", "copy", "host",
    };
    char line[512];
    size_t n = 0;
    while (n < sizeof(line)) {
        const char *word = words[rng_next(&state) % G_N_ELEMENTS(words)];
        size_t wl = strlen(word);
        for (size_t i = 0; i < wl && n < sizeof(line); i++) {
            line[n++] = word[i];
        }
        if (n < sizeof(line)) {
            line[n++] = (rng_next(&state) % 8 == 0) ? '\n' : ' ';
        }
    }
    for (uint32_t off = 0; off < len; off += sizeof(line)) {
        memcpy(p + off, line, MIN(sizeof(line), (size_t)(len - off)));
    }
}

static void fill_page(MfrGuest *g, unsigned block, uint64_t page)
{
    uint8_t *p = (uint8_t *)g->blocks[block].host + page * g->page_size;
    uint64_t seed = page_seed(g, block, page);
    switch (page_kind(g, seed)) {
    case PAGE_RANDOM:
        fill_random(p, g->page_size, seed);
        break;
    case PAGE_COMPRESSIBLE:
        fill_compressible(p, g->page_size, seed);
        break;
    case PAGE_ZERO:
        /* Fresh anonymous memory is already zero; leaving it untouched keeps it unfaulted,
         * like a guest's never-used RAM. */
        break;
    }
}

static unsigned block_of(const MfrGuest *g, uint64_t global_page)
{
    unsigned b = 0;
    while (b + 1 < g->nblocks && global_page >= g->first_page[b + 1]) {
        b++;
    }
    return b;
}

typedef struct {
    MfrGuest *g;
    atomic_uint_fast64_t next_chunk; /* chunks handed out so far; shared by the fill threads */
    uint64_t nchunks;
    uint64_t chunk_pages;
} FillJob;

static gpointer fill_thread(gpointer data)
{
    FillJob *job = data;
    MfrGuest *g = job->g;
    for (;;) {
        /* Relaxed is enough: each chunk index is claimed once, the join publishes the pages. */
        uint64_t c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed);
        if (c >= job->nchunks) {
            return NULL;
        }
        uint64_t start = c * job->chunk_pages;
        uint64_t end = MIN(start + job->chunk_pages, g->first_page[g->nblocks]);
        for (uint64_t gp = start; gp < end; gp++) {
            unsigned b = block_of(g, gp);
            fill_page(g, b, gp - g->first_page[b]);
        }
    }
}

static void fill_all(MfrGuest *g)
{
    FillJob job = { .g = g };
    job.chunk_pages = MAX(1u, FILL_CHUNK_BYTES / g->page_size);
    job.nchunks = (g->first_page[g->nblocks] + job.chunk_pages - 1) / job.chunk_pages;
    atomic_init(&job.next_chunk, 0);
    unsigned nthreads = MAX(1u, g->opts.fill_threads);
    g_autofree GThread **threads = g_new0(GThread *, nthreads);
    gint64 t0 = g_get_monotonic_time();
    /* The calling thread is fill thread 0. */
    for (unsigned i = 1; i < nthreads; i++) {
        threads[i] = g_thread_new("guest-fill", fill_thread, &job);
    }
    fill_thread(&job);
    for (unsigned i = 1; i < nthreads; i++) {
        g_thread_join(threads[i]);
    }
    g->fill_s = (double)(g_get_monotonic_time() - t0) / 1e6;
}

void mfr_guest_options_init(MfrGuestOptions *o)
{
    *o = (MfrGuestOptions){
        .size = 1ull << 30,
        .nblocks = 1,
        .pct_random = 40,
        .pct_compressible = 40,
        .pct_zero = 20,
        .seed = 1,
        .dirty_rate_mbps = 64,
        .writers = 1,
        .fill_threads = 2,
        .thp = true,
    };
}

bool mfr_guest_parse_mix(const char *text, MfrGuestOptions *o, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(text, ":", -1);
    guint64 v[3];
    bool ok = g_strv_length(parts) == 3;
    for (unsigned i = 0; ok && i < 3; i++) {
        ok = g_ascii_string_to_unsigned(parts[i], 10, 0, 100, &v[i], NULL);
    }
    if (!ok || v[0] + v[1] + v[2] != 100) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "'%s' is not random:compressible:zero percentages summing to 100 "
                    "(example: 40:40:20)", text);
        return false;
    }
    o->pct_random = (unsigned)v[0];
    o->pct_compressible = (unsigned)v[1];
    o->pct_zero = (unsigned)v[2];
    return true;
}

static bool check_options(const MfrGuestOptions *o, uint32_t page_size, GError **error)
{
    if (o->nblocks < 1 || o->nblocks > GUEST_MAX_BLOCKS) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "guest: %u blocks requested, allowed 1..%u", o->nblocks, GUEST_MAX_BLOCKS);
        return false;
    }
    if (o->size == 0 || o->size % page_size != 0 || o->size / page_size < o->nblocks) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "guest: size %" G_GUINT64_FORMAT " must be a non-zero multiple of the "
                    "%u-byte page size with at least one page per block (%u blocks)",
                    o->size, page_size, o->nblocks);
        return false;
    }
    if (o->pct_random + o->pct_compressible + o->pct_zero != 100) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "guest: page mix %u:%u:%u does not sum to 100", o->pct_random,
                    o->pct_compressible, o->pct_zero);
        return false;
    }
    if (o->dirty_rate_mbps < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "guest: negative dirty rate %.1f MB/s",
                    o->dirty_rate_mbps);
        return false;
    }
    return true;
}

MfrGuest *mfr_guest_new(const MfrGuestOptions *o, GError **error)
{
    uint32_t page_size = o->hugetlb ? GUEST_HUGE_PAGE_SIZE : GUEST_PAGE_SIZE;
    if (!check_options(o, page_size, error)) {
        return NULL;
    }
    g_autoptr(MfrGuest) g = g_new0(MfrGuest, 1);
    g->opts = *o;
    g->opts.writers = MAX(1u, o->writers);
    g->page_size = page_size;
    g_mutex_init(&g->lock);
    atomic_init(&g->stop, false);
    atomic_init(&g->pages_dirtied, 0);

    uint64_t total_pages = o->size / page_size;
    for (unsigned b = 0; b < o->nblocks; b++) {
        uint64_t npages = total_pages / o->nblocks + (b < total_pages % o->nblocks ? 1 : 0);
        uint64_t len = npages * page_size;
        /* Huge pages must be reserved at mmap time: with MAP_NORESERVE a missing one would be
         * a SIGBUS at first touch instead of an error here. */
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | (o->hugetlb ? MAP_HUGETLB : MAP_NORESERVE);
        void *host = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (host == MAP_FAILED) {
            int err = errno;
            g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED,
                        "guest: mmap of block ram%u (%" G_GUINT64_FORMAT " MiB%s) failed: %s%s",
                        b, len >> 20, o->hugetlb ? ", MAP_HUGETLB" : "", g_strerror(err),
                        o->hugetlb ? " (reserve 2 MiB pages: sysctl vm.nr_hugepages=N)" : "");
            return NULL;
        }
        g->nblocks = b + 1; /* from here on free() unmaps it */
        g->names[b] = g_strdup_printf("ram%u", b);
        g->blocks[b] = (MfrRamBlock){
            .name = g->names[b], .host = host, .length = len, .page_size = page_size,
        };
        g->dirty[b] = g_new0(uint64_t, (npages + 63) / 64);
        g->first_page[b + 1] = g->first_page[b] + npages;
        if (o->thp && !o->hugetlb) {
            /* Advisory: fewer, cheaper first-touch faults; failure only costs speed. */
            (void)madvise(host, len, MADV_HUGEPAGE);
        }
    }
    fill_all(g);
    return g_steal_pointer(&g);
}

static void stop_locked(MfrGuest *g)
{
    if (!g->running) {
        return;
    }
    /* Release pairs with the acquire load in writer_thread(); the joins below then guarantee
     * no writer touches guest RAM after stop returns. */
    atomic_store_explicit(&g->stop, true, memory_order_release);
    for (unsigned i = 0; i < g->opts.writers; i++) {
        g_thread_join(g->writers[i]);
        g->writers[i] = NULL;
    }
    g->running = false;
    g->run_s += (double)(g_get_monotonic_time() - g->run_started_us) / 1e6;
}

void mfr_guest_free(MfrGuest *g)
{
    if (!g) {
        return;
    }
    g_mutex_lock(&g->lock);
    stop_locked(g);
    g_mutex_unlock(&g->lock);
    for (unsigned b = 0; b < g->nblocks; b++) {
        munmap(g->blocks[b].host, g->blocks[b].length);
        g_free(g->names[b]);
        g_free(g->dirty[b]);
    }
    g_free(g->writers);
    g_mutex_clear(&g->lock);
    g_free(g);
}

const MfrRamBlock *mfr_guest_blocks(MfrGuest *g, unsigned *n)
{
    *n = g->nblocks;
    return g->blocks;
}

typedef struct {
    MfrGuest *g;
    uint64_t rng;
    double pages_per_s;
} WriterArgs;

#ifdef __SANITIZE_THREAD__
/* TSan's dynamic annotations (its runtime defines them). A guest's writes race with the
 * migration's reads of the same pages by design, as a running VM's do: that is what dirty
 * tracking is for, and TSan is told not to record them. The migration's own accesses stay
 * checked. */
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define GUEST_WRITES_BEGIN() AnnotateIgnoreWritesBegin(__FILE__, __LINE__)
#define GUEST_WRITES_END() AnnotateIgnoreWritesEnd(__FILE__, __LINE__)
#else
#define GUEST_WRITES_BEGIN() ((void)0)
#define GUEST_WRITES_END() ((void)0)
#endif

static void write_one(MfrGuest *g, uint64_t *rng, uint64_t counter)
{
    uint64_t gp = rng_next(rng) % g->first_page[g->nblocks];
    unsigned b = block_of(g, gp);
    uint64_t page = gp - g->first_page[b];
    uint64_t slot = rng_next(rng) % (g->page_size / 16);
    uint64_t *p = (uint64_t *)((uint8_t *)g->blocks[b].host + page * g->page_size) + slot * 2;
    uint64_t v = rng_next(rng) | 1;
    /* Relaxed atomic stores: channel threads read this page concurrently, as they would a
     * running VM's; the bitmap mark below (atomic) orders after the write. */
    GUEST_WRITES_BEGIN();
    __atomic_store_n(&p[0], counter, __ATOMIC_RELAXED);
    __atomic_store_n(&p[1], v, __ATOMIC_RELAXED);
    GUEST_WRITES_END();
    mfr_bitmap_mark(g->dirty[b], page);
}

static gpointer writer_thread(gpointer data)
{
    g_autofree WriterArgs *a = data;
    MfrGuest *g = a->g;
    /* Token bucket refilled from the monotonic clock; at most 100 ms of burst after a late
     * wake-up (busy host), so the rate holds on average without long stampedes. */
    double burst = MAX(1.0, a->pages_per_s * 0.1);
    double tokens = 0;
    gint64 last = g_get_monotonic_time();
    while (!atomic_load_explicit(&g->stop, memory_order_acquire)) {
        gint64 now = g_get_monotonic_time();
        tokens = MIN(burst, tokens + (double)(now - last) * a->pages_per_s / 1e6);
        last = now;
        while (tokens >= 1.0) {
            /* Pairs with the release store in stop_locked(). */
            if (atomic_load_explicit(&g->stop, memory_order_acquire)) {
                return NULL;
            }
            uint64_t n = atomic_fetch_add_explicit(&g->pages_dirtied, 1, memory_order_relaxed);
            write_one(g, &a->rng, n + 1);
            tokens -= 1.0;
        }
        g_usleep(1000);
    }
    return NULL;
}

static void start_locked(MfrGuest *g)
{
    if (g->running || g->opts.dirty_rate_mbps <= 0) {
        return;
    }
    if (!g->writers) {
        g->writers = g_new0(GThread *, g->opts.writers);
    }
    atomic_store_explicit(&g->stop, false, memory_order_relaxed);
    double pages_per_s = g->opts.dirty_rate_mbps * 1e6 / g->page_size / g->opts.writers;
    g->generation++;
    for (unsigned i = 0; i < g->opts.writers; i++) {
        WriterArgs *a = g_new0(WriterArgs, 1);
        a->g = g;
        a->rng = mix64(g->opts.seed ^ mix64(g->generation * 1000003u + i));
        a->pages_per_s = pages_per_s;
        g->writers[i] = g_thread_new("guest-writer", writer_thread, a);
    }
    g->running = true;
    g->run_started_us = g_get_monotonic_time();
}

bool mfr_guest_start(MfrGuest *g, GError **error)
{
    g_mutex_lock(&g->lock);
    g->wanted = true;
    start_locked(g);
    g_mutex_unlock(&g->lock);
    return true;
}

void mfr_guest_stop(MfrGuest *g)
{
    g_mutex_lock(&g->lock);
    g->wanted = false;
    stop_locked(g);
    g_mutex_unlock(&g->lock);
}

uint64_t mfr_guest_pages_dirtied(MfrGuest *g)
{
    return atomic_load_explicit(&g->pages_dirtied, memory_order_relaxed);
}

double mfr_guest_writer_seconds(MfrGuest *g)
{
    g_mutex_lock(&g->lock);
    double s = g->run_s;
    if (g->running) {
        s += (double)(g_get_monotonic_time() - g->run_started_us) / 1e6;
    }
    g_mutex_unlock(&g->lock);
    return s;
}

double mfr_guest_fill_seconds(MfrGuest *g)
{
    return g->fill_s;
}

/* MfrDirtyOps: called by the engine's migration thread. */
static void ops_harvest(void *opaque, unsigned block, uint64_t *bitmap, uint64_t npages)
{
    MfrGuest *g = opaque;
    g_return_if_fail(block < g->nblocks);
    mfr_bitmap_harvest(g->dirty[block], bitmap, npages);
}

/* Switchover: writers stop, but stay "wanted" so resume() after a failure restarts them. */
static void ops_stop(void *opaque)
{
    MfrGuest *g = opaque;
    g_mutex_lock(&g->lock);
    stop_locked(g);
    g_mutex_unlock(&g->lock);
}

static void ops_resume(void *opaque)
{
    MfrGuest *g = opaque;
    g_mutex_lock(&g->lock);
    if (g->wanted) {
        start_locked(g);
    }
    g_mutex_unlock(&g->lock);
}

static const MfrDirtyOps guest_dirty_ops = {
    .harvest = ops_harvest,
    .stop = ops_stop,
    .resume = ops_resume,
};

const MfrDirtyOps *mfr_guest_dirty_ops(void)
{
    return &guest_dirty_ops;
}

bool mfr_guest_compare(MfrGuest *g, const MfrRamBlock *other, unsigned n, GError **error)
{
    if (n != g->nblocks) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_VERIFY,
                    "memcmp: source has %u blocks, destination %u", g->nblocks, n);
        return false;
    }
    for (unsigned b = 0; b < n; b++) {
        const MfrRamBlock *s = &g->blocks[b];
        const MfrRamBlock *d = &other[b];
        if (strcmp(s->name, d->name) != 0 || s->length != d->length) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_VERIFY,
                        "memcmp: block %u is %s (%" G_GUINT64_FORMAT " bytes) on the source "
                        "but %s (%" G_GUINT64_FORMAT " bytes) on the destination",
                        b, s->name, s->length, d->name, d->length);
            return false;
        }
        const uint8_t *a = s->host;
        const uint8_t *c = d->host;
        const uint64_t step = 1u << 20;
        for (uint64_t off = 0; off < s->length; off += step) {
            uint64_t len = MIN(step, s->length - off);
            if (memcmp(a + off, c + off, len) == 0) {
                continue;
            }
            uint64_t i = off;
            while (a[i] == c[i]) {
                i++;
            }
            g_set_error(error, MFR_ERROR, MFR_ERROR_VERIFY,
                        "memcmp: block %s differs at offset 0x%" G_GINT64_MODIFIER "x "
                        "(page %" G_GUINT64_FORMAT "): source 0x%02x, destination 0x%02x",
                        s->name, i, i / s->page_size, a[i], c[i]);
            return false;
        }
    }
    return true;
}
