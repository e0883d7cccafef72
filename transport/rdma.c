/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The RDMA backend: one RC QP per channel over librdmacm, payload placed by one-sided RDMA
 * WRITEs into the peer's registered regions, messages as SENDs into a ring of posted RECVs.
 * Flow control is by credits carried in each SEND's immediate data, so correctness never
 * depends on RNR retries (the QPs are created with rnr_retry 0: an RNR is a bug, and fails).
 * Everything verbs-specific goes through verbs/vb.h.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "xp.h"

#include "vb.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* RECV buffers per channel, i.e. messages the peer may have in flight (its credits). */
#define RDMA_RECV_RING 32u
/* Registered send buffers for messages that do not fit inline. */
#define RDMA_SEND_BUFS 16u
/* Default send queue depth; XpOptions.max_send_wr overrides. */
#define RDMA_SQ_DEPTH 256u
/* Requested inline size: covers packet headers (48 bytes plus zero-page offsets). */
#define RDMA_INLINE_WANT 256u
/* Unsignaled WRITEs between two signaled ones (recycles send queue slots). */
#define RDMA_SIGNAL_EVERY 16u
/* WRs built before one post (one doorbell). */
#define RDMA_WR_BATCH 32u
/* Largest SGE / WRITE we build (segments above are split). */
#define RDMA_WR_MAX_BYTES (1u << 30)
/* CQ entries processed per poll call. */
#define RDMA_POLL_BUDGET 32
/* Bounded wait in close() for sends already posted to be acknowledged. */
#define RDMA_CLOSE_DRAIN_MS 2000

/* imm_data of a SEND: credits returned; the flag marks a credit-only (unreported) message. */
#define RDMA_IMM_CREDIT_ONLY 0x80000000u
#define RDMA_IMM_CREDITS_MASK 0x0000ffffu

/* Hello framing in the 56-byte connect private data. The CM reports the full 56 bytes
 * whatever was sent, so the length travels separately: the connector sets initiator_depth
 * and responder_resources both to the framing mark (both, since the CM swaps them). */
#define RDMA_HELLO_MARK_TRAILER 1u /* hello_len < 56, stored in byte 55 */
#define RDMA_HELLO_MARK_FULL 2u    /* all 56 bytes are hello */
#define RDMA_REJECT_HDR 4u          /* reject private data: u32 LE status, then reason */

/* ------------------------------------------------------------------ domain */

typedef struct {
    XpDomain base;
    XpOptions opts;  /* copy; rdma_dev owned */
    GMutex lock;     /* lazy device/PD creation (control path only) */
    VbDevice *dev;   /* NULL until the first cm_id or region */
    VbPd *pd;
} RdmaDomain;

typedef struct {
    RdmaDomain *dom;
    VbMr *mr;
} RdmaRegion;

typedef struct {
    uint64_t addr;
    uint32_t rkey;
    uint64_t len;
} RdmaRemote;

/* ------------------------------------------------------------------ channel */

typedef struct RdmaChannel RdmaChannel;

typedef struct {
    VbCqe cqe;
    RdmaChannel *ch;
    unsigned idx;
} RdmaRecvSlot;

/* A signaled send-queue WR: completing it retires every WR up to seq (completions are in
 * order on a send queue); uses_buf: it was a SEND from the oldest busy send buffer. */
typedef struct {
    VbCqe cqe;
    RdmaChannel *ch;
    uint64_t seq;
    bool uses_buf;
} RdmaSqMark;

/* One connection. Owns its cm_id (and event channel), CQ (and completion channel), QP,
 * buffers and MRs; borrows the domain. All mutable state is under `lock`, which only this
 * channel's callers take: channels never share a lock on the data path. */
struct RdmaChannel {
    XpChannel base;
    RdmaDomain *dom;
    char *peer;
    int timeout_ms;
    VbCmId *id;
    VbCq *cq;
    VbQp *qp;
    int wake_fd;          /* eventfd: written once by shutdown, never drained */
    atomic_bool shut;     /* pairs with the load in rdma_check() of any thread */
    atomic_int inject;    /* pending injected fault (errno) */
    atomic_bool inject_bad_rkey; /* the next message with WRITEs corrupts their rkey */

    GMutex lock;
    GCond cond;           /* signalled when the poller finishes a round */
    bool polling;         /* one thread at a time sleeps on the fds for the others */
    bool established;
    int err;              /* first fatal error (negative errno) */
    char *err_detail;     /* what failed, e.g. a completion status; set once with err */
    bool peer_gone;       /* DISCONNECTED/DEVICE_REMOVAL seen */
    bool flushed;         /* a RECV completed with a flush: nothing more will arrive */

    /* receive side */
    uint8_t *recv_buf;
    VbMr *recv_mr;
    RdmaRecvSlot recv[RDMA_RECV_RING];
    unsigned ready_idx[RDMA_RECV_RING]; /* completed slots in arrival order */
    uint32_t ready_len[RDMA_RECV_RING];
    unsigned ready_head, ready_count;
    unsigned recv_posted;
    unsigned credits_owed; /* RECVs re-posted since we last told the peer */

    /* send side */
    int send_timeout_ms;   /* <0: a send waits for credits as long as the peer gives none */
    gint64 send_deadline;  /* of the send_msg() in progress (monotonic us, -1: none) */
    bool send_timed_out;   /* a send met its deadline: later ones fail at once, as tcp's */
    unsigned credits;      /* peer RECVs we may still consume */
    uint8_t *send_buf;
    VbMr *send_mr;
    unsigned sbuf_head, sbuf_busy; /* ring: next to use, in use (oldest = head - busy) */
    VbQpCaps caps;
    RdmaSqMark *marks;     /* caps.max_send_wr entries, indexed by seq % depth */
    VbCqe unsignaled_cqe;  /* error completions of unsignaled WRITEs */
    uint64_t sq_posted, sq_done;
    unsigned since_signal;
    VbWr wrs[RDMA_WR_BATCH + 1];
    VbSge *sges;           /* RDMA_WR_BATCH * caps.max_send_sge */
    uint32_t max_wr_bytes; /* one WRITE's bytes: RDMA_WR_MAX_BYTES or the port's max_msg_sz */
    unsigned nwr, nsge;

    XpCounters ctr;
};

/* ------------------------------------------------------------------ errors */

static int xp_code_of_vb(const GError *e)
{
    if (e->domain != VB_ERROR) {
        return XP_ERROR_FAILED;
    }
    switch (e->code) {
    case VB_ERROR_NO_DEVICE: return XP_ERROR_NO_DEVICE;
    case VB_ERROR_UNSUPPORTED: return XP_ERROR_UNSUPPORTED;
    case VB_ERROR_MEMLOCK: return XP_ERROR_MEMLOCK;
    case VB_ERROR_UNREACHABLE: return XP_ERROR_CONNECT;
    case VB_ERROR_REJECTED: return XP_ERROR_REJECTED;
    case VB_ERROR_TIMEOUT: return XP_ERROR_TIMEOUT;
    case VB_ERROR_CLOSED: return XP_ERROR_CLOSED;
    default: return XP_ERROR_FAILED;
    }
}

/* Re-home a verbs error into XP_ERROR, keeping its message. */
static void rdma_propagate(GError **error, GError *vb_err, const char *prefix)
{
    if (!vb_err) {
        return;
    }
    g_set_error(error, XP_ERROR, xp_code_of_vb(vb_err), "%s%s", prefix ? prefix : "",
                vb_err->message);
    g_error_free(vb_err);
}

static char *rdma_uri_of(const char *hostport)
{
    return g_strdup_printf("rdma:%s", hostport);
}

/* ------------------------------------------------------------------ domain */

static XpDomain *rdma_domain_new(const XpOptions *opts, GError **error)
{
    RdmaDomain *d = g_new0(RdmaDomain, 1);
    d->base.ops = &xp_rdma_ops;
    d->opts = *opts;
    d->opts.rdma_dev = g_strdup(opts->rdma_dev);
    if (d->opts.timeout_ms <= 0) {
        d->opts.timeout_ms = 5000;
    }
    g_mutex_init(&d->lock);
    return &d->base;
}

static void rdma_domain_free(XpDomain *xd)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (!d) {
        return;
    }
    vb_pd_free(d->pd);
    vb_device_free(d->dev);
    g_free((char *)d->opts.rdma_dev);
    g_mutex_clear(&d->lock);
    g_free(d);
}

/* With d->lock held: open the device (by name, else the first ACTIVE one) and a PD. */
static bool rdma_domain_open_locked(RdmaDomain *d, VbCmId *id, GError **error)
{
    GError *local = NULL;
    g_autoptr(VbDevice) dev = id ? vb_device_from_cm_id(id, &local)
                                 : vb_device_open(d->opts.rdma_dev, &local);
    if (!dev) {
        rdma_propagate(error, local, NULL);
        return false;
    }
    if (d->opts.rdma_dev && strcmp(d->opts.rdma_dev, vb_device_name(dev)) != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                    "rdma_dev=%s was requested, but %s is reached through device %s",
                    d->opts.rdma_dev, id ? vb_cm_peer_str(id) : "the address",
                    vb_device_name(dev));
        return false;
    }
    VbPd *pd = vb_pd_new(dev, &local);
    if (!pd) {
        rdma_propagate(error, local, NULL);
        return false;
    }
    d->dev = g_steal_pointer(&dev);
    d->pd = pd;
    return true;
}

/* A connection's device must be the session's: one PD serves all channels and regions. */
static bool rdma_domain_bind(RdmaDomain *d, VbCmId *id, GError **error)
{
    g_mutex_lock(&d->lock);
    bool ok = true;
    if (!d->dev) {
        ok = rdma_domain_open_locked(d, id, error);
    } else if (!vb_device_is_cm_id_device(d->dev, id)) {
        g_autoptr(VbDevice) other = vb_device_from_cm_id(id, NULL);
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "connection %s uses RDMA device %s, but this session already uses %s; all "
                    "channels of a session must share one device (set rdma_dev or use "
                    "addresses on one device)", vb_cm_peer_str(id),
                    other ? vb_device_name(other) : "(unknown)", vb_device_name(d->dev));
        ok = false;
    }
    g_mutex_unlock(&d->lock);
    return ok;
}

static VbPd *rdma_domain_pd(RdmaDomain *d, GError **error)
{
    g_mutex_lock(&d->lock);
    bool ok = d->pd || rdma_domain_open_locked(d, NULL, error);
    VbPd *pd = d->pd;
    g_mutex_unlock(&d->lock);
    return ok ? pd : NULL;
}

/* Address-chosen port/GID must agree with explicit overrides. */
static bool rdma_check_overrides(const XpOptions *o, VbCmId *id, GError **error)
{
    if (o->rdma_dev) {
        g_autoptr(VbDevice) dev = vb_device_from_cm_id(id, NULL);
        if (dev && strcmp(vb_device_name(dev), o->rdma_dev) != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                        "rdma_dev=%s was requested, but %s is reached through device %s",
                        o->rdma_dev, vb_cm_peer_str(id), vb_device_name(dev));
            return false;
        }
    }
    if (o->rdma_port > 0 && vb_cm_port_num(id) != o->rdma_port) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "rdma_port=%d was requested, but %s is reached through port %u",
                    o->rdma_port, vb_cm_peer_str(id), vb_cm_port_num(id));
        return false;
    }
    if (o->gid_index >= 0) {
        GError *local = NULL;
        if (!vb_cm_check_gid_index(id, o->gid_index, &local)) {
            rdma_propagate(error, local, NULL);
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ regions */

static bool rdma_region_register(XpDomain *xd, void *addr, size_t len, uint32_t access,
                                 XpRegion **out, GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (len == 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot register an empty region at %p",
                    addr);
        return false;
    }
    VbPd *pd = rdma_domain_pd(d, error);
    if (!pd) {
        return false;
    }
    uint32_t va = 0;
    if (access & XP_REGION_REMOTE_WRITE) {
        va |= VB_ACCESS_REMOTE_WRITE | VB_ACCESS_LOCAL_WRITE;
    }
    if (d->opts.odp) {
        va |= VB_ACCESS_ON_DEMAND;
    }
    GError *local = NULL;
    VbMr *mr = vb_mr_reg(pd, addr, len, va, &local);
    if (!mr) {
        rdma_propagate(error, local, NULL);
        return false;
    }
    RdmaRegion *r = g_new0(RdmaRegion, 1);
    r->dom = d;
    r->mr = mr;
    *out = (XpRegion *)r;
    return true;
}

static bool rdma_region_budget(XpDomain *xd, uint64_t bytes, unsigned channels, GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (d->opts.odp) {
        return true; /* on-demand paging pins nothing up front */
    }
    /* every channel (and the control channel) registers its receive ring and send buffers */
    uint64_t per_channel = (uint64_t)(RDMA_RECV_RING + RDMA_SEND_BUFS) * XP_MSG_MAX;
    GError *local = NULL;
    if (!vb_memlock_check(bytes + (uint64_t)(channels + 1) * per_channel, &local)) {
        rdma_propagate(error, local, NULL);
        return false;
    }
    return true;
}

static void rdma_region_deregister(XpRegion *xr)
{
    RdmaRegion *r = (RdmaRegion *)xr;
    if (!r) {
        return;
    }
    vb_mr_free(r->mr);
    g_free(r);
}

static void rdma_region_export(XpRegion *xr, uint8_t desc[XP_REGION_DESC_SIZE])
{
    RdmaRegion *r = (RdmaRegion *)xr;
    uint64_t addr = GUINT64_TO_LE((uint64_t)(uintptr_t)vb_mr_addr(r->mr));
    uint32_t rkey = GUINT32_TO_LE(vb_mr_rkey(r->mr));
    memset(desc, 0, XP_REGION_DESC_SIZE);
    memcpy(desc, &addr, 8);
    memcpy(desc + 8, &rkey, 4);
}

static bool rdma_remote_import(XpDomain *xd, const uint8_t desc[XP_REGION_DESC_SIZE],
                               uint64_t len, XpRemote **out, GError **error)
{
    uint64_t addr;
    uint32_t rkey, reserved;
    memcpy(&addr, desc, 8);
    memcpy(&rkey, desc + 8, 4);
    memcpy(&reserved, desc + 12, 4);
    if (reserved != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "bad rdma region descriptor: reserved field is 0x%08x, must be 0",
                    GUINT32_FROM_LE(reserved));
        return false;
    }
    addr = GUINT64_FROM_LE(addr);
    if (len > UINT64_MAX - addr) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "bad rdma region descriptor: addr 0x%" G_GINT64_MODIFIER "x + length %"
                    G_GUINT64_FORMAT " wraps", addr, len);
        return false;
    }
    RdmaRemote *r = g_new0(RdmaRemote, 1);
    r->addr = addr;
    r->rkey = GUINT32_FROM_LE(rkey);
    r->len = len;
    *out = (XpRemote *)r;
    return true;
}

static void rdma_remote_free(XpRemote *r)
{
    g_free(r);
}

/* ------------------------------------------------------------------ channel: completions */

static void rdma_fail(RdmaChannel *ch, int err, const char *what, const char *detail)
{
    if (ch->err == 0) {
        ch->err = err;
        ch->err_detail = g_strdup_printf("%s failed: %s", what, detail);
        g_warning("rdma channel %s: %s", ch->peer, ch->err_detail);
    }
}

/* Common to every completion: false if it failed (the channel is failed or at EOF). */
static bool rdma_wc_ok(RdmaChannel *ch, const VbWc *wc, const char *what)
{
    ch->ctr.completions++;
    if (wc->status == VB_WC_STATUS_SUCCESS) {
        return true;
    }
    if (wc->status == VB_WC_STATUS_FLUSH) {
        /* The QP went to error (our shutdown, the peer's disconnect or an earlier error). */
        return false;
    }
    g_autofree char *detail = g_strdup_printf("%s (status %d, vendor error 0x%x)",
                                              wc->status_str, wc->status, wc->vendor_err);
    rdma_fail(ch, -EIO, what, detail);
    return false;
}

static void rdma_sq_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaSqMark *m = vb_container_of(cqe, RdmaSqMark, cqe);
    RdmaChannel *ch = m->ch;
    ch->sq_done = m->seq;
    if (m->uses_buf) {
        g_assert(ch->sbuf_busy > 0);
        ch->sbuf_busy--;
    }
    rdma_wc_ok(ch, wc, "send");
}

static void rdma_unsignaled_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaChannel *ch = vb_container_of(cqe, RdmaChannel, unsignaled_cqe);
    rdma_wc_ok(ch, wc, "RDMA WRITE");
}

static int rdma_post_recv_slot(RdmaChannel *ch, unsigned idx)
{
    VbSge sge = { .addr = (uintptr_t)(ch->recv_buf + (size_t)idx * XP_MSG_MAX),
                  .length = XP_MSG_MAX, .lkey = vb_mr_lkey(ch->recv_mr) };
    int ret = vb_qp_post_recv(ch->qp, &sge, 1, &ch->recv[idx].cqe);
    if (ret == 0) {
        ch->recv_posted++;
    }
    return ret;
}

/* A consumed RECV goes back to the peer: re-post it and owe the peer a credit. */
static void rdma_repost(RdmaChannel *ch, unsigned idx)
{
    int ret = rdma_post_recv_slot(ch, idx);
    if (ret == 0) {
        ch->credits_owed++;
    } else if (!ch->peer_gone && !atomic_load(&ch->shut)) {
        rdma_fail(ch, ret, "re-post RECV", g_strerror(-ret));
    } else {
        ch->flushed = true; /* QP already in error: nothing more arrives */
    }
}

static void rdma_recv_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaRecvSlot *s = vb_container_of(cqe, RdmaRecvSlot, cqe);
    RdmaChannel *ch = s->ch;
    ch->recv_posted--;
    if (!rdma_wc_ok(ch, wc, "receive")) {
        if (wc->status == VB_WC_STATUS_FLUSH) {
            ch->flushed = true;
        }
        return;
    }
    if (wc->has_imm) {
        unsigned got = wc->imm & RDMA_IMM_CREDITS_MASK;
        if (ch->credits + got > RDMA_RECV_RING) {
            /* a peer returning RECVs it cannot have would make us overrun its ring */
            g_autofree char *why = g_strdup_printf("peer returned %u credits while we held %u "
                                                   "of its %u RECVs", got, ch->credits,
                                                   RDMA_RECV_RING);
            rdma_fail(ch, -EPROTO, "credit check", why);
            return;
        }
        ch->credits += got;
        if (wc->imm & RDMA_IMM_CREDIT_ONLY) {
            rdma_repost(ch, s->idx);
            return;
        }
    }
    unsigned tail = (ch->ready_head + ch->ready_count) % RDMA_RECV_RING;
    ch->ready_idx[tail] = s->idx;
    ch->ready_len[tail] = wc->byte_len;
    ch->ready_count++;
}

static int rdma_poll_cq(RdmaChannel *ch)
{
    int n = vb_cq_poll(ch->cq, RDMA_POLL_BUDGET);
    ch->ctr.polls++;
    if (n == 0) {
        ch->ctr.idle_polls++;
    } else if (n < 0) {
        rdma_fail(ch, n, "poll CQ", g_strerror(-n));
    }
    return n;
}

/* ------------------------------------------------------------------ channel: progress */

static void rdma_handle_cm_events(RdmaChannel *ch)
{
    for (;;) {
        VbCmEvent ev;
        g_autoptr(GError) err = NULL;
        if (!vb_cm_next_event(ch->id, 0, -1, &ev, &err)) {
            if (!g_error_matches(err, VB_ERROR, VB_ERROR_TIMEOUT)) {
                rdma_fail(ch, -EIO, "read CM event", err->message);
            }
            return;
        }
        switch (ev.step) {
        case VB_CM_DISCONNECTED:
            ch->peer_gone = true;
            /* Our QP to error too: posted RECVs flush after everything already received. */
            vb_cm_disconnect(ch->id);
            break;
        case VB_CM_DEVICE_REMOVAL:
            ch->peer_gone = true;
            rdma_fail(ch, -ENODEV, "device", "DEVICE_REMOVAL");
            vb_cm_disconnect(ch->id);
            break;
        case VB_CM_ADDR_CHANGE:
            g_warning("rdma channel %s: ADDR_CHANGE (local address moved)", ch->peer);
            break;
        case VB_CM_TIMEWAIT_EXIT:
        case VB_CM_ESTABLISHED:
            break;
        default:
            g_debug("rdma channel %s: ignoring CM event %s", ch->peer,
                    vb_cm_step_str(ev.step));
            break;
        }
    }
}

static int rdma_sq_free(RdmaChannel *ch)
{
    return (int)(ch->caps.max_send_wr - (unsigned)(ch->sq_posted - ch->sq_done));
}

static RdmaSqMark *rdma_mark(RdmaChannel *ch, uint64_t seq, bool uses_buf)
{
    RdmaSqMark *m = &ch->marks[seq % ch->caps.max_send_wr];
    m->seq = seq;
    m->uses_buf = uses_buf;
    return m;
}

/* Return credits with a zero-length SEND when the peer may be starving. Keeps going without
 * it when there is no room: the next message carries them anyway. */
static void rdma_maybe_return_credits(RdmaChannel *ch)
{
    if (ch->credits_owed < RDMA_RECV_RING / 2 || ch->credits < 1 || ch->err ||
        ch->peer_gone || !ch->established || atomic_load(&ch->shut) ||
        rdma_sq_free(ch) < 1) {
        return;
    }
    uint64_t seq = ch->sq_posted + 1;
    VbWr w = { .opcode = VB_WR_SEND, .has_imm = true,
               .imm = RDMA_IMM_CREDIT_ONLY | ch->credits_owed, .signaled = true,
               .cqe = &rdma_mark(ch, seq, false)->cqe };
    int ret = vb_qp_post_list(ch->qp, &w, 1);
    if (ret != 0) {
        rdma_fail(ch, ret, "post credit SEND", g_strerror(-ret));
        return;
    }
    ch->sq_posted = seq;
    ch->since_signal = 0;
    ch->credits--;
    ch->credits_owed = 0;
    ch->ctr.wrs_posted++;
    ch->ctr.doorbells++;
}

/* With ch->lock held. One round of progress: poll the CQ; when idle, arm and sleep on the
 * completion channel, the CM channel and the wake fd until deadline (monotonic us, -1 =
 * forever). Only one thread sleeps on the fds; others wait for its round on ch->cond.
 * Returns -ETIMEDOUT when the deadline passed without anything happening. */
static int rdma_progress(RdmaChannel *ch, gint64 deadline)
{
    if (ch->polling) {
        if (deadline < 0) {
            g_cond_wait(&ch->cond, &ch->lock);
        } else if (!g_cond_wait_until(&ch->cond, &ch->lock, deadline)) {
            return -ETIMEDOUT;
        }
        return 0;
    }
    ch->polling = true;
    bool timed_out = false;
    int n = rdma_poll_cq(ch);
    if (n == 0 && !atomic_load(&ch->shut)) {
        int ret = vb_cq_arm(ch->cq);
        if (ret < 0) {
            rdma_fail(ch, ret, "arm CQ", g_strerror(-ret));
        }
        n = rdma_poll_cq(ch); /* a completion may have slipped in before the arm */
    }
    if (n == 0 && !ch->err && !atomic_load(&ch->shut)) {
        int wait_ms = -1;
        if (deadline >= 0) {
            gint64 left = deadline - g_get_monotonic_time();
            wait_ms = left <= 0 ? 0 : (int)((left + 999) / 1000);
        }
        struct pollfd pfd[3] = {
            { .fd = vb_cq_fd(ch->cq), .events = POLLIN },
            { .fd = vb_cm_fd(ch->id), .events = POLLIN },
            { .fd = ch->wake_fd, .events = POLLIN },
        };
        g_mutex_unlock(&ch->lock);
        int ret = poll(pfd, 3, wait_ms);
        g_mutex_lock(&ch->lock);
        if (ret == 0) {
            timed_out = true;
        }
        if (ret > 0 && (pfd[0].revents & POLLIN)) {
            vb_cq_consume_event(ch->cq);
        }
        if (ret > 0 && (pfd[1].revents & POLLIN)) {
            rdma_handle_cm_events(ch);
        }
        rdma_poll_cq(ch);
    }
    ch->polling = false;
    g_cond_broadcast(&ch->cond);
    rdma_maybe_return_credits(ch);
    return timed_out ? -ETIMEDOUT : 0;
}

/* ------------------------------------------------------------------ channel: send */

static int rdma_send_check(RdmaChannel *ch)
{
    if (ch->err) {
        return ch->err;
    }
    if (atomic_load(&ch->shut) || ch->peer_gone || ch->flushed || !ch->established) {
        return -EPIPE;
    }
    return 0;
}

/* Wait for `slots` free send-queue entries (and, if want_send, a credit and a buffer), until
 * the send's deadline: -ETIMEDOUT when a peer that stopped reading holds back its credits. */
static int rdma_wait_send_room(RdmaChannel *ch, unsigned slots, bool want_send, bool want_buf)
{
    for (;;) {
        int ret = rdma_send_check(ch);
        if (ret) {
            return ret;
        }
        bool ok = rdma_sq_free(ch) >= (int)slots;
        /* Keep one credit back for a credit-only SEND, so two senders never deadlock. */
        ok = ok && (!want_send || ch->credits >= 2);
        ok = ok && (!want_buf || ch->sbuf_busy < RDMA_SEND_BUFS);
        if (ok) {
            return 0;
        }
        rdma_progress(ch, ch->send_deadline);
        /* checked here, not by progress's result: the peer's keepalives are progress too */
        if (ch->send_deadline >= 0 && g_get_monotonic_time() >= ch->send_deadline) {
            return -ETIMEDOUT;
        }
    }
}

/* Post the pending WRITEs (ch->wrs[0..nwr)) plus, if send is not NULL, that SEND after them,
 * as one chain. `more` says more WRITEs follow, so the last one must free slots. */
static int rdma_flush(RdmaChannel *ch, VbWr *send, bool send_uses_buf, bool more)
{
    unsigned n = ch->nwr + (send ? 1 : 0);
    if (n == 0) {
        return 0;
    }
    for (unsigned i = 0; i < ch->nwr; i++) {
        ch->since_signal++;
        bool last = i + 1 == ch->nwr;
        if (ch->since_signal >= RDMA_SIGNAL_EVERY || (last && more && !send)) {
            ch->wrs[i].cqe = &rdma_mark(ch, ch->sq_posted + i + 1, false)->cqe;
            ch->wrs[i].signaled = true;
            ch->since_signal = 0;
        } else {
            ch->wrs[i].cqe = &ch->unsignaled_cqe; /* only sees it if it fails */
            ch->wrs[i].signaled = false;
        }
    }
    if (send) {
        /* Every message SEND is signaled: it frees its buffer and retires the WRITEs. */
        send->cqe = &rdma_mark(ch, ch->sq_posted + n, send_uses_buf)->cqe;
        send->signaled = true;
        ch->wrs[ch->nwr] = *send;
        ch->since_signal = 0;
    }
    int ret = vb_qp_post_list(ch->qp, ch->wrs, n);
    if (ret != 0) {
        rdma_fail(ch, ret, "post send queue", g_strerror(-ret));
        return ret;
    }
    ch->sq_posted += n;
    ch->ctr.wrs_posted += n;
    ch->ctr.doorbells++; /* n <= RDMA_WR_BATCH + 1 fits one chain in vb_qp_post_list */
    ch->nwr = 0;
    ch->nsge = 0;
    return 0;
}

/* Append one piece (<= ch->max_wr_bytes) to the WRITE being built or start a new one. */
static int rdma_add_piece(RdmaChannel *ch, const uint8_t *addr, uint32_t len, uint32_t lkey,
                          uint64_t raddr, uint32_t rkey)
{
    if (ch->nwr > 0) {
        VbWr *w = &ch->wrs[ch->nwr - 1];
        uint64_t wlen = 0;
        for (unsigned i = 0; i < w->nsge; i++) {
            wlen += w->sge[i].length;
        }
        if (w->rkey == rkey && w->remote_addr + wlen == raddr &&
            w->nsge < ch->caps.max_send_sge && wlen + len <= ch->max_wr_bytes) {
            VbSge *s = &ch->sges[ch->nsge++];
            *s = (VbSge){ .addr = (uintptr_t)addr, .length = len, .lkey = lkey };
            w->nsge++;
            return 0;
        }
    }
    if (ch->nwr == RDMA_WR_BATCH) {
        int ret = rdma_wait_send_room(ch, ch->nwr, false, false);
        if (ret == 0) {
            ret = rdma_flush(ch, NULL, false, true);
        }
        if (ret) {
            return ret;
        }
    }
    VbSge *s = &ch->sges[ch->nsge];
    *s = (VbSge){ .addr = (uintptr_t)addr, .length = len, .lkey = lkey };
    ch->wrs[ch->nwr++] = (VbWr){ .opcode = VB_WR_WRITE, .sge = s, .nsge = 1,
                                  .remote_addr = raddr, .rkey = rkey };
    ch->nsge++;
    return 0;
}

/* Test seams, checked on every message: a plain load first, so the data path pays no
 * atomic read-modify-write (and no cache-line ownership) while no fault is pending. */
static int rdma_take_fault(RdmaChannel *ch)
{
    if (atomic_load_explicit(&ch->inject, memory_order_relaxed) == 0) {
        return 0;
    }
    return atomic_exchange(&ch->inject, 0);
}

static bool rdma_take_bad_rkey(RdmaChannel *ch)
{
    return atomic_load_explicit(&ch->inject_bad_rkey, memory_order_relaxed) &&
           atomic_exchange(&ch->inject_bad_rkey, false);
}

static int rdma_send_msg(XpChannel *xc, const void *msg, size_t len, const XpSeg *segs,
                         unsigned nsegs)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    int inj = rdma_take_fault(ch);
    if (inj) {
        return -inj;
    }
    if (len > XP_MSG_MAX) {
        return -EMSGSIZE;
    }
    uint64_t seg_bytes = 0;
    for (unsigned i = 0; i < nsegs; i++) {
        const RdmaRemote *r = (const RdmaRemote *)segs[i].remote;
        if (!segs[i].region || !r) {
            return -EINVAL;
        }
        if (segs[i].len > r->len || segs[i].remote_offset > r->len - segs[i].len) {
            return -ERANGE;
        }
        seg_bytes += segs[i].len;
    }
    /* test seam: a wrong rkey makes the peer's device refuse the WRITE (remote access error) */
    uint32_t rkey_xor = nsegs && rdma_take_bad_rkey(ch) ? 0x5a5a5a5au : 0;
    g_mutex_lock(&ch->lock);
    ch->send_deadline = ch->send_timeout_ms < 0
                            ? -1 : g_get_monotonic_time() + (gint64)ch->send_timeout_ms * 1000;
    int ret = ch->send_timed_out ? -ETIMEDOUT : rdma_send_check(ch);
    for (unsigned i = 0; ret == 0 && i < nsegs; i++) {
        const RdmaRemote *r = (const RdmaRemote *)segs[i].remote;
        uint32_t lkey = vb_mr_lkey(((const RdmaRegion *)segs[i].region)->mr);
        const uint8_t *a = segs[i].addr;
        uint64_t raddr = r->addr + segs[i].remote_offset;
        for (size_t off = 0; ret == 0 && off < segs[i].len;) {
            uint32_t piece = (uint32_t)MIN(segs[i].len - off, (size_t)ch->max_wr_bytes);
            ret = rdma_add_piece(ch, a + off, piece, lkey, raddr + off, r->rkey ^ rkey_xor);
            off += piece;
        }
    }
    bool inl = len > 0 && len <= ch->caps.max_inline;
    if (ret == 0) {
        ret = rdma_wait_send_room(ch, ch->nwr + 1, true, !inl && len > 0);
    }
    if (ret == 0) {
        VbSge sge;
        VbWr send = { .opcode = VB_WR_SEND, .sge = &sge, .nsge = len > 0, .has_imm = true,
                      .imm = ch->credits_owed, .inline_data = inl };
        bool uses_buf = !inl && len > 0;
        if (inl) {
            sge = (VbSge){ .addr = (uintptr_t)msg, .length = (uint32_t)len };
        } else if (uses_buf) {
            uint8_t *b = ch->send_buf + (size_t)ch->sbuf_head * XP_MSG_MAX;
            memcpy(b, msg, len);
            sge = (VbSge){ .addr = (uintptr_t)b, .length = (uint32_t)len,
                           .lkey = vb_mr_lkey(ch->send_mr) };
        }
        ret = rdma_flush(ch, &send, uses_buf, false);
        if (ret == 0) {
            if (uses_buf) {
                ch->sbuf_head = (ch->sbuf_head + 1) % RDMA_SEND_BUFS;
                ch->sbuf_busy++;
            }
            ch->credits--;
            ch->credits_owed = 0;
            ch->ctr.msgs_sent++;
            ch->ctr.bytes_sent += len + seg_bytes;
        }
    }
    if (ret != 0) {
        ch->nwr = ch->nsge = 0; /* WRITEs of a failed message are dropped with it */
    }
    ch->send_timed_out |= ret == -ETIMEDOUT;
    g_mutex_unlock(&ch->lock);
    return ret;
}

/* ------------------------------------------------------------------ channel: receive */

static int rdma_recv_msg(XpChannel *xc, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    int inj = rdma_take_fault(ch);
    if (inj) {
        return -inj;
    }
    gint64 deadline = timeout_ms < 0 ? -1
                                     : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&ch->lock);
    int ret;
    bool polled_once = false; /* timeout 0: poll the CQ once, never sleep */
    for (;;) {
        if (ch->err) {
            ret = ch->err;
            break;
        }
        if (atomic_load(&ch->shut) || !ch->established) {
            ret = -EPIPE;
            break;
        }
        if (ch->ready_count > 0) {
            unsigned idx = ch->ready_idx[ch->ready_head];
            uint32_t l = ch->ready_len[ch->ready_head];
            if (l > cap) {
                ret = -EMSGSIZE; /* left queued: a bigger buffer can still take it */
                break;
            }
            memcpy(buf, ch->recv_buf + (size_t)idx * XP_MSG_MAX, l);
            *len = l;
            ch->ready_head = (ch->ready_head + 1) % RDMA_RECV_RING;
            ch->ready_count--;
            ch->ctr.msgs_received++;
            ch->ctr.bytes_received += l;
            rdma_repost(ch, idx);
            rdma_maybe_return_credits(ch);
            ret = 0;
            break;
        }
        if (ch->flushed || (ch->peer_gone && ch->recv_posted == 0)) {
            ret = -EPIPE;
            break;
        }
        if (timeout_ms == 0 && polled_once) {
            ret = -ETIMEDOUT;
            break;
        }
        polled_once = true;
        if (rdma_progress(ch, deadline) == -ETIMEDOUT && ch->ready_count == 0 && !ch->err &&
            !ch->flushed) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    g_mutex_unlock(&ch->lock);
    return ret;
}

/* ------------------------------------------------------------------ channel: lifetime */

static void rdma_channel_destroy(RdmaChannel *ch)
{
    if (!ch) {
        return;
    }
    vb_qp_free(ch->qp); /* before the CQ it completes to, and the id it lives on */
    vb_cq_free(ch->cq);
    vb_mr_free(ch->recv_mr);
    vb_mr_free(ch->send_mr);
    vb_cm_id_free(ch->id);
    free(ch->recv_buf);
    free(ch->send_buf);
    g_free(ch->marks);
    g_free(ch->sges);
    if (ch->wake_fd >= 0) {
        close(ch->wake_fd);
    }
    g_free(ch->peer);
    g_free(ch->err_detail);
    g_mutex_clear(&ch->lock);
    g_cond_clear(&ch->cond);
    g_free(ch);
}

/* Build the channel around a resolved (connector) or requested (acceptor) cm_id: CQ, QP on
 * the domain PD, buffers, and every RECV posted before the connection can carry a SEND. */
static RdmaChannel *rdma_channel_new(RdmaDomain *d, VbCmId *id, const XpOptions *opts,
                                     GError **error)
{
    RdmaChannel *ch = g_new0(RdmaChannel, 1);
    ch->base.ops = &xp_rdma_ops;
    ch->dom = d;
    ch->id = id;
    ch->wake_fd = -1;
    ch->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    ch->send_timeout_ms = -1;
    ch->send_deadline = -1;
    g_mutex_init(&ch->lock);
    g_cond_init(&ch->cond);
    ch->peer = rdma_uri_of(vb_cm_peer_str(id));
    GError *local = NULL;
    ch->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ch->wake_fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "eventfd for %s: %s", ch->peer,
                    g_strerror(errno));
        goto fail;
    }
    if (!rdma_domain_bind(d, id, error) || !rdma_check_overrides(opts, id, error)) {
        goto fail;
    }
    if (!vb_cm_set_rc_params(id, opts->rc_retry ? (int)opts->rc_retry : -1,
                             (int)opts->rc_timeout, &local)) {
        goto fail_vb;
    }
    const VbDeviceAttr *da = vb_device_attr(d->dev);
    unsigned sq = opts->max_send_wr ? opts->max_send_wr : RDMA_SQ_DEPTH;
    sq = MAX(sq, 2 * RDMA_WR_BATCH + 2);
    ch->cq = vb_cq_new(d->dev, (int)(sq + RDMA_RECV_RING + 16), &local);
    if (!ch->cq) {
        goto fail_vb;
    }
    VbQpCaps want = { .max_send_wr = sq, .max_recv_wr = RDMA_RECV_RING,
                      .max_send_sge = (uint32_t)MIN(da->max_sge, 32), .max_recv_sge = 1,
                      .max_inline = RDMA_INLINE_WANT };
    ch->qp = vb_qp_new(id, d->pd, ch->cq, &want, &local);
    if (!ch->qp) {
        goto fail_vb;
    }
    ch->caps = *vb_qp_caps(ch->qp);
    ch->max_wr_bytes = RDMA_WR_MAX_BYTES;
    VbPortAttr pa;
    if (vb_device_port_attr(d->dev, vb_cm_port_num(id), &pa, NULL) && pa.max_msg_sz >= 4096) {
        /* page-aligned, so a WRITE split at the limit still ends on a page */
        ch->max_wr_bytes = MIN(ch->max_wr_bytes, pa.max_msg_sz & ~4095u);
    }
    /* Never track more WRs than we asked for, even if the provider rounded up. */
    ch->caps.max_send_wr = MIN(ch->caps.max_send_wr, sq);
    if (ch->caps.max_send_wr < 2 * RDMA_WR_BATCH + 2 || ch->caps.max_recv_wr < RDMA_RECV_RING) {
        g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED,
                    "%s: QP too small (send %u, recv %u WRs)", vb_device_name(d->dev),
                    ch->caps.max_send_wr, ch->caps.max_recv_wr);
        goto fail;
    }
    ch->unsignaled_cqe.done = rdma_unsignaled_done;
    ch->marks = g_new0(RdmaSqMark, ch->caps.max_send_wr);
    for (unsigned i = 0; i < ch->caps.max_send_wr; i++) {
        ch->marks[i].cqe.done = rdma_sq_done;
        ch->marks[i].ch = ch;
    }
    ch->sges = g_new0(VbSge, (size_t)(RDMA_WR_BATCH + 1) * ch->caps.max_send_sge);
    if (posix_memalign((void **)&ch->recv_buf, 4096, (size_t)RDMA_RECV_RING * XP_MSG_MAX) ||
        posix_memalign((void **)&ch->send_buf, 4096, (size_t)RDMA_SEND_BUFS * XP_MSG_MAX)) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "out of memory for %s buffers",
                    ch->peer);
        goto fail;
    }
    ch->recv_mr = vb_mr_reg(d->pd, ch->recv_buf, (size_t)RDMA_RECV_RING * XP_MSG_MAX,
                            VB_ACCESS_LOCAL_WRITE, &local);
    if (!ch->recv_mr) {
        goto fail_vb;
    }
    ch->send_mr = vb_mr_reg(d->pd, ch->send_buf, (size_t)RDMA_SEND_BUFS * XP_MSG_MAX, 0,
                            &local);
    if (!ch->send_mr) {
        goto fail_vb;
    }
    for (unsigned i = 0; i < RDMA_RECV_RING; i++) {
        ch->recv[i] = (RdmaRecvSlot){ .cqe.done = rdma_recv_done, .ch = ch, .idx = i };
        int ret = rdma_post_recv_slot(ch, i);
        if (ret != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "post RECV for %s: %s", ch->peer,
                        g_strerror(-ret));
            goto fail;
        }
    }
    ch->credits = RDMA_RECV_RING; /* the peer posted the same ring before connecting */
    return ch;

fail_vb:
    rdma_propagate(error, local, NULL);
fail:
    ch->id = NULL; /* the caller still owns id on failure */
    vb_qp_free(ch->qp);
    ch->qp = NULL;
    rdma_channel_destroy(ch);
    return NULL;
}

/* With ch->lock held: progress until every posted WR completed, the channel failed or
 * deadline passed (-ETIMEDOUT). */
static int rdma_wait_sq_done(RdmaChannel *ch, gint64 deadline)
{
    while (ch->sq_done < ch->sq_posted && !ch->err && !ch->peer_gone && !ch->flushed &&
           !atomic_load(&ch->shut)) {
        if (rdma_progress(ch, deadline) == -ETIMEDOUT && ch->sq_done < ch->sq_posted) {
            return -ETIMEDOUT;
        }
    }
    return 0;
}

static int rdma_drain(XpChannel *xc, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    gint64 deadline = timeout_ms < 0 ? -1
                                     : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&ch->lock);
    int ret = rdma_wait_sq_done(ch, deadline);
    if (ret == 0) {
        ret = rdma_send_check(ch);
    }
    g_mutex_unlock(&ch->lock);
    return ret;
}

static void rdma_shutdown(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    if (atomic_exchange(&ch->shut, true)) {
        return;
    }
    uint64_t one = 1;
    ssize_t r = write(ch->wake_fd, &one, sizeof(one));
    (void)r; /* an eventfd write only fails on overflow, which one write cannot reach */
    /* The peer sees DISCONNECTED; our posted work flushes. */
    vb_cm_disconnect(ch->id);
}

static void rdma_close(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    if (!ch) {
        return;
    }
    g_mutex_lock(&ch->lock);
    if (ch->established && !ch->err && !ch->peer_gone && !atomic_load(&ch->shut)) {
        /* Like a socket close: messages already sent still get delivered (their SENDs are
         * acknowledged, i.e. in the peer's CQ) before we disconnect. Bounded. */
        rdma_wait_sq_done(ch, g_get_monotonic_time() + RDMA_CLOSE_DRAIN_MS * 1000);
    }
    g_mutex_unlock(&ch->lock);
    if (ch->established) {
        vb_cm_disconnect(ch->id);
    }
    rdma_channel_destroy(ch);
}

static const char *rdma_peer(XpChannel *xc)
{
    return ((RdmaChannel *)xc)->peer;
}

bool xp_rdma_channel_rc(XpChannel *xc, unsigned *retry, unsigned *rnr_retry,
                        unsigned *ack_timeout, GError **error)
{
    VbQpRc rc;
    GError *local = NULL;
    if (!vb_qp_query_rc(((RdmaChannel *)xc)->qp, &rc, &local)) {
        rdma_propagate(error, local, NULL);
        return false;
    }
    *retry = rc.retry_count;
    *rnr_retry = rc.rnr_retry;
    *ack_timeout = rc.ack_timeout;
    return true;
}

static void rdma_counters(XpChannel *xc, XpCounters *out)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    *out = ch->ctr;
    g_mutex_unlock(&ch->lock);
}

static void rdma_set_send_timeout(XpChannel *xc, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    ch->send_timeout_ms = timeout_ms;
    g_mutex_unlock(&ch->lock);
}

static void rdma_inject_fault(XpChannel *xc, int err)
{
    atomic_store(&((RdmaChannel *)xc)->inject, err);
}

static void rdma_inject_completion_error(XpChannel *xc)
{
    atomic_store(&((RdmaChannel *)xc)->inject_bad_rkey, true);
}

static const char *rdma_error_detail(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    const char *d = ch->err_detail; /* never changes once set, freed only with ch */
    g_mutex_unlock(&ch->lock);
    return d;
}

/* ------------------------------------------------------------------ connect */

static void rdma_hello_pack(uint8_t pdata[XP_HELLO_MAX], const void *hello, size_t len,
                            uint8_t *mark)
{
    memset(pdata, 0, XP_HELLO_MAX);
    memcpy(pdata, hello, len);
    if (len < XP_HELLO_MAX) {
        pdata[XP_HELLO_MAX - 1] = (uint8_t)len;
        *mark = RDMA_HELLO_MARK_TRAILER;
    } else {
        *mark = RDMA_HELLO_MARK_FULL;
    }
}

static XpChannel *rdma_connect(XpDomain *xd, const char *host, const char *port,
                               const void *hello, size_t hello_len, const XpOptions *opts,
                               GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (hello_len > XP_HELLO_MAX) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "hello of %zu bytes exceeds %u",
                    hello_len, XP_HELLO_MAX);
        return NULL;
    }
    XpOptions o = opts ? *opts : d->opts;
    int timeout = o.timeout_ms > 0 ? o.timeout_ms : 5000;
    GError *local = NULL;
    g_autoptr(VbCmId) id = vb_cm_id_new(&local);
    /* --rdma-dev (with --rdma-port/--gid-index) chooses the source address; the checks in
     * rdma_channel_new() then confirm rdma_cm routed through what was asked for */
    if (!id || !vb_cm_resolve_from(id, host, port, o.rdma_dev, o.rdma_port, o.gid_index,
                                   timeout, -1, &local)) {
        rdma_propagate(error, local, "rdma: ");
        return NULL;
    }
    RdmaChannel *ch = rdma_channel_new(d, id, &o, error);
    if (!ch) {
        return NULL;
    }
    g_steal_pointer(&id);
    uint8_t pdata[XP_HELLO_MAX];
    uint8_t mark;
    rdma_hello_pack(pdata, hello, hello_len, &mark);
    VbCmEvent rej;
    memset(&rej, 0, sizeof(rej));
    if (!vb_cm_connect(ch->id, pdata, sizeof(pdata), mark, timeout, -1, &rej, &local)) {
        if (g_error_matches(local, VB_ERROR, VB_ERROR_REJECTED)) {
            uint32_t status = 0;
            char reason[XP_REASON_MAX + 1] = "";
            if (rej.private_len >= RDMA_REJECT_HDR) {
                memcpy(&status, rej.private_data, 4);
                status = GUINT32_FROM_LE(status);
                size_t rl = MIN(rej.private_len - RDMA_REJECT_HDR, (size_t)XP_REASON_MAX);
                memcpy(reason, rej.private_data + RDMA_REJECT_HDR, rl);
                reason[rl] = '\0';
            }
            g_set_error(error, XP_ERROR, XP_ERROR_REJECTED,
                        "%s refused the connection: %s (status %u)", ch->peer,
                        reason[0] ? reason : "no reason given", status);
            g_error_free(local);
        } else {
            rdma_propagate(error, local, "rdma: ");
        }
        rdma_channel_destroy(ch);
        return NULL;
    }
    ch->established = true;
    return &ch->base;
}

/* ------------------------------------------------------------------ listen / accept */

typedef struct {
    XpListener base;
    RdmaDomain *dom;
    VbCmId *id;
    int wake_fd;
    char *uri;
    XpLogLimit refuse_log; /* malformed hellos, refused without a channel */
} RdmaListener;

static void rdma_listener_close(XpListener *xl)
{
    RdmaListener *l = (RdmaListener *)xl;
    if (!l) {
        return;
    }
    vb_cm_id_free(l->id);
    if (l->wake_fd >= 0) {
        close(l->wake_fd);
    }
    g_free(l->uri);
    g_free(l);
}

static XpListener *rdma_listen(XpDomain *xd, const char *host, const char *port,
                               GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    RdmaListener *l = g_new0(RdmaListener, 1);
    l->base.ops = &xp_rdma_ops;
    l->dom = d;
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    GError *local = NULL;
    if (l->wake_fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "eventfd: %s", g_strerror(errno));
        goto fail;
    }
    l->id = vb_cm_id_new(&local);
    if (!l->id || !vb_cm_listen(l->id, host, port, 64, &local)) {
        rdma_propagate(error, local, "rdma: ");
        goto fail;
    }
    l->uri = rdma_uri_of(vb_cm_local_str(l->id));
    if (d->opts.rdma_dev) {
        /* A specific address is bound to a device now; a wildcard one is checked per
         * connection (rdma_domain_bind). */
        g_autoptr(VbDevice) dev = vb_device_from_cm_id(l->id, NULL);
        if (dev && strcmp(vb_device_name(dev), d->opts.rdma_dev) != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                        "rdma_dev=%s was requested, but %s is an address of device %s",
                        d->opts.rdma_dev, l->uri, vb_device_name(dev));
            goto fail;
        }
    }
    return &l->base;
fail:
    rdma_listener_close(&l->base);
    return NULL;
}

static const char *rdma_listener_uri(XpListener *xl)
{
    return ((RdmaListener *)xl)->uri;
}

static void rdma_listener_shutdown(XpListener *xl)
{
    RdmaListener *l = (RdmaListener *)xl;
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof(one));
    (void)r; /* cannot overflow with one write */
}

/* Refuse a connection request with status and reason in the reject private data. */
static bool rdma_reject_reason(VbCmId *id, uint32_t status, const char *reason, GError **error)
{
    uint8_t pdata[RDMA_REJECT_HDR + XP_REASON_MAX];
    uint32_t st = GUINT32_TO_LE(status);
    memcpy(pdata, &st, 4);
    size_t rl = reason ? MIN(strlen(reason), (size_t)XP_REASON_MAX) : 0;
    memcpy(pdata + RDMA_REJECT_HDR, reason, rl);
    GError *local = NULL;
    if (!vb_cm_reject(id, pdata, RDMA_REJECT_HDR + rl, &local)) {
        rdma_propagate(error, local, "rdma: ");
        return false;
    }
    return true;
}

static XpChannel *rdma_accept(XpListener *xl, int timeout_ms, void *hello, size_t *hello_len,
                              GError **error)
{
    RdmaListener *l = (RdmaListener *)xl;
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        int left = deadline < 0 ? -1
                                : (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        VbCmEvent ev;
        GError *local = NULL;
        if (!vb_cm_next_event(l->id, left, l->wake_fd, &ev, &local)) {
            if (g_error_matches(local, VB_ERROR, VB_ERROR_TIMEOUT)) {
                g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT,
                            "%s: no connection within %d ms", l->uri, timeout_ms);
                g_error_free(local);
            } else if (g_error_matches(local, VB_ERROR, VB_ERROR_CLOSED)) {
                g_set_error(error, XP_ERROR, XP_ERROR_CLOSED, "%s: listener shut down",
                            l->uri);
                g_error_free(local);
            } else {
                rdma_propagate(error, local, "rdma accept: ");
            }
            return NULL;
        }
        if (ev.step == VB_CM_DEVICE_REMOVAL) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE, "%s: DEVICE_REMOVAL", l->uri);
            return NULL;
        }
        if (ev.step != VB_CM_CONNECT_REQUEST) {
            g_debug("%s: ignoring CM event %s", l->uri, vb_cm_step_str(ev.step));
            continue;
        }
        g_autoptr(VbCmId) id = g_steal_pointer(&ev.new_id);
        /* Either value: both were set to the mark, and the CM swaps them for the acceptor. */
        unsigned mark = ev.initiator_depth;
        bool ok = ev.private_len >= XP_HELLO_MAX;
        size_t len = XP_HELLO_MAX;
        if (ok && mark == RDMA_HELLO_MARK_TRAILER) {
            len = ev.private_data[XP_HELLO_MAX - 1];
            ok = len < XP_HELLO_MAX;
        } else {
            ok = ok && mark == RDMA_HELLO_MARK_FULL;
        }
        if (!ok) {
            g_autofree char *why = g_strdup_printf(
                "malformed hello (%zu bytes of private data, mark %u)", ev.private_len, mark);
            /* anyone can send these: logged rate-limited */
            xp_log_limited(&l->refuse_log, G_LOG_DOMAIN, "%s: refusing %s: %s", l->uri,
                           vb_cm_peer_str(id), why);
            rdma_reject_reason(id, 1, why, NULL);
            continue;
        }
        XpOptions o = l->dom->opts;
        GError *cerr = NULL;
        RdmaChannel *ch = rdma_channel_new(l->dom, id, &o, &cerr);
        if (!ch) {
            /* the connector learns why; for us it is one failed attempt (XP_ERROR_FAILED),
             * not the listener's end (XP_ERROR_NO_DEVICE is kept for DEVICE_REMOVAL) */
            rdma_reject_reason(id, 1, cerr->message, NULL);
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "%s: connection from %s: %s",
                        l->uri, vb_cm_peer_str(id), cerr->message);
            g_error_free(cerr);
            return NULL;
        }
        g_steal_pointer(&id);
        memcpy(hello, ev.private_data, len);
        *hello_len = len;
        return &ch->base;
    }
}

static bool rdma_answer(XpChannel *xc, uint32_t status, const char *reason, GError **error)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    GError *local = NULL;
    if (status == 0) {
        if (!vb_cm_accept(ch->id, NULL, 0, ch->timeout_ms, ch->wake_fd, &local)) {
            rdma_propagate(error, local, "rdma: ");
            return false;
        }
        g_mutex_lock(&ch->lock);
        ch->established = true;
        g_mutex_unlock(&ch->lock);
        return true;
    }
    return rdma_reject_reason(ch->id, status, reason, error);
}

const XpOps xp_rdma_ops = {
    .version = XP_OPS_VERSION,
    .name = "rdma",
    .caps = XP_CAP_PLACED_PAYLOAD | XP_CAP_REGIONS,
    .domain_new = rdma_domain_new,
    .domain_free = rdma_domain_free,
    .listen = rdma_listen,
    .listener_uri = rdma_listener_uri,
    .accept = rdma_accept,
    .answer = rdma_answer,
    .listener_shutdown = rdma_listener_shutdown,
    .listener_close = rdma_listener_close,
    .connect = rdma_connect,
    .send_msg = rdma_send_msg,
    .recv_msg = rdma_recv_msg,
    .shutdown = rdma_shutdown,
    .close = rdma_close,
    .peer = rdma_peer,
    .recv_payload = NULL, /* placed: payload lands by itself */
    .region_register = rdma_region_register,
    .region_deregister = rdma_region_deregister,
    .region_export = rdma_region_export,
    .remote_import = rdma_remote_import,
    .remote_free = rdma_remote_free,
    .counters = rdma_counters,
    .inject_fault = rdma_inject_fault,
    .drain = rdma_drain,
    .inject_completion_error = rdma_inject_completion_error,
    .error_detail = rdma_error_detail,
    .region_budget = rdma_region_budget,
    .set_send_timeout = rdma_set_send_timeout,
};
