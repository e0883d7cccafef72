/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared pieces of mfrdma-bench: the destination "agent" (serves migrations and raw baselines
 * on request over a line-based control connection, in a thread or on another host), the raw
 * baselines themselves (TCP streams, RDMA WRITEs over verbs/) and small timing helpers.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

G_BEGIN_DECLS

#define BENCH_LINE_MAX 1024u

#define BENCH_ERROR (bench_error_quark())
GQuark bench_error_quark(void);
typedef enum {
    BENCH_ERROR_FAILED,  /* message says what */
    BENCH_ERROR_TIMEOUT, /* the peer or agent did not answer in time */
    BENCH_ERROR_CLOSED,  /* the control connection was closed */
} BenchErrorCode;

/* CPU seconds (user + system) of the calling thread, to the nanosecond. */
double bench_thread_cpu_s(void);
double bench_now_s(void);

/* Anonymous private mapping, never touched: its first write pays the page fault and zeroing,
 * like a destination's guest RAM. thp asks for transparent huge pages. NULL on failure. */
void *bench_map_fresh(uint64_t len, bool thp, GError **error);
void bench_unmap(void *p, uint64_t len);

/* ---- control connection (bench_ctl.c) ---- */

/* Line I/O on a blocking socket; lines end in '\n' which is stripped. */
bool bench_ctl_send(int fd, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* Reads one line (timeout_ms < 0: forever); false on EOF, timeout or error. */
bool bench_ctl_recv(int fd, char *line, size_t cap, int timeout_ms, GError **error);

/* TCP helpers. listen on host:port ("0" = any), returns the fd and the bound port. */
int bench_tcp_listen(const char *host, const char *port, bool data, uint16_t *bound,
                     GError **error);
int bench_tcp_connect(const char *host, const char *port, bool data, GError **error);
int bench_tcp_accept(int lfd, int timeout_ms, bool data, GError **error);

/* ---- agent (bench_agent.c) ---- */

typedef struct {
    char *tcp_host;  /* where data listeners bind for tcp (and raw tcp) */
    char *rdma_host; /* where they bind for rdma; NULL: rdma unavailable */
    bool thp;        /* destination memory with MADV_HUGEPAGE */
    unsigned timeout_ms;
    unsigned registration_threads; /* rdma destination; 0 = engine default */
} BenchAgentConfig;

/* Serves one control connection until the peer closes it. */
void bench_agent_serve(const BenchAgentConfig *cfg, int ctl_fd);

/* ---- raw baselines ---- */

typedef struct {
    double elapsed_s;     /* first byte sent to the last byte landed (source's clock) */
    double src_cpu_s;     /* sum of the sending threads' CPU; registration not included */
    double dst_cpu_s;     /* sum of the receiving threads' CPU; registration not included */
    double reg_ms;        /* rdma: destination registration of the whole buffer; tcp: 0 */
    double src_reg_ms;    /* rdma: source registration */
    double dst_reg_cpu_s; /* rdma: CPU of the destination's registration (pinning fresh memory
                           * is its first touch); NAN from an agent that does not say; tcp: 0 */
    double src_reg_cpu_s; /* rdma: CPU of the source's registration; tcp: 0 */
    uint64_t bytes;
    uint64_t msgs;        /* tcp: payload messages sent (one per chunk) */
    uint64_t zc_sends;    /* tcp zerocopy: sendmsg(MSG_ZEROCOPY) calls */
    uint64_t zc_copied;   /* of those, copied by the kernel anyway, plus ENOBUFS fallbacks */
} BenchRawResult;

typedef struct {
    unsigned streams;  /* TCP connections or RDMA QPs */
    uint64_t bytes;    /* total, split evenly; stream i sends its slice of src */
    uint64_t chunk;    /* payload per message (pages_per_packet pages) */
    uint64_t hdr;      /* bytes of header in front of each chunk (tcp only) */
    bool fresh;        /* destination buffer freshly mapped (true) or the previous one (warm) */
    bool zerocopy;     /* tcp, sender only: payload with MSG_ZEROCOPY, as transport/tcp/ */
} BenchRawSpec;

/* Source side of the raw TCP baseline: asks the agent on ctl_fd to receive, then pushes. */
bool bench_raw_tcp_run(int ctl_fd, const BenchRawSpec *spec, const uint8_t *src,
                       BenchRawResult *out, GError **error);
/* Agent side: reply and serve one "TCPRAW" request. */
bool bench_raw_tcp_serve(const BenchAgentConfig *cfg, int ctl_fd, const BenchRawSpec *spec,
                         void **buf, uint64_t *buf_len, GError **error);

/* Same for one-sided RDMA WRITEs on verbs/ (bench_rdma.c). */
bool bench_raw_rdma_run(int ctl_fd, const BenchRawSpec *spec, uint8_t *src,
                        BenchRawResult *out, GError **error);
bool bench_raw_rdma_serve(const BenchAgentConfig *cfg, int ctl_fd, const BenchRawSpec *spec,
                          void **buf, uint64_t *buf_len, GError **error);

G_END_DECLS
