/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP connector: non-blocking connect to each resolved address under one deadline, the
 * hello, and the acceptor's answer frame.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

/* ---------- connect ---------- */

/* Non-blocking connect to one address. fd, or -errno (-ETIMEDOUT at the deadline). */
static int tcp_connect_one(const struct addrinfo *ai, const TcpDomain *dom, bool control,
                           int64_t deadline)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    tcp_set_bufs(fd, dom, control);
    tcp_setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        int e = errno;
        close(fd);
        return -e;
    }
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int rc = poll(&pfd, 1, tcp_remaining_ms(deadline));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            int e = rc == 0 ? ETIMEDOUT : errno;
            close(fd);
            return -e;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
            soerr = errno;
        }
        if (soerr != 0) {
            close(fd);
            return -soerr;
        }
        return fd;
    }
}

XpChannel *tcp_connect(XpDomain *d, const char *host, const char *port, const void *hello,
                       size_t hello_len, const XpOptions *opts, GError **error)
{
    TcpDomain *dom = (TcpDomain *)d;
    const XpOptions *o = opts ? opts : &dom->opts;
    int timeout_ms = tcp_timeout_ms(o);
    int64_t deadline = tcp_deadline(timeout_ms);
    g_autofree char *what = tcp_format_hostport(host, port);

    if (hello_len > XP_HELLO_MAX) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "connect to %s: hello of %zu bytes exceeds %u", what, hello_len,
                    XP_HELLO_MAX);
        return NULL;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(host, port, &hints, &res);
    if (grc != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_CONNECT, "cannot resolve %s: %s", what,
                    gai_strerror(grc));
        return NULL;
    }
    int fd = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai && fd < 0 && fd != -ETIMEDOUT; ai = ai->ai_next) {
        fd = tcp_connect_one(ai, dom, o->control, deadline);
    }
    freeaddrinfo(res);
    if (fd == -ETIMEDOUT) {
        g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT, "connect to %s: no answer within %d ms",
                    what, timeout_ms);
        return NULL;
    }
    if (fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_CONNECT, "connect to %s failed: %s", what,
                    g_strerror(-fd));
        return NULL;
    }

    TcpChannel *ch = tcp_channel_new(fd, o);
    g_autoptr(XpChannel) cb = &ch->base;
    int rc = tcp_send_msg(cb, hello, hello_len, NULL, 0);
    if (rc < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_CONNECT, "sending hello to %s: %s", ch->peer,
                    g_strerror(-rc));
        return NULL;
    }
    uint8_t ans[TCP_WIRE_ANSWER_SIZE];
    size_t n = 0;
    rc = tcp_recv_frame(ch, ans, sizeof(ans), &n, deadline, -1);
    if (rc == -ETIMEDOUT) {
        g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT,
                    "%s did not answer our hello within %d ms", ch->peer, timeout_ms);
        return NULL;
    }
    if (rc < 0) {
        g_set_error(error, XP_ERROR, rc == -EPIPE ? XP_ERROR_CONNECT : XP_ERROR_FAILED,
                    "waiting for the answer of %s: %s", ch->peer,
                    rc == -EPIPE ? "connection closed" : g_strerror(-rc));
        return NULL;
    }
    uint32_t status;
    char reason[XP_REASON_MAX + 1];
    g_autoptr(GError) werr = NULL;
    if (!tcp_wire_unpack_answer(ans, n, &status, reason, &werr)) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "waiting for the answer of %s: %s",
                    ch->peer, werr->message);
        return NULL;
    }
    if (status != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_REJECTED,
                    "%s refused the connection: %s (status %u)", ch->peer, reason, status);
        return NULL;
    }
    /* The handshake is not traffic the engine sent. */
    memset(&ch->ctr, 0, sizeof(ch->ctr));
    return g_steal_pointer(&cb);
}
