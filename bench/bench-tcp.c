/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Raw TCP baseline: N streams push the same bytes as a migration with no protocol at all:
 * each message is a header-sized buffer plus one chunk of guest memory (sendmsg of two
 * iovecs, as the engine's channels do), read with readv straight into a destination buffer.
 * It is the number mfrdma over TCP is measured against.
 *
 * With zerocopy (the tcpzc cases) each stream sends the way transport/tcp/ does with
 * MfrSourceConfig.transport.zerocopy: SO_ZEROCOPY on the socket, the header with MSG_MORE, the
 * chunk with MSG_ZEROCOPY, completions reaped from the error queue once 32 are pending, ENOBUFS
 * sent with a copy, and no more MSG_ZEROCOPY after 256 completions in a row that the kernel
 * copied anyway (loopback always copies). Same policy as the engine, so the ratio compares
 * the engine with the best this technique does on this path, and the counters of both say
 * how many sends the kernel really left uncopied.
 */
#include "bench.h"
#include "xp-tcp.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BENCH_HDR_MAX 8192u

typedef struct {
    int fd;
    uint8_t *base;  /* source: guest memory; destination: buffer */
    uint64_t len;   /* bytes of this stream's slice */
    uint64_t chunk;
    uint64_t hdr;
    pthread_barrier_t *start;
    double cpu_s;
    int err;        /* errno of the first failure, 0 on success */
    /* sender with zerocopy; the sending thread's alone until it is joined */
    bool zerocopy;  /* SO_ZEROCOPY accepted: chunks go with MSG_ZEROCOPY */
    uint32_t zc_sent, zc_done;  /* MSG_ZEROCOPY calls issued / completed (kernel numbering) */
    unsigned zc_copied_run;     /* consecutive completions the kernel copied */
    uint64_t msgs, zc_sends, zc_copied;
} RawStream;

static void raw_slice(const BenchRawSpec *spec, unsigned i, uint64_t *off, uint64_t *len)
{
    uint64_t per = spec->bytes / spec->streams / 4096 * 4096;
    *off = per * i;
    *len = i + 1 == spec->streams ? spec->bytes - per * i : per;
}

/* Moves iov forward past n bytes. */
static void raw_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (n > 0 && *cnt > 0) {
        if (n >= (*iov)->iov_len) {
            n -= (*iov)->iov_len;
            (*iov)++;
            (*cnt)--;
        } else {
            (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
            (*iov)->iov_len -= n;
            n = 0;
        }
    }
    while (*cnt > 0 && (*iov)->iov_len == 0) {
        (*iov)++;
        (*cnt)--;
    }
}

/* Reaps MSG_ZEROCOPY completions without blocking, with the engine's reader and rules. */
static void raw_zc_reap(RawStream *s)
{
    uint32_t lo, hi;
    bool copied;
    while (xp_tcp_zerocopy_next(s->fd, &lo, &hi, &copied)) {
        uint32_t n = hi - lo + 1;
        if (copied) {
            s->zc_copied += n;
            s->zc_copied_run = MIN(s->zc_copied_run + n, XP_TCP_ZC_GIVE_UP);
        } else {
            s->zc_copied_run = 0;
        }
        s->zc_done = hi + 1;
    }
}

/* sendmsg until iov is sent; false with s->err set on failure. */
static bool raw_send_all(RawStream *s, struct iovec *iov, int cnt, int flags)
{
    raw_advance(&iov, &cnt, 0);
    while (cnt > 0) {
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = cnt };
        ssize_t r = sendmsg(s->fd, &mh, MSG_NOSIGNAL | flags);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
                flags &= ~MSG_ZEROCOPY; /* over optmem for pinned pages: copy this piece */
                s->zc_copied++;
                continue;
            }
            s->err = errno;
            return false;
        }
        if (flags & MSG_ZEROCOPY) {
            s->zc_sent++;
            s->zc_sends++;
        }
        raw_advance(&iov, &cnt, (size_t)r);
    }
    return true;
}

static gpointer raw_send_thread(gpointer opaque)
{
    RawStream *s = opaque;
    uint8_t hdr[BENCH_HDR_MAX] = { 0 };
    pthread_barrier_wait(s->start);
    double cpu0 = bench_thread_cpu_s();
    for (uint64_t off = 0; off < s->len && !s->err;) {
        uint64_t n = MIN(s->chunk, s->len - off);
        struct iovec v[2] = { { hdr, s->hdr }, { s->base + off, n } };
        if (s->zerocopy && s->zc_copied_run < XP_TCP_ZC_GIVE_UP) {
            if (raw_send_all(s, &v[0], 1, MSG_MORE) &&
                raw_send_all(s, &v[1], 1, MSG_ZEROCOPY) &&
                s->zc_sent - s->zc_done >= XP_TCP_ZC_REAP_BATCH) {
                raw_zc_reap(s);
            }
        } else {
            raw_send_all(s, v, 2, 0);
        }
        s->msgs++;
        off += n;
    }
    s->cpu_s = bench_thread_cpu_s() - cpu0;
    return NULL;
}

static gpointer raw_recv_thread(gpointer opaque)
{
    RawStream *s = opaque;
    uint8_t hdr[BENCH_HDR_MAX];
    double cpu0 = bench_thread_cpu_s();
    for (uint64_t off = 0; off < s->len && !s->err;) {
        uint64_t n = MIN(s->chunk, s->len - off);
        struct iovec v[2] = { { hdr, s->hdr }, { s->base + off, n } };
        struct iovec *iov = v;
        int cnt = 2;
        raw_advance(&iov, &cnt, 0);
        while (cnt > 0) {
            ssize_t r = readv(s->fd, iov, cnt);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                s->err = r == 0 ? EPIPE : errno;
                break;
            }
            raw_advance(&iov, &cnt, (size_t)r);
        }
        off += n;
    }
    s->cpu_s = bench_thread_cpu_s() - cpu0;
    return NULL;
}

static bool raw_check_spec(const BenchRawSpec *spec, GError **error)
{
    if (spec->streams == 0 || spec->streams > 64 || spec->chunk == 0 || spec->hdr > BENCH_HDR_MAX ||
        spec->bytes < (uint64_t)spec->streams * 4096) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED,
                    "raw baseline: bad spec (streams %u, bytes %" G_GUINT64_FORMAT ", chunk %"
                    G_GUINT64_FORMAT ", header %" G_GUINT64_FORMAT ")",
                    spec->streams, spec->bytes, spec->chunk, spec->hdr);
        return false;
    }
    return true;
}

bool bench_raw_tcp_serve(const BenchAgentConfig *cfg, int ctl_fd, const BenchRawSpec *spec,
                         void **buf, uint64_t *buf_len, GError **error)
{
    if (!raw_check_spec(spec, error)) {
        return false;
    }
    if (spec->fresh || *buf_len != spec->bytes) {
        bench_unmap(*buf, *buf_len);
        *buf = NULL;
        *buf_len = 0;
        *buf = bench_map_fresh(spec->bytes, cfg->thp, error);
        if (!*buf) {
            return false;
        }
        *buf_len = spec->bytes;
    }
    uint16_t port = 0;
    int lfd = bench_tcp_listen(cfg->tcp_host, "0", true, &port, error);
    if (lfd < 0) {
        return false;
    }
    if (!bench_ctl_send(ctl_fd, error, "OK %s %u", cfg->tcp_host, port)) {
        close(lfd);
        return false;
    }
    RawStream st[64] = { 0 };
    GThread *th[64] = { NULL };
    bool ok = true;
    unsigned n = 0;
    for (; n < spec->streams; n++) {
        int fd = bench_tcp_accept(lfd, (int)cfg->timeout_ms, true, error);
        if (fd < 0) {
            ok = false;
            break;
        }
        uint64_t off, len;
        raw_slice(spec, n, &off, &len);
        st[n] = (RawStream){ .fd = fd, .base = (uint8_t *)*buf + off, .len = len,
                             .chunk = spec->chunk, .hdr = spec->hdr };
    }
    close(lfd);
    if (ok) {
        for (unsigned i = 0; i < n; i++) {
            th[i] = g_thread_new("bench-raw-recv", raw_recv_thread, &st[i]);
        }
    }
    double cpu = 0;
    int err = 0;
    for (unsigned i = 0; i < n; i++) {
        if (th[i]) {
            g_thread_join(th[i]);
        }
        close(st[i].fd);
        cpu += st[i].cpu_s;
        err = err ? err : st[i].err;
    }
    if (!ok) {
        return false;
    }
    if (err) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED,
                    "raw tcp baseline: receiving: %s", g_strerror(err));
        return false;
    }
    return bench_ctl_send(ctl_fd, error, "DONE %.6f", cpu);
}

bool bench_raw_tcp_run(int ctl_fd, const BenchRawSpec *spec, const uint8_t *src,
                       BenchRawResult *out, GError **error)
{
    char line[BENCH_LINE_MAX];
    char host[256];
    unsigned port = 0;
    if (!raw_check_spec(spec, error) ||
        !bench_ctl_send(ctl_fd, error, "TCPRAW %u %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
                        " %" G_GUINT64_FORMAT " %d", spec->streams, spec->bytes, spec->chunk,
                        spec->hdr, spec->fresh) ||
        !bench_ctl_recv(ctl_fd, line, sizeof(line), 60000, error)) {
        return false;
    }
    if (sscanf(line, "OK %255s %u", host, &port) != 2) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "raw tcp baseline: agent: %s", line);
        return false;
    }
    g_autofree char *port_s = g_strdup_printf("%u", port);
    RawStream st[64] = { 0 };
    GThread *th[64] = { NULL };
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, spec->streams + 1);
    unsigned n = 0;
    bool ok = true;
    for (; n < spec->streams; n++) {
        int fd = bench_tcp_connect(host, port_s, true, error);
        if (fd < 0) {
            ok = false;
            break;
        }
        uint64_t off, len;
        raw_slice(spec, n, &off, &len);
        st[n] = (RawStream){ .fd = fd, .base = (uint8_t *)src + off, .len = len,
                             .chunk = spec->chunk, .hdr = spec->hdr, .start = &start };
        if (spec->zerocopy) {
            int one = 1;
            /* without kernel support the stream sends with copies, as the engine does */
            st[n].zerocopy = setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
        }
    }
    if (!ok) {
        /* the agent gives up accepting after its timeout and reports it */
        for (unsigned i = 0; i < n; i++) {
            close(st[i].fd);
        }
        pthread_barrier_destroy(&start);
        (void)bench_ctl_recv(ctl_fd, line, sizeof(line), -1, NULL);
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        th[i] = g_thread_new("bench-raw-send", raw_send_thread, &st[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = bench_now_s();
    double cpu = 0;
    int err = 0;
    for (unsigned i = 0; i < n; i++) {
        g_thread_join(th[i]);
        cpu += st[i].cpu_s;
        err = err ? err : st[i].err;
    }
    bool got = bench_ctl_recv(ctl_fd, line, sizeof(line), -1, error);
    double t1 = bench_now_s();
    uint64_t msgs = 0, zc_sends = 0, zc_copied = 0;
    for (unsigned i = 0; i < n; i++) {
        if (st[i].zerocopy) {
            raw_zc_reap(&st[i]); /* everything landed: the last completions are queued */
        }
        msgs += st[i].msgs;
        zc_sends += st[i].zc_sends;
        zc_copied += st[i].zc_copied;
        close(st[i].fd);
    }
    pthread_barrier_destroy(&start);
    if (!got) {
        return false;
    }
    double dcpu = 0;
    if (err || sscanf(line, "DONE %lf", &dcpu) != 1) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "raw tcp baseline: %s",
                    err ? g_strerror(err) : line);
        return false;
    }
    *out = (BenchRawResult){ .elapsed_s = t1 - t0, .src_cpu_s = cpu, .dst_cpu_s = dcpu,
                             .bytes = spec->bytes, .msgs = msgs, .zc_sends = zc_sends,
                             .zc_copied = zc_copied };
    return true;
}
