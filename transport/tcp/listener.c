/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP listener: bind (dual-stack wildcard first), accept with the hellos of every pending
 * connection read as they arrive (each under its own deadline, at most XP_PENDING_MAX
 * waiting), the answer frame, and shutdown through an eventfd.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---------- listener ---------- */

void tcp_listener_close(XpListener *lb)
{
    TcpListener *l = (TcpListener *)lb;
    for (unsigned i = 0; i < l->npending; i++) {
        tcp_close(&l->pending[i].ch->base);
    }
    if (l->fd >= 0) {
        close(l->fd);
    }
    if (l->wake_fd >= 0) {
        close(l->wake_fd);
    }
    g_free(l->uri);
    g_free(l);
}

/* A listening socket on ai, or -errno. */
static int tcp_bind_one(const struct addrinfo *ai, const TcpDomain *dom)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    tcp_setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (ai->ai_family == AF_INET6) {
        tcp_setsockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    }
    /* Accepted sockets inherit these; the hello does not yet say control or data. */
    tcp_set_bufs(fd, dom, dom->opts.control);
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

XpListener *tcp_listen(XpDomain *d, const char *host, const char *port, GError **error)
{
    TcpDomain *dom = (TcpDomain *)d;
    g_autoptr(XpListener) lb = NULL;
    TcpListener *l = g_new0(TcpListener, 1);
    l->base.ops = &xp_tcp_ops;
    l->dom = dom;
    l->fd = -1;
    l->wake_fd = -1;
    lb = &l->base;

    const char *h = host && *host ? host : NULL;
    const char *p = port && *port ? port : "0";
    g_autofree char *what = tcp_format_hostport(h ? h : "*", p);

    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake_fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot listen on %s: eventfd: %s", what,
                    g_strerror(errno));
        return NULL;
    }

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(h, p, &hints, &res);
    if (grc != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_CONNECT, "cannot listen on %s: %s", what,
                    gai_strerror(grc));
        return NULL;
    }
    /* With no host, prefer the IPv6 wildcard: with V6ONLY off it takes IPv4 too. */
    int fd = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai && !h && fd < 0; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET6) {
            fd = tcp_bind_one(ai, dom);
        }
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = tcp_bind_one(ai, dom);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot listen on %s: %s", what,
                    g_strerror(-fd));
        return NULL;
    }
    l->fd = fd;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot listen on %s: getsockname: %s",
                    what, g_strerror(errno));
        return NULL;
    }
    l->uri = tcp_format_addr((struct sockaddr *)&ss, sl);
    g_debug("listening on %s", l->uri);
    return g_steal_pointer(&lb);
}

const char *tcp_listener_uri(XpListener *lb)
{
    return ((TcpListener *)lb)->uri;
}

void tcp_listener_shutdown(XpListener *lb)
{
    TcpListener *l = (TcpListener *)lb;
    uint64_t one = 1;
    /* eventfd writes are atomic and the counter never drops back to 0 (nobody reads it), so
     * every present and future accept() sees it. */
    if (write(l->wake_fd, &one, sizeof(one)) < 0) {
        g_debug("listener %s: eventfd write: %s", l->uri, g_strerror(errno));
    }
}

/* Pending connection i leaves the table (order kept: oldest first); the caller owns it. */
static TcpChannel *tcp_pending_take(TcpListener *l, unsigned i)
{
    TcpChannel *ch = l->pending[i].ch;
    memmove(&l->pending[i], &l->pending[i + 1], (l->npending - i - 1) * sizeof(l->pending[0]));
    l->npending--;
    return ch;
}

static void tcp_pending_drop(TcpListener *l, unsigned i, const char *why)
{
    TcpChannel *ch = tcp_pending_take(l, i);
    xp_log_limited(&l->drop_log, G_LOG_DOMAIN, "%s: dropped connection from %s: %s", l->uri,
                   ch->peer, why);
    tcp_close(&ch->base);
}

/* Takes every connection the kernel has queued into the pending table. False with error
 * only when accepting itself fails (not a peer's doing). */
static bool tcp_pending_accept(TcpListener *l, GError **error)
{
    int hello_ms = MIN(tcp_timeout_ms(&l->dom->opts), XP_HELLO_TIMEOUT_MS);
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED) {
                return true;
            }
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "accept on %s: %s", l->uri,
                        g_strerror(errno));
            return false;
        }
        if (l->npending == XP_PENDING_MAX) {
            /* the oldest has had the longest to send its hello: a real source sends it at
             * once, so this only ever drops an idle peer */
            g_autofree char *why = g_strdup_printf("%u connections wait for a hello already",
                                                   XP_PENDING_MAX);
            tcp_pending_drop(l, 0, why);
        }
        l->pending[l->npending++] = (TcpPending){
            .ch = tcp_channel_new(fd, &l->dom->opts), .deadline = tcp_deadline(hello_ms),
        };
    }
}

/* Reads what pending connection i sent, without waiting. Its channel once the hello is
 * complete (taken out of the table, hello copied out); NULL while incomplete or dropped. */
static TcpChannel *tcp_pending_read(TcpListener *l, unsigned i, void *hello, size_t *hello_len)
{
    size_t n = 0;
    int rc = tcp_recv_frame(l->pending[i].ch, hello, XP_HELLO_MAX, &n, tcp_deadline(0), -1);
    switch (rc) {
    case 0:
        *hello_len = n;
        return tcp_pending_take(l, i);
    case -ETIMEDOUT:
        return NULL;
    case -EMSGSIZE: {
        g_autofree char *why = g_strdup_printf("hello longer than %u bytes", XP_HELLO_MAX);
        tcp_pending_drop(l, i, why);
        return NULL;
    }
    case -EPIPE:
        tcp_pending_drop(l, i, "closed before its hello");
        return NULL;
    default:
        tcp_pending_drop(l, i, g_strerror(-rc));
        return NULL;
    }
}

/* Drops the pending connections past their deadline and fills pfd from index 2 with the
 * others; returns when poll() must wake at the latest (the earliest deadline of the
 * accept() itself and of every pending hello, monotonic us, -1: never). */
static int64_t tcp_pending_poll_set(TcpListener *l, struct pollfd *pfd, int64_t deadline)
{
    int64_t now = g_get_monotonic_time();
    int64_t wake_at = deadline;
    for (unsigned i = l->npending; i-- > 0;) {
        if (l->pending[i].deadline <= now) {
            tcp_pending_drop(l, i, "no hello within its deadline");
        }
    }
    for (unsigned i = 0; i < l->npending; i++) {
        pfd[2 + i] = (struct pollfd){ .fd = l->pending[i].ch->fd, .events = POLLIN };
        if (wake_at < 0 || l->pending[i].deadline < wake_at) {
            wake_at = l->pending[i].deadline;
        }
    }
    return wake_at;
}

/* Waits for the next connection whose hello is complete: every pending connection is read
 * as its bytes arrive, so idle or slow peers delay nobody (admission rules: XP_PENDING_MAX).
 * The hello buffer must hold XP_HELLO_MAX bytes; *hello_len is set to the hello's length. */
XpChannel *tcp_accept(XpListener *lb, int timeout_ms, void *hello, size_t *hello_len,
                      GError **error)
{
    TcpListener *l = (TcpListener *)lb;
    int64_t deadline = tcp_deadline(timeout_ms);
    for (;;) {
        struct pollfd pfd[2 + XP_PENDING_MAX] = {
            { .fd = l->fd, .events = POLLIN },
            { .fd = l->wake_fd, .events = POLLIN },
        };
        int64_t wake_at = tcp_pending_poll_set(l, pfd, deadline);
        unsigned npoll = l->npending;
        int rc = poll(pfd, 2 + npoll, tcp_remaining_ms(wake_at));
        if (rc < 0 && errno != EINTR) {
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "accept on %s: poll: %s", l->uri,
                        g_strerror(errno));
            return NULL;
        }
        if (pfd[1].revents & POLLIN) {
            g_set_error(error, XP_ERROR, XP_ERROR_CLOSED, "listener %s was shut down", l->uri);
            return NULL;
        }
        /* backwards: taking entry i out moves only the ones after it */
        for (unsigned i = npoll; rc > 0 && i-- > 0;) {
            TcpChannel *ch = pfd[2 + i].revents ? tcp_pending_read(l, i, hello, hello_len)
                                                : NULL;
            if (ch) {
                g_debug("%s: connection from %s", l->uri, ch->peer);
                return &ch->base;
            }
        }
        if (rc > 0 && (pfd[0].revents & POLLIN) && !tcp_pending_accept(l, error)) {
            return NULL;
        }
        if (deadline >= 0 && g_get_monotonic_time() >= deadline) {
            g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT, "no connection on %s within %d ms",
                        l->uri, timeout_ms);
            return NULL;
        }
    }
}

bool tcp_answer(XpChannel *c, uint32_t status, const char *reason, GError **error)
{
    TcpChannel *ch = tcp_ch(c);
    uint8_t ans[TCP_WIRE_ANSWER_SIZE];
    tcp_wire_pack_answer(status, reason, ans);
    int rc = tcp_send_msg(c, ans, sizeof(ans), NULL, 0);
    if (rc < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "answering %s: %s", ch->peer,
                    g_strerror(-rc));
        return false;
    }
    /* The handshake is not traffic the engine sent. */
    memset(&ch->ctr, 0, sizeof(ch->ctr));
    return true;
}
