/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control connection's message handler (control.c, mfr_control_set_handler()) against a
 * fake channel the test feeds message by message: messages queued before the handler was
 * set are handled first, all in arrival order, other types stay queued in their order, and a
 * failing handler fails the session.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>

typedef struct {
    XpChannel base;
    GMutex lock;
    GCond cond;
    uint8_t msg[16][MFR_CTRL_HDR_SIZE + MFR_REGION_SIZE];
    size_t len[16];
    unsigned count;      /* messages written by the test */
    unsigned released;   /* of those, how many the reader may receive */
    unsigned next;       /* next to hand out */
    unsigned entry_next; /* next at the last recv_msg() entry: the reader has dispatched
                          * every message before it (it receives again only after that) */
    bool shut;
} FakeCh;

static int fake_send(XpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                     unsigned nsegs)
{
    return 0; /* keepalives and the like go nowhere */
}

static int fake_recv(XpChannel *xc, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    FakeCh *f = (FakeCh *)xc;
    g_mutex_lock(&f->lock);
    f->entry_next = f->next;
    g_cond_broadcast(&f->cond);
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000LL;
    while (f->next >= f->released && !f->shut) {
        if (!g_cond_wait_until(&f->cond, &f->lock, deadline)) {
            g_mutex_unlock(&f->lock);
            return -ETIMEDOUT;
        }
    }
    if (f->shut) {
        g_mutex_unlock(&f->lock);
        return -EPIPE;
    }
    memcpy(buf, f->msg[f->next], f->len[f->next]);
    *len = f->len[f->next++];
    g_mutex_unlock(&f->lock);
    return 0;
}

static void fake_shutdown(XpChannel *xc)
{
    FakeCh *f = (FakeCh *)xc;
    g_mutex_lock(&f->lock);
    f->shut = true;
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
}

static void fake_close(XpChannel *xc)
{
    fake_shutdown(xc); /* the test owns the memory */
}

static const char *fake_peer(XpChannel *xc)
{
    return "fake:peer";
}

static const XpOps fake_ops = {
    .version = XP_OPS_VERSION,
    .name = "fake",
    .send_msg = fake_send,
    .recv_msg = fake_recv,
    .shutdown = fake_shutdown,
    .close = fake_close,
    .peer = fake_peer,
};

/* Adds a REGION (its body's first 8 bytes hold tag) or a SYNC_ACK (round tag). */
static void fake_add(FakeCh *f, MfrCtrlType type, uint64_t tag, bool release)
{
    uint32_t body = type == MFR_CTRL_REGION ? MFR_REGION_SIZE : 8;
    g_mutex_lock(&f->lock);
    unsigned i = f->count++;
    MfrCtrlHdr h = { .magic = MFR_CTRL_MAGIC, .version = MFR_WIRE_VERSION, .type = type,
                     .length = body, .seq = i + 1 };
    mfr_wire_pack_ctrl_hdr(&h, f->msg[i]);
    memset(f->msg[i] + MFR_CTRL_HDR_SIZE, 0, body);
    mfr_wire_pack_u64(tag, f->msg[i] + MFR_CTRL_HDR_SIZE);
    f->len[i] = MFR_CTRL_HDR_SIZE + body;
    if (release) {
        f->released = f->count;
        g_cond_broadcast(&f->cond);
    }
    g_mutex_unlock(&f->lock);
}

/* Releases every message and waits until the reader took them all off the channel. */
static void fake_deliver(FakeCh *f)
{
    g_mutex_lock(&f->lock);
    f->released = f->count;
    g_cond_broadcast(&f->cond);
    while (f->entry_next < f->count) {
        g_cond_wait(&f->cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
}

typedef struct {
    GMutex lock;
    GCond cond;
    uint64_t tags[16];
    unsigned n;
    uint64_t fail_tag;   /* the handler fails on this tag; 0: never */
} Sink;

static bool sink_handle(void *opaque, const MfrCtrlMsg *m, GError **error)
{
    Sink *k = opaque;
    uint64_t tag;
    g_assert_cmpuint(m->hdr.type, ==, MFR_CTRL_REGION);
    g_assert_true(mfr_wire_unpack_u64(m->body, 8, &tag, NULL));
    if (tag == k->fail_tag) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL, "handler refused tag %u",
                    (unsigned)tag);
        return false;
    }
    g_mutex_lock(&k->lock);
    k->tags[k->n++] = tag;
    g_cond_broadcast(&k->cond);
    g_mutex_unlock(&k->lock);
    return true;
}

static void sink_wait(Sink *k, unsigned n)
{
    g_mutex_lock(&k->lock);
    while (k->n < n) {
        g_cond_wait(&k->cond, &k->lock);
    }
    g_mutex_unlock(&k->lock);
}

static void no_on_fail(void *opaque, const GError *err, bool quiet)
{
}

/* A control connection on a fake channel, and a sink for its handler. */
typedef struct {
    FakeCh f;
    MfrFail fail;
    MfrControl *c;
    Sink k;
} Fixture;

static void fixture_init(Fixture *x, uint64_t fail_tag)
{
    memset(x, 0, sizeof(*x));
    x->f.base.ops = &fake_ops;
    g_mutex_init(&x->f.lock);
    g_cond_init(&x->f.cond);
    g_mutex_init(&x->k.lock);
    g_cond_init(&x->k.cond);
    x->k.fail_tag = fail_tag;
    mfr_fail_init(&x->fail, no_on_fail, NULL);
    x->c = mfr_control_new(&x->f.base, 60000, &x->fail, MFR_SIDE_SOURCE, NULL);
    g_assert_nonnull(x->c);
}

static void fixture_clear(Fixture *x)
{
    mfr_control_free(x->c);
    mfr_fail_clear(&x->fail);
    g_mutex_clear(&x->f.lock);
    g_cond_clear(&x->f.cond);
    g_mutex_clear(&x->k.lock);
    g_cond_clear(&x->k.cond);
}

static void test_handler_order(void)
{
    Fixture x;
    fixture_init(&x, 0);
    FakeCh *f = &x.f;
    Sink *k = &x.k;
    /* queued before the handler exists: REGION 1, 2, SYNC_ACK 100, REGION 3 */
    fake_add(f, MFR_CTRL_REGION, 1, false);
    fake_add(f, MFR_CTRL_REGION, 2, false);
    fake_add(f, MFR_CTRL_SYNC_ACK, 100, false);
    fake_add(f, MFR_CTRL_REGION, 3, false);
    fake_deliver(f);
    g_autoptr(GError) err = NULL;
    g_assert_true(mfr_control_set_handler(x.c, MFR_CTRL_REGION, sink_handle, k, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(k->n, ==, 3); /* handled in the caller, before it returned */
    /* later ones on the reader thread, after the queued ones */
    fake_add(f, MFR_CTRL_REGION, 4, false);
    fake_add(f, MFR_CTRL_SYNC_ACK, 101, false);
    fake_add(f, MFR_CTRL_REGION, 5, false);
    fake_deliver(f);
    sink_wait(k, 5);
    for (unsigned i = 0; i < 5; i++) {
        g_assert_cmpuint(k->tags[i], ==, i + 1);
    }
    /* the other type stayed queued, in its order */
    for (uint64_t want = 100; want <= 101; want++) {
        g_autofree MfrCtrlMsg *m = mfr_control_recv(x.c, 60000, &err);
        g_assert_no_error(err);
        g_assert_nonnull(m);
        g_assert_cmpuint(m->hdr.type, ==, MFR_CTRL_SYNC_ACK);
        uint64_t tag;
        g_assert_true(mfr_wire_unpack_u64(m->body, m->len, &tag, NULL));
        g_assert_cmpuint(tag, ==, want);
    }
    g_assert_false(mfr_failed(&x.fail));
    fixture_clear(&x);
}

/* A handler that refuses a message fails the session with its error. */
static void test_bad_handler(void)
{
    Fixture x;
    fixture_init(&x, 2);
    g_assert_true(mfr_control_set_handler(x.c, MFR_CTRL_REGION, sink_handle, &x.k, NULL));
    fake_add(&x.f, MFR_CTRL_REGION, 1, false);
    fake_add(&x.f, MFR_CTRL_REGION, 2, true);
    /* the reader stops after the failure: wait for the failure through the queue */
    g_autoptr(GError) err = NULL;
    g_assert_null(mfr_control_recv(x.c, -1, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    g_assert_cmpstr(err->message, ==, "handler refused tag 2");
    g_assert_cmpuint(x.k.n, ==, 1);
    fixture_clear(&x);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/control/handler_order", test_handler_order);
    g_test_add_func("/control/bad_handler", test_bad_handler);
    return g_test_run();
}
