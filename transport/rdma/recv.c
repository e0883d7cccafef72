/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA receive side: the ring of posted RECVs, their completions (credits in, messages
 * queued in arrival order), re-posting a consumed slot, and recv_msg().
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <errno.h>
#include <string.h>

int xp_rdma_post_recv_slot(RdmaChannel *ch, unsigned idx)
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
static void xp_rdma_repost(RdmaChannel *ch, unsigned idx)
{
    int ret = xp_rdma_post_recv_slot(ch, idx);
    if (ret == 0) {
        ch->credits_owed++;
    } else if (ch->state == RDMA_CH_ESTABLISHED) {
        xp_rdma_fail(ch, ret, "re-post RECV", g_strerror(-ret));
    } else {
        xp_rdma_ch_move(ch, RDMA_CH_FLUSHED); /* QP already in error: nothing more arrives */
    }
}

void xp_rdma_recv_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaRecvSlot *s = vb_container_of(cqe, RdmaRecvSlot, cqe);
    RdmaChannel *ch = s->ch;
    ch->recv_posted--;
    if (!xp_rdma_wc_ok(ch, wc, "receive")) {
        if (wc->status == VB_WC_STATUS_FLUSH) {
            xp_rdma_ch_move(ch, RDMA_CH_FLUSHED);
        }
        return;
    }
    if (wc->has_imm) {
        unsigned got;
        bool credit_only;
        if (!xp_rdma_wire_unpack_imm(wc->imm, &got, &credit_only)) {
            g_autofree char *why = g_strdup_printf("immediate data 0x%08x has reserved bits "
                                                   "set", wc->imm);
            xp_rdma_fail(ch, -EPROTO, "credit check", why);
            return;
        }
        if (ch->credits + got > RDMA_RECV_RING) {
            /* a peer returning RECVs it cannot have would make us overrun its ring */
            g_autofree char *why = g_strdup_printf("peer returned %u credits while we held %u "
                                                   "of its %u RECVs", got, ch->credits,
                                                   RDMA_RECV_RING);
            xp_rdma_fail(ch, -EPROTO, "credit check", why);
            return;
        }
        ch->credits += got;
        if (credit_only) {
            xp_rdma_repost(ch, s->idx);
            return;
        }
    }
    unsigned tail = (ch->ready_head + ch->ready_count) % RDMA_RECV_RING;
    ch->ready_idx[tail] = s->idx;
    ch->ready_len[tail] = wc->byte_len;
    ch->ready_count++;
}

/* ------------------------------------------------------------------ channel: receive */

int xp_rdma_recv_msg(XpChannel *xc, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    int inj = xp_rdma_take_fault(ch);
    if (inj) {
        return -inj;
    }
    gint64 deadline = timeout_ms < 0 ? -1
                                     : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&ch->lock);
    int ret;
    bool polled_once = false; /* timeout 0: poll the CQ once, never sleep */
    for (;;) {
        if (ch->state == RDMA_CH_FAILED) {
            ret = ch->err;
            break;
        }
        if (ch->state == RDMA_CH_SHUT || ch->state == RDMA_CH_CONNECTING) {
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
            xp_rdma_repost(ch, idx);
            xp_rdma_maybe_return_credits(ch);
            ret = 0;
            break;
        }
        if (ch->state == RDMA_CH_FLUSHED ||
            (ch->state == RDMA_CH_PEER_GONE && ch->recv_posted == 0)) {
            ret = -EPIPE;
            break;
        }
        if (timeout_ms == 0 && polled_once) {
            ret = -ETIMEDOUT;
            break;
        }
        polled_once = true;
        if (xp_rdma_progress(ch, deadline) == -ETIMEDOUT && ch->ready_count == 0 &&
            ch->state != RDMA_CH_FAILED && ch->state != RDMA_CH_FLUSHED) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    g_mutex_unlock(&ch->lock);
    return ret;
}
