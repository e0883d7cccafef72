/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to transport/tcp/: the backend's object layouts (domain, listener, channel), its
 * tuning constants and the functions its files share. The TCP backend: one socket per
 * channel, length-prefixed messages, and the payload segments of a send following their
 * message raw in the stream, so the receiver reads them with recv_payload() straight into
 * its own pages (readv). The wire framing is in wire.h.
 */
#pragma once

#include "xp.h"
#include "xp-tcp.h"

#include "wire.h"

#include <limits.h>
#include <netdb.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* One whole frame plus the length word of the next one (see tcp_recv_frame()). */
#define TCP_RBUF_SIZE (TCP_WIRE_HDR_SIZE + XP_MSG_MAX + TCP_WIRE_HDR_SIZE)
/* Socket buffers for data channels: a 25G link with 100 us RTT needs ~300 KiB in flight;
 * 4 MiB leaves room for scheduling hiccups of the channel threads. */
#define TCP_DATA_SOCKBUF (4 * 1024 * 1024)
#define TCP_DEFAULT_TIMEOUT_MS 5000
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
    uint8_t sendhdr[TCP_WIRE_HDR_SIZE];
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

/* ------------------------------------------------------------------ shared functions */

/* socket.c: set-up helpers and the domain */
int64_t tcp_deadline(int timeout_ms);
int tcp_remaining_ms(int64_t deadline);
int tcp_timeout_ms(const XpOptions *opts);
int tcp_map_errno(int e);
char *tcp_format_addr(const struct sockaddr *sa, socklen_t len);
char *tcp_format_hostport(const char *host, const char *port);
void tcp_setsockopt_int(int fd, int level, int name, int val);
void tcp_set_bufs(int fd, const TcpDomain *dom, bool control);
void tcp_set_conn_opts(int fd);
XpDomain *tcp_domain_new(const XpOptions *opts, GError **error);
void tcp_domain_free(XpDomain *d);

/* channel.c: lifecycle, waiting, reading */
TcpChannel *tcp_channel_new(int fd, const XpOptions *opts);
int tcp_check(TcpChannel *ch);
int tcp_wait(TcpChannel *ch, short events, int64_t deadline, int wake_fd);
ssize_t tcp_read_some(TcpChannel *ch, struct iovec *iov, unsigned iovcnt, int64_t deadline,
                      int wake_fd);
void tcp_break(TcpChannel *ch);
void tcp_shutdown(XpChannel *c);
void tcp_close(XpChannel *c);
const char *tcp_peer(XpChannel *c);
void tcp_counters(XpChannel *c, XpCounters *out);
void tcp_inject_fault(XpChannel *c, int err);
void tcp_set_send_timeout(XpChannel *c, int timeout_ms);
/* numa.c: the node of the NIC that owns c's local address (sysfs), -1 for none. */
int tcp_numa_node(XpChannel *c);

/* zerocopy.c */
unsigned tcp_zc_reap(TcpChannel *ch);

/* send.c, recv.c */
int tcp_send_msg(XpChannel *c, const void *msg, size_t len, const XpSeg *segs,
                 unsigned nsegs);
int tcp_recv_frame(TcpChannel *ch, void *buf, size_t cap, size_t *len, int64_t deadline,
                   int wake_fd);
int tcp_recv_msg(XpChannel *c, void *buf, size_t cap, size_t *len, int timeout_ms);
int tcp_recv_payload(XpChannel *c, const struct iovec *iov, unsigned iovcnt);

/* listener.c, connect.c */
XpListener *tcp_listen(XpDomain *d, const char *host, const char *port, GError **error);
const char *tcp_listener_uri(XpListener *lb);
XpChannel *tcp_accept(XpListener *lb, int timeout_ms, void *hello, size_t *hello_len,
                      GError **error);
bool tcp_answer(XpChannel *c, uint32_t status, const char *reason, GError **error);
void tcp_listener_shutdown(XpListener *lb);
void tcp_listener_close(XpListener *lb);
XpChannel *tcp_connect(XpDomain *d, const char *host, const char *port, const void *hello,
                       size_t hello_len, const XpOptions *opts, GError **error);
