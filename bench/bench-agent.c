/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bench's destination agent: on request from the source side it serves one migration
 * (mfr_dest into freshly mapped memory, like a real destination) or one raw baseline, and
 * answers with the destination's figures. The same code runs in a thread of a single-host
 * bench and as `mfrdma-bench --listen` on a second host.
 *
 * Control lines (source -> agent, agent's answers):
 *   MFR TRANSPORT TOKENHEX   -> OK URI, then DONE total setup reg downtime transfer cpu wire
 *                               reg_cpu zstd_cpu huge_bytes (MfrPlacement: the blocks'
 *                               bytes on huge pages) (or ERR text); a CANCEL line from the
 *                               source aborts
 *                               the run. TRANSPORT is the URI scheme (tcp for tcpzc cases:
 *                               zerocopy is the source's business)
 *   TCPRAW N BYTES CHUNK HDR FRESH  -> OK HOST PORT, then DONE CPU
 *   RDMARAW N BYTES CHUNK 0 FRESH   -> OK HOST PORT, then DONE CPU REG_MS REG_CPU
 * Fields are only ever appended to a DONE line; the source accepts an older agent's shorter
 * line (the missing figures are then unknown).
 */
#include "bench.h"

#include <mfrdma.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct {
    const BenchAgentConfig *cfg;
    GPtrArray *maps;   /* AgentMap, unmapped after the run */
} AgentMem;

typedef struct {
    void *addr;
    uint64_t len;
} AgentMap;

static bool agent_alloc_block(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                              void **host, GError **error)
{
    AgentMem *m = opaque;
    void *p = bench_map_fresh(length, m->cfg->thp, error);
    if (!p) {
        g_prefix_error(error, "destination block %s: ", name);
        return false;
    }
    AgentMap *am = g_new(AgentMap, 1);
    *am = (AgentMap){ p, length };
    g_ptr_array_add(m->maps, am);
    *host = p;
    return true;
}

static void agent_map_free(gpointer p)
{
    AgentMap *am = p;
    bench_unmap(am->addr, am->len);
    g_free(am);
}

typedef struct {
    MfrDest *dest;
    int done_fd;
    bool ok;
    GError *error;
} AgentRun;

static gpointer agent_dest_thread(gpointer opaque)
{
    AgentRun *r = opaque;
    r->ok = mfr_dest_run(r->dest, &r->error);
    uint64_t one = 1;
    (void)!write(r->done_fd, &one, sizeof(one));
    return NULL;
}

/* Serves one MFR request; false only when the control connection is gone. */
static bool agent_mfr(const BenchAgentConfig *cfg, int ctl_fd, const char *transport,
                      const char *token_hex)
{
    g_autoptr(GError) error = NULL;
    const char *host = strcmp(transport, "rdma") == 0 ? cfg->rdma_host : cfg->tcp_host;
    MfrDestConfig dc;
    mfr_dest_config_init(&dc);
    if (!host || !mfr_token_parse(token_hex, dc.token, NULL)) {
        return bench_ctl_send(ctl_fd, NULL, "ERR agent: %s",
                              host ? "bad token" : "no RDMA address configured on the agent");
    }
    g_autofree char *uri = strchr(host, ':') ? g_strdup_printf("%s:[%s]:0", transport, host)
                                             : g_strdup_printf("%s:%s:0", transport, host);
    AgentMem mem = { cfg, g_ptr_array_new_with_free_func(agent_map_free) };
    dc.uri = uri;
    dc.timeout_ms = cfg->timeout_ms;
    dc.alloc_block = agent_alloc_block;
    dc.alloc_opaque = &mem;
    dc.memory_zeroed = true;
    dc.transport.registration_threads = cfg->registration_threads;
    MfrDest *dest = mfr_dest_new(&dc, &error);
    if (!dest) {
        g_ptr_array_unref(mem.maps);
        return bench_ctl_send(ctl_fd, NULL, "ERR destination: %s", error->message);
    }
    if (!bench_ctl_send(ctl_fd, NULL, "OK %s", mfr_dest_uri(dest))) {
        mfr_dest_free(dest);
        g_ptr_array_unref(mem.maps);
        return false;
    }
    AgentRun run = { .dest = dest, .done_fd = eventfd(0, EFD_CLOEXEC) };
    GThread *th = g_thread_new("bench-agent-dest", agent_dest_thread, &run);
    bool ctl_alive = true;
    for (;;) {
        struct pollfd p[2] = { { .fd = run.done_fd, .events = POLLIN },
                               { .fd = ctl_fd, .events = POLLIN } };
        if (poll(p, ctl_alive ? 2 : 1, -1) < 0) {
            continue;
        }
        if (p[0].revents) {
            break;
        }
        /* Anything from the source now (CANCEL, or EOF) means it gave up. */
        char line[BENCH_LINE_MAX];
        if (!bench_ctl_recv(ctl_fd, line, sizeof(line), 0, NULL)) {
            ctl_alive = false;
            mfr_dest_cancel(dest);
        } else if (strcmp(line, "CANCEL") == 0) {
            mfr_dest_cancel(dest);
        }
    }
    g_thread_join(th);
    close(run.done_fd);
    MfrStats s;
    MfrCompressionStats z;
    MfrPlacement pl;
    mfr_dest_get_stats(dest, &s);
    mfr_dest_get_compression_stats(dest, &z);
    mfr_dest_get_placement(dest, &pl);
    bool sent;
    if (run.ok) {
        sent = bench_ctl_send(ctl_fd, NULL, "DONE %.3f %.3f %.3f %.3f %.3f %.6f %" G_GUINT64_FORMAT
                              " %.6f %.6f %" G_GUINT64_FORMAT, s.total_ms, s.setup_ms,
                              s.registration_ms, s.downtime_ms, s.transfer_ms, s.cpu_s,
                              s.wire_bytes, s.registration_cpu_s, z.total.cpu_s, pl.huge_bytes);
    } else {
        sent = bench_ctl_send(ctl_fd, NULL, "ERR destination: %s",
                              run.error ? run.error->message : "failed");
    }
    g_clear_error(&run.error);
    mfr_dest_free(dest);
    g_ptr_array_unref(mem.maps);
    return sent;
}

void bench_agent_serve(const BenchAgentConfig *cfg, int ctl_fd)
{
    void *buf = NULL;
    uint64_t buf_len = 0;
    char line[BENCH_LINE_MAX];
    while (bench_ctl_recv(ctl_fd, line, sizeof(line), -1, NULL)) {
        g_auto(GStrv) w = g_strsplit(line, " ", 0);
        unsigned nw = g_strv_length(w);
        g_autoptr(GError) error = NULL;
        bool alive = true;
        if (strcmp(line, "CANCEL") == 0) {
            continue; /* for a migration that already ended on its own */
        }
        if (nw == 3 && strcmp(w[0], "MFR") == 0) {
            /* The destination's blocks and the raw baseline's fresh buffer must come from the
             * same kind of free memory: a buffer still held here would leave the migration
             * only pages freed long ago (slower to fault in on this VM), while the raw fresh
             * run then gets the pages the migration just freed. */
            bench_unmap(buf, buf_len);
            buf = NULL;
            buf_len = 0;
            alive = agent_mfr(cfg, ctl_fd, w[1], w[2]);
        } else if (nw == 6 && (strcmp(w[0], "TCPRAW") == 0 || strcmp(w[0], "RDMARAW") == 0)) {
            BenchRawSpec spec = {
                .streams = (unsigned)g_ascii_strtoull(w[1], NULL, 10),
                .bytes = g_ascii_strtoull(w[2], NULL, 10),
                .chunk = g_ascii_strtoull(w[3], NULL, 10),
                .hdr = g_ascii_strtoull(w[4], NULL, 10),
                .fresh = strcmp(w[5], "0") != 0,
            };
            bool ok = w[0][0] == 'T'
                          ? bench_raw_tcp_serve(cfg, ctl_fd, &spec, &buf, &buf_len, &error)
                          : bench_raw_rdma_serve(cfg, ctl_fd, &spec, &buf, &buf_len, &error);
            if (!ok) {
                alive = bench_ctl_send(ctl_fd, NULL, "ERR %s", error->message);
            }
        } else {
            alive = bench_ctl_send(ctl_fd, NULL, "ERR agent: unknown request '%s'", line);
        }
        if (!alive) {
            break;
        }
    }
    bench_unmap(buf, buf_len);
}
