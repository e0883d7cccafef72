/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA device descriptions for `mfrdma devices` and the demo's transport choice: the verbs
 * layer's descriptions turned into the transport's own types (xp-rdma.h), so the tool reads
 * them through libmfrdma without seeing verbs/.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <string.h>

static void xp_rdma_port_clear(gpointer p)
{
    XpRdmaPort *port = p;
    if (port->gids) {
        g_array_unref(port->gids);
    }
}

static void xp_rdma_device_free(gpointer p)
{
    XpRdmaDevice *d = p;
    if (d->ports) {
        g_array_unref(d->ports);
    }
    g_free(d);
}

static void xp_rdma_port_fill(XpRdmaPort *out, const VbPortInfo *pi)
{
    out->num = pi->num;
    out->active = pi->attr.active;
    g_strlcpy(out->state, pi->attr.state_str, sizeof(out->state));
    g_strlcpy(out->link_layer, pi->attr.link_layer, sizeof(out->link_layer));
    out->active_mtu = pi->attr.active_mtu;
    out->max_mtu = pi->attr.max_mtu;
    out->gids = g_array_sized_new(FALSE, TRUE, sizeof(XpRdmaGid), pi->gids->len);
    for (guint g = 0; g < pi->gids->len; g++) {
        const VbGidInfo *gi = &g_array_index(pi->gids, VbGidInfo, g);
        XpRdmaGid x = { .index = gi->index };
        g_strlcpy(x.type, gi->type, sizeof(x.type));
        g_strlcpy(x.addr, gi->addr, sizeof(x.addr));
        g_strlcpy(x.netdev, gi->netdev, sizeof(x.netdev));
        g_array_append_val(out->gids, x);
    }
}

static XpRdmaDevice *xp_rdma_device_of(const VbDevInfo *info)
{
    const VbDeviceAttr *a = &info->attr;
    XpRdmaDevice *d = g_new0(XpRdmaDevice, 1);
    g_strlcpy(d->name, a->name, sizeof(d->name));
    g_strlcpy(d->transport, info->transport, sizeof(d->transport));
    d->numa_node = info->numa_node;
    d->node_guid = GUINT64_FROM_BE(a->node_guid);
    d->max_qp = a->max_qp;
    d->max_qp_wr = a->max_qp_wr;
    d->max_sge = a->max_sge;
    d->max_cqe = a->max_cqe;
    d->max_mr = a->max_mr;
    d->max_mr_size = a->max_mr_size;
    d->odp = a->odp;
    d->odp_rc_send = a->odp_rc_send;
    d->odp_rc_recv = a->odp_rc_recv;
    d->odp_rc_write = a->odp_rc_write;
    d->odp_rc_read = a->odp_rc_read;
    d->odp_implicit = a->odp_implicit;
    d->ports = g_array_sized_new(FALSE, TRUE, sizeof(XpRdmaPort), info->ports->len);
    g_array_set_clear_func(d->ports, xp_rdma_port_clear);
    for (guint p = 0; p < info->ports->len; p++) {
        XpRdmaPort port;
        memset(&port, 0, sizeof(port));
        xp_rdma_port_fill(&port, &g_array_index(info->ports, VbPortInfo, p));
        g_array_append_val(d->ports, port);
    }
    return d;
}

GPtrArray *xp_rdma_devices(GError **error)
{
    GError *local = NULL;
    g_autoptr(GPtrArray) infos = vb_devinfo_list(&local);
    if (!infos) {
        xp_rdma_propagate(error, local, NULL);
        return NULL;
    }
    GPtrArray *out = g_ptr_array_new_with_free_func(xp_rdma_device_free);
    for (guint i = 0; i < infos->len; i++) {
        g_ptr_array_add(out, xp_rdma_device_of(infos->pdata[i]));
    }
    return out;
}
