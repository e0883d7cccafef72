/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP socket set-up: deadlines, errno mapping, address formatting, socket options
 * (buffers, Nagle, keepalive), the domain (session settings) and the ops table.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

int64_t tcp_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
}

/* Milliseconds left until deadline for poll(): -1 forever, rounded up so we never spin. */
int tcp_remaining_ms(int64_t deadline)
{
    if (deadline < 0) {
        return -1;
    }
    int64_t left = deadline - g_get_monotonic_time();
    if (left <= 0) {
        return 0;
    }
    return (int)MIN((left + 999) / 1000, (int64_t)INT_MAX);
}

int tcp_timeout_ms(const XpOptions *opts)
{
    return opts && opts->timeout_ms > 0 ? opts->timeout_ms : TCP_DEFAULT_TIMEOUT_MS;
}

/* A reset, a local shutdown or a peer that keepalive or retransmissions declared dead all
 * mean "this channel is gone" to the engine. ETIMEDOUT in particular must not leak out: to a
 * caller of recv_msg() it would look like "nothing yet, try again". */
int tcp_map_errno(int e)
{
    switch (e) {
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
    case ESHUTDOWN:
    case ETIMEDOUT:
        return -EPIPE;
    default:
        return -e;
    }
}

char *tcp_format_addr(const struct sockaddr *sa, socklen_t len)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    struct sockaddr_in v4;
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        /* An IPv4 peer of a dual-stack listener: name it as the user would write it. */
        memset(&v4, 0, sizeof(v4));
        v4.sin_family = AF_INET;
        v4.sin_port = v6->sin6_port;
        memcpy(&v4.sin_addr, &v6->sin6_addr.s6_addr[12], 4);
        sa = (const struct sockaddr *)&v4;
        len = sizeof(v4);
    }
    int rc = getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                         NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0) {
        return g_strdup_printf("tcp:(unknown: %s)", gai_strerror(rc));
    }
    if (sa->sa_family == AF_INET6) {
        return g_strdup_printf("tcp:[%s]:%s", host, serv);
    }
    return g_strdup_printf("tcp:%s:%s", host, serv);
}

char *tcp_format_hostport(const char *host, const char *port)
{
    if (strchr(host, ':')) {
        return g_strdup_printf("tcp:[%s]:%s", host, port);
    }
    return g_strdup_printf("tcp:%s:%s", host, port);
}

void tcp_setsockopt_int(int fd, int level, int name, int val)
{
    /* Best effort: a missing tuning knob must not fail the connection. */
    if (setsockopt(fd, level, name, &val, sizeof(val)) < 0) {
        g_debug("setsockopt(%d, %d, %d) failed: %s", fd, level, name, g_strerror(errno));
    }
}

/* Buffer sizes must be set before connect()/listen(): TCP window scaling is fixed at SYN. */
void tcp_set_bufs(int fd, const TcpDomain *dom, bool control)
{
    if (control) {
        return;
    }
    if (dom->sndbuf > 0) {
        tcp_setsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, dom->sndbuf);
    }
    if (dom->rcvbuf > 0) {
        tcp_setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, dom->rcvbuf);
    }
}

void tcp_set_conn_opts(int fd)
{
    /* Control messages and SYNC must not sit in Nagle's queue waiting for an ACK. */
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    tcp_setsockopt_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, TCP_KA_IDLE_S);
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, TCP_KA_INTVL_S);
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT, TCP_KA_COUNT);
}

/* ---------- domain ---------- */

static int tcp_read_sysctl(const char *path)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    gint64 v = g_ascii_strtoll(text, NULL, 10);
    return v > 0 && v < INT_MAX ? (int)v : 0;
}

XpDomain *tcp_domain_new(const XpOptions *opts, GError **error)
{
    TcpDomain *dom = g_new0(TcpDomain, 1);
    dom->base.ops = &xp_tcp_ops;
    if (opts) {
        dom->opts = *opts;
    } else {
        xp_options_init(&dom->opts);
    }
    dom->opts.rdma_dev = NULL;
    /* Setting SO_RCVBUF turns off autotuning; if the sysctl cap would clamp our request below
     * what autotuning reaches anyway, leave the kernel in charge. */
    if (tcp_read_sysctl("/proc/sys/net/core/wmem_max") >= TCP_DATA_SOCKBUF) {
        dom->sndbuf = TCP_DATA_SOCKBUF;
    }
    if (tcp_read_sysctl("/proc/sys/net/core/rmem_max") >= TCP_DATA_SOCKBUF) {
        dom->rcvbuf = TCP_DATA_SOCKBUF;
    }
    return &dom->base;
}

void tcp_domain_free(XpDomain *d)
{
    g_free(d);
}

const XpOps xp_tcp_ops = {
    .version = XP_OPS_VERSION,
    .name = "tcp",
    .caps = XP_CAP_ZEROCOPY,
    .domain_new = tcp_domain_new,
    .domain_free = tcp_domain_free,
    .listen = tcp_listen,
    .listener_uri = tcp_listener_uri,
    .accept = tcp_accept,
    .answer = tcp_answer,
    .listener_shutdown = tcp_listener_shutdown,
    .listener_close = tcp_listener_close,
    .connect = tcp_connect,
    .send_msg = tcp_send_msg,
    .recv_msg = tcp_recv_msg,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .peer = tcp_peer,
    .recv_payload = tcp_recv_payload,
    .counters = tcp_counters,
    .inject_fault = tcp_inject_fault,
    .set_send_timeout = tcp_set_send_timeout,
    .numa_node = tcp_numa_node,
};
