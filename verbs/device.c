/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbDevice: a verbs context and its limits. Contexts come from librdmacm (rdma_get_devices or
 * a resolved cm_id) so that PDs, CQs and MRs made here work with QPs created on cm_ids.
 */
#include "vb-priv.h"

#include <errno.h>
#include <string.h>

void vb_device_query(VbDevice *dev)
{
    VbDeviceAttr *a = &dev->attr;
    g_strlcpy(a->name, ibv_get_device_name(dev->ctx->device), sizeof(a->name));
    struct ibv_device_attr_ex ex;
    memset(&ex, 0, sizeof(ex));
    if (ibv_query_device_ex(dev->ctx, NULL, &ex) != 0) {
        /* Old providers: fall back to the basic query, ODP then reads as unsupported. */
        if (ibv_query_device(dev->ctx, &ex.orig_attr) != 0) {
            g_log(VB_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "%s: ibv_query_device failed: %s",
                  a->name, g_strerror(errno));
        }
    }
    const struct ibv_device_attr *o = &ex.orig_attr;
    a->node_guid = o->node_guid;
    a->max_mr_size = o->max_mr_size;
    a->max_qp = o->max_qp;
    a->max_qp_wr = o->max_qp_wr;
    a->max_sge = o->max_sge;
    a->max_cqe = o->max_cqe;
    a->max_mr = o->max_mr;
    a->max_qp_rd_atom = o->max_qp_rd_atom;
    a->phys_port_cnt = o->phys_port_cnt;
    a->odp = (ex.odp_caps.general_caps & IBV_ODP_SUPPORT) != 0;
    uint32_t rc = ex.odp_caps.per_transport_caps.rc_odp_caps;
    a->odp_rc_send = a->odp && (rc & IBV_ODP_SUPPORT_SEND);
    a->odp_rc_recv = a->odp && (rc & IBV_ODP_SUPPORT_RECV);
    a->odp_rc_write = a->odp && (rc & IBV_ODP_SUPPORT_WRITE);
    a->odp_rc_read = a->odp && (rc & IBV_ODP_SUPPORT_READ);
    a->odp_implicit = (ex.odp_caps.general_caps & IBV_ODP_SUPPORT_IMPLICIT) != 0;
}

static bool vb_ctx_has_active_port(struct ibv_context *ctx)
{
    struct ibv_device_attr attr;
    if (ibv_query_device(ctx, &attr) != 0) {
        return false;
    }
    for (int p = 1; p <= attr.phys_port_cnt; p++) {
        struct ibv_port_attr pa;
        if (ibv_query_port(ctx, p, &pa) == 0 && pa.state == IBV_PORT_ACTIVE) {
            return true;
        }
    }
    return false;
}

VbDevice *vb_device_open(const char *name, GError **error)
{
    int n = 0;
    struct ibv_context **list = rdma_get_devices(&n);
    if (!list) {
        vb_set_error_errno(error, errno, "rdma_get_devices");
        return NULL;
    }
    if (n == 0) {
        rdma_free_devices(list);
        g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE,
                    "no RDMA device found (is a driver loaded, e.g. `rdma link add rxe0 type "
                    "rxe netdev eth0` for soft-RoCE?)");
        return NULL;
    }
    struct ibv_context *found = NULL;
    g_autoptr(GString) names = g_string_new(NULL);
    for (int i = 0; i < n; i++) {
        const char *dn = ibv_get_device_name(list[i]->device);
        g_string_append_printf(names, "%s%s", i ? ", " : "", dn);
        if (!found && (name ? strcmp(dn, name) == 0 : vb_ctx_has_active_port(list[i]))) {
            found = list[i];
        }
    }
    if (!found) {
        rdma_free_devices(list);
        if (name) {
            g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE,
                        "RDMA device '%s' not found (present: %s)", name, names->str);
        } else {
            g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE,
                        "no RDMA device has an ACTIVE port (present: %s)", names->str);
        }
        return NULL;
    }
    VbDevice *dev = g_new0(VbDevice, 1);
    dev->ctx = found;
    dev->list = list;
    vb_device_query(dev);
    return dev;
}

void vb_device_free(VbDevice *dev)
{
    if (!dev) {
        return;
    }
    if (dev->list) {
        rdma_free_devices(dev->list);
    }
    g_free(dev);
}

const char *vb_device_name(const VbDevice *dev)
{
    return dev->attr.name;
}

const VbDeviceAttr *vb_device_attr(const VbDevice *dev)
{
    return &dev->attr;
}

static const char *vb_port_state_str(int s)
{
    switch (s) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
    default: return "UNKNOWN";
    }
}

static int vb_mtu_bytes(enum ibv_mtu m)
{
    return (m >= IBV_MTU_256 && m <= IBV_MTU_4096) ? 128 << m : 0;
}

bool vb_device_port_attr(VbDevice *dev, int port, VbPortAttr *out, GError **error)
{
    struct ibv_port_attr pa;
    int ret = ibv_query_port(dev->ctx, port, &pa);
    if (ret != 0) {
        vb_set_error_errno(error, ret, "%s: query port %d", dev->attr.name, port);
        return false;
    }
    memset(out, 0, sizeof(*out));
    out->state = pa.state;
    out->state_str = vb_port_state_str(pa.state);
    out->active = pa.state == IBV_PORT_ACTIVE;
    out->link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
    out->active_mtu = vb_mtu_bytes(pa.active_mtu);
    out->max_mtu = vb_mtu_bytes(pa.max_mtu);
    out->gid_tbl_len = pa.gid_tbl_len;
    out->lid = pa.lid;
    out->max_msg_sz = pa.max_msg_sz;
    return true;
}

bool vb_device_same(const VbDevice *a, const VbDevice *b)
{
    return a && b && a->ctx == b->ctx;
}
