/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transport conformance: every case is written once against the XpOps contract (transport/xp.h)
 * and registered for every compiled-in backend: /conformance/tcp/... (127.0.0.1),
 * /conformance/tcp/ipv6/... (::1), /conformance/rdma/... and /conformance/rdma/ipv6/...
 * (addresses from MFR_TEST_RDMA_ADDR and MFR_TEST_RDMA_ADDR6).
 * Stream backends get their payload back with recv_payload(); placed backends into a region.
 */
#include "xp.h"
#include "xp-rdma.h"
#include "xp-tcp.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define T_TIMEOUT_MS 20000 /* generous: rdma tests run under TCG emulation */
#define T_IOV_MAX 1024     /* Linux IOV_MAX; segment tests exceed it on purpose */

typedef struct {
    const XpOps *ops;
    const char *host; /* listen and connect address */
    char *skip;       /* reason to skip every case, or NULL */
} Backend;

/* One connected channel pair in two domains, as if on two hosts. */
typedef struct {
    const Backend *be;
    XpDomain *sdom, *ddom; /* source (connects), destination (listens) */
    XpListener *l;
    XpChannel *src, *dst;
} Pair;

static bool placed(const Backend *be)
{
    return be->ops->caps & XP_CAP_PLACED_PAYLOAD;
}

static bool backend_skip(const Backend *be)
{
    if (be->skip) {
        g_test_skip(be->skip);
        return true;
    }
    return false;
}

/* Deterministic bytes that differ with position and seed, so misordering shows. */
static void fill_pattern(void *buf, size_t n, uint32_t seed)
{
    uint8_t *p = buf;
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static char *checksum(const void *buf, size_t n)
{
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, buf, n);
}

static double ms_since(int64_t t0)
{
    return (g_get_monotonic_time() - t0) / 1000.0;
}

/* ---------- memory, registered when the backend needs it ---------- */

typedef struct {
    uint8_t *buf;
    size_t len;
    XpRegion *reg;
} Mem;

static void mem_init(Mem *m, const Backend *be, XpDomain *dom, size_t len, uint32_t access)
{
    m->len = len;
    m->buf = g_aligned_alloc0(1, len, 4096);
    m->reg = NULL;
    if (be->ops->caps & XP_CAP_REGIONS) {
        g_autoptr(GError) err = NULL;
        g_assert_true(be->ops->region_register(dom, m->buf, len, access, &m->reg, &err));
        g_assert_no_error(err);
    }
}

static void mem_clear(Mem *m, const Backend *be)
{
    if (m->reg) {
        be->ops->region_deregister(m->reg);
    }
    g_aligned_free(m->buf);
    memset(m, 0, sizeof(*m));
}

/* The receiver's region as the sender's XpRemote, by descriptor as the engine carries it. */
static XpRemote *remote_of(Pair *p, Mem *dst)
{
    uint8_t desc[XP_REGION_DESC_SIZE];
    p->be->ops->region_export(dst->reg, desc);
    XpRemote *r = NULL;
    g_autoptr(GError) err = NULL;
    g_assert_true(p->be->ops->remote_import(p->sdom, desc, dst->len, &r, &err));
    g_assert_no_error(err);
    return r;
}

/* ---------- connection set-up ---------- */

typedef struct {
    const Backend *be;
    XpDomain *dom;
    const char *host, *port;
    const void *hello;
    size_t hello_len;
    bool zerocopy;
    XpChannel *ch;
    GError *err;
    int64_t elapsed_us;
} ConnectJob;

static gpointer connect_thread(gpointer data)
{
    ConnectJob *j = data;
    XpOptions opts;
    xp_options_init(&opts);
    opts.timeout_ms = T_TIMEOUT_MS;
    opts.zerocopy = j->zerocopy;
    int64_t t0 = g_get_monotonic_time();
    j->ch = j->be->ops->connect(j->dom, j->host, j->port, j->hello, j->hello_len, &opts, &j->err);
    j->elapsed_us = g_get_monotonic_time() - t0;
    return NULL;
}

static XpDomain *domain_new(const Backend *be)
{
    XpOptions opts;
    xp_options_init(&opts);
    opts.timeout_ms = T_TIMEOUT_MS;
    g_autoptr(GError) err = NULL;
    XpDomain *dom = be->ops->domain_new(&opts, &err);
    g_assert_no_error(err);
    g_assert_nonnull(dom);
    return dom;
}

/* Host and port of the listener, parsed back from its URI as a user would. */
static void listener_addr(const Backend *be, XpListener *l, char **host, char **port)
{
    const char *uri = be->ops->listener_uri(l);
    g_autofree char *prefix = g_strdup_printf("%s:", be->ops->name);
    g_assert_true(g_str_has_prefix(uri, prefix));
    g_autoptr(GError) err = NULL;
    g_assert_true(xp_uri_parse(uri, host, port, &err) == be->ops);
    g_assert_no_error(err);
    g_assert_cmpstr(*port, !=, "0");
}

/* Connect from a thread, accept here, answer status/reason. Returns the connector's job. */
static ConnectJob *connect_accept_opts(Pair *p, const void *hello, size_t hello_len,
                                       uint32_t status, const char *reason, bool zerocopy,
                                       XpChannel **accepted)
{
    const Backend *be = p->be;
    ConnectJob *j = g_new0(ConnectJob, 1);
    g_autofree char *host = NULL, *port = NULL;
    listener_addr(be, p->l, &host, &port);
    j->be = be;
    j->dom = p->sdom;
    j->host = host;
    j->port = port;
    j->hello = hello;
    j->hello_len = hello_len;
    j->zerocopy = zerocopy;
    GThread *t = g_thread_new("connect", connect_thread, j);

    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    g_autoptr(GError) err = NULL;
    XpChannel *ch = be->ops->accept(p->l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_nonnull(ch);
    g_assert_cmpmem(got, got_len, hello, hello_len);
    g_assert_true(be->ops->answer(ch, status, reason, &err));
    g_assert_no_error(err);
    g_thread_join(t);
    j->host = j->port = NULL;
    *accepted = ch;
    return j;
}

static ConnectJob *connect_accept(Pair *p, const void *hello, size_t hello_len, uint32_t status,
                                  const char *reason, XpChannel **accepted)
{
    return connect_accept_opts(p, hello, hello_len, status, reason, false, accepted);
}

static void pair_open_opts(Pair *p, const Backend *be, bool zerocopy)
{
    memset(p, 0, sizeof(*p));
    p->be = be;
    p->ddom = domain_new(be);
    p->sdom = domain_new(be);
    g_autoptr(GError) err = NULL;
    p->l = be->ops->listen(p->ddom, be->host, "0", &err);
    g_assert_no_error(err);
    g_assert_nonnull(p->l);

    uint8_t hello[XP_HELLO_MAX];
    fill_pattern(hello, sizeof(hello), 42);
    ConnectJob *j = connect_accept_opts(p, hello, sizeof(hello), 0, NULL, zerocopy, &p->dst);
    g_assert_no_error(j->err);
    g_assert_nonnull(j->ch);
    p->src = j->ch;
    g_free(j);
}

static void pair_open(Pair *p, const Backend *be)
{
    pair_open_opts(p, be, false);
}

static void pair_close(Pair *p)
{
    xp_channel_close(p->src);
    xp_channel_close(p->dst);
    xp_listener_close(p->l);
    xp_domain_free(p->sdom);
    xp_domain_free(p->ddom);
    memset(p, 0, sizeof(*p));
}

/* ---------- sending from a thread (a blocked send must not block the test) ---------- */

typedef struct {
    XpChannel *ch;
    const void *msg;
    size_t len;
    const XpSeg *segs;
    unsigned nsegs;
    int rc;
} SendJob;

static gpointer send_thread(gpointer data)
{
    SendJob *j = data;
    j->rc = xp_send_msg(j->ch, j->msg, j->len, j->segs, j->nsegs);
    return NULL;
}

static void recv_expect(XpChannel *ch, const void *want, size_t want_len)
{
    g_autofree uint8_t *buf = g_malloc(XP_MSG_MAX);
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(ch, buf, XP_MSG_MAX, &len, T_TIMEOUT_MS), ==, 0);
    g_assert_cmpmem(buf, len, want, want_len);
}

/* ---------- cases ---------- */

static void test_roundtrip(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be); /* checks a full XP_HELLO_MAX hello arrives intact */

    g_autofree char *prefix = g_strdup_printf("%s:", be->ops->name);
    g_assert_true(g_str_has_prefix(xp_channel_peer(p.src), prefix));
    g_assert_true(g_str_has_prefix(xp_channel_peer(p.dst), prefix));
    if (strcmp(be->ops->name, "tcp") == 0) {
        g_assert_cmpstr(xp_channel_peer(p.src), ==, be->ops->listener_uri(p.l));
    }

    const char ping[] = "ping", pong[] = "pong!";
    g_assert_cmpint(xp_send_msg(p.src, ping, sizeof(ping), NULL, 0), ==, 0);
    recv_expect(p.dst, ping, sizeof(ping));
    g_assert_cmpint(xp_send_msg(p.dst, pong, sizeof(pong), NULL, 0), ==, 0);
    recv_expect(p.src, pong, sizeof(pong));

    /* A second channel on the same listener, with a one-byte hello. */
    const uint8_t tiny = 0xa5;
    XpChannel *dst2 = NULL;
    ConnectJob *j = connect_accept(&p, &tiny, 1, 0, NULL, &dst2);
    g_assert_no_error(j->err);
    g_assert_cmpint(xp_send_msg(j->ch, pong, sizeof(pong), NULL, 0), ==, 0);
    recv_expect(dst2, pong, sizeof(pong));
    xp_channel_close(j->ch);
    xp_channel_close(dst2);
    g_free(j);
    pair_close(&p);
}

/* The acceptor may send the moment answer() returns, before connect() has returned. */
static void test_answer_then_send(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    g_autofree char *host = NULL, *port = NULL;
    listener_addr(be, p.l, &host, &port);
    ConnectJob j = { .be = be, .dom = p.sdom, .host = host, .port = port, .hello = "early",
                     .hello_len = 5 };
    GThread *t = g_thread_new("connect", connect_thread, &j);
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    g_autoptr(GError) err = NULL;
    XpChannel *dst = be->ops->accept(p.l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_true(be->ops->answer(dst, 0, NULL, &err));
    const char first[] = "first, right after the answer";
    g_assert_cmpint(xp_send_msg(dst, first, sizeof(first), NULL, 0), ==, 0);
    g_thread_join(t);
    g_assert_no_error(j.err);
    recv_expect(j.ch, first, sizeof(first));
    /* Channels before their domains (pair_close frees those). */
    xp_channel_close(j.ch);
    xp_channel_close(dst);
    pair_close(&p);
}

static void test_connect_bad_refused(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    const char reason[] = "session 0123abcd is not served here";
    const uint8_t hello[3] = { 1, 2, 3 };
    XpChannel *refused = NULL;
    ConnectJob *j = connect_accept(&p, hello, sizeof(hello), 7, reason, &refused);
    g_assert_null(j->ch);
    g_assert_error(j->err, XP_ERROR, XP_ERROR_REJECTED);
    g_assert_nonnull(strstr(j->err->message, reason));
    xp_channel_close(refused);
    g_clear_error(&j->err);

    /* A reason of exactly XP_REASON_MAX bytes arrives whole; a longer one is cut there. */
    char longreason[XP_REASON_MAX + 20];
    memset(longreason, 'r', sizeof(longreason) - 1);
    longreason[sizeof(longreason) - 1] = '\0';
    g_free(j);
    j = connect_accept(&p, hello, sizeof(hello), 1, longreason, &refused);
    g_assert_error(j->err, XP_ERROR, XP_ERROR_REJECTED);
    longreason[XP_REASON_MAX] = '\0';
    g_assert_nonnull(strstr(j->err->message, longreason));
    longreason[XP_REASON_MAX] = 'r';
    longreason[XP_REASON_MAX + 1] = '\0';
    g_assert_null(strstr(j->err->message, longreason));
    xp_channel_close(refused);
    g_clear_error(&j->err);
    g_free(j);
    pair_close(&p);
}

static const size_t awkward_sizes[] = { 1, 7, 4095, 4097, XP_MSG_MAX };

static void test_msg_sizes(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    size_t n = G_N_ELEMENTS(awkward_sizes);
    uint8_t *msgs[G_N_ELEMENTS(awkward_sizes)];
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        msgs[i] = g_malloc(awkward_sizes[i]);
        fill_pattern(msgs[i], awkward_sizes[i], (uint32_t)i + 1);
        g_assert_cmpint(xp_send_msg(p.src, msgs[i], awkward_sizes[i], NULL, 0), ==, 0);
        /* send_msg copies the message: scribbling on it now must not change what arrives. */
        memset(msgs[i], 0xee, awkward_sizes[i]);
        fill_pattern(msgs[i], awkward_sizes[i], (uint32_t)i + 1);
        total += awkward_sizes[i];
    }
    for (size_t i = 0; i < n; i++) {
        recv_expect(p.dst, msgs[i], awkward_sizes[i]);
        g_free(msgs[i]);
    }
    if (be->ops->counters) {
        XpCounters sc, dc;
        be->ops->counters(p.src, &sc);
        be->ops->counters(p.dst, &dc);
        g_assert_cmpuint(sc.msgs_sent, ==, n);
        g_assert_cmpuint(sc.bytes_sent, ==, total);
        g_assert_cmpuint(dc.msgs_received, ==, n);
        g_assert_cmpuint(dc.bytes_received, ==, total);
    }
    pair_close(&p);
}

/* Segment i: odd sizes, never a page multiple, taken from scattered source offsets. */
#define SEG_COUNT 2500u /* > IOV_MAX, and > IOV_MAX in total with header and message */
static size_t seg_len(unsigned i)
{
    size_t l = 1 + (i * 7919u) % 2111u;
    return l % 4096 == 0 ? l + 1 : l;
}

static void test_segments(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    size_t total = 0;
    for (unsigned i = 0; i < SEG_COUNT; i++) {
        total += seg_len(i);
    }
    /* Source: segments separated by 3-byte gaps, so a skipped or repeated piece shows. */
    Mem src, dst;
    mem_init(&src, be, p.sdom, total + 3 * SEG_COUNT, XP_REGION_LOCAL);
    mem_init(&dst, be, p.ddom, total, XP_REGION_REMOTE_WRITE);
    fill_pattern(src.buf, src.len, 99);
    XpRemote *remote = placed(be) ? remote_of(&p, &dst) : NULL;

    XpSeg *segs = g_new0(XpSeg, SEG_COUNT);
    g_autofree uint8_t *want = g_malloc(total);
    size_t soff = 0, doff = 0;
    for (unsigned i = 0; i < SEG_COUNT; i++) {
        segs[i] = (XpSeg){ .addr = src.buf + soff, .len = seg_len(i), .region = src.reg,
                           .remote = remote, .remote_offset = doff };
        memcpy(want + doff, src.buf + soff, seg_len(i));
        soff += seg_len(i) + 3;
        doff += seg_len(i);
    }
    char msg[64];
    int msg_len = g_snprintf(msg, sizeof(msg), "segments %u bytes %zu", SEG_COUNT, total);
    SendJob sj = { p.src, msg, (size_t)msg_len, segs, SEG_COUNT, -1 };
    GThread *t = g_thread_new("send", send_thread, &sj);

    recv_expect(p.dst, msg, (size_t)msg_len);
    if (!placed(be)) {
        /* Read with a different split than the sender's, also more than IOV_MAX pieces. */
        g_autoptr(GArray) iov = g_array_new(FALSE, FALSE, sizeof(struct iovec));
        for (size_t off = 0; off < total;) {
            size_t l = MIN((size_t)(1 + (iov->len * 104729u) % 1999u), total - off);
            struct iovec v = { dst.buf + off, l };
            g_array_append_val(iov, v);
            off += l;
        }
        g_assert_cmpuint(iov->len, >, T_IOV_MAX);
        g_assert_cmpint(xp_recv_payload(p.dst, (struct iovec *)(void *)iov->data, iov->len), ==,
                        0);
    }
    g_thread_join(t);
    g_assert_cmpint(sj.rc, ==, 0);
    g_assert_cmpmem(dst.buf, total, want, total);

    /* The stream stays in step: a plain message right after the payload. */
    const char after[] = "after";
    g_assert_cmpint(xp_send_msg(p.src, after, sizeof(after), NULL, 0), ==, 0);
    recv_expect(p.dst, after, sizeof(after));

    if (be->ops->counters) {
        XpCounters sc, dc;
        be->ops->counters(p.src, &sc);
        be->ops->counters(p.dst, &dc);
        g_assert_cmpuint(sc.msgs_sent, ==, 2);
        g_assert_cmpuint(sc.bytes_sent, ==, total + msg_len + sizeof(after));
        g_assert_cmpuint(dc.msgs_received, ==, 2);
        if (!placed(be)) {
            g_assert_cmpuint(dc.bytes_received, ==, total + msg_len + sizeof(after));
        }
    }
    if (remote) {
        be->ops->remote_free(remote);
    }
    g_free(segs);
    mem_clear(&src, be);
    mem_clear(&dst, be);
    pair_close(&p);
}

/* ---------- backpressure: a fast sender, a slow receiver, every byte intact ---------- */

typedef struct {
    XpChannel *ch;
    const uint8_t *buf;
    size_t total;
    XpRegion *reg;
    XpRemote *remote;
    size_t chunk; /* payload per message; 0: chunk_len() */
    unsigned msgs;
    int rc;
} StreamJob;

/* Chunk sizes a little over 1 MiB and uneven, split into uneven segments. */
static size_t chunk_len(unsigned i)
{
    return (1u << 20) + 333 + (i * 4099u) % 65521u;
}

static gpointer stream_thread(gpointer data)
{
    StreamJob *j = data;
    XpSeg segs[64];
    size_t off = 0;
    for (unsigned i = 0; off < j->total; i++) {
        size_t chunk = MIN(j->chunk ? j->chunk : chunk_len(i), j->total - off);
        unsigned n = 0;
        for (size_t c = 0; c < chunk; n++) {
            size_t l = MIN((size_t)(65536 + 17 * n), chunk - c);
            segs[n] = (XpSeg){ .addr = j->buf + off + c, .len = l, .region = j->reg,
                               .remote = j->remote, .remote_offset = off + c };
            c += l;
        }
        uint64_t hdr[2] = { off, chunk };
        j->rc = xp_send_msg(j->ch, hdr, sizeof(hdr), segs, n);
        if (j->rc != 0) {
            return NULL;
        }
        j->msgs++;
        off += chunk;
    }
    return NULL;
}

static void test_backpressure(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    /* Emulated RDMA moves tens of MB/s: keep its run short. */
    size_t total = placed(be) ? 16u << 20 : 64u << 20;
    Mem src, dst;
    mem_init(&src, be, p.sdom, total, XP_REGION_LOCAL);
    mem_init(&dst, be, p.ddom, total, XP_REGION_REMOTE_WRITE);
    fill_pattern(src.buf, total, 7);
    g_autofree char *want = checksum(src.buf, total);
    StreamJob sj = { p.src, src.buf, total, src.reg, placed(be) ? remote_of(&p, &dst) : NULL, 0,
                     0, -1 };
    GThread *t = g_thread_new("stream", stream_thread, &sj);

    size_t got = 0;
    unsigned msgs = 0;
    while (got < total) {
        uint64_t hdr[2];
        size_t len = 0;
        g_assert_cmpint(xp_recv_msg(p.dst, hdr, sizeof(hdr), &len, T_TIMEOUT_MS), ==, 0);
        g_assert_cmpuint(len, ==, sizeof(hdr));
        g_assert_cmpuint(hdr[0], ==, got);
        g_assert_cmpuint(hdr[1], <=, total - got);
        if (!placed(be)) {
            /* Two pieces: the first crosses into the second's expected split. */
            size_t half = hdr[1] / 2 + 1;
            struct iovec iov[2] = { { dst.buf + got, half }, { dst.buf + got + half,
                                                                hdr[1] - half } };
            g_assert_cmpint(xp_recv_payload(p.dst, iov, 2), ==, 0);
        }
        got += hdr[1];
        msgs++;
        g_usleep(20000); /* slow reader: the sender must wait, not fail or drop */
    }
    g_thread_join(t);
    g_assert_cmpint(sj.rc, ==, 0);
    g_assert_cmpuint(sj.msgs, ==, msgs);
    g_autofree char *have = checksum(dst.buf, total);
    g_assert_cmpstr(have, ==, want);
    if (sj.remote) {
        be->ops->remote_free(sj.remote);
    }
    mem_clear(&src, be);
    mem_clear(&dst, be);
    pair_close(&p);
}

/* Receiving side of stream_thread(): messages in order, payload read (stream) or placed. */
typedef struct {
    XpChannel *ch;
    uint8_t *buf;
    size_t total;
    bool placed;
    unsigned msgs;
    int rc;
} RecvJob;

static gpointer stream_recv_thread(gpointer data)
{
    RecvJob *j = data;
    for (size_t got = 0; got < j->total;) {
        uint64_t hdr[2];
        size_t len = 0;
        j->rc = xp_recv_msg(j->ch, hdr, sizeof(hdr), &len, T_TIMEOUT_MS);
        if (j->rc == 0 && (len != sizeof(hdr) || hdr[0] != got || hdr[1] > j->total - got)) {
            j->rc = -EBADMSG;
        }
        if (j->rc == 0 && !j->placed) {
            struct iovec iov = { j->buf + got, hdr[1] };
            j->rc = xp_recv_payload(j->ch, &iov, 1);
        }
        if (j->rc != 0) {
            return NULL;
        }
        got += hdr[1];
        j->msgs++;
    }
    return NULL;
}

/* Both ends stream at once: neither direction may wait on the other. */
static void test_duplex(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    size_t total = placed(be) ? 4u << 20 : 32u << 20;
    /* a: src -> dst, b: dst -> src; each with its own memory on each end. */
    Mem asrc, adst, bsrc, bdst;
    mem_init(&asrc, be, p.sdom, total, XP_REGION_LOCAL);
    mem_init(&adst, be, p.ddom, total, XP_REGION_REMOTE_WRITE);
    mem_init(&bsrc, be, p.ddom, total, XP_REGION_LOCAL);
    mem_init(&bdst, be, p.sdom, total, XP_REGION_REMOTE_WRITE);
    fill_pattern(asrc.buf, total, 21);
    fill_pattern(bsrc.buf, total, 22);
    XpRemote *ar = NULL, *br = NULL;
    if (placed(be)) {
        ar = remote_of(&p, &adst);
        /* The reverse direction imports into the destination's domain. */
        uint8_t desc[XP_REGION_DESC_SIZE];
        be->ops->region_export(bdst.reg, desc);
        g_autoptr(GError) err = NULL;
        g_assert_true(be->ops->remote_import(p.ddom, desc, bdst.len, &br, &err));
        g_assert_no_error(err);
    }
    StreamJob sa = { p.src, asrc.buf, total, asrc.reg, ar, 0, 0, -1 };
    StreamJob sb = { p.dst, bsrc.buf, total, bsrc.reg, br, 0, 0, -1 };
    RecvJob ra = { p.dst, adst.buf, total, placed(be), 0, -1 };
    RecvJob rb = { p.src, bdst.buf, total, placed(be), 0, -1 };
    GThread *t[4] = {
        g_thread_new("send-a", stream_thread, &sa), g_thread_new("send-b", stream_thread, &sb),
        g_thread_new("recv-a", stream_recv_thread, &ra),
        g_thread_new("recv-b", stream_recv_thread, &rb),
    };
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
    }
    g_assert_cmpint(sa.rc, ==, 0);
    g_assert_cmpint(sb.rc, ==, 0);
    g_assert_cmpint(ra.rc, ==, 0);
    g_assert_cmpint(rb.rc, ==, 0);
    g_assert_cmpuint(ra.msgs, ==, sa.msgs);
    g_assert_cmpuint(rb.msgs, ==, sb.msgs);
    g_assert_cmpmem(adst.buf, total, asrc.buf, total);
    g_assert_cmpmem(bdst.buf, total, bsrc.buf, total);
    if (ar) {
        be->ops->remote_free(ar);
        be->ops->remote_free(br);
    }
    mem_clear(&asrc, be);
    mem_clear(&adst, be);
    mem_clear(&bsrc, be);
    mem_clear(&bdst, be);
    pair_close(&p);
}

/* Several channels of one session at once, as multifd uses them. */
#define MULTI_CHANNELS 4
static void test_multi_channel(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    size_t total = placed(be) ? 2u << 20 : 16u << 20;
    XpChannel *src[MULTI_CHANNELS], *dst[MULTI_CHANNELS];
    Mem ms[MULTI_CHANNELS], md[MULTI_CHANNELS];
    StreamJob sj[MULTI_CHANNELS];
    RecvJob rj[MULTI_CHANNELS];
    GThread *t[2 * MULTI_CHANNELS];
    for (unsigned i = 0; i < MULTI_CHANNELS; i++) {
        uint8_t hello[4] = { 'c', 'h', (uint8_t)i, 0 };
        ConnectJob *j = connect_accept(&p, hello, sizeof(hello), 0, NULL, &dst[i]);
        g_assert_no_error(j->err);
        src[i] = j->ch;
        g_free(j);
        mem_init(&ms[i], be, p.sdom, total, XP_REGION_LOCAL);
        mem_init(&md[i], be, p.ddom, total, XP_REGION_REMOTE_WRITE);
        fill_pattern(ms[i].buf, total, 100 + i);
        sj[i] = (StreamJob){ src[i], ms[i].buf, total, ms[i].reg,
                             placed(be) ? remote_of(&p, &md[i]) : NULL, 0, 0, -1 };
        rj[i] = (RecvJob){ dst[i], md[i].buf, total, placed(be), 0, -1 };
    }
    for (unsigned i = 0; i < MULTI_CHANNELS; i++) {
        t[2 * i] = g_thread_new("send", stream_thread, &sj[i]);
        t[2 * i + 1] = g_thread_new("recv", stream_recv_thread, &rj[i]);
    }
    for (unsigned i = 0; i < 2 * MULTI_CHANNELS; i++) {
        g_thread_join(t[i]);
    }
    for (unsigned i = 0; i < MULTI_CHANNELS; i++) {
        g_assert_cmpint(sj[i].rc, ==, 0);
        g_assert_cmpint(rj[i].rc, ==, 0);
        g_assert_cmpmem(md[i].buf, total, ms[i].buf, total);
        if (sj[i].remote) {
            be->ops->remote_free(sj[i].remote);
        }
        xp_channel_close(src[i]);
        xp_channel_close(dst[i]);
        mem_clear(&ms[i], be);
        mem_clear(&md[i], be);
    }
    pair_close(&p);
}

static void test_recv_timeout(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    uint8_t buf[64];
    size_t len = 0;
    int64_t t0 = g_get_monotonic_time();
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, 150), ==, -ETIMEDOUT);
    double ms = ms_since(t0);
    g_assert_cmpfloat(ms, >=, 140);
    g_assert_cmpfloat(ms, <, 1500);
    /* 0 polls once. */
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, 0), ==, -ETIMEDOUT);
    /* A timeout loses nothing: the channel still works. */
    const char m[] = "late";
    g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), NULL, 0), ==, 0);
    recv_expect(p.dst, m, sizeof(m));
    pair_close(&p);
}

/* ---------- shutdown from another thread ---------- */

typedef struct {
    XpChannel *ch;
    const void *payload; /* stream backends: 1 MiB segment per message; NULL for placed */
    size_t payload_len;
    atomic_int tid;      /* the thread's, for thread_wait_blocked() */
    atomic_bool done;
    atomic_uint sends;
    int rc;
    int64_t end_us;
} BlockJob;

/* ---------- blocked threads ---------- */

static int thread_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/* Whether thread tid sleeps in a system call other than futex (a lock or condition would
 * not be the transport's wait): /proc says so, no guess from elapsed time. */
static bool thread_blocked_in_kernel(int tid)
{
    g_autofree char *sc_path = g_strdup_printf("/proc/self/task/%d/syscall", tid);
    g_autofree char *st_path = g_strdup_printf("/proc/self/task/%d/stat", tid);
    g_autofree char *sc = NULL, *st = NULL;
    if (!g_file_get_contents(sc_path, &sc, NULL, NULL) ||
        !g_file_get_contents(st_path, &st, NULL, NULL)) {
        return false;
    }
    const char *state = strrchr(st, ')');
    if (!g_ascii_isdigit(sc[0]) || !state || (state[2] != 'S' && state[2] != 'D')) {
        return false; /* "running", or not in a system call */
    }
    return g_ascii_strtoll(sc, NULL, 10) != SYS_futex;
}

/* Waits until the thread that stored its tid in *tid is blocked in the kernel: checked
 * every millisecond, for as long as it takes (the test's timeout bounds it). */
static void thread_wait_blocked(atomic_int *tid)
{
    while (atomic_load(tid) == 0 || !thread_blocked_in_kernel(atomic_load(tid))) {
        g_usleep(1000);
    }
}

static gpointer recv_block_thread(gpointer data)
{
    BlockJob *j = data;
    atomic_store(&j->tid, thread_tid());
    uint8_t buf[64];
    size_t len = 0;
    j->rc = xp_recv_msg(j->ch, buf, sizeof(buf), &len, -1);
    j->end_us = g_get_monotonic_time();
    atomic_store(&j->done, true);
    return NULL;
}

static gpointer payload_block_thread(gpointer data)
{
    BlockJob *j = data;
    atomic_store(&j->tid, thread_tid());
    struct iovec iov = { (void *)j->payload, j->payload_len };
    j->rc = xp_recv_payload(j->ch, &iov, 1);
    j->end_us = g_get_monotonic_time();
    atomic_store(&j->done, true);
    return NULL;
}

static gpointer send_block_thread(gpointer data)
{
    BlockJob *j = data;
    atomic_store(&j->tid, thread_tid());
    XpSeg seg = { .addr = j->payload, .len = j->payload_len };
    const char m[] = "fill";
    for (;;) {
        j->rc = xp_send_msg(j->ch, m, sizeof(m), &seg, j->payload ? 1 : 0);
        if (j->rc != 0) {
            break;
        }
        atomic_fetch_add(&j->sends, 1);
    }
    j->end_us = g_get_monotonic_time();
    atomic_store(&j->done, true);
    return NULL;
}

static void test_shutdown_wakes(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);

    /* A receiver blocked with no timeout. */
    BlockJob rj = { .ch = p.dst };
    GThread *t = g_thread_new("recv-block", recv_block_thread, &rj);
    thread_wait_blocked(&rj.tid);
    g_assert_false(atomic_load(&rj.done));
    int64_t t0 = g_get_monotonic_time();
    xp_channel_shutdown(p.dst);
    g_thread_join(t);
    g_assert_cmpint(rj.rc, ==, -EPIPE);
    g_assert_cmpfloat((rj.end_us - t0) / 1000.0, <, 1000);
    /* And every later call fails at once. */
    uint8_t buf[16];
    size_t len;
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, -1), ==, -EPIPE);
    g_assert_cmpint(xp_send_msg(p.dst, "x", 1, NULL, 0), ==, -EPIPE);

    /* A sender blocked because the peer does not read (the peer is shut down, not closed:
     * it neither reads nor resets). Use a fresh pair. */
    pair_close(&p);
    pair_open(&p, be);
    size_t plen = 1u << 20;
    g_autofree uint8_t *payload = placed(be) ? NULL : g_malloc0(plen);
    BlockJob sj = { .ch = p.src, .payload = payload, .payload_len = payload ? plen : 0 };
    t = g_thread_new("send-block", send_block_thread, &sj);
    /* The sender loops until it has no room: then it sleeps in the kernel. */
    thread_wait_blocked(&sj.tid);
    unsigned last = atomic_load(&sj.sends);
    g_assert_false(atomic_load(&sj.done));
    t0 = g_get_monotonic_time();
    xp_channel_shutdown(p.src);
    g_thread_join(t);
    g_assert_cmpint(sj.rc, ==, -EPIPE);
    g_assert_cmpuint(atomic_load(&sj.sends), ==, last); /* it was blocked, not slow */
    g_assert_cmpfloat((sj.end_us - t0) / 1000.0, <, 1000);
    pair_close(&p);

    if (!placed(be)) {
        /* A receiver blocked in the middle of a payload that never comes. */
        pair_open(&p, be);
        const char m[] = "1 MiB follows (it does not)";
        g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), NULL, 0), ==, 0);
        recv_expect(p.dst, m, sizeof(m));
        BlockJob pj = { .ch = p.dst, .payload = payload, .payload_len = plen };
        t = g_thread_new("payload-block", payload_block_thread, &pj);
        thread_wait_blocked(&pj.tid);
        g_assert_false(atomic_load(&pj.done));
        t0 = g_get_monotonic_time();
        xp_channel_shutdown(p.dst);
        g_thread_join(t);
        g_assert_cmpint(pj.rc, ==, -EPIPE);
        g_assert_cmpfloat((pj.end_us - t0) / 1000.0, <, 1000);
        pair_close(&p);
    }
}

static void test_peer_close(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    xp_channel_close(p.src);
    p.src = NULL;
    uint8_t buf[64];
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, T_TIMEOUT_MS), ==, -EPIPE);
    /* Sends notice too (the first ones may still be buffered locally). */
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
        rc = xp_send_msg(p.dst, "x", 1, NULL, 0);
        if (rc == 0) {
            g_usleep(10000);
        }
    }
    g_assert_cmpint(rc, ==, -EPIPE);
    pair_close(&p);
}

/* Stream backends: the peer dies in the middle of a payload. */
static void test_peer_close_mid_payload(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    if (placed(be)) {
        g_test_skip("placed payload is not read by the receiver");
        return;
    }
    Pair p;
    pair_open(&p, be);
    uint8_t part[1000];
    fill_pattern(part, sizeof(part), 5);
    XpSeg seg = { .addr = part, .len = sizeof(part) };
    const char m[] = "1 MiB follows";
    g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), &seg, 1), ==, 0);
    xp_channel_close(p.src);
    p.src = NULL;
    recv_expect(p.dst, m, sizeof(m));
    g_autofree uint8_t *big = g_malloc(1u << 20);
    struct iovec iov = { big, 1u << 20 };
    g_assert_cmpint(xp_recv_payload(p.dst, &iov, 1), ==, -EPIPE);
    g_assert_cmpmem(big, sizeof(part), part, sizeof(part));
    pair_close(&p);
}

typedef struct {
    const Backend *be;
    XpListener *l;
    atomic_int tid;
    int timeout_ms;
    XpChannel *ch;
    GError *err;
    int64_t end_us;
} AcceptJob;

static gpointer accept_thread(gpointer data)
{
    AcceptJob *j = data;
    atomic_store(&j->tid, thread_tid());
    uint8_t hello[XP_HELLO_MAX];
    size_t len = 0;
    j->ch = j->be->ops->accept(j->l, j->timeout_ms, hello, &len, &j->err);
    j->end_us = g_get_monotonic_time();
    return NULL;
}

static void test_listener_shutdown_wakes(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    AcceptJob j = { .be = be, .l = l, .timeout_ms = -1 };
    GThread *t = g_thread_new("accept", accept_thread, &j);
    thread_wait_blocked(&j.tid);
    int64_t t0 = g_get_monotonic_time();
    be->ops->listener_shutdown(l);
    g_thread_join(t);
    g_assert_null(j.ch);
    g_assert_error(j.err, XP_ERROR, XP_ERROR_CLOSED);
    g_assert_cmpfloat((j.end_us - t0) / 1000.0, <, 1000);
    g_clear_error(&j.err);
}

static void test_accept_bad_timeout(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    int64_t t0 = g_get_monotonic_time();
    AcceptJob j = { .be = be, .l = l, .timeout_ms = 200 };
    accept_thread(&j);
    g_assert_null(j.ch);
    g_assert_error(j.err, XP_ERROR, XP_ERROR_TIMEOUT);
    g_assert_cmpfloat(ms_since(t0), >=, 190);
    g_assert_cmpfloat(ms_since(t0), <, 2000);
    g_clear_error(&j.err);
}

static void test_connect_bad_closed_port(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    XpListener *l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    g_autofree char *host = NULL, *port = NULL;
    listener_addr(be, l, &host, &port);
    xp_listener_close(l); /* nobody listens on port now */

    ConnectJob j = { .be = be, .dom = dom, .host = host, .port = port, .hello = "hi",
                     .hello_len = 2 };
    connect_thread(&j);
    g_assert_null(j.ch);
    g_assert_error(j.err, XP_ERROR, XP_ERROR_CONNECT);
    g_assert_nonnull(strstr(j.err->message, port));
    g_assert_cmpfloat(j.elapsed_us / 1000.0, <, 2000);
    g_clear_error(&j.err);
}

static void test_recv_bad_emsgsize(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    Pair p;
    pair_open(&p, be);
    g_autofree uint8_t *big = g_malloc0(XP_MSG_MAX + 1);
    /* Over the transport's limit: refused before anything is sent. */
    g_assert_cmpint(xp_send_msg(p.src, big, XP_MSG_MAX + 1, NULL, 0), ==, -EMSGSIZE);
    const char ok[] = "still fine";
    g_assert_cmpint(xp_send_msg(p.src, ok, sizeof(ok), NULL, 0), ==, 0);
    recv_expect(p.dst, ok, sizeof(ok));
    /* Over the receiver's buffer. */
    g_assert_cmpint(xp_send_msg(p.src, big, XP_MSG_MAX, NULL, 0), ==, 0);
    uint8_t small[100];
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(p.dst, small, sizeof(small), &len, T_TIMEOUT_MS), ==,
                    -EMSGSIZE);
    /* The stream position is lost: the channel must not pretend otherwise. */
    if (!placed(be)) {
        g_assert_cmpint(xp_recv_msg(p.dst, small, sizeof(small), &len, 100), ==, -EPIPE);
    }
    pair_close(&p);
}

static void test_inject_fault(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    if (!be->ops->inject_fault) {
        g_test_skip("backend has no inject_fault");
        return;
    }
    Pair p;
    pair_open(&p, be);
    const char m[] = "after fault";
    be->ops->inject_fault(p.src, EIO);
    g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), NULL, 0), ==, -EIO);
    be->ops->inject_fault(p.dst, ENOMEM);
    uint8_t buf[64];
    size_t len;
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, 0), ==, -ENOMEM);
    g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), NULL, 0), ==, 0);
    recv_expect(p.dst, m, sizeof(m));
    pair_close(&p);
}

/* With XP_CAP_ZEROCOPY: a zerocopy data channel delivers the same bytes, and says so. */
static void test_zerocopy(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    if (!(be->ops->caps & XP_CAP_ZEROCOPY)) {
        g_test_skip("backend has no XP_CAP_ZEROCOPY");
        return;
    }
    Pair p;
    pair_open_opts(&p, be, true);
    size_t total = 48u << 20;
    Mem src, dst;
    mem_init(&src, be, p.sdom, total, XP_REGION_LOCAL);
    mem_init(&dst, be, p.ddom, total, XP_REGION_REMOTE_WRITE);
    fill_pattern(src.buf, total, 11);
    /* Many messages, so completions pile up and the sender reaps them while it runs: 768,
     * twice the ~390 zerocopy sendmsg() calls (partial sends count too) tcp makes on
     * loopback before it gives up, since completions only come as the receiver reads. */
    StreamJob sj = { p.src, src.buf, total, src.reg, placed(be) ? remote_of(&p, &dst) : NULL,
                     64u << 10, 0, -1 };
    GThread *t = g_thread_new("stream", stream_thread, &sj);
    size_t got = 0;
    while (got < total) {
        uint64_t hdr[2];
        size_t len = 0;
        g_assert_cmpint(xp_recv_msg(p.dst, hdr, sizeof(hdr), &len, T_TIMEOUT_MS), ==, 0);
        g_assert_cmpuint(hdr[0], ==, got);
        if (!placed(be)) {
            struct iovec iov = { dst.buf + got, hdr[1] };
            g_assert_cmpint(xp_recv_payload(p.dst, &iov, 1), ==, 0);
        }
        got += hdr[1];
    }
    g_thread_join(t);
    g_assert_cmpint(sj.rc, ==, 0);
    g_assert_cmpmem(dst.buf, total, src.buf, total);
    XpCounters sc;
    be->ops->counters(p.src, &sc);
    g_assert_cmpuint(sc.zerocopy_sends, >, 0);
    if (strcmp(be->ops->name, "tcp") == 0) {
        /* Loopback delivery always copies: the reaped completions must say so, and the
         * channel must stop paying for zerocopy it never gets (after 256 copied sends).
         * The receiver read every byte, so every completion was queued before counters()
         * reaped them: the next message must go without MSG_ZEROCOPY. (How many sends
         * asked for it before the give-up depends on how far reaping lagged, i.e. on load.) */
        g_assert_cmpuint(sc.zerocopy_copied, >=, 256);
        uint64_t hdr[2] = { 0, 4096 };
        XpSeg seg = { .addr = src.buf, .len = 4096 };
        g_assert_cmpint(xp_send_msg(p.src, hdr, sizeof(hdr), &seg, 1), ==, 0);
        size_t len = 0;
        g_assert_cmpint(xp_recv_msg(p.dst, hdr, sizeof(hdr), &len, T_TIMEOUT_MS), ==, 0);
        struct iovec iov = { dst.buf, 4096 };
        g_assert_cmpint(xp_recv_payload(p.dst, &iov, 1), ==, 0);
        XpCounters after;
        be->ops->counters(p.src, &after);
        g_assert_cmpuint(after.zerocopy_sends, ==, sc.zerocopy_sends);
        g_assert_cmpuint(after.msgs_sent, ==, sc.msgs_sent + 1);
    }
    g_test_message("zerocopy sends %" G_GUINT64_FORMAT ", copied by the kernel %" G_GUINT64_FORMAT,
                   sc.zerocopy_sends, sc.zerocopy_copied);
    if (sj.remote) {
        be->ops->remote_free(sj.remote);
    }
    /* Segments stay valid until close: close the channels, then free the memory, and the
     * domains last. */
    xp_channel_close(g_steal_pointer(&p.src));
    xp_channel_close(g_steal_pointer(&p.dst));
    mem_clear(&src, be);
    mem_clear(&dst, be);
    pair_close(&p);
}

static void test_connect_bad_hello_too_long(gconstpointer data)
{
    const Backend *be = data;
    if (backend_skip(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    uint8_t hello[XP_HELLO_MAX + 1] = { 0 };
    ConnectJob j = { .be = be, .dom = dom, .host = be->host, .port = "9", .hello = hello,
                     .hello_len = sizeof(hello) };
    connect_thread(&j);
    g_assert_null(j.ch);
    g_assert_error(j.err, XP_ERROR, XP_ERROR_FAILED);
    g_autofree char *want = g_strdup_printf("hello of %zu bytes exceeds %u", sizeof(hello),
                                            XP_HELLO_MAX);
    g_assert_nonnull(strstr(j.err->message, want));
    g_clear_error(&j.err);
}

/* ---------- tcp wire format (pins what docs/protocol.md says about the framing) ---------- */

/* A plain blocking socket connected to the listener, to speak the wire format by hand. */
static int raw_connect(const Backend *be, XpListener *l)
{
    g_autofree char *host = NULL, *port = NULL;
    listener_addr(be, l, &host, &port);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    g_assert_cmpint(getaddrinfo(host, port, &hints, &res), ==, 0);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(connect(fd, res->ai_addr, res->ai_addrlen), ==, 0);
    freeaddrinfo(res);
    return fd;
}

static void raw_write(int fd, const void *buf, size_t len)
{
    g_assert_cmpint(send(fd, buf, len, MSG_NOSIGNAL), ==, (ssize_t)len);
}

static void raw_read(int fd, void *buf, size_t len)
{
    g_assert_cmpint(recv(fd, buf, len, MSG_WAITALL), ==, (ssize_t)len);
}

static bool tcp_only(const Backend *be)
{
    g_assert_cmpstr(be->ops->name, ==, "tcp"); /* registered from tcp_cases only */
    return backend_skip(be);
}

/* hello = [u32 LE len][bytes]; answer = [u32 LE 124][u32 LE status][120 bytes reason]. */
static void test_wire_hello_answer(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    for (uint32_t status = 0; status < 2; status++) {
        int fd = raw_connect(be, l);
        const uint8_t hello[] = { 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o' };
        raw_write(fd, hello, sizeof(hello));
        uint8_t got[XP_HELLO_MAX];
        size_t got_len = 0;
        g_autoptr(XpChannel) ch = be->ops->accept(l, T_TIMEOUT_MS, got, &got_len, &err);
        g_assert_no_error(err);
        g_assert_cmpmem(got, got_len, "hello", 5);
        g_assert_true(be->ops->answer(ch, status ? 0x01020304 : 0, status ? "no" : NULL, &err));
        g_assert_no_error(err);
        uint8_t ans[4 + 4 + XP_REASON_MAX], want[sizeof(ans)];
        memset(want, 0, sizeof(want));
        want[0] = 4 + XP_REASON_MAX;
        if (status) {
            memcpy(want + 4, (uint8_t[]){ 4, 3, 2, 1, 'n', 'o' }, 6);
        }
        raw_read(fd, ans, sizeof(ans));
        g_assert_cmpmem(ans, sizeof(ans), want, sizeof(want));
        if (!status) {
            /* A message and its payload: [u32 len][msg][payload], nothing else. */
            XpSeg seg = { .addr = "PAYLOAD", .len = 7 };
            g_assert_cmpint(xp_send_msg(ch, "msg", 3, &seg, 1), ==, 0);
            uint8_t frame[3 + 4 + 7];
            raw_read(fd, frame, sizeof(frame));
            g_assert_cmpmem(frame, sizeof(frame), "\x03\0\0\0msgPAYLOAD", sizeof(frame));
        }
        close(fd);
    }
}

/* No host: one dual-stack listener takes IPv4 and IPv6 peers, and names both plainly. */
static void test_listen_wildcard(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    Pair p = { .be = be };
    p.ddom = domain_new(be);
    p.sdom = domain_new(be);
    g_autoptr(GError) err = NULL;
    p.l = be->ops->listen(p.ddom, NULL, "0", &err);
    g_assert_no_error(err);
    g_autofree char *host = NULL, *port = NULL;
    listener_addr(be, p.l, &host, &port);
    ConnectJob j = { .be = be, .dom = p.sdom, .host = be->host, .port = port, .hello = "w",
                     .hello_len = 1 };
    GThread *t = g_thread_new("connect", connect_thread, &j);
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    p.dst = be->ops->accept(p.l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_true(be->ops->answer(p.dst, 0, NULL, &err));
    g_thread_join(t);
    g_assert_no_error(j.err);
    p.src = j.ch;
    /* The connector's local address is the acceptor's peer: 127.0.0.1 stays IPv4. */
    g_autofree char *want = g_strdup_printf(strchr(be->host, ':') ? "tcp:[%s]:" : "tcp:%s:",
                                            be->host);
    g_assert_true(g_str_has_prefix(xp_channel_peer(p.dst), want));
    g_assert_cmpint(xp_send_msg(p.src, "w", 1, NULL, 0), ==, 0);
    recv_expect(p.dst, "w", 1);
    pair_close(&p);
}

/* The listener closed fd (after ~how long): EOF, nothing sent before it. */
static void raw_expect_eof(int fd)
{
    uint8_t b;
    g_assert_cmpint(recv(fd, &b, 1, 0), ==, 0);
}

static void count_dropped(const gchar *domain, GLogLevelFlags level, const gchar *msg,
                          gpointer opaque)
{
    GPtrArray *lines = opaque;
    g_ptr_array_add(lines, g_strdup(msg));
}

/* The tcp listener's log lines (dropped connections) from now until droplog_end(). */
typedef struct {
    GPtrArray *lines;
    guint hid;
} DropLog;

static void droplog_begin(DropLog *d)
{
    d->lines = g_ptr_array_new_with_free_func(g_free);
    d->hid = g_log_set_handler("mfrdma-xp-tcp", G_LOG_LEVEL_MESSAGE, count_dropped, d->lines);
}

/* Asserts exactly one line came, containing want. */
static void droplog_end_one(DropLog *d, const char *want)
{
    g_log_remove_handler("mfrdma-xp-tcp", d->hid);
    g_assert_cmpuint(d->lines->len, ==, 1);
    g_assert_nonnull(strstr(g_ptr_array_index(d->lines, 0), want));
    g_ptr_array_unref(d->lines);
}

/* A hello longer than XP_HELLO_MAX is dropped by the listener, logged with the reason, and
 * accept() goes on waiting for a real one. */
static void test_accept_bad_hello_too_long(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    DropLog log;
    droplog_begin(&log);
    int fd = raw_connect(be, l);
    const uint8_t hdr[4] = { XP_HELLO_MAX + 1, 0, 0, 0 };
    raw_write(fd, hdr, sizeof(hdr));
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    g_assert_null(be->ops->accept(l, 300, got, &got_len, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_TIMEOUT);
    raw_expect_eof(fd);
    g_autofree char *want = g_strdup_printf("hello longer than %u bytes", XP_HELLO_MAX);
    droplog_end_one(&log, want);
    close(fd);
}

/* A peer that closes before its hello is dropped quietly: one log line saying so, no
 * error out of accept() (it used to be "reading hello from X: Broken pipe"). */
static void test_accept_bad_closed_before_hello(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    DropLog log;
    droplog_begin(&log);
    int fd = raw_connect(be, l);
    const uint8_t part[] = { 5, 0, 0 }; /* not even the length word */
    raw_write(fd, part, sizeof(part));
    close(fd);
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    g_assert_null(be->ops->accept(l, 500, got, &got_len, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_TIMEOUT);
    droplog_end_one(&log, ": closed before its hello");
}

/* A connected peer that never says hello is dropped after the domain's timeout (or
 * XP_HELLO_TIMEOUT_MS, the shorter), by the listener and without failing accept(). */
static void test_accept_bad_silent_peer(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    XpOptions opts;
    xp_options_init(&opts);
    opts.timeout_ms = 300; /* how long a connected peer may take to say hello */
    g_autoptr(GError) err = NULL;
    g_autoptr(XpDomain) dom = be->ops->domain_new(&opts, &err);
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    int fd = raw_connect(be, l);
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    int64_t t0 = g_get_monotonic_time();
    g_assert_null(be->ops->accept(l, 1000, got, &got_len, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_TIMEOUT);
    g_assert_nonnull(strstr(err->message, "no connection on "));
    /* dropped at its own deadline, while accept() went on waiting */
    raw_expect_eof(fd);
    g_assert_cmpfloat(ms_since(t0), >=, 1000);
    close(fd);
}

/* Admission: peers that connect and say nothing, or half a hello, delay no one: a real hello
 * behind them is accepted at once, and the oldest of more than XP_PENDING_MAX pending ones is
 * dropped to make room. */
static void test_accept_idle_peers(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be); /* T_TIMEOUT_MS: a hello may take 2 s */
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    int idle[XP_PENDING_MAX]; /* with fd below, one more than the listener keeps */
    for (unsigned i = 0; i < G_N_ELEMENTS(idle); i++) {
        idle[i] = raw_connect(be, l);
    }
    const uint8_t half[] = { 5, 0, 0, 0, 'h', 'e' };
    raw_write(idle[1], half, sizeof(half));
    int fd = raw_connect(be, l);
    const uint8_t hello[] = { 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o' };
    raw_write(fd, hello, sizeof(hello));
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    int64_t t0 = g_get_monotonic_time();
    g_autoptr(XpChannel) ch = be->ops->accept(l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_cmpfloat(ms_since(t0), <, 1000);
    g_assert_cmpmem(got, got_len, "hello", 5);
    raw_expect_eof(idle[0]); /* the oldest made room */
    /* the half hello, completed now, is the next connection */
    raw_write(idle[1], "llo", 3);
    g_autoptr(XpChannel) ch2 = be->ops->accept(l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_cmpmem(got, got_len, "hello", 5);
    for (unsigned i = 0; i < G_N_ELEMENTS(idle); i++) {
        close(idle[i]);
    }
    close(fd);
}

static void test_recv_bad_frame_over_max(gconstpointer data)
{
    const Backend *be = data;
    if (tcp_only(be)) {
        return;
    }
    g_autoptr(XpDomain) dom = domain_new(be);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpListener) l = be->ops->listen(dom, be->host, "0", &err);
    g_assert_no_error(err);
    int fd = raw_connect(be, l);
    raw_write(fd, (uint8_t[]){ 0, 0, 0, 0 }, 4);
    uint8_t got[XP_HELLO_MAX];
    size_t got_len = 0;
    g_autoptr(XpChannel) ch = be->ops->accept(l, T_TIMEOUT_MS, got, &got_len, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(got_len, ==, 0);
    /* A peer claiming a frame over XP_MSG_MAX is refused even with room to spare. */
    uint32_t n = GUINT32_TO_LE(XP_MSG_MAX + 1);
    raw_write(fd, &n, sizeof(n));
    g_autofree uint8_t *buf = g_malloc(2 * XP_MSG_MAX);
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(ch, buf, 2 * XP_MSG_MAX, &len, T_TIMEOUT_MS), ==, -EMSGSIZE);
    g_assert_cmpint(xp_recv_msg(ch, buf, 2 * XP_MSG_MAX, &len, 0), ==, -EPIPE);
    close(fd);
}

/* ---------- URI parsing (backend independent) ---------- */

static void uri_expect_bad(const char *uri, const char *message)
{
    g_autoptr(GError) err = NULL;
    char *host = NULL, *port = NULL;
    g_assert_null(xp_uri_parse(uri, &host, &port, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_URI);
    g_assert_cmpstr(err->message, ==, message);
    g_assert_null(host);
    g_assert_null(port);
}

static void test_uri_good(void)
{
    struct { const char *uri, *host, *port; const XpOps *ops; } cases[] = {
        { "tcp:127.0.0.1:4444", "127.0.0.1", "4444", &xp_tcp_ops },
        { "tcp:[::1]:0", "::1", "0", &xp_tcp_ops },
        { "tcp:[fe80::1%eth0]:65535", "fe80::1%eth0", "65535", &xp_tcp_ops },
        { "tcp:dest.example:80", "dest.example", "80", &xp_tcp_ops },
        { "rdma:10.0.2.15:7471", "10.0.2.15", "7471", &xp_rdma_ops },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        g_autofree char *host = NULL, *port = NULL;
        g_assert_true(xp_uri_parse(cases[i].uri, &host, &port, &err) == cases[i].ops);
        g_assert_no_error(err);
        g_assert_cmpstr(host, ==, cases[i].host);
        g_assert_cmpstr(port, ==, cases[i].port);
    }
}

static void test_uri_bad_missing_port(void)
{
    uri_expect_bad("tcp:127.0.0.1", "bad URI 'tcp:127.0.0.1': missing :PORT");
    uri_expect_bad("tcp:[::1]", "bad URI 'tcp:[::1]': IPv6 host must be written [ADDR]:PORT");
}

static void test_uri_bad_port(void)
{
    uri_expect_bad("tcp:127.0.0.1:65536",
                   "bad URI 'tcp:127.0.0.1:65536': port '65536' is not a number in 0..65535");
    uri_expect_bad("tcp:127.0.0.1:44x",
                   "bad URI 'tcp:127.0.0.1:44x': port '44x' is not a number in 0..65535");
    uri_expect_bad("tcp:127.0.0.1:",
                   "bad URI 'tcp:127.0.0.1:': port '' is not a number in 0..65535");
}

static void test_uri_bad_unknown_scheme(void)
{
    uri_expect_bad("udp:10.0.0.1:4444",
                   "bad URI 'udp:10.0.0.1:4444': unknown transport 'udp' (known: tcp, rdma)");
    uri_expect_bad("10.0.0.1", "bad URI '10.0.0.1': expected SCHEME:HOST:PORT, e.g. "
                               "tcp:127.0.0.1:4444");
}

static void test_uri_bad_ipv6_unbracketed(void)
{
    uri_expect_bad("tcp:::1:4444", "bad URI 'tcp:::1:4444': IPv6 host must be written "
                                   "[ADDR]:PORT");
    uri_expect_bad("tcp:[::1:4444", "bad URI 'tcp:[::1:4444': IPv6 host must be written "
                                    "[ADDR]:PORT");
}

static void test_uri_bad_empty_host(void)
{
    uri_expect_bad("tcp::4444", "bad URI 'tcp::4444': empty host");
}

/* ---------- registration ---------- */

typedef struct {
    const char *name;
    GTestDataFunc fn;
} Case;

static const Case cases[] = {
    { "roundtrip", test_roundtrip },
    { "connect_bad_refused", test_connect_bad_refused },
    { "answer_then_send", test_answer_then_send },
    { "msg_sizes", test_msg_sizes },
    { "segments", test_segments },
    { "backpressure", test_backpressure },
    { "duplex", test_duplex },
    { "multi_channel", test_multi_channel },
    { "recv_timeout", test_recv_timeout },
    { "shutdown_wakes", test_shutdown_wakes },
    { "peer_close", test_peer_close },
    { "peer_close_mid_payload", test_peer_close_mid_payload },
    { "listener_shutdown_wakes", test_listener_shutdown_wakes },
    { "accept_bad_timeout", test_accept_bad_timeout },
    { "connect_bad_closed_port", test_connect_bad_closed_port },
    { "recv_bad_emsgsize", test_recv_bad_emsgsize },
    { "inject_fault", test_inject_fault },
    { "zerocopy", test_zerocopy },
    { "connect_bad_hello_too_long", test_connect_bad_hello_too_long },
};

/* Only for tcp: they speak its wire format through plain sockets. */
static const Case tcp_cases[] = {
    { "wire_hello_answer", test_wire_hello_answer },
    { "listen_wildcard", test_listen_wildcard },
    { "accept_bad_hello_too_long", test_accept_bad_hello_too_long },
    { "accept_bad_silent_peer", test_accept_bad_silent_peer },
    { "accept_idle_peers", test_accept_idle_peers },
    { "accept_bad_closed_before_hello", test_accept_bad_closed_before_hello },
    { "recv_bad_frame_over_max", test_recv_bad_frame_over_max },
};

static bool ipv6_loopback_works(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void add_cases(const char *prefix, const Backend *be, const Case *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_autofree char *path = g_strdup_printf("%s/%s", prefix, cs[i].name);
        g_test_add_data_func(path, be, cs[i].fn);
    }
}

static void add_backend(GPtrArray *keep, const char *prefix, const XpOps *ops, const char *host,
                        char *skip)
{
    Backend *be = g_new0(Backend, 1);
    be->ops = ops;
    be->host = host;
    be->skip = skip;
    g_ptr_array_add(keep, be);
    add_cases(prefix, be, cases, G_N_ELEMENTS(cases));
    if (strcmp(ops->name, "tcp") == 0) {
        add_cases(prefix, be, tcp_cases, G_N_ELEMENTS(tcp_cases));
    }
}

static void free_backend(gpointer p)
{
    Backend *be = p;
    g_free(be->skip);
    g_free(be);
}

/* --backend=NAME registers only that backend's cases (GTest's -p neither descends into
 * nested paths nor combines into one valid TAP plan). */
static const char *take_backend_arg(int *argc, char **argv)
{
    const char *only = NULL;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (g_str_has_prefix(argv[i], "--backend=")) {
            only = argv[i] + strlen("--backend=");
        } else {
            argv[out++] = argv[i];
        }
    }
    argv[out] = NULL;
    *argc = out;
    return only;
}

int main(int argc, char **argv)
{
    const char *only = take_backend_arg(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(free_backend);

    for (const XpOps *const *o = xp_ops_all(); *o; o++) {
        const XpOps *ops = *o;
        if (only && strcmp(ops->name, only) != 0) {
            continue;
        }
        g_autofree char *prefix = g_strdup_printf("/conformance/%s", ops->name);
        char *skip = NULL;
        if (!ops->domain_new || !ops->connect) {
            skip = g_strdup_printf("backend %s is not implemented yet (no domain_new/connect)",
                                   ops->name);
        }
        if (strcmp(ops->name, "tcp") == 0) {
            add_backend(keep, prefix, ops, "127.0.0.1", skip);
            g_autofree char *prefix6 = g_strdup_printf("%s/ipv6", prefix);
            char *skip6 = skip ? g_strdup(skip)
                               : ipv6_loopback_works() ? NULL
                                                       : g_strdup("no IPv6 loopback (::1)");
            add_backend(keep, prefix6, ops, "::1", skip6);
            continue;
        }
        /* Other backends need a real device address: MFR_TEST_RDMA_ADDR etc. */
        g_autofree char *upper = g_ascii_strup(ops->name, -1);
        g_autofree char *var = g_strdup_printf("MFR_TEST_%s_ADDR", upper);
        const char *addr = g_getenv(var);
        if (!skip && (!addr || !*addr)) {
            skip = g_strdup_printf("%s is not set (address of a %s device to test on)", var,
                                   ops->name);
        }
        add_backend(keep, prefix, ops, addr, skip);
        /* ... and MFR_TEST_RDMA_ADDR6 for the same cases over IPv6. */
        g_autofree char *var6 = g_strdup_printf("MFR_TEST_%s_ADDR6", upper);
        const char *addr6 = g_getenv(var6);
        char *skip6 = ops->domain_new && ops->connect ? NULL : g_strdup(skip);
        if (!skip6 && (!addr6 || !*addr6)) {
            skip6 = g_strdup_printf("%s is not set (IPv6 address of a %s device to test on)",
                                    var6, ops->name);
        }
        g_autofree char *prefix6 = g_strdup_printf("%s/ipv6", prefix);
        add_backend(keep, prefix6, ops, addr6, skip6);
    }

    if (only) {
        return g_test_run();
    }
    g_test_add_func("/conformance/uri/good", test_uri_good);
    g_test_add_func("/conformance/uri/bad_missing_port", test_uri_bad_missing_port);
    g_test_add_func("/conformance/uri/bad_port", test_uri_bad_port);
    g_test_add_func("/conformance/uri/bad_unknown_scheme", test_uri_bad_unknown_scheme);
    g_test_add_func("/conformance/uri/bad_ipv6_unbracketed", test_uri_bad_ipv6_unbracketed);
    g_test_add_func("/conformance/uri/bad_empty_host", test_uri_bad_empty_host);
    return g_test_run();
}
