/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP listener: bind (dual-stack wildcard first), accept with the hello read under a
 * deadline, the answer frame, and shutdown through an eventfd.
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

/* The hello buffer must hold XP_HELLO_MAX bytes; *hello_len is set to the hello's length. */
XpChannel *tcp_accept(XpListener *lb, int timeout_ms, void *hello, size_t *hello_len,
                      GError **error)
{
    TcpListener *l = (TcpListener *)lb;
    int64_t deadline = tcp_deadline(timeout_ms);
    int fd = -1;
    while (fd < 0) {
        struct pollfd pfd[2] = {
            { .fd = l->fd, .events = POLLIN },
            { .fd = l->wake_fd, .events = POLLIN },
        };
        int rc = poll(pfd, 2, tcp_remaining_ms(deadline));
        if (rc < 0 && errno != EINTR) {
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "accept on %s: poll: %s", l->uri,
                        g_strerror(errno));
            return NULL;
        }
        if (pfd[1].revents & POLLIN) {
            g_set_error(error, XP_ERROR, XP_ERROR_CLOSED, "listener %s was shut down", l->uri);
            return NULL;
        }
        if (rc == 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT, "no connection on %s within %d ms",
                        l->uri, timeout_ms);
            return NULL;
        }
        if (rc < 0 || !(pfd[0].revents & POLLIN)) {
            continue;
        }
        fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED) {
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "accept on %s: %s", l->uri,
                        g_strerror(errno));
            return NULL;
        }
    }

    TcpChannel *ch = tcp_channel_new(fd, &l->dom->opts);
    g_autoptr(XpChannel) cb = &ch->base;
    /* A connected peer that never says hello must not hold the listener forever. */
    int hello_ms = tcp_timeout_ms(&l->dom->opts);
    size_t n = 0;
    int rc = tcp_recv_frame(ch, hello, XP_HELLO_MAX, &n, tcp_deadline(hello_ms), l->wake_fd);
    switch (rc) {
    case 0:
        break;
    case -ECANCELED:
        g_set_error(error, XP_ERROR, XP_ERROR_CLOSED, "listener %s was shut down", l->uri);
        return NULL;
    case -ETIMEDOUT:
        g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT, "%s sent no hello within %d ms",
                    ch->peer, hello_ms);
        return NULL;
    case -EMSGSIZE:
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "hello from %s is longer than %u bytes",
                    ch->peer, XP_HELLO_MAX);
        return NULL;
    default:
        g_set_error(error, XP_ERROR, XP_ERROR_CONNECT, "reading hello from %s: %s", ch->peer,
                    g_strerror(-rc));
        return NULL;
    }
    *hello_len = n;
    g_debug("%s: connection from %s", l->uri, ch->peer);
    return g_steal_pointer(&cb);
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
