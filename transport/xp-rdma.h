/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The RDMA backend's entry points beyond the generic XpOps: its ops table (for the registry
 * in xp.c), a diagnostic helper tests use, and the device descriptions `mfrdma devices`
 * prints. Implemented in transport/rdma/. libmfrdma exports xp_rdma_devices() for the tool
 * (version node MFRDMA_INTERNAL: not part of the public API, see libmfrdma.map).
 */
#pragma once

#include "xp.h"

G_BEGIN_DECLS

extern const XpOps xp_rdma_ops;

/* The RC parameters channel ch's QP runs with (ch must be an rdma channel). */
bool xp_rdma_channel_rc(XpChannel *ch, unsigned *retry, unsigned *rnr_retry,
                        unsigned *ack_timeout, GError **error);

/* One GID table entry of a port. */
typedef struct {
    int index;
    char type[16];   /* "IB", "RoCE v1", "RoCE v2" */
    char addr[64];   /* the 16 GID bytes as IPv6 text */
    char netdev[32]; /* network interface, "" if none */
} XpRdmaGid;

typedef struct {
    int num;
    bool active;
    char state[16];      /* "ACTIVE", "DOWN", ... */
    char link_layer[16]; /* "InfiniBand", "Ethernet" */
    int active_mtu, max_mtu; /* bytes */
    GArray *gids;        /* XpRdmaGid */
} XpRdmaPort;

/* What migration cares about in one RDMA device. */
typedef struct {
    char name[64];
    char transport[16];  /* "IB/RoCE", "iWARP" */
    int numa_node;       /* -1 unknown */
    uint64_t node_guid;  /* host order */
    int max_qp, max_qp_wr, max_sge, max_cqe, max_mr;
    uint64_t max_mr_size;
    bool odp;            /* general on-demand paging support */
    bool odp_rc_send, odp_rc_recv, odp_rc_write, odp_rc_read, odp_implicit;
    GArray *ports;       /* XpRdmaPort */
} XpRdmaDevice;

/* Every RDMA device (XpRdmaDevice, freed with the array); an empty array, not an error,
 * when there is none. */
GPtrArray *xp_rdma_devices(GError **error);

G_END_DECLS
