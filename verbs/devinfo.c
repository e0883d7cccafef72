/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device descriptions for `mfrdma devices` and test skipping: ports, state, link layer, MTU,
 * GIDs (type, address, netdev), NUMA node and the limits that matter for migration.
 * Independent of librdmacm: opens each device briefly with libibverbs.
 */
#include "vb-priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

static void vb_port_info_clear(gpointer p)
{
    VbPortInfo *pi = p;
    if (pi->gids) {
        g_array_unref(pi->gids);
    }
}

void vb_devinfo_free(VbDevInfo *info)
{
    if (!info) {
        return;
    }
    if (info->ports) {
        g_array_unref(info->ports);
    }
    g_free(info);
}

static int vb_numa_node(const char *name)
{
    g_autofree char *path = g_strdup_printf("/sys/class/infiniband/%s/device/numa_node", name);
    g_autofree char *txt = NULL;
    if (!g_file_get_contents(path, &txt, NULL, NULL)) {
        return -1;
    }
    return atoi(txt);
}

int vb_device_numa_node(const VbDevice *dev)
{
    return vb_numa_node(vb_device_name(dev));
}

static const char *vb_gid_type_str(unsigned t)
{
    switch (t) {
    case IBV_GID_TYPE_IB: return "IB";
    case IBV_GID_TYPE_ROCE_V1: return "RoCE v1";
    case IBV_GID_TYPE_ROCE_V2: return "RoCE v2";
    default: return "?";
    }
}

static void vb_fill_gids(struct ibv_context *ctx, VbPortInfo *pi)
{
    pi->gids = g_array_new(FALSE, TRUE, sizeof(VbGidInfo));
    for (int i = 0; i < pi->attr.gid_tbl_len; i++) {
        struct ibv_gid_entry e;
        if (ibv_query_gid_ex(ctx, pi->num, i, &e, 0) != 0) {
            continue; /* empty slot (ENODATA) */
        }
        VbGidInfo g;
        memset(&g, 0, sizeof(g));
        g.index = i;
        g_strlcpy(g.type, vb_gid_type_str(e.gid_type), sizeof(g.type));
        inet_ntop(AF_INET6, e.gid.raw, g.addr, sizeof(g.addr));
        char ifname[IF_NAMESIZE];
        if (e.ndev_ifindex && if_indextoname(e.ndev_ifindex, ifname)) {
            g_strlcpy(g.netdev, ifname, sizeof(g.netdev));
        }
        g_array_append_val(pi->gids, g);
    }
}

static VbDevInfo *vb_describe(struct ibv_device *d, GError **error)
{
    struct ibv_context *ctx = ibv_open_device(d);
    if (!ctx) {
        vb_set_error_errno(error, errno, "open RDMA device %s", ibv_get_device_name(d));
        return NULL;
    }
    VbDevice dev = { .ctx = ctx };
    g_autoptr(VbDevInfo) info = g_new0(VbDevInfo, 1);
    /* A stack VbDevice borrowing ctx: reuses the query without any ownership. */
    VbDevice *tmp = &dev;
    vb_device_query(tmp);
    info->attr = dev.attr;
    info->numa_node = vb_numa_node(info->attr.name);
    g_strlcpy(info->transport, d->transport_type == IBV_TRANSPORT_IWARP ? "iWARP" : "IB/RoCE",
              sizeof(info->transport));
    info->ports = g_array_new(FALSE, TRUE, sizeof(VbPortInfo));
    g_array_set_clear_func(info->ports, vb_port_info_clear);
    for (int p = 1; p <= info->attr.phys_port_cnt; p++) {
        VbPortInfo pi;
        memset(&pi, 0, sizeof(pi));
        pi.num = p;
        if (!vb_device_port_attr(tmp, p, &pi.attr, error)) {
            ibv_close_device(ctx);
            return NULL;
        }
        vb_fill_gids(ctx, &pi);
        g_array_append_val(info->ports, pi);
    }
    ibv_close_device(ctx);
    return g_steal_pointer(&info);
}

GPtrArray *vb_devinfo_list(GError **error)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func((GDestroyNotify)vb_devinfo_free);
    if (!list) {
        if (errno == ENOSYS || errno == ENOENT || errno == 0) {
            return g_steal_pointer(&out); /* no RDMA subsystem: no devices */
        }
        vb_set_error_errno(error, errno, "list RDMA devices");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        VbDevInfo *info = vb_describe(list[i], error);
        if (!info) {
            ibv_free_device_list(list);
            return NULL;
        }
        g_ptr_array_add(out, info);
    }
    ibv_free_device_list(list);
    return g_steal_pointer(&out);
}

char *vb_devinfo_first_active(void)
{
    g_autoptr(GPtrArray) all = vb_devinfo_list(NULL);
    for (guint i = 0; all && i < all->len; i++) {
        VbDevInfo *d = all->pdata[i];
        for (guint p = 0; p < d->ports->len; p++) {
            if (g_array_index(d->ports, VbPortInfo, p).attr.active) {
                return g_strdup(d->attr.name);
            }
        }
    }
    return NULL;
}
