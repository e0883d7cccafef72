/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to verbs/: the Vb object layouts over the libibverbs/librdmacm handles. Only the
 * .c files of verbs/ include this, and with it the ibverbs and rdma_cm headers.
 */
#pragma once
#include "vb.h"

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#define VB_LOG_DOMAIN "mfrdma-verbs"

/* Either wraps a context from librdmacm's device list (kept in `list` until free) or borrows
 * a cm_id's context (list NULL). Never closes the context: librdmacm owns it. */
struct VbDevice {
    struct ibv_context *ctx;
    struct ibv_context **list;
    VbDeviceAttr attr;
};

/* Owns the ibv_pd; borrows the device (which must outlive it). */
struct VbPd {
    struct ibv_pd *pd;
    VbDevice *dev;
};

struct VbCq {
    struct ibv_comp_channel *channel;
    struct ibv_cq *cq;
    unsigned unacked_events; /* acked in batches, all before ibv_destroy_cq */
    bool armed;
};

struct VbQp {
    VbCmId *id; /* the QP is id->cm->qp; destroyed with rdma_destroy_qp */
    VbQpCaps caps;
};

struct VbMr {
    struct ibv_mr *mr;
};

/* Owns the rdma_cm_id and its private event channel; the QP (if any) is destroyed first. */
struct VbCmId {
    struct rdma_event_channel *channel;
    struct rdma_cm_id *cm;
    VbQp *qp;
    bool disconnected;    /* DISCONNECTED or DEVICE_REMOVAL seen */
    uint8_t retry_count;  /* RC transport retries carried in connect/accept (0-7) */
    char peer_str[64];
    char local_str[64];
};

void vb_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len);
/* Fill dev->attr from dev->ctx. */
void vb_device_query(VbDevice *dev);
