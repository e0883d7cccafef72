/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbCq: a completion queue with its own completion channel. Consumers poll with a budget and
 * only arm + sleep on the channel fd when the queue is idle. Each completion is dispatched
 * to the VbCqe whose address was the wr_id; its status is always passed on, never dropped.
 */
#include "vb-priv.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>

#define VB_CQ_BATCH 16
#define VB_CQ_ACK_BATCH 64

VbCq *vb_cq_new(VbDevice *dev, int depth, GError **error)
{
    g_autoptr(VbCq) cq = g_new0(VbCq, 1);
    if (depth > dev->attr.max_cqe && dev->attr.max_cqe > 0) {
        depth = dev->attr.max_cqe;
    }
    cq->channel = ibv_create_comp_channel(dev->ctx);
    if (!cq->channel) {
        vb_set_error_errno(error, errno, "%s: create completion channel", dev->attr.name);
        return NULL;
    }
    int fl = fcntl(cq->channel->fd, F_GETFL);
    if (fl < 0 || fcntl(cq->channel->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        vb_set_error_errno(error, errno, "%s: completion channel non-blocking", dev->attr.name);
        return NULL;
    }
    cq->cq = ibv_create_cq(dev->ctx, depth, NULL, cq->channel, 0);
    if (!cq->cq) {
        vb_set_error_errno(error, errno, "%s: create CQ of %d entries", dev->attr.name, depth);
        return NULL;
    }
    return g_steal_pointer(&cq);
}

void vb_cq_free(VbCq *cq)
{
    if (!cq) {
        return;
    }
    if (cq->cq) {
        /* ibv_destroy_cq waits for every event to be acked: ack what we consumed. */
        if (cq->unacked_events) {
            ibv_ack_cq_events(cq->cq, cq->unacked_events);
        }
        int ret = ibv_destroy_cq(cq->cq);
        if (ret != 0) {
            g_log(VB_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "destroy CQ: %s", g_strerror(ret));
        }
    }
    if (cq->channel) {
        ibv_destroy_comp_channel(cq->channel);
    }
    g_free(cq);
}

const char *vb_wc_status_str(int status)
{
    return ibv_wc_status_str((enum ibv_wc_status)status);
}

static VbWcOpcode vb_wc_opcode(enum ibv_wc_opcode op)
{
    if (op & IBV_WC_RECV) {
        return VB_WC_RECV;
    }
    switch (op) {
    case IBV_WC_SEND: return VB_WC_SEND;
    case IBV_WC_RDMA_WRITE: return VB_WC_RDMA_WRITE;
    case IBV_WC_RDMA_READ: return VB_WC_RDMA_READ;
    default: return VB_WC_OTHER;
    }
}

int vb_cq_poll(VbCq *cq, int budget)
{
    struct ibv_wc wc[VB_CQ_BATCH];
    int total = 0;
    while (total < budget) {
        int want = MIN(budget - total, VB_CQ_BATCH);
        int n = ibv_poll_cq(cq->cq, want, wc);
        if (n < 0) {
            return total ? total : -EIO;
        }
        for (int i = 0; i < n; i++) {
            VbWc v = {
                .status = wc[i].status,
                .status_str = ibv_wc_status_str(wc[i].status),
                .opcode = wc[i].status == IBV_WC_SUCCESS ? vb_wc_opcode(wc[i].opcode)
                                                         : VB_WC_OTHER,
                .byte_len = wc[i].byte_len,
                .has_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) != 0,
                .imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? be32toh(wc[i].imm_data) : 0,
                .vendor_err = wc[i].vendor_err,
            };
            VbCqe *cqe = (VbCqe *)(uintptr_t)wc[i].wr_id;
            if (cqe) {
                cqe->done(cqe, &v);
            } else if (v.status != IBV_WC_SUCCESS) {
                /* Only an unsignaled WR posted without a VbCqe gets here: a caller bug. */
                g_log(VB_LOG_DOMAIN, G_LOG_LEVEL_WARNING,
                      "error completion without a VbCqe (qp 0x%x): %s", wc[i].qp_num,
                      v.status_str);
            }
        }
        total += n;
        if (n < want) {
            break;
        }
    }
    return total;
}

int vb_cq_arm(VbCq *cq)
{
    return vb_errno_ret(ibv_req_notify_cq(cq->cq, 0));
}

int vb_cq_fd(const VbCq *cq)
{
    return cq->channel->fd;
}

int vb_cq_consume_event(VbCq *cq)
{
    struct ibv_cq *ev_cq;
    void *ev_ctx;
    if (ibv_get_cq_event(cq->channel, &ev_cq, &ev_ctx) != 0) {
        return errno == EAGAIN ? 0 : -errno;
    }
    cq->unacked_events++;
    if (cq->unacked_events >= VB_CQ_ACK_BATCH) {
        ibv_ack_cq_events(cq->cq, cq->unacked_events);
        cq->unacked_events = 0;
    }
    return 1;
}

int vb_cq_wait(VbCq *cq, int budget, int timeout_ms, int wake_fd)
{
    int n = vb_cq_poll(cq, budget);
    if (n != 0) {
        return n;
    }
    int ret = vb_cq_arm(cq);
    if (ret < 0) {
        return ret;
    }
    /* A completion may have landed between the poll and the arm: poll once more. */
    n = vb_cq_poll(cq, budget);
    if (n != 0) {
        return n;
    }
    struct pollfd pfd[2] = {
        { .fd = cq->channel->fd, .events = POLLIN },
        { .fd = wake_fd, .events = POLLIN },
    };
    ret = poll(pfd, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (ret < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    if (pfd[0].revents & POLLIN) {
        ret = vb_cq_consume_event(cq);
        if (ret < 0) {
            return ret;
        }
    }
    return vb_cq_poll(cq, budget);
}
