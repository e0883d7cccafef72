/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA tests for verbs/ and the rdma transport's own behaviour (beyond the shared conformance
 * suite): device and PD, CQ idle wait, memlock and ODP checks, CM connect/accept/reject with
 * private data over IPv4 and IPv6, WRITE-before-SEND ordering, real error completions, the
 * device/port/GID overrides. Run in the soft-RoCE VM; every case skips without a device or
 * without MFR_TEST_RDMA_ADDR.
 */
#include "vb.h"
#include "xp.h"
#include "xp-rdma.h"
#include "rdma/wire.h"

#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define T_TIMEOUT_MS 20000

/* ---------- warnings: captured, so each test asserts exactly the ones it expects ---------- */

static GMutex warn_lock;
static GPtrArray *warnings; /* char *, WARNING and above */

static GLogWriterOutput capture_writer(GLogLevelFlags level, const GLogField *fields,
                                       gsize n_fields, gpointer user_data)
{
    if (level & (G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
        for (gsize i = 0; i < n_fields; i++) {
            if (strcmp(fields[i].key, "MESSAGE") == 0) {
                g_mutex_lock(&warn_lock);
                g_ptr_array_add(warnings, fields[i].length < 0
                                              ? g_strdup(fields[i].value)
                                              : g_strndup(fields[i].value, fields[i].length));
                g_mutex_unlock(&warn_lock);
            }
        }
    }
    return g_log_writer_default(level, fields, n_fields, user_data);
}

/* Asserts the warnings logged since the last call match the patterns, in order. */
static void expect_warnings(const char *const *patterns)
{
    g_mutex_lock(&warn_lock);
    GPtrArray *got = warnings;
    warnings = g_ptr_array_new_with_free_func(g_free);
    g_mutex_unlock(&warn_lock); /* asserting below logs, which takes warn_lock */
    guint n = 0;
    while (patterns && patterns[n]) {
        g_assert_cmpuint(n, <, got->len);
        const char *w = got->pdata[n];
        if (!g_pattern_match_simple(patterns[n], w)) {
            g_error("warning '%s' does not match '%s'", w, patterns[n]);
        }
        n++;
    }
    if (got->len != n) {
        g_error("unexpected warning: %s", (char *)got->pdata[n]);
    }
    g_ptr_array_unref(got);
}

/* ---------- environment ---------- */

static const char *test_addr(void)
{
    const char *a = g_getenv("MFR_TEST_RDMA_ADDR");
    return a && *a ? a : NULL;
}

static bool need_device(void)
{
    g_autofree char *dev = vb_devinfo_first_active();
    if (!dev) {
        g_test_skip("no RDMA device with an ACTIVE port");
        return false;
    }
    return true;
}

static bool need_addr(void)
{
    if (!need_device()) {
        return false;
    }
    if (!test_addr()) {
        g_test_skip("MFR_TEST_RDMA_ADDR is not set (address of an RDMA device)");
        return false;
    }
    return true;
}

/* ---------- device, PD, CQ ---------- */

static void test_device_open(void)
{
    if (!need_device()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(VbDevice) dev = vb_device_open(NULL, &err);
    g_assert_no_error(err);
    const VbDeviceAttr *a = vb_device_attr(dev);
    g_assert_cmpint(a->max_qp_wr, >, 0);
    g_assert_cmpint(a->max_sge, >, 0);
    g_assert_cmpuint(a->max_mr_size, >, 0);
    g_assert_cmpint(a->phys_port_cnt, >=, 1);
    VbPortAttr pa;
    g_assert_true(vb_device_port_attr(dev, 1, &pa, &err));
    g_assert_no_error(err);
    g_assert_true(pa.active);
    g_assert_cmpstr(pa.state_str, ==, "ACTIVE");
    g_assert_cmpint(pa.active_mtu, >=, 256);

    /* By name: the same context as librdmacm's (what cm_ids will use). */
    g_autoptr(VbDevice) again = vb_device_open(vb_device_name(dev), &err);
    g_assert_no_error(err);
    g_assert_true(vb_device_same(dev, again));

    g_autoptr(VbPd) pd = vb_pd_new(dev, &err);
    g_assert_no_error(err);
    g_assert_true(vb_pd_device(pd) == dev);
}

static void test_device_bad_name(void)
{
    if (!need_device()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_assert_null(vb_device_open("no-such-hca", &err));
    g_assert_error(err, VB_ERROR, VB_ERROR_NO_DEVICE);
    g_assert_true(g_str_has_prefix(err->message, "RDMA device 'no-such-hca' not found (present: "));
}

static void test_cq_idle_wait(void)
{
    if (!need_device()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(VbDevice) dev = vb_device_open(NULL, &err);
    g_autoptr(VbCq) cq = vb_cq_new(dev, 64, &err);
    g_assert_no_error(err);
    g_assert_cmpint(vb_cq_poll(cq, 16), ==, 0);
    gint64 t0 = g_get_monotonic_time();
    g_assert_cmpint(vb_cq_wait(cq, 16, 150, -1), ==, 0);
    double ms = (g_get_monotonic_time() - t0) / 1000.0;
    g_assert_cmpfloat(ms, >=, 140);
    g_assert_cmpfloat(ms, <, 2000);
}

static void test_devinfo(void)
{
    if (!need_device()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) all = vb_devinfo_list(&err);
    g_assert_no_error(err);
    g_assert_cmpuint(all->len, >=, 1);
    g_autofree char *first = vb_devinfo_first_active();
    bool found = false;
    for (guint i = 0; i < all->len; i++) {
        VbDevInfo *d = all->pdata[i];
        if (strcmp(d->attr.name, first) != 0) {
            continue;
        }
        found = true;
        g_assert_cmpuint(d->ports->len, ==, (guint)d->attr.phys_port_cnt);
        VbPortInfo *p = &g_array_index(d->ports, VbPortInfo, 0);
        g_assert_cmpint(p->num, ==, 1);
        g_assert_cmpuint(p->gids->len, >=, 1);
        const VbGidInfo *g0 = &g_array_index(p->gids, VbGidInfo, 0);
        g_assert_cmpint(g0->index, ==, 0);
        g_assert_true(strcmp(g0->type, "IB") == 0 || g_str_has_prefix(g0->type, "RoCE v"));
        /* With an address to test on, its GID must be listed (RoCE: IPv4-mapped). */
        const char *addr = test_addr();
        if (addr && strcmp(p->attr.link_layer, "Ethernet") == 0) {
            g_autofree char *mapped = g_strdup_printf("::ffff:%s", addr);
            bool has = false;
            for (guint k = 0; k < p->gids->len; k++) {
                const VbGidInfo *g = &g_array_index(p->gids, VbGidInfo, k);
                has = has || (strcmp(g->addr, mapped) == 0 && strcmp(g->type, "RoCE v2") == 0);
            }
            g_assert_true(has);
        }
    }
    g_assert_true(found);
}

/* ---------- memory registration ---------- */

static void drop_cap_ipc_lock(void)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct data[2];
    g_assert_cmpint(syscall(SYS_capget, &hdr, data), ==, 0);
    data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    g_assert_cmpint(syscall(SYS_capset, &hdr, data), ==, 0);
}

/* Runs in a subprocess: changing credentials makes uverbs refuse fds opened before
 * (ib_safe_file_access), so the parent must not do it. */
static void mr_bad_memlock_child(void)
{
    struct rlimit saved;
    g_assert_cmpint(getrlimit(RLIMIT_MEMLOCK, &saved), ==, 0);
    drop_cap_ipc_lock(); /* root ignores the limit only through this capability */
    struct rlimit low = { .rlim_cur = 1u << 20, .rlim_max = saved.rlim_max };
    g_assert_cmpint(setrlimit(RLIMIT_MEMLOCK, &low), ==, 0);

    g_autoptr(GError) err = NULL;
    g_assert_false(vb_memlock_check(64u << 20, &err));
    g_assert_error(err, VB_ERROR, VB_ERROR_MEMLOCK);
    g_assert_true(g_str_has_prefix(err->message, "need 64.0 MiB pinned ("));
    g_assert_nonnull(strstr(err->message, "RLIMIT_MEMLOCK is 1.0 MiB: raise it with `ulimit -l "));
    g_clear_error(&err);
    g_assert_true(vb_memlock_check(4096, &err));
    g_assert_no_error(err);

    /* Through the transport: XP_ERROR_MEMLOCK, and nothing registered. */
    XpOptions opts;
    xp_options_init(&opts);
    g_autoptr(XpDomain) dom = xp_rdma_ops.domain_new(&opts, &err);
    size_t len = 8u << 20;
    g_autofree void *buf = g_malloc0(len);
    XpRegion *r = NULL;
    g_assert_false(xp_rdma_ops.region_register(dom, buf, len, XP_REGION_REMOTE_WRITE, &r, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_MEMLOCK);
    g_assert_true(g_str_has_prefix(err->message, "need 8.0 MiB pinned ("));
    g_assert_null(r);

}

static void test_mr_bad_memlock(void)
{
    if (!need_device()) {
        return;
    }
    if (g_test_subprocess()) {
        mr_bad_memlock_child();
        return;
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
}

static void test_mr_odp(void)
{
    if (!need_device()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(VbDevice) dev = vb_device_open(NULL, &err);
    g_autoptr(VbPd) pd = vb_pd_new(dev, &err);
    g_assert_no_error(err);
    size_t len = 1u << 20;
    g_autofree void *buf = g_malloc0(len);
    g_autoptr(VbMr) mr = vb_mr_reg(pd, buf, len,
                                   VB_ACCESS_REMOTE_WRITE | VB_ACCESS_ON_DEMAND, &err);
    if (vb_device_attr(dev)->odp_rc_write) {
        g_assert_no_error(err);
        g_assert_nonnull(mr);
        return;
    }
    g_assert_null(mr);
    g_assert_error(err, VB_ERROR, VB_ERROR_UNSUPPORTED);
    g_autofree char *want = g_strdup_printf("%s does not support on-demand paging for RC RDMA "
                                            "WRITE*", vb_device_name(dev));
    g_assert_true(g_pattern_match_simple(want, err->message));
    g_clear_error(&err);

    /* The transport with opts.odp on such a device: XP_ERROR_UNSUPPORTED. */
    XpOptions opts;
    xp_options_init(&opts);
    opts.odp = true;
    g_autoptr(XpDomain) dom = xp_rdma_ops.domain_new(&opts, &err);
    XpRegion *r = NULL;
    g_assert_false(xp_rdma_ops.region_register(dom, buf, len, XP_REGION_REMOTE_WRITE, &r, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_UNSUPPORTED);
}

/* ---------- CM: connect, accept, reject with private data ---------- */

typedef struct {
    const char *host, *port;
    const uint8_t *pdata;
    size_t len;
    VbCmId *id;
    VbCmEvent rej;
    GError *err;
} CmConnectJob;

static gpointer cm_connect_thread(gpointer data)
{
    CmConnectJob *j = data;
    j->id = vb_cm_id_new(&j->err);
    if (!j->id || !vb_cm_resolve(j->id, j->host, j->port, T_TIMEOUT_MS, -1, &j->err)) {
        return NULL;
    }
    /* No QP: the CM handshake alone (CONNECT_RESPONSE is then the "established" step). */
    if (!vb_cm_connect(j->id, j->pdata, j->len, 0, T_TIMEOUT_MS, -1, &j->rej, &j->err)) {
        return NULL;
    }
    return NULL;
}

static void test_cm_reject_private_data(void)
{
    if (!need_addr()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(VbCmId) l = vb_cm_id_new(&err);
    g_assert_true(vb_cm_listen(l, test_addr(), "0", 4, &err));
    g_assert_no_error(err);
    g_autofree char *port = g_strdup_printf("%u", vb_cm_local_port(l));

    uint8_t pdata[VB_CM_CONNECT_PRIVATE_MAX];
    for (size_t i = 0; i < sizeof(pdata); i++) {
        pdata[i] = (uint8_t)(i * 37 + 1);
    }
    CmConnectJob j = { .host = test_addr(), .port = port, .pdata = pdata, .len = sizeof(pdata) };
    GThread *t = g_thread_new("cm-connect", cm_connect_thread, &j);
    VbCmEvent ev;
    g_assert_true(vb_cm_expect(l, VB_CM_CONNECT_REQUEST, T_TIMEOUT_MS, -1, &ev, "accept on",
                               &err));
    g_assert_no_error(err);
    g_assert_nonnull(ev.new_id);
    g_assert_cmpuint(ev.private_len, >=, sizeof(pdata));
    g_assert_cmpmem(ev.private_data, sizeof(pdata), pdata, sizeof(pdata));
    const char why[] = "wrong session";
    g_assert_true(vb_cm_reject(ev.new_id, why, sizeof(why), &err));
    g_thread_join(t);
    g_assert_error(j.err, VB_ERROR, VB_ERROR_REJECTED);
    g_autofree char *want = g_strdup_printf("connect to %s:%s: REJECTED by the peer",
                                            test_addr(), port);
    g_assert_cmpstr(j.err->message, ==, want);
    g_assert_cmpint(j.rej.step, ==, VB_CM_REJECTED);
    g_assert_cmpuint(j.rej.private_len, >=, sizeof(why));
    g_assert_cmpmem(j.rej.private_data, sizeof(why), why, sizeof(why));
    g_clear_error(&j.err);
    vb_cm_id_free(j.id);
    vb_cm_id_free(ev.new_id);
}

static XpDomain *domain_new(void);

static void collect_message(const gchar *domain, GLogLevelFlags level, const gchar *msg,
                            gpointer lines)
{
    g_ptr_array_add(lines, g_strdup(msg));
}

/* The transport's own refusal (a hello it cannot parse) reaches the connector with its
 * reason, like the engine's refusals, instead of an empty reject. Anyone can send those, so
 * the listener logs them as rate-limited messages (xp_log_limited), not as warnings. */
static void test_xp_bad_hello_reason(void)
{
    if (!need_addr()) {
        return;
    }
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    guint hid = g_log_set_handler("mfrdma-rdma", G_LOG_LEVEL_MESSAGE, collect_message, lines);
    g_autoptr(GError) err = NULL;
    g_autoptr(XpDomain) dom = domain_new();
    g_autoptr(XpListener) l = xp_rdma_ops.listen(dom, test_addr(), "0", &err);
    g_assert_no_error(err);
    g_autofree char *host = NULL, *port = NULL;
    g_assert_true(xp_uri_parse(xp_rdma_ops.listener_uri(l), &host, &port, &err));
    /* mark 1 (length in the last byte) with a length of 255: malformed */
    uint8_t pdata[XP_HELLO_MAX];
    memset(pdata, 0xff, sizeof(pdata));
    CmConnectJob j = { .host = host, .port = port, .pdata = pdata, .len = sizeof(pdata) };
    GThread *t = g_thread_new("cm-connect", cm_connect_thread, &j);
    uint8_t hello[XP_HELLO_MAX];
    size_t hlen = sizeof(hello);
    g_assert_null(xp_rdma_ops.accept(l, 3000, hello, &hlen, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_TIMEOUT); /* refused, and went on listening */
    g_thread_join(t);
    g_assert_error(j.err, VB_ERROR, VB_ERROR_REJECTED);
    g_assert_cmpuint(j.rej.private_len, >=, 4);
    const uint8_t status_le1[4] = { 1, 0, 0, 0 };
    g_assert_cmpmem(j.rej.private_data, 4, status_le1, 4);
    g_autofree char *reason = g_strndup((const char *)j.rej.private_data + 4,
                                        j.rej.private_len - 4);
    g_assert_true(g_str_has_prefix(reason, "malformed hello ("));
    g_assert_nonnull(strstr(reason, " bytes of private data, mark 1)"));
    g_log_remove_handler("mfrdma-rdma", hid);
    g_assert_cmpuint(lines->len, ==, 1);
    g_assert_true(g_pattern_match_simple("*: refusing *: malformed hello (*, mark 1)",
                                         g_ptr_array_index(lines, 0)));
    expect_warnings(NULL);
    g_clear_error(&j.err);
    vb_cm_id_free(j.id);
}

/* A raw peer (verbs alone, with the transport's hello framing) that sends a SEND whose
 * immediate data sets a reserved bit: the channel fails with -EPROTO and says why. */
typedef struct {
    const char *host, *port;
    VbCmId *id;
    VbDevice *dev;
    VbPd *pd;
    VbCq *cq;
    VbQp *qp;
    GError *err;
} RawPeer;

static gpointer raw_peer_connect(gpointer data)
{
    RawPeer *r = data;
    const VbQpCaps want = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1,
                            .max_recv_sge = 1 };
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE];
    uint8_t mark;
    xp_rdma_wire_pack_hello("raw", 4, pdata, &mark);
    if ((r->id = vb_cm_id_new(&r->err)) &&
        vb_cm_resolve(r->id, r->host, r->port, T_TIMEOUT_MS, -1, &r->err) &&
        (r->dev = vb_device_from_cm_id(r->id, &r->err)) &&
        (r->pd = vb_pd_new(r->dev, &r->err)) &&
        (r->cq = vb_cq_new(r->dev, 16, &r->err)) &&
        (r->qp = vb_qp_new(r->id, r->pd, r->cq, &want, &r->err))) {
        vb_cm_connect(r->id, pdata, sizeof(pdata), mark, T_TIMEOUT_MS, -1, NULL, &r->err);
    }
    return NULL;
}

static void test_xp_bad_imm_reserved(void)
{
    if (!need_addr()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    g_autoptr(XpDomain) dom = domain_new();
    g_autoptr(XpListener) l = xp_listen(dom, test_addr(), "0", &err);
    g_assert_no_error(err);
    g_autofree char *host = NULL, *port = NULL;
    g_assert_true(xp_uri_parse(xp_listener_uri(l), &host, &port, &err));
    RawPeer r = { .host = host, .port = port };
    GThread *t = g_thread_new("raw-peer", raw_peer_connect, &r);
    uint8_t hello[XP_HELLO_MAX];
    size_t hlen = 0;
    g_autoptr(XpChannel) ch = xp_accept(l, T_TIMEOUT_MS, hello, &hlen, &err);
    g_assert_no_error(err);
    g_assert_cmpmem(hello, hlen, "raw", 4);
    g_assert_true(xp_answer(ch, 0, NULL, &err));
    g_thread_join(t);
    g_assert_no_error(r.err);

    /* credits 1, plus bit 16 (reserved): never sent by a v1 peer */
    g_assert_cmpint(vb_qp_post_send(r.qp, NULL, 0, true, 0x00010001u, NULL), ==, 0);
    uint8_t buf[64];
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(ch, buf, sizeof(buf), &len, T_TIMEOUT_MS), ==, -EPROTO);
    g_assert_cmpstr(xp_channel_error_detail(ch), ==,
                    "credit check failed: immediate data 0x00010001 has reserved bits set");
    const char *const want[] = { "rdma channel *: credit check failed: immediate data "
                                 "0x00010001 has reserved bits set", NULL };
    expect_warnings(want);
    g_clear_pointer(&ch, xp_channel_close);
    vb_cm_disconnect(r.id);
    vb_cm_id_free(r.id); /* destroys the QP too */
    vb_cq_free(r.cq);
    vb_pd_free(r.pd);
    vb_device_free(r.dev);
}

static void test_cm_bad_unreachable(void)
{
    if (!need_addr()) {
        return;
    }
    /* Resolving a name that does not exist fails before any CM traffic. */
    g_autoptr(GError) err = NULL;
    g_autoptr(VbCmId) id = vb_cm_id_new(&err);
    g_assert_false(vb_cm_resolve(id, "no-such-host.invalid", "4444", 1000, -1, &err));
    g_assert_error(err, VB_ERROR, VB_ERROR_UNREACHABLE);
    g_assert_true(g_str_has_prefix(err->message, "cannot resolve no-such-host.invalid:4444: "));
}

/* ---------- transport: a connected pair ---------- */

typedef struct {
    XpDomain *sdom, *ddom;
    XpListener *l;
    XpChannel *src, *dst;
} Pair;

typedef struct {
    XpDomain *dom;
    char *host, *port;
    XpOptions opts;
    XpChannel *ch;
    GError *err;
} ConnectJob;

static gpointer connect_thread(gpointer data)
{
    ConnectJob *j = data;
    const char hello[] = "hello";
    j->ch = xp_rdma_ops.connect(j->dom, j->host, j->port, hello, sizeof(hello), &j->opts,
                                &j->err);
    return NULL;
}

static XpDomain *domain_new(void)
{
    XpOptions opts;
    xp_options_init(&opts);
    opts.timeout_ms = T_TIMEOUT_MS;
    g_autoptr(GError) err = NULL;
    XpDomain *d = xp_rdma_ops.domain_new(&opts, &err);
    g_assert_no_error(err);
    return d;
}

static void pair_open_on(Pair *p, const char *host)
{
    memset(p, 0, sizeof(*p));
    p->sdom = domain_new();
    p->ddom = domain_new();
    g_autoptr(GError) err = NULL;
    p->l = xp_rdma_ops.listen(p->ddom, host, "0", &err);
    g_assert_no_error(err);
    ConnectJob j = { .dom = p->sdom };
    g_assert_true(xp_uri_parse(xp_rdma_ops.listener_uri(p->l), &j.host, &j.port, &err) ==
                  &xp_rdma_ops);
    xp_options_init(&j.opts);
    j.opts.timeout_ms = T_TIMEOUT_MS;
    GThread *t = g_thread_new("connect", connect_thread, &j);
    uint8_t hello[XP_HELLO_MAX];
    size_t hlen = 0;
    p->dst = xp_rdma_ops.accept(p->l, T_TIMEOUT_MS, hello, &hlen, &err);
    g_assert_no_error(err);
    g_assert_cmpmem(hello, hlen, "hello", 6);
    g_assert_true(xp_rdma_ops.answer(p->dst, 0, NULL, &err));
    g_assert_no_error(err);
    g_thread_join(t);
    g_assert_no_error(j.err);
    p->src = j.ch;
    g_free(j.host);
    g_free(j.port);
}

static void pair_close(Pair *p)
{
    xp_channel_close(p->src);
    xp_channel_close(p->dst);
    xp_listener_close(p->l);
    xp_domain_free(p->sdom);
    xp_domain_free(p->ddom);
    expect_warnings(NULL); /* teardown is silent: nothing leaked, nothing failed */
}

static void test_ipv6_roundtrip(void)
{
    if (!need_addr()) {
        return;
    }
    const char *a6 = g_getenv("MFR_TEST_RDMA_ADDR6");
    if (!a6 || !*a6) {
        g_test_skip("MFR_TEST_RDMA_ADDR6 is not set");
        return;
    }
    Pair p;
    pair_open_on(&p, a6);
    g_assert_true(g_str_has_prefix(xp_rdma_ops.listener_uri(p.l), "rdma:["));
    g_assert_true(g_str_has_prefix(xp_channel_peer(p.src), "rdma:["));
    const char m[] = "over IPv6";
    g_assert_cmpint(xp_send_msg(p.src, m, sizeof(m), NULL, 0), ==, 0);
    char buf[64];
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, T_TIMEOUT_MS), ==, 0);
    g_assert_cmpmem(buf, len, m, sizeof(m));
    pair_close(&p);
}

typedef struct {
    uint8_t *buf;
    size_t len;
    XpRegion *reg;
} Mem;

static void mem_init(Mem *m, XpDomain *dom, size_t len, uint32_t access)
{
    g_autoptr(GError) err = NULL;
    m->len = len;
    m->buf = g_aligned_alloc0(1, len, 4096);
    g_assert_true(xp_rdma_ops.region_register(dom, m->buf, len, access, &m->reg, &err));
    g_assert_no_error(err);
}

static void mem_clear(Mem *m)
{
    xp_rdma_ops.region_deregister(m->reg);
    g_aligned_free(m->buf);
}

static XpRemote *import(XpDomain *dom, Mem *m, uint64_t len)
{
    uint8_t desc[XP_REGION_DESC_SIZE];
    xp_rdma_ops.region_export(m->reg, desc);
    g_assert_cmpmem(desc + 12, 4, "\0\0\0\0", 4);
    XpRemote *r = NULL;
    g_autoptr(GError) err = NULL;
    g_assert_true(xp_rdma_ops.remote_import(dom, desc, len, &r, &err));
    g_assert_no_error(err);
    return r;
}

/* Round k rewrites the whole destination with pattern k in 4 KiB pieces (grouped into
 * multi-SGE WRITEs), then SENDs; when the message arrives, every byte must already be k's. */
static void test_write_send_ordering(void)
{
    if (!need_addr()) {
        return;
    }
    Pair p;
    pair_open_on(&p, test_addr());
    const size_t len = 2u << 20, piece = 4096, rounds = 6;
    Mem src, dst;
    mem_init(&src, p.sdom, len * rounds, XP_REGION_LOCAL);
    mem_init(&dst, p.ddom, len, XP_REGION_REMOTE_WRITE);
    XpRemote *remote = import(p.sdom, &dst, len);
    for (size_t i = 0; i < src.len; i++) {
        src.buf[i] = (uint8_t)(i / len + 1 + i * 131);
    }
    unsigned nseg = len / piece;
    g_autofree XpSeg *segs = g_new0(XpSeg, nseg);
    for (size_t k = 0; k < rounds; k++) {
        for (unsigned s = 0; s < nseg; s++) {
            segs[s] = (XpSeg){ .addr = src.buf + k * len + (size_t)s * piece, .len = piece,
                               .region = src.reg, .remote = remote,
                               .remote_offset = (uint64_t)s * piece };
        }
        uint64_t hdr = k;
        g_assert_cmpint(xp_send_msg(p.src, &hdr, sizeof(hdr), segs, nseg), ==, 0);
        uint64_t got = UINT64_MAX;
        size_t glen = 0;
        g_assert_cmpint(xp_recv_msg(p.dst, &got, sizeof(got), &glen, T_TIMEOUT_MS), ==, 0);
        g_assert_cmpuint(got, ==, k);
        g_assert_true(memcmp(dst.buf, src.buf + k * len, len) == 0);
    }
    XpCounters c;
    xp_rdma_ops.counters(p.src, &c);
    g_assert_cmpuint(c.msgs_sent, ==, rounds);
    g_assert_cmpuint(c.bytes_sent, ==, rounds * (len + 8));
    /* Contiguous destination: pieces grouped up to max_sge per WRITE, so far fewer WRs. */
    g_assert_cmpuint(c.wrs_posted, <, rounds * (nseg / 2 + 1));
    g_assert_cmpuint(c.wrs_posted, >=, rounds * 2);
    g_assert_cmpuint(c.doorbells, <, c.wrs_posted);
    g_assert_cmpuint(c.completions, <, c.wrs_posted);

    /* Bounds: one byte past the imported length is refused before anything is posted. */
    XpSeg bad = { .addr = src.buf, .len = 2, .region = src.reg, .remote = remote,
                  .remote_offset = len - 1 };
    g_assert_cmpint(xp_send_msg(p.src, "x", 1, &bad, 1), ==, -ERANGE);
    XpCounters c2;
    xp_rdma_ops.counters(p.src, &c2);
    g_assert_cmpuint(c2.wrs_posted, ==, c.wrs_posted);

    xp_rdma_ops.remote_free(remote);
    mem_clear(&src); /* regions before their domains */
    mem_clear(&dst);
    pair_close(&p);
}

/* A WRITE with a wrong rkey: a real error completion, reported with its status string and
 * failing the channel with -EIO; the peer then sees the connection end. */
static void test_error_completion(void)
{
    if (!need_addr()) {
        return;
    }
    Pair p;
    pair_open_on(&p, test_addr());
    Mem src, dst;
    mem_init(&src, p.sdom, 65536, XP_REGION_LOCAL);
    mem_init(&dst, p.ddom, 65536, XP_REGION_REMOTE_WRITE);
    uint8_t desc[XP_REGION_DESC_SIZE];
    xp_rdma_ops.region_export(dst.reg, desc);
    desc[8] ^= 0x5a; /* corrupt the rkey */
    XpRemote *remote = NULL;
    g_autoptr(GError) err = NULL;
    g_assert_true(xp_rdma_ops.remote_import(p.sdom, desc, dst.len, &remote, &err));
    XpSeg seg = { .addr = src.buf, .len = 4096, .region = src.reg, .remote = remote };
    g_assert_cmpint(xp_send_msg(p.src, "m", 1, &seg, 1), ==, 0);
    /* The failure surfaces on the next call, as the first error, and stays. */
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) {
        uint8_t b[8];
        size_t l;
        rc = xp_recv_msg(p.src, b, sizeof(b), &l, 100);
        if (rc == -ETIMEDOUT) {
            rc = 0;
        }
    }
    g_assert_cmpint(rc, ==, -EIO);
    g_assert_cmpint(xp_send_msg(p.src, "n", 1, NULL, 0), ==, -EIO);
    g_autofree char *w = g_strdup_printf("rdma channel %s: RDMA WRITE failed: remote access error "
                                         "(status 10, *", xp_channel_peer(p.src));
    const char *want[] = { w, NULL };
    expect_warnings(want);
    /* The message after the bad WRITE never arrives. */
    uint8_t b[8];
    size_t l;
    rc = xp_recv_msg(p.dst, b, sizeof(b), &l, 1000);
    g_assert_true(rc == -ETIMEDOUT || rc == -EPIPE || rc == -EIO);
    xp_rdma_ops.remote_free(remote);
    mem_clear(&src);
    mem_clear(&dst);
    pair_close(&p);
    expect_warnings(NULL);
}

static void test_inject_fault(void)
{
    if (!need_addr()) {
        return;
    }
    Pair p;
    pair_open_on(&p, test_addr());
    xp_rdma_ops.inject_fault(p.src, ECONNRESET);
    g_assert_cmpint(xp_send_msg(p.src, "a", 1, NULL, 0), ==, -ECONNRESET);
    g_assert_cmpint(xp_send_msg(p.src, "b", 1, NULL, 0), ==, 0);
    char buf[8];
    size_t len = 0;
    g_assert_cmpint(xp_recv_msg(p.dst, buf, sizeof(buf), &len, T_TIMEOUT_MS), ==, 0);
    g_assert_cmpmem(buf, len, "b", 1);
    pair_close(&p);
}

/* Credits: many more messages than the receive ring, each way at once, none lost or
 * reordered, and no RNR (the QPs have rnr_retry 0, so an RNR would fail the channel). */
typedef struct {
    XpChannel *ch;
    unsigned n;
    int rc;
} PingJob;

static gpointer ping_send_thread(gpointer data)
{
    PingJob *j = data;
    for (unsigned i = 0; i < j->n && j->rc == 0; i++) {
        uint32_t v = i;
        j->rc = xp_send_msg(j->ch, &v, sizeof(v), NULL, 0);
    }
    return NULL;
}

static void test_credits_both_ways(void)
{
    if (!need_addr()) {
        return;
    }
    Pair p;
    pair_open_on(&p, test_addr());
    const unsigned n = 2000;
    PingJob a = { p.src, n, 0 }, b = { p.dst, n, 0 };
    GThread *ta = g_thread_new("a", ping_send_thread, &a);
    GThread *tb = g_thread_new("b", ping_send_thread, &b);
    XpChannel *rx[2] = { p.dst, p.src };
    unsigned next[2] = { 0, 0 };
    while (next[0] < n || next[1] < n) {
        for (int s = 0; s < 2; s++) {
            if (next[s] == n) {
                continue;
            }
            uint32_t v;
            size_t len;
            int rc = xp_recv_msg(rx[s], &v, sizeof(v), &len, 10);
            if (rc == -ETIMEDOUT) {
                continue;
            }
            g_assert_cmpint(rc, ==, 0);
            g_assert_cmpuint(v, ==, next[s]);
            next[s]++;
        }
    }
    g_thread_join(ta);
    g_thread_join(tb);
    g_assert_cmpint(a.rc, ==, 0);
    g_assert_cmpint(b.rc, ==, 0);
    pair_close(&p);
    expect_warnings(NULL);
}

/* Throughput of placed payload (1 MiB messages of 16 WRITE segments); a figure for the
 * log, and a checksum so it cannot pass without moving the bytes. */
static void test_throughput(void)
{
    if (!need_addr()) {
        return;
    }
    Pair p;
    pair_open_on(&p, test_addr());
    const size_t total = 64u << 20, msg = 1u << 20, seg = msg / 16;
    Mem src, dst;
    mem_init(&src, p.sdom, total, XP_REGION_LOCAL);
    mem_init(&dst, p.ddom, total, XP_REGION_REMOTE_WRITE);
    XpRemote *remote = import(p.sdom, &dst, total);
    for (size_t i = 0; i < total; i += 8) {
        uint64_t v = i * 0x9e3779b97f4a7c15ull;
        memcpy(src.buf + i, &v, 8);
    }
    g_autofree char *want = g_compute_checksum_for_data(G_CHECKSUM_SHA256, src.buf, total);
    gint64 t0 = g_get_monotonic_time();
    for (size_t off = 0; off < total; off += msg) {
        XpSeg segs[16];
        for (unsigned k = 0; k < 16; k++) {
            segs[k] = (XpSeg){ .addr = src.buf + off + k * seg, .len = seg, .region = src.reg,
                               .remote = remote, .remote_offset = off + k * seg };
        }
        uint64_t hdr = off;
        g_assert_cmpint(xp_send_msg(p.src, &hdr, sizeof(hdr), segs, 16), ==, 0);
        /* Receive as we go: the receiver's ring is far smaller than 64 messages. */
        uint64_t got;
        size_t len;
        g_assert_cmpint(xp_recv_msg(p.dst, &got, sizeof(got), &len, T_TIMEOUT_MS), ==, 0);
        g_assert_cmpuint(got, ==, off);
    }
    double s = (g_get_monotonic_time() - t0) / 1e6;
    g_autofree char *have = g_compute_checksum_for_data(G_CHECKSUM_SHA256, dst.buf, total);
    g_assert_cmpstr(have, ==, want);
    XpCounters c;
    xp_rdma_ops.counters(p.src, &c);
    g_test_message("rdma placed payload: %zu MiB in %.2f s = %.1f MB/s; wrs %" G_GUINT64_FORMAT
                   ", doorbells %" G_GUINT64_FORMAT ", completions %" G_GUINT64_FORMAT
                   ", polls %" G_GUINT64_FORMAT " (idle %" G_GUINT64_FORMAT ")",
                   total >> 20, s, total / s / 1e6, c.wrs_posted, c.doorbells, c.completions,
                   c.polls, c.idle_polls);
    xp_rdma_ops.remote_free(remote);
    mem_clear(&src);
    mem_clear(&dst);
    pair_close(&p);
}

/* ---------- overrides that contradict the address ---------- */

static void connect_with(XpOptions *o, GError **err)
{
    g_autoptr(XpDomain) sdom = domain_new();
    g_autoptr(XpDomain) ddom = domain_new();
    g_autoptr(XpListener) l = xp_rdma_ops.listen(ddom, test_addr(), "0", err);
    g_assert_no_error(*err);
    ConnectJob j = { .dom = sdom, .opts = *o };
    g_assert_true(xp_uri_parse(xp_rdma_ops.listener_uri(l), &j.host, &j.port, err));
    connect_thread(&j);
    g_assert_null(j.ch);
    *err = j.err;
    g_free(j.host);
    g_free(j.port);
}

static void test_connect_bad_overrides(void)
{
    if (!need_addr()) {
        return;
    }
    g_autofree char *dev = vb_devinfo_first_active();
    XpOptions o;
    xp_options_init(&o);
    o.timeout_ms = T_TIMEOUT_MS;
    o.rdma_port = 2;
    GError *err = NULL;
    connect_with(&o, &err);
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_autofree char *want = g_strdup_printf("rdma_port=2 was requested, but %s:* is "
                                            "reached through port 1", test_addr());
    g_assert_true(g_pattern_match_simple(want, err->message));
    g_clear_error(&err);

    /* gid_index 0 is the link-local GID, not the one the address maps to. */
    xp_options_init(&o);
    o.timeout_ms = T_TIMEOUT_MS;
    o.gid_index = 0;
    connect_with(&o, &err);
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_autofree char *want2 = g_strdup_printf("gid_index 0 is GID fe80::*, but the address * "
                                             "resolves to source GID ::ffff:%s: *",
                                             test_addr());
    g_assert_true(g_pattern_match_simple(want2, err->message));
    g_clear_error(&err);

    /* A device name that is not the one the address resolves to. */
    XpOptions d;
    xp_options_init(&d);
    d.timeout_ms = T_TIMEOUT_MS;
    d.rdma_dev = "mlx5_9";
    g_autoptr(GError) e2 = NULL;
    g_autoptr(XpDomain) sdom = xp_rdma_ops.domain_new(&d, &e2);
    g_autoptr(XpDomain) ddom = domain_new();
    g_autoptr(XpListener) l = xp_rdma_ops.listen(ddom, test_addr(), "0", &e2);
    g_autofree char *host = NULL, *port = NULL;
    g_assert_true(xp_uri_parse(xp_rdma_ops.listener_uri(l), &host, &port, &e2));
    XpChannel *ch = xp_rdma_ops.connect(sdom, host, port, "x", 1, &d, &e2);
    g_assert_null(ch);
    /* on connect, rdma_dev chooses the source address: a device that is not there fails */
    g_assert_error(e2, XP_ERROR, XP_ERROR_NO_DEVICE);
    g_assert_cmpstr(e2->message, ==, "rdma: no RDMA device named mlx5_9");

    /* rdma_dev + gid_index 0 (link-local) as the source of an IPv4 connection: refused with
     * the GID named, before any CM exchange */
    g_clear_error(&e2);
    XpOptions ll = d;
    ll.rdma_dev = dev;
    ll.gid_index = 0;
    g_assert_null(xp_rdma_ops.connect(sdom, host, port, "x", 1, &ll, &e2));
    g_autofree char *want3 = g_strdup_printf("rdma: %s port 1 GID 0 (fe80:*) is no IPv4 address "
                                             "the destination can be reached from", dev);
    g_assert_true(g_pattern_match_simple(want3, e2->message));

    /* The listener checks it too, when its address names a device. */
    g_clear_error(&e2);
    g_autoptr(XpDomain) ldom = xp_rdma_ops.domain_new(&d, &e2);
    g_assert_null(xp_rdma_ops.listen(ldom, test_addr(), "0", &e2));
    g_assert_error(e2, XP_ERROR, XP_ERROR_NO_DEVICE);
    g_autofree char *want4 = g_strdup_printf("rdma_dev=mlx5_9 was requested, but rdma:%s:* is "
                                             "an address of device %s", test_addr(), dev);
    g_assert_true(g_pattern_match_simple(want4, e2->message));
}

/* RC retry count and ACK timeout are the caller's; RNR retry stays 0 (credits, never RNR). */
static void test_rc_params(void)
{
    if (!need_addr()) {
        return;
    }
    g_autoptr(GError) err = NULL;
    for (int k = 0; k < 2; k++) {
        XpOptions o;
        xp_options_init(&o);
        o.timeout_ms = T_TIMEOUT_MS;
        if (k == 1) {
            o.rc_retry = 3;
            o.rc_timeout = 16;
        }
        g_autoptr(XpDomain) sdom = xp_rdma_ops.domain_new(&o, &err);
        g_autoptr(XpDomain) ddom = domain_new();
        g_autoptr(XpListener) l = xp_rdma_ops.listen(ddom, test_addr(), "0", &err);
        g_assert_no_error(err);
        ConnectJob j = { .dom = sdom, .opts = o };
        g_assert_true(xp_uri_parse(xp_rdma_ops.listener_uri(l), &j.host, &j.port, &err));
        GThread *t = g_thread_new("connect", connect_thread, &j);
        uint8_t hello[XP_HELLO_MAX];
        size_t hlen = sizeof(hello);
        g_autoptr(XpChannel) acc = xp_rdma_ops.accept(l, T_TIMEOUT_MS, hello, &hlen, &err);
        g_assert_no_error(err);
        g_assert_true(xp_rdma_ops.answer(acc, 0, NULL, &err));
        g_thread_join(t);
        g_assert_no_error(j.err);
        g_assert_nonnull(j.ch);
        unsigned retry, rnr, timeout;
        g_assert_true(xp_rdma_channel_rc(j.ch, &retry, &rnr, &timeout, &err));
        g_assert_no_error(err);
        g_test_message("connector QP: retry %u, rnr_retry %u, ACK timeout %u", retry, rnr,
                       timeout);
        g_assert_cmpuint(retry, ==, k == 1 ? 3 : 7);
        g_assert_cmpuint(rnr, ==, 0);
        if (k == 1) {
            g_assert_cmpuint(timeout, ==, 16);
        }
        xp_channel_close(j.ch);
        g_free(j.host);
        g_free(j.port);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    warnings = g_ptr_array_new_with_free_func(g_free);
    /* Warnings are asserted per test (expect_warnings), not fatal. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
    g_log_set_writer_func(capture_writer, NULL, NULL);

    g_test_add_func("/rdma/verbs/device_open", test_device_open);
    g_test_add_func("/rdma/verbs/device_bad_name", test_device_bad_name);
    g_test_add_func("/rdma/verbs/cq_idle_wait", test_cq_idle_wait);
    g_test_add_func("/rdma/verbs/devinfo", test_devinfo);
    g_test_add_func("/rdma/verbs/mr_bad_memlock", test_mr_bad_memlock);
    g_test_add_func("/rdma/verbs/mr_odp", test_mr_odp);
    g_test_add_func("/rdma/verbs/cm_reject_private_data", test_cm_reject_private_data);
    g_test_add_func("/rdma/verbs/cm_bad_unreachable", test_cm_bad_unreachable);
    g_test_add_func("/rdma/xp/ipv6_roundtrip", test_ipv6_roundtrip);
    g_test_add_func("/rdma/xp/write_send_ordering", test_write_send_ordering);
    g_test_add_func("/rdma/xp/error_completion", test_error_completion);
    g_test_add_func("/rdma/xp/inject_fault", test_inject_fault);
    g_test_add_func("/rdma/xp/credits_both_ways", test_credits_both_ways);
    g_test_add_func("/rdma/xp/throughput", test_throughput);
    g_test_add_func("/rdma/xp/connect_bad_overrides", test_connect_bad_overrides);
    g_test_add_func("/rdma/xp/rc_params", test_rc_params);
    g_test_add_func("/rdma/xp/bad_hello_reason", test_xp_bad_hello_reason);
    g_test_add_func("/rdma/xp/bad_imm_reserved", test_xp_bad_imm_reserved);
    int rc = g_test_run();
    g_ptr_array_unref(warnings);
    return rc;
}
