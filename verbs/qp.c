/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbQp: an RC queue pair created on a cm_id, sized from the device's limits. Posting takes
 * lists of VbWr so a caller rings one doorbell for a batch of WRITEs plus their SEND; a WR
 * is signaled only when the caller gives it a VbCqe (selective signaling).
 */
#include "vb-priv.h"

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

/* VbSge is passed to the provider as struct ibv_sge without copying. */
G_STATIC_ASSERT(sizeof(VbSge) == sizeof(struct ibv_sge));
G_STATIC_ASSERT(offsetof(VbSge, addr) == offsetof(struct ibv_sge, addr));
G_STATIC_ASSERT(offsetof(VbSge, length) == offsetof(struct ibv_sge, length));
G_STATIC_ASSERT(offsetof(VbSge, lkey) == offsetof(struct ibv_sge, lkey));

#define VB_POST_CHAIN_MAX 64

static uint32_t vb_clamp(uint32_t want, int limit, uint32_t dflt)
{
    if (want == 0) {
        want = dflt;
    }
    if (limit > 0 && want > (uint32_t)limit) {
        want = (uint32_t)limit;
    }
    return want;
}

VbQp *vb_qp_new(VbCmId *id, VbPd *pd, VbCq *cq, const VbQpCaps *want, GError **error)
{
    const VbDeviceAttr *da = &pd->dev->attr;
    if (id->qp) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "cm_id %s already has a QP",
                    vb_cm_peer_str(id));
        return NULL;
    }
    struct ibv_qp_init_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.qp_type = IBV_QPT_RC;
    attr.send_cq = cq->cq;
    attr.recv_cq = cq->cq;
    attr.sq_sig_all = 0;
    attr.cap.max_send_wr = vb_clamp(want->max_send_wr, da->max_qp_wr, 128);
    attr.cap.max_recv_wr = vb_clamp(want->max_recv_wr, da->max_qp_wr, 32);
    attr.cap.max_send_sge = vb_clamp(want->max_send_sge, da->max_sge, 1);
    attr.cap.max_recv_sge = vb_clamp(want->max_recv_sge, da->max_sge, 1);
    /* The device does not report its inline limit: ask, and halve until the provider agrees. */
    uint32_t inl = want->max_inline;
    for (;;) {
        attr.cap.max_inline_data = inl;
        if (rdma_create_qp(id->cm, pd->pd, &attr) == 0) {
            break;
        }
        int e = errno;
        if (inl == 0 || (e != EINVAL && e != ENOMEM)) {
            vb_set_error_errno(error, e,
                               "%s: create RC QP (send_wr %u, recv_wr %u, send_sge %u, "
                               "inline %u) for %s", da->name, attr.cap.max_send_wr,
                               attr.cap.max_recv_wr, attr.cap.max_send_sge, inl,
                               vb_cm_peer_str(id));
            return NULL;
        }
        inl /= 2;
    }
    VbQp *qp = g_new0(VbQp, 1);
    qp->id = id;
    /* rdma_create_qp writes back what the provider granted. */
    qp->caps.max_send_wr = attr.cap.max_send_wr;
    qp->caps.max_recv_wr = attr.cap.max_recv_wr;
    qp->caps.max_send_sge = attr.cap.max_send_sge;
    qp->caps.max_recv_sge = attr.cap.max_recv_sge;
    qp->caps.max_inline = attr.cap.max_inline_data;
    id->qp = qp;
    return qp;
}

void vb_qp_free(VbQp *qp)
{
    if (!qp) {
        return;
    }
    if (qp->id) {
        if (qp->id->cm->qp) {
            rdma_destroy_qp(qp->id->cm);
        }
        qp->id->qp = NULL;
    }
    g_free(qp);
}

const VbQpCaps *vb_qp_caps(const VbQp *qp)
{
    return &qp->caps;
}

bool vb_qp_query_rc(VbQp *qp, VbQpRc *out, GError **error)
{
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr init;
    int ret = ibv_query_qp(qp->id->cm->qp, &a, IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                           IBV_QP_RNR_RETRY, &init);
    if (ret != 0) {
        vb_set_error_errno(error, ret, "query QP of %s", vb_cm_peer_str(qp->id));
        return false;
    }
    out->retry_count = a.retry_cnt;
    out->rnr_retry = a.rnr_retry;
    out->ack_timeout = a.timeout;
    return true;
}

int vb_qp_post_list(VbQp *qp, const VbWr *wrs, unsigned n)
{
    struct ibv_send_wr wr[VB_POST_CHAIN_MAX];
    struct ibv_qp *q = qp->id->cm->qp;
    while (n > 0) {
        unsigned chunk = MIN(n, VB_POST_CHAIN_MAX);
        for (unsigned i = 0; i < chunk; i++) {
            const VbWr *w = &wrs[i];
            struct ibv_send_wr *x = &wr[i];
            memset(x, 0, sizeof(*x));
            x->wr_id = (uintptr_t)w->cqe;
            x->next = i + 1 < chunk ? &wr[i + 1] : NULL;
            x->sg_list = (struct ibv_sge *)(uintptr_t)w->sge;
            x->num_sge = (int)w->nsge;
            if (w->opcode == VB_WR_WRITE) {
                x->opcode = w->has_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
                x->wr.rdma.remote_addr = w->remote_addr;
                x->wr.rdma.rkey = w->rkey;
            } else {
                x->opcode = w->has_imm ? IBV_WR_SEND_WITH_IMM : IBV_WR_SEND;
            }
            if (w->has_imm) {
                x->imm_data = htobe32(w->imm);
            }
            if (w->signaled) {
                x->send_flags |= IBV_SEND_SIGNALED;
            }
            if (w->inline_data) {
                x->send_flags |= IBV_SEND_INLINE;
            }
        }
        struct ibv_send_wr *bad = NULL;
        int ret = ibv_post_send(q, wr, &bad);
        if (ret != 0) {
            return vb_errno_ret(ret);
        }
        wrs += chunk;
        n -= chunk;
    }
    return 0;
}

int vb_qp_post_write(VbQp *qp, const VbSge *sge, unsigned nsge, uint64_t remote_addr,
                     uint32_t rkey, VbCqe *signal)
{
    VbWr w = { .opcode = VB_WR_WRITE, .sge = sge, .nsge = nsge, .remote_addr = remote_addr,
               .rkey = rkey, .signaled = signal != NULL, .cqe = signal };
    return vb_qp_post_list(qp, &w, 1);
}

int vb_qp_post_send(VbQp *qp, const VbSge *sge, unsigned nsge, bool has_imm, uint32_t imm,
                    VbCqe *signal)
{
    uint64_t len = 0;
    for (unsigned i = 0; i < nsge; i++) {
        len += sge[i].length;
    }
    VbWr w = { .opcode = VB_WR_SEND, .sge = sge, .nsge = nsge, .has_imm = has_imm,
               .imm = imm, .signaled = signal != NULL, .cqe = signal,
               .inline_data = len > 0 && len <= qp->caps.max_inline };
    return vb_qp_post_list(qp, &w, 1);
}

int vb_qp_post_recv(VbQp *qp, const VbSge *sge, unsigned nsge, VbCqe *cqe)
{
    struct ibv_recv_wr wr = {
        .wr_id = (uintptr_t)cqe,
        .sg_list = (struct ibv_sge *)(uintptr_t)sge,
        .num_sge = (int)nsge,
    };
    struct ibv_recv_wr *bad = NULL;
    return vb_errno_ret(ibv_post_recv(qp->id->cm->qp, &wr, &bad));
}

int vb_qp_to_error(VbQp *qp)
{
    struct ibv_qp_attr attr = { .qp_state = IBV_QPS_ERR };
    return vb_errno_ret(ibv_modify_qp(qp->id->cm->qp, &attr, IBV_QP_STATE));
}
