/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA domain: the session's options, its device and PD (opened lazily, by the first
 * connection or region), the checks that every channel uses that device and the
 * requested port/GID, the verbs-to-transport error mapping, and the ops table.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <string.h>

/* ------------------------------------------------------------------ errors */

static int xp_code_of_vb(const GError *e)
{
    if (e->domain != VB_ERROR) {
        return XP_ERROR_FAILED;
    }
    switch (e->code) {
    case VB_ERROR_NO_DEVICE: return XP_ERROR_NO_DEVICE;
    case VB_ERROR_UNSUPPORTED: return XP_ERROR_UNSUPPORTED;
    case VB_ERROR_MEMLOCK: return XP_ERROR_MEMLOCK;
    case VB_ERROR_UNREACHABLE: return XP_ERROR_CONNECT;
    case VB_ERROR_REJECTED: return XP_ERROR_REJECTED;
    case VB_ERROR_TIMEOUT: return XP_ERROR_TIMEOUT;
    case VB_ERROR_CLOSED: return XP_ERROR_CLOSED;
    default: return XP_ERROR_FAILED;
    }
}

/* Re-home a verbs error into XP_ERROR, keeping its message. */
void xp_rdma_propagate(GError **error, GError *vb_err, const char *prefix)
{
    if (!vb_err) {
        return;
    }
    g_set_error(error, XP_ERROR, xp_code_of_vb(vb_err), "%s%s", prefix ? prefix : "",
                vb_err->message);
    g_error_free(vb_err);
}

char *xp_rdma_uri_of(const char *hostport)
{
    return g_strdup_printf("rdma:%s", hostport);
}

/* ------------------------------------------------------------------ domain */

XpDomain *xp_rdma_domain_new(const XpOptions *opts, GError **error)
{
    RdmaDomain *d = g_new0(RdmaDomain, 1);
    d->base.ops = &xp_rdma_ops;
    d->opts = *opts;
    d->opts.rdma_dev = g_strdup(opts->rdma_dev);
    if (d->opts.timeout_ms <= 0) {
        d->opts.timeout_ms = 5000;
    }
    g_mutex_init(&d->lock);
    return &d->base;
}

void xp_rdma_domain_free(XpDomain *xd)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (!d) {
        return;
    }
    vb_pd_free(d->pd);
    vb_device_free(d->dev);
    g_free((char *)d->opts.rdma_dev);
    g_mutex_clear(&d->lock);
    g_free(d);
}

/* With d->lock held: open the device (by name, else the first ACTIVE one) and a PD. */
static bool xp_rdma_domain_open_locked(RdmaDomain *d, VbCmId *id, GError **error)
{
    GError *local = NULL;
    g_autoptr(VbDevice) dev = id ? vb_device_from_cm_id(id, &local)
                                 : vb_device_open(d->opts.rdma_dev, &local);
    if (!dev) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    if (d->opts.rdma_dev && strcmp(d->opts.rdma_dev, vb_device_name(dev)) != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                    "rdma_dev=%s was requested, but %s is reached through device %s",
                    d->opts.rdma_dev, id ? vb_cm_peer_str(id) : "the address",
                    vb_device_name(dev));
        return false;
    }
    VbPd *pd = vb_pd_new(dev, &local);
    if (!pd) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    d->dev = g_steal_pointer(&dev);
    d->pd = pd;
    return true;
}

/* A connection's device must be the session's: one PD serves all channels and regions. */
bool xp_rdma_domain_bind(RdmaDomain *d, VbCmId *id, GError **error)
{
    g_mutex_lock(&d->lock);
    bool ok = true;
    if (!d->dev) {
        ok = xp_rdma_domain_open_locked(d, id, error);
    } else if (!vb_device_is_cm_id_device(d->dev, id)) {
        g_autoptr(VbDevice) other = vb_device_from_cm_id(id, NULL);
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "connection %s uses RDMA device %s, but this session already uses %s; all "
                    "channels of a session must share one device (set rdma_dev or use "
                    "addresses on one device)", vb_cm_peer_str(id),
                    other ? vb_device_name(other) : "(unknown)", vb_device_name(d->dev));
        ok = false;
    }
    g_mutex_unlock(&d->lock);
    return ok;
}

VbPd *xp_rdma_domain_pd(RdmaDomain *d, GError **error)
{
    g_mutex_lock(&d->lock);
    bool ok = d->pd || xp_rdma_domain_open_locked(d, NULL, error);
    VbPd *pd = d->pd;
    g_mutex_unlock(&d->lock);
    return ok ? pd : NULL;
}

/* Address-chosen port/GID must agree with explicit overrides. */
bool xp_rdma_check_overrides(const XpOptions *o, VbCmId *id, GError **error)
{
    if (o->rdma_dev) {
        g_autoptr(VbDevice) dev = vb_device_from_cm_id(id, NULL);
        if (dev && strcmp(vb_device_name(dev), o->rdma_dev) != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                        "rdma_dev=%s was requested, but %s is reached through device %s",
                        o->rdma_dev, vb_cm_peer_str(id), vb_device_name(dev));
            return false;
        }
    }
    if (o->rdma_port > 0 && vb_cm_port_num(id) != o->rdma_port) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "rdma_port=%d was requested, but %s is reached through port %u",
                    o->rdma_port, vb_cm_peer_str(id), vb_cm_port_num(id));
        return false;
    }
    if (o->gid_index >= 0) {
        GError *local = NULL;
        if (!vb_cm_check_gid_index(id, o->gid_index, &local)) {
            xp_rdma_propagate(error, local, NULL);
            return false;
        }
    }
    return true;
}

const XpOps xp_rdma_ops = {
    .version = XP_OPS_VERSION,
    .name = "rdma",
    .caps = XP_CAP_PLACED_PAYLOAD | XP_CAP_REGIONS,
    .domain_new = xp_rdma_domain_new,
    .domain_free = xp_rdma_domain_free,
    .listen = xp_rdma_listen,
    .listener_uri = xp_rdma_listener_uri,
    .accept = xp_rdma_accept,
    .answer = xp_rdma_answer,
    .listener_shutdown = xp_rdma_listener_shutdown,
    .listener_close = xp_rdma_listener_close,
    .connect = xp_rdma_connect,
    .send_msg = xp_rdma_send_msg,
    .recv_msg = xp_rdma_recv_msg,
    .shutdown = xp_rdma_shutdown,
    .close = xp_rdma_close,
    .peer = xp_rdma_peer,
    .recv_payload = NULL, /* placed: payload lands by itself */
    .region_register = xp_rdma_region_register,
    .region_deregister = xp_rdma_region_deregister,
    .region_export = xp_rdma_region_export,
    .remote_import = xp_rdma_remote_import,
    .remote_free = xp_rdma_remote_free,
    .counters = xp_rdma_counters,
    .inject_fault = xp_rdma_inject_fault,
    .drain = xp_rdma_drain,
    .inject_completion_error = xp_rdma_inject_completion_error,
    .error_detail = xp_rdma_error_detail,
    .region_budget = xp_rdma_region_budget,
    .set_send_timeout = xp_rdma_set_send_timeout,
    .numa_node = xp_rdma_numa_node,
};
