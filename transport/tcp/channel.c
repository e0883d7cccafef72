/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP channel lifecycle: building a channel around a connected socket, the shutdown
 * flag and fault seam every call checks, waiting in poll() (with zerocopy completions
 * reaped on the way), reading, shutdown, close and counters.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

/* ---------- channel core ---------- */

TcpChannel *tcp_channel_new(int fd, const XpOptions *opts)
{
    TcpChannel *ch = g_new0(TcpChannel, 1);
    ch->base.ops = &xp_tcp_ops;
    ch->fd = fd;
    atomic_init(&ch->down, false);
    atomic_init(&ch->fault, 0);
    ch->send_timeout_ms = -1;
    g_mutex_init(&ch->zc_lock);
    tcp_set_conn_opts(fd);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        ch->peer = tcp_format_addr((struct sockaddr *)&ss, sl);
    } else {
        ch->peer = g_strdup_printf("tcp:(unknown peer: %s)", g_strerror(errno));
    }

    if (opts && opts->zerocopy && !opts->control) {
        int one = 1;
        /* Without kernel support we silently send with copies; counters show it. */
        ch->zerocopy = setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
    }
    return ch;
}

static int tcp_take_fault(TcpChannel *ch)
{
    if (atomic_load_explicit(&ch->fault, memory_order_relaxed) == 0) {
        return 0;
    }
    return atomic_exchange(&ch->fault, 0);
}

int tcp_check(TcpChannel *ch)
{
    if (atomic_load_explicit(&ch->down, memory_order_acquire)) { /* pairs with tcp_shutdown */
        return -EPIPE;
    }
    int f = tcp_take_fault(ch);
    return f ? -f : 0;
}

/* Wait until fd is ready for events, the channel is shut down, wake_fd fires or the deadline
 * passes. 0: try the I/O again; -EPIPE, -ECANCELED (wake_fd) or -ETIMEDOUT otherwise. */
int tcp_wait(TcpChannel *ch, short events, int64_t deadline, int wake_fd)
{
    for (;;) {
        if (atomic_load_explicit(&ch->down, memory_order_acquire)) { /* pairs with tcp_shutdown */
            return -EPIPE;
        }
        struct pollfd pfd[2] = {
            { .fd = ch->fd, .events = events },
            { .fd = wake_fd, .events = POLLIN },
        };
        int rc = poll(pfd, wake_fd >= 0 ? 2 : 1, tcp_remaining_ms(deadline));
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (rc == 0) {
            return -ETIMEDOUT;
        }
        if (wake_fd >= 0 && (pfd[1].revents & POLLIN)) {
            return -ECANCELED;
        }
        if ((pfd[0].revents & POLLERR) && ch->zerocopy && tcp_zc_reap(ch) > 0 &&
            !(pfd[0].revents & (events | POLLHUP))) {
            continue; /* only zerocopy completions were pending, not an error */
        }
        return 0;
    }
}

/* One readv() into iov, waiting as needed. >0 bytes read, or -errno. */
ssize_t tcp_read_some(TcpChannel *ch, struct iovec *iov, unsigned iovcnt, int64_t deadline,
                      int wake_fd)
{
    for (;;) {
        if (atomic_load_explicit(&ch->down, memory_order_acquire)) {
            return -EPIPE;
        }
        ssize_t r = readv(ch->fd, iov, iovcnt);
        if (r > 0) {
            return r;
        }
        if (r == 0) {
            return -EPIPE; /* orderly close by the peer, or our own shutdown() */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return tcp_map_errno(errno);
        }
        int rc = tcp_wait(ch, POLLIN, deadline, wake_fd);
        if (rc < 0) {
            return rc;
        }
    }
}

/* After a framing error the stream position is lost: nobody may use the channel again. */
void tcp_break(TcpChannel *ch)
{
    atomic_store_explicit(&ch->down, true, memory_order_release);
    shutdown(ch->fd, SHUT_RDWR);
}

void tcp_shutdown(XpChannel *c)
{
    TcpChannel *ch = tcp_ch(c);
    /* pairs with the acquire loads in tcp_check/tcp_wait: a thread that wakes from poll()
     * because of the shutdown below sees the flag. */
    atomic_store_explicit(&ch->down, true, memory_order_release);
    shutdown(ch->fd, SHUT_RDWR);
}

void tcp_close(XpChannel *c)
{
    TcpChannel *ch = tcp_ch(c);
    if (ch->fd >= 0) {
        if (ch->zerocopy) {
            tcp_zc_reap(ch);
        }
        close(ch->fd);
    }
    g_mutex_clear(&ch->zc_lock);
    g_free(ch->peer);
    g_free(ch);
}

const char *tcp_peer(XpChannel *c)
{
    return tcp_ch(c)->peer;
}

void tcp_counters(XpChannel *c, XpCounters *out)
{
    TcpChannel *ch = tcp_ch(c);
    if (ch->zerocopy) {
        tcp_zc_reap(ch); /* completions already queued count as copied or not */
    }
    g_mutex_lock(&ch->zc_lock); /* zerocopy_copied is also written under it */
    *out = ch->ctr;
    g_mutex_unlock(&ch->zc_lock);
}

void tcp_inject_fault(XpChannel *c, int err)
{
    atomic_store(&tcp_ch(c)->fault, err);
}

/* Only the sending thread reads it (send_msg()), as the send side's fields are its own. */
void tcp_set_send_timeout(XpChannel *c, int timeout_ms)
{
    tcp_ch(c)->send_timeout_ms = timeout_ms;
}
