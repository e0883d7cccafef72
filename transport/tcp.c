/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP backend of the transport ops table: one socket per channel, length-prefixed messages,
 * and the payload segments of a send following their message raw in the stream, so the
 * receiver reads them with recv_payload() straight into its own pages (readv).
 *
 * Wire framing (all integers little endian):
 *   message  [u32 length][length bytes]        length <= XP_MSG_MAX; the payload segments of
 *                                               the same send_msg() follow without framing
 *                                               (the receiver knows their size from the message)
 *   hello    the connector's first message      length <= XP_HELLO_MAX
 *   answer   the acceptor's reply, one message of exactly 124 bytes:
 *            [u32 status][120 bytes reason]     status 0 accepts; reason is NUL-padded and is
 *                                               not NUL-terminated when it is 120 bytes long
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "xp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/errqueue.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

#define TCP_HDR_LEN 4u
#define TCP_ANSWER_LEN (4u + XP_REASON_MAX)
/* One whole frame plus the length word of the next one (see tcp_recv_frame()). */
#define TCP_RBUF_SIZE (TCP_HDR_LEN + XP_MSG_MAX + TCP_HDR_LEN)
/* Socket buffers for data channels: a 25G link with 100 us RTT needs ~300 KiB in flight;
 * 4 MiB leaves room for scheduling hiccups of the channel threads. */
#define TCP_DATA_SOCKBUF (4 * 1024 * 1024)
#define TCP_DEFAULT_TIMEOUT_MS 5000
/* Zerocopy completions left pending before the sender reaps them. */
#define TCP_ZC_REAP_BATCH 32u
/* After this many zerocopy sends in a row that the kernel copied anyway (loopback, a NIC
 * without scatter-gather), stop asking: pinning and notifications are then pure overhead. */
#define TCP_ZC_GIVE_UP 256u
/* Keepalive: notice a dead peer in ~16 s even on a quiet data channel. */
#define TCP_KA_IDLE_S 10
#define TCP_KA_INTVL_S 2
#define TCP_KA_COUNT 3

/* One session's settings; TCP needs no shared resources. */
typedef struct {
    XpDomain base;
    XpOptions opts;  /* copy; opts.rdma_dev is not kept */
    int sndbuf;      /* SO_SNDBUF for data channels; 0: leave the kernel's autotuning */
    int rcvbuf;      /* SO_RCVBUF likewise */
} TcpDomain;

/* One connection. Owned by whoever got it from accept()/connect(); the send side fields are
 * used by one sending thread, the receive side fields by one receiving thread. */
typedef struct {
    XpChannel base;
    int fd;              /* non-blocking; waits are poll() so shutdown() can end them */
    atomic_bool down;    /* set by shutdown(): every call fails with -EPIPE */
    atomic_int fault;    /* test seam: next send/recv fails with -fault */
    bool zerocopy;       /* MSG_ZEROCOPY for payload segments */
    char *peer;
    XpCounters ctr;

    /* send side */
    int send_timeout_ms;      /* <0: a send waits as long as the peer does not read */
    bool send_broken;         /* a send gave up mid-frame: no later one may follow it */
    uint32_t zc_sent;         /* zerocopy sendmsg() calls issued (the kernel numbers them) */
    /* Completions are reaped by the sender, and by a receiver whose poll() reports them as
     * POLLERR; the lock keeps the two apart (zerocopy channels only, never contended). */
    GMutex zc_lock;
    atomic_uint zc_done;      /* calls below this number have completed; written under zc_lock */
    atomic_uint zc_copied_run; /* consecutive completions the kernel copied; under zc_lock */
    uint8_t sendhdr[TCP_HDR_LEN];
    struct iovec siov[IOV_MAX];

    /* receive side: unread stream bytes are rbuf[rpos, rlen) */
    size_t rpos, rlen;
    struct iovec riov[IOV_MAX];
    uint8_t rbuf[TCP_RBUF_SIZE];
} TcpChannel;

/* An accepted connection whose hello has not fully arrived yet (see tcp_accept()). */
typedef struct {
    TcpChannel *ch;
    int64_t deadline; /* monotonic us: dropped when its hello is not complete by then */
} TcpPending;

typedef struct {
    XpListener base;
    TcpDomain *dom;    /* not owned; outlives the listener */
    int fd;
    int wake_fd;       /* eventfd; listener_shutdown() makes it readable for good */
    char *uri;
    /* Oldest first; owned. Only the thread calling accept() touches them. */
    TcpPending pending[XP_PENDING_MAX];
    unsigned npending;
    XpLogLimit drop_log; /* dropped connections are logged rate-limited */
} TcpListener;

static inline TcpChannel *tcp_ch(XpChannel *c)
{
    return (TcpChannel *)c;
}

static void tcp_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
    p[2] = (v >> 16) & 0xff;
    p[3] = v >> 24;
}

static uint32_t tcp_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t tcp_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
}

/* Milliseconds left until deadline for poll(): -1 forever, rounded up so we never spin. */
static int tcp_remaining_ms(int64_t deadline)
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

static int tcp_timeout_ms(const XpOptions *opts)
{
    return opts && opts->timeout_ms > 0 ? opts->timeout_ms : TCP_DEFAULT_TIMEOUT_MS;
}

/* A reset, a local shutdown or a peer that keepalive or retransmissions declared dead all
 * mean "this channel is gone" to the engine. ETIMEDOUT in particular must not leak out: to a
 * caller of recv_msg() it would look like "nothing yet, try again". */
static int tcp_map_errno(int e)
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

static char *tcp_format_addr(const struct sockaddr *sa, socklen_t len)
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

static char *tcp_format_hostport(const char *host, const char *port)
{
    if (strchr(host, ':')) {
        return g_strdup_printf("tcp:[%s]:%s", host, port);
    }
    return g_strdup_printf("tcp:%s:%s", host, port);
}

static void tcp_setsockopt_int(int fd, int level, int name, int val)
{
    /* Best effort: a missing tuning knob must not fail the connection. */
    if (setsockopt(fd, level, name, &val, sizeof(val)) < 0) {
        g_debug("setsockopt(%d, %d, %d) failed: %s", fd, level, name, g_strerror(errno));
    }
}

/* Buffer sizes must be set before connect()/listen(): TCP window scaling is fixed at SYN. */
static void tcp_set_bufs(int fd, const TcpDomain *dom, bool control)
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

static void tcp_set_conn_opts(int fd)
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

static XpDomain *tcp_domain_new(const XpOptions *opts, GError **error)
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

static void tcp_domain_free(XpDomain *d)
{
    g_free(d);
}

/* ---------- channel core ---------- */

static TcpChannel *tcp_channel_new(int fd, const XpOptions *opts)
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

static int tcp_check(TcpChannel *ch)
{
    if (atomic_load_explicit(&ch->down, memory_order_acquire)) { /* pairs with tcp_shutdown */
        return -EPIPE;
    }
    int f = tcp_take_fault(ch);
    return f ? -f : 0;
}

bool xp_tcp_zerocopy_next(int fd, uint32_t *lo, uint32_t *hi, bool *copied)
{
    for (;;) {
        char control[CMSG_SPACE(sizeof(struct sock_extended_err)) + 64];
        struct msghdr mh = { .msg_control = control, .msg_controllen = sizeof(control) };
        if (recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            return false; /* EAGAIN: queue empty; anything else: nothing we can reap */
        }
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                  (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR))) {
                continue;
            }
            struct sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
            if (ee.ee_errno != 0 || ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY) {
                continue;
            }
            /* one notification per message: [ee_info, ee_data] is an inclusive range */
            *lo = ee.ee_info;
            *hi = ee.ee_data;
            *copied = (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0;
            return true;
        }
    }
}

/* Reap MSG_ZEROCOPY completions without blocking. Returns how many ranges were reaped. */
static unsigned tcp_zc_reap(TcpChannel *ch)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ch->zc_lock);
    unsigned reaped = 0;
    uint32_t lo, hi;
    bool copied;
    while (xp_tcp_zerocopy_next(ch->fd, &lo, &hi, &copied)) {
        uint32_t n = hi - lo + 1;
        unsigned run = atomic_load_explicit(&ch->zc_copied_run, memory_order_relaxed);
        if (copied) {
            /* The kernel had to copy after all (loopback, or a NIC without SG). */
            ch->ctr.zerocopy_copied += n;
            if (run < TCP_ZC_GIVE_UP && run + n >= TCP_ZC_GIVE_UP) {
                g_debug("%s: the kernel copied the last %u zerocopy sends; sending with "
                        "copies from now on", ch->peer, run + n);
            }
            run = MIN(run + n, TCP_ZC_GIVE_UP);
        } else {
            run = 0;
        }
        atomic_store_explicit(&ch->zc_copied_run, run, memory_order_relaxed);
        atomic_store_explicit(&ch->zc_done, hi + 1, memory_order_relaxed);
        reaped++;
    }
    return reaped;
}

/* Wait until fd is ready for events, the channel is shut down, wake_fd fires or the deadline
 * passes. 0: try the I/O again; -EPIPE, -ECANCELED (wake_fd) or -ETIMEDOUT otherwise. */
static int tcp_wait(TcpChannel *ch, short events, int64_t deadline, int wake_fd)
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
static ssize_t tcp_read_some(TcpChannel *ch, struct iovec *iov, unsigned iovcnt, int64_t deadline,
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
static void tcp_break(TcpChannel *ch)
{
    atomic_store_explicit(&ch->down, true, memory_order_release);
    shutdown(ch->fd, SHUT_RDWR);
}

/* Next frame into buf. Partial frames stay in rbuf, so a timeout loses nothing.
 *
 * Reads never go further into the stream than the end of the frame plus the next frame's
 * length word: a message may be followed by payload that recv_payload() reads straight into
 * its destination, and anything read here would have to be copied there again (and would
 * fault fresh destination pages in from user space). The length word of what follows comes
 * for free with the message; when payload follows, those few bytes are its first ones. */
static int tcp_recv_frame(TcpChannel *ch, void *buf, size_t cap, size_t *len, int64_t deadline,
                          int wake_fd)
{
    for (;;) {
        size_t avail = ch->rlen - ch->rpos;
        size_t want = TCP_HDR_LEN; /* bytes of this frame (and the next length word) needed */
        if (avail >= TCP_HDR_LEN) {
            uint32_t n = tcp_get_le32(ch->rbuf + ch->rpos);
            if (n > XP_MSG_MAX || n > cap) {
                tcp_break(ch);
                return -EMSGSIZE;
            }
            if (avail >= TCP_HDR_LEN + n) {
                memcpy(buf, ch->rbuf + ch->rpos + TCP_HDR_LEN, n);
#ifdef MFR_FUZZ_RECORDER
                xp_record_msg(buf, n);
#endif
                ch->rpos += TCP_HDR_LEN + n;
                if (ch->rpos == ch->rlen) {
                    ch->rpos = ch->rlen = 0;
                }
                *len = n;
                ch->ctr.msgs_received++;
                ch->ctr.bytes_received += n;
                return 0;
            }
            want = TCP_HDR_LEN + n + TCP_HDR_LEN;
        }
        if (ch->rpos > 0) {
            /* Less than one frame is left: moving it is cheaper than a second read. */
            memmove(ch->rbuf, ch->rbuf + ch->rpos, avail);
            ch->rpos = 0;
            ch->rlen = avail;
        }
        struct iovec v = { ch->rbuf + ch->rlen, want - avail };
        ssize_t r = tcp_read_some(ch, &v, 1, deadline, wake_fd);
        if (r < 0) {
            return (int)r;
        }
        ch->rlen += (size_t)r;
    }
}

static int tcp_recv_msg(XpChannel *c, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    return tcp_recv_frame(ch, buf, cap, len, tcp_deadline(timeout_ms), -1);
}

static int tcp_recv_payload(XpChannel *c, const struct iovec *iov, unsigned iovcnt)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    unsigned i = 0;  /* cursor: iov[i] from byte off */
    size_t off = 0;

    /* Payload bytes that came in with the last message's read. */
    while (i < iovcnt && ch->rpos < ch->rlen) {
        size_t n = MIN(iov[i].iov_len - off, ch->rlen - ch->rpos);
        memcpy((uint8_t *)iov[i].iov_base + off, ch->rbuf + ch->rpos, n);
        ch->rpos += n;
        off += n;
        ch->ctr.bytes_received += n;
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
        }
    }
    if (ch->rpos == ch->rlen) {
        ch->rpos = ch->rlen = 0;
    }

    /* rbuf is empty here unless the payload is already complete. */
    while (i < iovcnt) {
        unsigned k = 0;
        unsigned j = i;
        size_t o = off;
        size_t need = 0;
        for (; j < iovcnt && k < IOV_MAX; j++, o = 0) {
            if (iov[j].iov_len > o) {
                ch->riov[k].iov_base = (uint8_t *)iov[j].iov_base + o;
                ch->riov[k].iov_len = iov[j].iov_len - o;
                need += ch->riov[k].iov_len;
                k++;
            }
        }
        if (k == 0) {
            break; /* only empty iovecs left */
        }
        /* The last read of the payload also takes the next frame's length word if it is
         * there already, which saves recv_msg() a read of its own; it never waits for it. */
        bool ahead = j == iovcnt && k < IOV_MAX && ch->rlen == 0;
        if (ahead) {
            ch->riov[k].iov_base = ch->rbuf;
            ch->riov[k].iov_len = TCP_HDR_LEN;
            k++;
        }
        ssize_t r = tcp_read_some(ch, ch->riov, k, -1, -1);
        if (r < 0) {
            return (int)r;
        }
        if (ahead && (size_t)r > need) {
            ch->rlen = (size_t)r - need;
            r = (ssize_t)need;
        }
        ch->ctr.bytes_received += (size_t)r;
        size_t left = (size_t)r;
        while (left > 0) {
            size_t rem = iov[i].iov_len - off;
            if (left < rem) {
                off += left;
                left = 0;
            } else {
                left -= rem;
                i++;
                off = 0;
            }
        }
    }
    return 0;
}

/* Element e of a send: 0 the length header, 1 the message, 2.. the segments. */
static inline void tcp_send_elem(TcpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                                 unsigned e, const uint8_t **p, size_t *l)
{
    if (e == 0) {
        *p = ch->sendhdr;
        *l = TCP_HDR_LEN;
    } else if (e == 1) {
        *p = msg;
        *l = len;
    } else {
        *p = segs[e - 2].addr;
        *l = segs[e - 2].len;
    }
}

/* sendmsg() of elements [first, last) from byte off of the first one, until all are gone.
 * sendmsg rather than writev: MSG_NOSIGNAL turns a dead peer into EPIPE instead of SIGPIPE. */
static int tcp_send_elems(TcpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                          unsigned first, unsigned last, int flags, int64_t deadline)
{
    unsigned i = first;
    size_t off = 0;
    for (;;) {
        unsigned k = 0;
        size_t o = off;
        for (unsigned j = i; j < last && k < IOV_MAX; j++, o = 0) {
            const uint8_t *p;
            size_t l;
            tcp_send_elem(ch, msg, len, segs, j, &p, &l);
            if (l > o) {
                ch->siov[k].iov_base = (void *)(p + o);
                ch->siov[k].iov_len = l - o;
                k++;
            }
        }
        if (k == 0) {
            return 0;
        }
        if (atomic_load_explicit(&ch->down, memory_order_acquire)) {
            return -EPIPE;
        }
        struct msghdr mh = { .msg_iov = ch->siov, .msg_iovlen = k };
        ssize_t r = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | flags);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int rc = tcp_wait(ch, POLLOUT, deadline, -1);
                if (rc < 0) {
                    return rc;
                }
                continue;
            }
            if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
                /* Over the optmem limit for pinned pages: this piece goes with a copy. */
                flags &= ~MSG_ZEROCOPY;
                g_mutex_lock(&ch->zc_lock); /* tcp_zc_reap() counts copies too */
                ch->ctr.zerocopy_copied++;
                g_mutex_unlock(&ch->zc_lock);
                continue;
            }
            return tcp_map_errno(errno);
        }
        if (flags & MSG_ZEROCOPY) {
            ch->zc_sent++;
            ch->ctr.zerocopy_sends++;
        }
        size_t left = (size_t)r;
        while (left > 0) {
            const uint8_t *p;
            size_t l;
            tcp_send_elem(ch, msg, len, segs, i, &p, &l);
            size_t rem = l - off;
            if (left < rem) {
                off += left;
                left = 0;
            } else {
                left -= rem;
                i++;
                off = 0;
            }
        }
    }
}

static int tcp_send_msg(XpChannel *c, const void *msg, size_t len, const XpSeg *segs,
                        unsigned nsegs)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    if (len > XP_MSG_MAX) {
        return -EMSGSIZE;
    }
    if (ch->send_broken) {
        return -ETIMEDOUT;
    }
    tcp_put_le32(ch->sendhdr, (uint32_t)len);
    int64_t deadline = tcp_deadline(ch->send_timeout_ms);
    if (ch->zerocopy && nsegs > 0 &&
        atomic_load_explicit(&ch->zc_copied_run, memory_order_relaxed) < TCP_ZC_GIVE_UP) {
        /* The message must be free for reuse on return, so only the segments (stable until
         * close by contract) go zero copy; MSG_MORE keeps the two parts in one segment. */
        rc = tcp_send_elems(ch, msg, len, segs, 0, 2, MSG_MORE, deadline);
        if (rc == 0) {
            rc = tcp_send_elems(ch, msg, len, segs, 2, nsegs + 2, MSG_ZEROCOPY, deadline);
        }
        /* Each pending completion holds socket option memory: do not let them pile up. */
        if (ch->zc_sent - atomic_load_explicit(&ch->zc_done, memory_order_relaxed) >=
            TCP_ZC_REAP_BATCH) {
            tcp_zc_reap(ch);
        }
    } else {
        rc = tcp_send_elems(ch, msg, len, segs, 0, nsegs + 2, 0, deadline);
    }
    if (rc == -ETIMEDOUT) {
        /* Part of the frame may be in the stream, so nothing may follow it; receiving goes
         * on, since the peer may still say why it stopped reading (its ERROR). */
        ch->send_broken = true;
    }
    if (rc == 0) {
        /* Message and payload bytes, not our framing, so backends compare. */
        uint64_t bytes = len;
        for (unsigned i = 0; i < nsegs; i++) {
            bytes += segs[i].len;
        }
        ch->ctr.msgs_sent++;
        ch->ctr.bytes_sent += bytes;
    }
    return rc;
}

static void tcp_shutdown(XpChannel *c)
{
    TcpChannel *ch = tcp_ch(c);
    /* pairs with the acquire loads in tcp_check/tcp_wait: a thread that wakes from poll()
     * because of the shutdown below sees the flag. */
    atomic_store_explicit(&ch->down, true, memory_order_release);
    shutdown(ch->fd, SHUT_RDWR);
}

static void tcp_close(XpChannel *c)
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

static const char *tcp_peer(XpChannel *c)
{
    return tcp_ch(c)->peer;
}

static void tcp_counters(XpChannel *c, XpCounters *out)
{
    TcpChannel *ch = tcp_ch(c);
    if (ch->zerocopy) {
        tcp_zc_reap(ch); /* completions already queued count as copied or not */
    }
    g_mutex_lock(&ch->zc_lock); /* zerocopy_copied is also written under it */
    *out = ch->ctr;
    g_mutex_unlock(&ch->zc_lock);
}

static void tcp_set_send_timeout(XpChannel *c, int timeout_ms)
{
    tcp_ch(c)->send_timeout_ms = timeout_ms;
}

static void tcp_inject_fault(XpChannel *c, int err)
{
    atomic_store(&tcp_ch(c)->fault, err);
}

/* ---------- listener ---------- */

static void tcp_listener_close(XpListener *lb)
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

static XpListener *tcp_listen(XpDomain *d, const char *host, const char *port, GError **error)
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

static const char *tcp_listener_uri(XpListener *lb)
{
    return ((TcpListener *)lb)->uri;
}

static void tcp_listener_shutdown(XpListener *lb)
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

/* Waits for the next connection whose hello is complete: every pending connection is read
 * as its bytes arrive, so idle or slow peers delay nobody (admission rules: XP_PENDING_MAX).
 * The hello buffer must hold XP_HELLO_MAX bytes; *hello_len is set to the hello's length. */
static XpChannel *tcp_accept(XpListener *lb, int timeout_ms, void *hello, size_t *hello_len,
                             GError **error)
{
    TcpListener *l = (TcpListener *)lb;
    int64_t deadline = tcp_deadline(timeout_ms);
    for (;;) {
        struct pollfd pfd[2 + XP_PENDING_MAX] = {
            { .fd = l->fd, .events = POLLIN },
            { .fd = l->wake_fd, .events = POLLIN },
        };
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

static bool tcp_answer(XpChannel *c, uint32_t status, const char *reason, GError **error)
{
    TcpChannel *ch = tcp_ch(c);
    uint8_t ans[TCP_ANSWER_LEN] = { 0 };
    tcp_put_le32(ans, status);
    if (reason) {
        memcpy(ans + 4, reason, strnlen(reason, XP_REASON_MAX));
    }
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

static XpChannel *tcp_connect(XpDomain *d, const char *host, const char *port, const void *hello,
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
    uint8_t ans[TCP_ANSWER_LEN];
    size_t n = 0;
    rc = tcp_recv_frame(ch, ans, sizeof(ans), &n, deadline, -1);
    if (rc == -ETIMEDOUT) {
        g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT,
                    "%s did not answer our hello within %d ms", ch->peer, timeout_ms);
        return NULL;
    }
    if (rc == 0 && n != TCP_ANSWER_LEN) {
        rc = -EPROTO;
    }
    if (rc < 0) {
        g_set_error(error, XP_ERROR, rc == -EPIPE ? XP_ERROR_CONNECT : XP_ERROR_FAILED,
                    "waiting for the answer of %s: %s", ch->peer,
                    rc == -EPIPE ? "connection closed" : g_strerror(-rc));
        return NULL;
    }
    uint32_t status = tcp_get_le32(ans);
    if (status != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_REJECTED,
                    "%s refused the connection: %.*s (status %u)", ch->peer,
                    (int)strnlen((char *)ans + 4, XP_REASON_MAX), (char *)ans + 4, status);
        return NULL;
    }
    /* The handshake is not traffic the engine sent. */
    memset(&ch->ctr, 0, sizeof(ch->ctr));
    return g_steal_pointer(&cb);
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
};
