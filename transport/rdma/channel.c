/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA channel lifecycle: building a channel around a cm_id (CQ, QP, rings, every RECV
 * posted), the failure latch, progress (poll the CQ, arm, sleep on the completion,
 * CM and wake fds), drain, shutdown, close and the small accessors and test seams.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------ channel: completions */

bool xp_rdma_ch_move(RdmaChannel *ch, RdmaChState to)
{
    if (!xp_rdma_ch_state_allowed(ch->state, to)) {
        g_debug("rdma channel %s: %s, %s ignored", ch->peer, xp_rdma_ch_state_str(ch->state),
                xp_rdma_ch_state_str(to));
        return false;
    }
    ch->state = to;
    return true;
}

void xp_rdma_fail(RdmaChannel *ch, int err, const char *what, const char *detail)
{
    if (xp_rdma_ch_move(ch, RDMA_CH_FAILED)) {
        ch->err = err;
        ch->err_detail = g_strdup_printf("%s failed: %s", what, detail);
        g_warning("rdma channel %s: %s", ch->peer, ch->err_detail);
    }
}

/* Common to every completion: false if it failed (the channel is failed or at EOF). */
bool xp_rdma_wc_ok(RdmaChannel *ch, const VbWc *wc, const char *what)
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
    xp_rdma_fail(ch, -EIO, what, detail);
    return false;
}

int xp_rdma_poll_cq(RdmaChannel *ch)
{
    int n = vb_cq_poll(ch->cq, RDMA_POLL_BUDGET);
    ch->ctr.polls++;
    if (n == 0) {
        ch->ctr.idle_polls++;
    } else if (n < 0) {
        xp_rdma_fail(ch, n, "poll CQ", g_strerror(-n));
    }
    return n;
}

/* ------------------------------------------------------------------ channel: progress */

static void xp_rdma_handle_cm_events(RdmaChannel *ch)
{
    for (;;) {
        VbCmEvent ev;
        g_autoptr(GError) err = NULL;
        if (!vb_cm_next_event(ch->id, 0, -1, &ev, &err)) {
            if (!g_error_matches(err, VB_ERROR, VB_ERROR_TIMEOUT)) {
                xp_rdma_fail(ch, -EIO, "read CM event", err->message);
            }
            return;
        }
        switch (ev.step) {
        case VB_CM_DISCONNECTED:
            xp_rdma_ch_move(ch, RDMA_CH_PEER_GONE);
            /* Our QP to error too: posted RECVs flush after everything already received. */
            vb_cm_disconnect(ch->id);
            break;
        case VB_CM_DEVICE_REMOVAL:
            xp_rdma_fail(ch, -ENODEV, "device", "DEVICE_REMOVAL");
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

/* With ch->lock held. One round of progress: poll the CQ; when idle, arm and sleep on the
 * completion channel, the CM channel and the wake fd until deadline (monotonic us, -1 =
 * forever). Only one thread sleeps on the fds; others wait for its round on ch->cond.
 * Returns -ETIMEDOUT when the deadline passed without anything happening. */
int xp_rdma_progress(RdmaChannel *ch, gint64 deadline)
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
    int n = xp_rdma_poll_cq(ch);
    if (n == 0 && !xp_rdma_ch_stopped(ch)) {
        int ret = vb_cq_arm(ch->cq);
        if (ret < 0) {
            xp_rdma_fail(ch, ret, "arm CQ", g_strerror(-ret));
        }
        n = xp_rdma_poll_cq(ch); /* a completion may have slipped in before the arm */
    }
    if (n == 0 && !xp_rdma_ch_stopped(ch)) { /* the arm may have failed it */
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
            xp_rdma_handle_cm_events(ch);
        }
        xp_rdma_poll_cq(ch);
    }
    ch->polling = false;
    g_cond_broadcast(&ch->cond);
    xp_rdma_maybe_return_credits(ch);
    return timed_out ? -ETIMEDOUT : 0;
}

/* Test seams, checked on every message: a plain load first, so the data path pays no
 * atomic read-modify-write (and no cache-line ownership) while no fault is pending. */
int xp_rdma_take_fault(RdmaChannel *ch)
{
    if (atomic_load_explicit(&ch->inject, memory_order_relaxed) == 0) {
        return 0;
    }
    return atomic_exchange(&ch->inject, 0);
}

/* ------------------------------------------------------------------ channel: lifetime */

void xp_rdma_channel_destroy(RdmaChannel *ch)
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

/* The send-queue marks and the WR/SGE batch sized by the QP's granted caps, the receive ring
 * and the send buffers (one MR each), and every RECV posted. */
static bool xp_rdma_channel_rings(RdmaChannel *ch, GError **error)
{
    GError *local = NULL;
    ch->unsignaled_cqe.done = xp_rdma_unsignaled_done;
    ch->marks = g_new0(RdmaSqMark, ch->caps.max_send_wr);
    for (unsigned i = 0; i < ch->caps.max_send_wr; i++) {
        ch->marks[i].cqe.done = xp_rdma_sq_done;
        ch->marks[i].ch = ch;
    }
    ch->sges = g_new0(VbSge, (size_t)(RDMA_WR_BATCH + 1) * ch->caps.max_send_sge);
    if (posix_memalign((void **)&ch->recv_buf, 4096, (size_t)RDMA_RECV_RING * XP_MSG_MAX) ||
        posix_memalign((void **)&ch->send_buf, 4096, (size_t)RDMA_SEND_BUFS * XP_MSG_MAX)) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "out of memory for %s buffers",
                    ch->peer);
        return false;
    }
    ch->recv_mr = vb_mr_reg(ch->dom->pd, ch->recv_buf, (size_t)RDMA_RECV_RING * XP_MSG_MAX,
                            VB_ACCESS_LOCAL_WRITE, &local);
    if (!ch->recv_mr) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    ch->send_mr = vb_mr_reg(ch->dom->pd, ch->send_buf, (size_t)RDMA_SEND_BUFS * XP_MSG_MAX, 0,
                            &local);
    if (!ch->send_mr) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    for (unsigned i = 0; i < RDMA_RECV_RING; i++) {
        ch->recv[i] = (RdmaRecvSlot){ .cqe.done = xp_rdma_recv_done, .ch = ch, .idx = i };
        int ret = xp_rdma_post_recv_slot(ch, i);
        if (ret != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "post RECV for %s: %s", ch->peer,
                        g_strerror(-ret));
            return false;
        }
    }
    return true;
}

/* Build the channel around a resolved (connector) or requested (acceptor) cm_id: CQ, QP on
 * the domain PD, buffers, and every RECV posted before the connection can carry a SEND. */
RdmaChannel *xp_rdma_channel_new(RdmaDomain *d, VbCmId *id, const XpOptions *opts,
                                 GError **error)
{
    RdmaChannel *ch = g_new0(RdmaChannel, 1);
    ch->base.ops = &xp_rdma_ops;
    ch->dom = d;
    ch->id = id;
    ch->wake_fd = -1;
    ch->state = RDMA_CH_CONNECTING;
    ch->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    ch->send_timeout_ms = -1;
    ch->send_deadline = -1;
    g_mutex_init(&ch->lock);
    g_cond_init(&ch->cond);
    ch->peer = xp_rdma_uri_of(vb_cm_peer_str(id));
    GError *local = NULL;
    ch->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ch->wake_fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "eventfd for %s: %s", ch->peer,
                    g_strerror(errno));
        goto fail;
    }
    if (!xp_rdma_domain_bind(d, id, error) || !xp_rdma_check_overrides(opts, id, error)) {
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
    if (!xp_rdma_channel_rings(ch, error)) {
        goto fail;
    }
    ch->credits = RDMA_RECV_RING; /* the peer posted the same ring before connecting */
    return ch;

fail_vb:
    xp_rdma_propagate(error, local, NULL);
fail:
    ch->id = NULL; /* the caller still owns id on failure */
    vb_qp_free(ch->qp);
    ch->qp = NULL;
    xp_rdma_channel_destroy(ch);
    return NULL;
}

/* With ch->lock held: progress until every posted WR completed, the channel left
 * ESTABLISHED (failed, shut down, peer gone, flushed) or deadline passed (-ETIMEDOUT). */
int xp_rdma_wait_sq_done(RdmaChannel *ch, gint64 deadline)
{
    while (ch->sq_done < ch->sq_posted && ch->state == RDMA_CH_ESTABLISHED) {
        if (xp_rdma_progress(ch, deadline) == -ETIMEDOUT && ch->sq_done < ch->sq_posted) {
            return -ETIMEDOUT;
        }
    }
    return 0;
}

int xp_rdma_drain(XpChannel *xc, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    gint64 deadline = timeout_ms < 0 ? -1
                                     : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&ch->lock);
    int ret = xp_rdma_wait_sq_done(ch, deadline);
    if (ret == 0) {
        ret = xp_rdma_send_check(ch);
    }
    g_mutex_unlock(&ch->lock);
    return ret;
}

void xp_rdma_shutdown(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    xp_rdma_ch_move(ch, RDMA_CH_SHUT); /* a FAILED channel stays FAILED, and is woken too */
    g_mutex_unlock(&ch->lock);
    /* After the move: a poller that wakes from this sees the state. Both steps may repeat
     * harmlessly (the eventfd only counts up; a second disconnect fails with EINVAL). */
    uint64_t one = 1;
    ssize_t r = write(ch->wake_fd, &one, sizeof(one));
    (void)r; /* an eventfd write only fails on overflow, which needs 2^64 - 1 writes */
    /* The peer sees DISCONNECTED; our posted work flushes. */
    vb_cm_disconnect(ch->id);
}

void xp_rdma_close(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    if (!ch) {
        return;
    }
    g_mutex_lock(&ch->lock);
    if (ch->state == RDMA_CH_ESTABLISHED) {
        /* Like a socket close: messages already sent still get delivered (their SENDs are
         * acknowledged, i.e. in the peer's CQ) before we disconnect. Bounded. */
        xp_rdma_wait_sq_done(ch, g_get_monotonic_time() + RDMA_CLOSE_DRAIN_MS * 1000);
    }
    bool disconnect = xp_rdma_ch_state_disconnects(ch->state);
    g_mutex_unlock(&ch->lock);
    if (disconnect) {
        vb_cm_disconnect(ch->id);
    }
    xp_rdma_channel_destroy(ch);
}

const char *xp_rdma_peer(XpChannel *xc)
{
    return ((RdmaChannel *)xc)->peer;
}

bool xp_rdma_channel_rc(XpChannel *xc, unsigned *retry, unsigned *rnr_retry,
                        unsigned *ack_timeout, GError **error)
{
    VbQpRc rc;
    GError *local = NULL;
    if (!vb_qp_query_rc(((RdmaChannel *)xc)->qp, &rc, &local)) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    *retry = rc.retry_count;
    *rnr_retry = rc.rnr_retry;
    *ack_timeout = rc.ack_timeout;
    return true;
}

void xp_rdma_counters(XpChannel *xc, XpCounters *out)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    *out = ch->ctr;
    g_mutex_unlock(&ch->lock);
}

void xp_rdma_set_send_timeout(XpChannel *xc, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    ch->send_timeout_ms = timeout_ms;
    g_mutex_unlock(&ch->lock);
}

void xp_rdma_inject_fault(XpChannel *xc, int err)
{
    atomic_store(&((RdmaChannel *)xc)->inject, err);
}

void xp_rdma_inject_completion_error(XpChannel *xc)
{
    atomic_store(&((RdmaChannel *)xc)->inject_bad_rkey, true);
}

const char *xp_rdma_error_detail(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    g_mutex_lock(&ch->lock);
    const char *d = ch->err_detail; /* never changes once set, freed only with ch */
    g_mutex_unlock(&ch->lock);
    return d;
}
