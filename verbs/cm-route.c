/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Route selection for the CM: the device a cm_id resolved to, and the source address that
 * makes rdma_cm route through a chosen device, port and GID (read from the device
 * descriptions of devinfo.c). CM code: device.c and devinfo.c know nothing of cm_ids.
 */
#include "vb-priv.h"

#include <arpa/inet.h>
#include <string.h>

VbDevice *vb_device_from_cm_id(VbCmId *id, GError **error)
{
    if (!id->cm->verbs) {
        g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE,
                    "cm_id %s is not bound to an RDMA device (unresolved or wildcard address)",
                    vb_cm_local_str(id));
        return NULL;
    }
    VbDevice *dev = g_new0(VbDevice, 1);
    dev->ctx = id->cm->verbs;
    vb_device_query(dev);
    return dev;
}

bool vb_device_is_cm_id_device(const VbDevice *dev, VbCmId *id)
{
    return id->cm->verbs == dev->ctx;
}

/* One GID's address as a socket address of `family`, or false (wrong family, link-local). */
static bool vb_gid_sockaddr(const VbGidInfo *g, int family, char *out, size_t outlen)
{
    struct in6_addr a;
    if (inet_pton(AF_INET6, g->addr, &a) != 1 || IN6_IS_ADDR_UNSPECIFIED(&a)) {
        return false;
    }
    if (family == AF_INET) {
        return IN6_IS_ADDR_V4MAPPED(&a) && inet_ntop(AF_INET, &a.s6_addr[12], out, outlen);
    }
    /* a link-local source needs a scope id rdma_cm cannot take from an override */
    return !IN6_IS_ADDR_V4MAPPED(&a) && !IN6_IS_ADDR_LINKLOCAL(&a) &&
           inet_ntop(AF_INET6, &a, out, outlen);
}

bool vb_source_addr_for(const char *dev, int port, int gid_index, int family, char *out,
                        size_t outlen, GError **error)
{
    g_autoptr(GPtrArray) all = vb_devinfo_list(error);
    if (!all) {
        return false;
    }
    const VbDevInfo *info = NULL;
    for (guint i = 0; i < all->len; i++) {
        const VbDevInfo *d = g_ptr_array_index(all, i);
        if (strcmp(d->attr.name, dev) == 0) {
            info = d;
        }
    }
    if (!info) {
        g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE, "no RDMA device named %s", dev);
        return false;
    }
    const char *fam = family == AF_INET ? "IPv4" : "IPv6";
    for (guint p = 0; p < info->ports->len; p++) {
        const VbPortInfo *pi = &g_array_index(info->ports, VbPortInfo, p);
        if (port > 0 ? pi->num != port : !pi->attr.active) {
            continue;
        }
        /* an explicit GID, else the first RoCE v2 one of the family, else any of it */
        for (int pass = 0; pass < 2; pass++) {
            for (guint g = 0; g < pi->gids->len; g++) {
                const VbGidInfo *gi = &g_array_index(pi->gids, VbGidInfo, g);
                if (gid_index >= 0 ? gi->index != gid_index
                                   : (pass == 0 && strcmp(gi->type, "RoCE v2") != 0)) {
                    continue;
                }
                if (vb_gid_sockaddr(gi, family, out, outlen)) {
                    return true;
                }
                if (gid_index >= 0) {
                    g_set_error(error, VB_ERROR, VB_ERROR_FAILED,
                                "%s port %d GID %d (%s) is no %s address the destination can "
                                "be reached from", dev, pi->num, gid_index, gi->addr, fam);
                    return false;
                }
            }
        }
        if (gid_index >= 0) {
            g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "%s port %d has no GID %d", dev,
                        pi->num, gid_index);
        } else {
            g_set_error(error, VB_ERROR, VB_ERROR_FAILED,
                        "%s port %d has no %s GID to connect from", dev, pi->num, fam);
        }
        return false;
    }
    if (port > 0) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "%s has no port %d", dev, port);
    } else {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "%s has no ACTIVE port", dev);
    }
    return false;
}
