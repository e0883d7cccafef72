/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfrdma-bench-queue: the per-page cost of the stepwise hook, mfr_source_queue_page(), as a
 * hypervisor pays it once per dirty 4 KiB page. A real session against a destination in
 * this process (tcp loopback by default): rounds of every page queued one by one, then a
 * barrier; the destination's RAM is verified at the end. Reports the producer thread's CPU
 * per page (hand-offs to the channels included, waiting for a busy channel not: a blocked
 * thread burns no CPU), split into the append alone (ns per call) and the hand-off (CPU us
 * per batch), and the wall time per page (bounded by the channels' throughput).
 */
#include "mfrdma.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef struct {
    const char *uri;
    unsigned size_mib;
    unsigned channels;
    unsigned rounds;
    unsigned pages_per_packet;
} BqOptions;

static double bq_thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double bq_now_s(void)
{
    return g_get_monotonic_time() / 1e6;
}

static void *bq_map(uint64_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static bool bq_alloc(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                     void **host, GError **error)
{
    *host = bq_map(length);
    if (!*host) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "mmap of %" G_GUINT64_FORMAT " bytes",
                    length);
        return false;
    }
    *(uint64_t *)opaque = length;
    return true;
}

typedef struct {
    double cpu_s;       /* producer CPU of the whole queueing */
    double wall_s;      /* wall time of the same */
    double append_s;    /* wall time of the calls that only appended (no hand-off) */
    uint64_t appends;   /* those calls */
} BqTimes;

/* Queues every page of the block in order, one call per page. Batch k's hand-off happens in
 * the call for page k * ppp (the batch is full then), so the calls between are appends alone:
 * they are timed apart, with the monotonic clock (vDSO, cheap; nothing in them can block). */
static bool bq_round(MfrSource *src, uint64_t npages, unsigned ppp, BqTimes *t,
                     GError **error)
{
    double c0 = bq_thread_cpu_s(), t0 = bq_now_s();
    for (uint64_t p = 0; p < npages; p += ppp) {
        if (mfr_source_queue_page(src, 0, p * 4096) < 0) {
            mfr_source_error(src, error);
            return false;
        }
        uint64_t end = MIN(p + ppp, npages);
        double a0 = bq_now_s();
        for (uint64_t q = p + 1; q < end; q++) {
            if (mfr_source_queue_page(src, 0, q * 4096) < 0) {
                mfr_source_error(src, error);
                return false;
            }
        }
        t->append_s += bq_now_s() - a0;
        t->appends += end - p - 1;
    }
    t->cpu_s += bq_thread_cpu_s() - c0;
    t->wall_s += bq_now_s() - t0;
    return mfr_source_barrier(src, error);
}

static bool bq_run(const BqOptions *o, GError **error)
{
    uint64_t len = (uint64_t)o->size_mib << 20, npages = len / 4096, dst_len = 0;
    uint8_t *ram = bq_map(len);
    if (!ram) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "mmap of %u MiB", o->size_mib);
        return false;
    }
    /* data in every page, so no page is a zero page the channels could skip */
    for (uint64_t i = 0; i < len; i += 8) {
        *(uint64_t *)(ram + i) = i * 0x9e3779b97f4a7c15ULL + 1;
    }
    MfrDestConfig dc;
    mfr_dest_config_init(&dc);
    dc.uri = o->uri;
    dc.alloc_block = bq_alloc;
    dc.alloc_opaque = &dst_len;
    dc.memory_zeroed = true;
    g_autoptr(MfrDest) dst = mfr_dest_new(&dc, error);
    if (!dst || !mfr_dest_start(dst, error)) {
        munmap(ram, len);
        return false;
    }
    MfrSourceConfig sc;
    mfr_source_config_init(&sc);
    sc.uri = mfr_dest_uri(dst);
    sc.channels = o->channels;
    sc.pages_per_packet = o->pages_per_packet;
    MfrRamBlock block = { .name = "ram", .host = ram, .length = len, .page_size = 4096 };
    g_autoptr(MfrSource) src = mfr_source_new(&sc, &block, 1, NULL, NULL, error);
    bool ok = src && mfr_source_start(src, error);
    BqTimes t = { 0 };
    for (unsigned r = 0; ok && r < o->rounds; r++) {
        ok = bq_round(src, npages, o->pages_per_packet, &t, error);
    }
    ok = ok && mfr_source_complete(src, error);
    if (src && !ok) {
        mfr_source_abort(src);
    }
    GError *derr = NULL;
    bool dok = mfr_dest_wait(dst, ok ? error : &derr);
    g_clear_error(&derr);
    if (ok && dok) {
        uint64_t pages = npages * o->rounds;
        uint64_t handoffs = pages - t.appends;
        /* the hand-off calls' CPU: the whole producer CPU less the appends' time */
        double handoff_s = MAX(t.cpu_s - t.append_s, 0);
        printf("{\"transport\": \"%.*s\", \"channels\": %u, \"pages_per_packet\": %u, "
               "\"pages\": %" G_GUINT64_FORMAT ", \"cpu_ns_per_page\": %.1f, "
               "\"append_ns\": %.2f, \"handoff_us\": %.2f, \"wall_ns_per_page\": %.1f}\n",
               (int)strcspn(o->uri, ":"), o->uri, o->channels, o->pages_per_packet, pages,
               t.cpu_s * 1e9 / pages, t.append_s * 1e9 / MAX(t.appends, 1),
               handoff_s * 1e6 / MAX(handoffs, 1), t.wall_s * 1e9 / pages);
    }
    unsigned n = 0;
    const MfrRamBlock *db = mfr_dest_blocks(dst, &n);
    if (n == 1 && dst_len) {
        munmap(db[0].host, dst_len);
    }
    munmap(ram, len);
    return ok && dok;
}

int main(int argc, char **argv)
{
    BqOptions o = { .uri = "tcp:127.0.0.1:0", .size_mib = 256, .channels = 4, .rounds = 4,
                    .pages_per_packet = 128 };
    int size = (int)o.size_mib, channels = (int)o.channels, rounds = (int)o.rounds;
    int ppp = (int)o.pages_per_packet;
    char *uri = NULL;
    GOptionEntry entries[] = {
        { "uri", 0, 0, G_OPTION_ARG_STRING, &uri, "destination listen URI (port 0)", "URI" },
        { "size", 0, 0, G_OPTION_ARG_INT, &size, "guest MiB (default 256)", "MIB" },
        { "channels", 0, 0, G_OPTION_ARG_INT, &channels, "channels (default 4)", "N" },
        { "rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "rounds of every page (default 4)", "N" },
        { "pages-per-packet", 0, 0, G_OPTION_ARG_INT, &ppp, "batch size (default 128)", "N" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- ns per mfr_source_queue_page()");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "mfrdma-bench-queue: %s\n", err->message);
        return 2;
    }
    if (size < 1 || channels < 1 || channels > 64 || rounds < 1 || ppp < 1 || ppp > 512) {
        fprintf(stderr, "mfrdma-bench-queue: --size >= 1, --channels 1..64, --rounds >= 1, "
                "--pages-per-packet 1..512\n");
        return 2;
    }
    o.pages_per_packet = (unsigned)ppp;
    o.size_mib = (unsigned)size;
    o.channels = (unsigned)channels;
    o.rounds = (unsigned)rounds;
    if (uri) {
        o.uri = uri;
    }
    bool ok = bq_run(&o, &err);
    if (!ok) {
        fprintf(stderr, "mfrdma-bench-queue: %s\n", err ? err->message : "failed");
    }
    g_clear_error(&err);
    g_free(uri);
    return ok ? 0 : 1;
}
