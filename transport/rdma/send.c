/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA send side: send-queue marks and their completions, credit returns, building WRITE
 * lists of a message's segments and posting them with the message's SEND in one chain.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <errno.h>
#include <string.h>

void xp_rdma_sq_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaSqMark *m = vb_container_of(cqe, RdmaSqMark, cqe);
    RdmaChannel *ch = m->ch;
    ch->sq_done = m->seq;
    if (m->uses_buf) {
        g_assert(ch->sbuf_busy > 0);
        ch->sbuf_busy--;
    }
    xp_rdma_wc_ok(ch, wc, "send");
}

void xp_rdma_unsignaled_done(VbCqe *cqe, const VbWc *wc)
{
    RdmaChannel *ch = vb_container_of(cqe, RdmaChannel, unsignaled_cqe);
    xp_rdma_wc_ok(ch, wc, "RDMA WRITE");
}

static int xp_rdma_sq_free(RdmaChannel *ch)
{
    return (int)(ch->caps.max_send_wr - (unsigned)(ch->sq_posted - ch->sq_done));
}

static RdmaSqMark *xp_rdma_mark(RdmaChannel *ch, uint64_t seq, bool uses_buf)
{
    RdmaSqMark *m = &ch->marks[seq % ch->caps.max_send_wr];
    m->seq = seq;
    m->uses_buf = uses_buf;
    return m;
}

/* Return credits with a zero-length SEND when the peer may be starving. Keeps going without
 * it when there is no room: the next message carries them anyway. */
void xp_rdma_maybe_return_credits(RdmaChannel *ch)
{
    if (ch->credits_owed < RDMA_RECV_RING / 2 || ch->credits < 1 ||
        ch->state != RDMA_CH_ESTABLISHED || xp_rdma_sq_free(ch) < 1) {
        return;
    }
    uint64_t seq = ch->sq_posted + 1;
    VbWr w = { .opcode = VB_WR_SEND, .has_imm = true,
               .imm = xp_rdma_wire_pack_imm(ch->credits_owed, true), .signaled = true,
               .cqe = &xp_rdma_mark(ch, seq, false)->cqe };
    int ret = vb_qp_post_list(ch->qp, &w, 1);
    if (ret != 0) {
        xp_rdma_fail(ch, ret, "post credit SEND", g_strerror(-ret));
        return;
    }
    ch->sq_posted = seq;
    ch->since_signal = 0;
    ch->credits--;
    ch->credits_owed = 0;
    ch->ctr.wrs_posted++;
    ch->ctr.doorbells++;
}

/* ------------------------------------------------------------------ channel: send */

int xp_rdma_send_check(RdmaChannel *ch)
{
    if (ch->state == RDMA_CH_FAILED) {
        return ch->err;
    }
    if (ch->state != RDMA_CH_ESTABLISHED) {
        return -EPIPE;
    }
    return 0;
}

/* Wait for `slots` free send-queue entries (and, if want_send, a credit and a buffer), until
 * the send's deadline: -ETIMEDOUT when a peer that stopped reading holds back its credits. */
static int xp_rdma_wait_send_room(RdmaChannel *ch, unsigned slots, bool want_send, bool want_buf)
{
    for (;;) {
        int ret = xp_rdma_send_check(ch);
        if (ret) {
            return ret;
        }
        bool ok = xp_rdma_sq_free(ch) >= (int)slots;
        /* Keep one credit back for a credit-only SEND, so two senders never deadlock. */
        ok = ok && (!want_send || ch->credits >= 2);
        ok = ok && (!want_buf || ch->sbuf_busy < RDMA_SEND_BUFS);
        if (ok) {
            return 0;
        }
        xp_rdma_progress(ch, ch->send_deadline);
        /* checked here, not by progress's result: the peer's keepalives are progress too */
        if (ch->send_deadline >= 0 && g_get_monotonic_time() >= ch->send_deadline) {
            return -ETIMEDOUT;
        }
    }
}

/* Post the pending WRITEs (ch->wrs[0..nwr)) plus, if send is not NULL, that SEND after them,
 * as one chain. `more` says more WRITEs follow, so the last one must free slots. */
static int xp_rdma_flush(RdmaChannel *ch, VbWr *send, bool send_uses_buf, bool more)
{
    unsigned n = ch->nwr + (send ? 1 : 0);
    if (n == 0) {
        return 0;
    }
    for (unsigned i = 0; i < ch->nwr; i++) {
        ch->since_signal++;
        bool last = i + 1 == ch->nwr;
        if (ch->since_signal >= RDMA_SIGNAL_EVERY || (last && more && !send)) {
            ch->wrs[i].cqe = &xp_rdma_mark(ch, ch->sq_posted + i + 1, false)->cqe;
            ch->wrs[i].signaled = true;
            ch->since_signal = 0;
        } else {
            ch->wrs[i].cqe = &ch->unsignaled_cqe; /* only sees it if it fails */
            ch->wrs[i].signaled = false;
        }
    }
    if (send) {
        /* Every message SEND is signaled: it frees its buffer and retires the WRITEs. */
        send->cqe = &xp_rdma_mark(ch, ch->sq_posted + n, send_uses_buf)->cqe;
        send->signaled = true;
        ch->wrs[ch->nwr] = *send;
        ch->since_signal = 0;
    }
    int ret = vb_qp_post_list(ch->qp, ch->wrs, n);
    if (ret != 0) {
        xp_rdma_fail(ch, ret, "post send queue", g_strerror(-ret));
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
static int xp_rdma_add_piece(RdmaChannel *ch, const uint8_t *addr, uint32_t len, uint32_t lkey,
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
        int ret = xp_rdma_wait_send_room(ch, ch->nwr, false, false);
        if (ret == 0) {
            ret = xp_rdma_flush(ch, NULL, false, true);
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

static bool xp_rdma_take_bad_rkey(RdmaChannel *ch)
{
    return atomic_load_explicit(&ch->inject_bad_rkey, memory_order_relaxed) &&
           atomic_exchange(&ch->inject_bad_rkey, false);
}

int xp_rdma_send_msg(XpChannel *xc, const void *msg, size_t len, const XpSeg *segs,
                     unsigned nsegs)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    int inj = xp_rdma_take_fault(ch);
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
    uint32_t rkey_xor = nsegs && xp_rdma_take_bad_rkey(ch) ? 0x5a5a5a5au : 0;
    g_mutex_lock(&ch->lock);
    ch->send_deadline = ch->send_timeout_ms < 0
                            ? -1 : g_get_monotonic_time() + (gint64)ch->send_timeout_ms * 1000;
    int ret = ch->send_timed_out ? -ETIMEDOUT : xp_rdma_send_check(ch);
    for (unsigned i = 0; ret == 0 && i < nsegs; i++) {
        const RdmaRemote *r = (const RdmaRemote *)segs[i].remote;
        uint32_t lkey = vb_mr_lkey(((const RdmaRegion *)segs[i].region)->mr);
        const uint8_t *a = segs[i].addr;
        uint64_t raddr = r->addr + segs[i].remote_offset;
        for (size_t off = 0; ret == 0 && off < segs[i].len;) {
            uint32_t piece = (uint32_t)MIN(segs[i].len - off, (size_t)ch->max_wr_bytes);
            ret = xp_rdma_add_piece(ch, a + off, piece, lkey, raddr + off, r->rkey ^ rkey_xor);
            off += piece;
        }
    }
    bool inl = len > 0 && len <= ch->caps.max_inline;
    if (ret == 0) {
        ret = xp_rdma_wait_send_room(ch, ch->nwr + 1, true, !inl && len > 0);
    }
    if (ret == 0) {
        VbSge sge;
        VbWr send = { .opcode = VB_WR_SEND, .sge = &sge, .nsge = len > 0, .has_imm = true,
                      .imm = xp_rdma_wire_pack_imm(ch->credits_owed, false), .inline_data = inl };
        bool uses_buf = !inl && len > 0;
        if (inl) {
            sge = (VbSge){ .addr = (uintptr_t)msg, .length = (uint32_t)len };
        } else if (uses_buf) {
            uint8_t *b = ch->send_buf + (size_t)ch->sbuf_head * XP_MSG_MAX;
            memcpy(b, msg, len);
            sge = (VbSge){ .addr = (uintptr_t)b, .length = (uint32_t)len,
                           .lkey = vb_mr_lkey(ch->send_mr) };
        }
        ret = xp_rdma_flush(ch, &send, uses_buf, false);
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
