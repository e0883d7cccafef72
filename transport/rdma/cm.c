/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA connection management: connect with the hello in the CM private data, the
 * listener, accept (framing check, channel built before the answer) and answer
 * (rdma_accept, or a reject carrying status and reason).
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------ connect */

XpChannel *xp_rdma_connect(XpDomain *xd, const char *host, const char *port,
                           const void *hello, size_t hello_len, const XpOptions *opts,
                           GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (hello_len > XP_HELLO_MAX) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "hello of %zu bytes exceeds %u",
                    hello_len, XP_HELLO_MAX);
        return NULL;
    }
    XpOptions o = opts ? *opts : d->opts;
    int timeout = o.timeout_ms > 0 ? o.timeout_ms : 5000;
    GError *local = NULL;
    g_autoptr(VbCmId) id = vb_cm_id_new(&local);
    /* --rdma-dev (with --rdma-port/--gid-index) chooses the source address; the checks in
     * xp_rdma_channel_new() then confirm rdma_cm routed through what was asked for */
    if (!id || !vb_cm_resolve_from(id, host, port, o.rdma_dev, o.rdma_port, o.gid_index,
                                   timeout, -1, &local)) {
        xp_rdma_propagate(error, local, "rdma: ");
        return NULL;
    }
    RdmaChannel *ch = xp_rdma_channel_new(d, id, &o, error);
    if (!ch) {
        return NULL;
    }
    g_steal_pointer(&id);
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE];
    uint8_t mark;
    xp_rdma_wire_pack_hello(hello, hello_len, pdata, &mark);
    VbCmEvent rej;
    memset(&rej, 0, sizeof(rej));
    if (!vb_cm_connect(ch->id, pdata, sizeof(pdata), mark, timeout, -1, &rej, &local)) {
        if (g_error_matches(local, VB_ERROR, VB_ERROR_REJECTED)) {
            uint32_t status;
            char reason[XP_REASON_MAX + 1];
            xp_rdma_wire_unpack_reject(rej.private_data, rej.private_len, &status, reason);
            g_set_error(error, XP_ERROR, XP_ERROR_REJECTED,
                        "%s refused the connection: %s (status %u)", ch->peer,
                        reason[0] ? reason : "no reason given", status);
            g_error_free(local);
        } else {
            xp_rdma_propagate(error, local, "rdma: ");
        }
        xp_rdma_channel_destroy(ch);
        return NULL;
    }
    g_mutex_lock(&ch->lock);
    xp_rdma_ch_move(ch, RDMA_CH_ESTABLISHED);
    g_mutex_unlock(&ch->lock);
    return &ch->base;
}

/* ------------------------------------------------------------------ listen / accept */

void xp_rdma_listener_close(XpListener *xl)
{
    RdmaListener *l = (RdmaListener *)xl;
    if (!l) {
        return;
    }
    vb_cm_id_free(l->id);
    if (l->wake_fd >= 0) {
        close(l->wake_fd);
    }
    g_free(l->uri);
    g_free(l);
}

XpListener *xp_rdma_listen(XpDomain *xd, const char *host, const char *port,
                           GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    RdmaListener *l = g_new0(RdmaListener, 1);
    l->base.ops = &xp_rdma_ops;
    l->dom = d;
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    GError *local = NULL;
    if (l->wake_fd < 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "eventfd: %s", g_strerror(errno));
        goto fail;
    }
    l->id = vb_cm_id_new(&local);
    if (!l->id || !vb_cm_listen(l->id, host, port, 64, &local)) {
        xp_rdma_propagate(error, local, "rdma: ");
        goto fail;
    }
    l->uri = xp_rdma_uri_of(vb_cm_local_str(l->id));
    if (d->opts.rdma_dev) {
        /* A specific address is bound to a device now; a wildcard one is checked per
         * connection (xp_rdma_domain_bind). */
        g_autoptr(VbDevice) dev = vb_device_from_cm_id(l->id, NULL);
        if (dev && strcmp(vb_device_name(dev), d->opts.rdma_dev) != 0) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE,
                        "rdma_dev=%s was requested, but %s is an address of device %s",
                        d->opts.rdma_dev, l->uri, vb_device_name(dev));
            goto fail;
        }
    }
    return &l->base;
fail:
    xp_rdma_listener_close(&l->base);
    return NULL;
}

const char *xp_rdma_listener_uri(XpListener *xl)
{
    return ((RdmaListener *)xl)->uri;
}

void xp_rdma_listener_shutdown(XpListener *xl)
{
    RdmaListener *l = (RdmaListener *)xl;
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof(one));
    (void)r; /* cannot overflow with one write */
}

/* Refuse a connection request with status and reason in the reject private data. */
static bool xp_rdma_reject_reason(VbCmId *id, uint32_t status, const char *reason, GError **error)
{
    uint8_t pdata[RDMA_WIRE_REJECT_MAX];
    size_t len = xp_rdma_wire_pack_reject(status, reason, pdata);
    GError *local = NULL;
    if (!vb_cm_reject(id, pdata, len, &local)) {
        xp_rdma_propagate(error, local, "rdma: ");
        return false;
    }
    return true;
}

XpChannel *xp_rdma_accept(XpListener *xl, int timeout_ms, void *hello, size_t *hello_len,
                          GError **error)
{
    RdmaListener *l = (RdmaListener *)xl;
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        int left = deadline < 0 ? -1
                                : (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        VbCmEvent ev;
        GError *local = NULL;
        if (!vb_cm_next_event(l->id, left, l->wake_fd, &ev, &local)) {
            if (g_error_matches(local, VB_ERROR, VB_ERROR_TIMEOUT)) {
                g_set_error(error, XP_ERROR, XP_ERROR_TIMEOUT,
                            "%s: no connection within %d ms", l->uri, timeout_ms);
                g_error_free(local);
            } else if (g_error_matches(local, VB_ERROR, VB_ERROR_CLOSED)) {
                g_set_error(error, XP_ERROR, XP_ERROR_CLOSED, "%s: listener shut down",
                            l->uri);
                g_error_free(local);
            } else {
                xp_rdma_propagate(error, local, "rdma accept: ");
            }
            return NULL;
        }
        if (ev.step == VB_CM_DEVICE_REMOVAL) {
            g_set_error(error, XP_ERROR, XP_ERROR_NO_DEVICE, "%s: DEVICE_REMOVAL", l->uri);
            return NULL;
        }
        if (ev.step != VB_CM_CONNECT_REQUEST) {
            g_debug("%s: ignoring CM event %s", l->uri, vb_cm_step_str(ev.step));
            continue;
        }
        g_autoptr(VbCmId) id = g_steal_pointer(&ev.new_id);
        /* Either value: both were set to the mark, and the CM swaps them for the acceptor. */
        uint8_t h[RDMA_WIRE_PDATA_SIZE];
        size_t len;
        g_autoptr(GError) herr = NULL;
        if (!xp_rdma_wire_unpack_hello(ev.private_data, ev.private_len, ev.initiator_depth, h,
                                       &len, &herr)) {
            /* anyone can send these: logged rate-limited */
            xp_log_limited(&l->refuse_log, G_LOG_DOMAIN, "%s: refusing %s: %s", l->uri,
                           vb_cm_peer_str(id), herr->message);
            xp_rdma_reject_reason(id, 1, herr->message, NULL);
            continue;
        }
        XpOptions o = l->dom->opts;
        GError *cerr = NULL;
        RdmaChannel *ch = xp_rdma_channel_new(l->dom, id, &o, &cerr);
        if (!ch) {
            /* the connector learns why; for us it is one failed attempt (XP_ERROR_FAILED),
             * not the listener's end (XP_ERROR_NO_DEVICE is kept for DEVICE_REMOVAL) */
            xp_rdma_reject_reason(id, 1, cerr->message, NULL);
            g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "%s: connection from %s: %s",
                        l->uri, vb_cm_peer_str(id), cerr->message);
            g_error_free(cerr);
            return NULL;
        }
        g_steal_pointer(&id);
        memcpy(hello, h, len);
        *hello_len = len;
        return &ch->base;
    }
}

bool xp_rdma_answer(XpChannel *xc, uint32_t status, const char *reason, GError **error)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    GError *local = NULL;
    if (status == 0) {
        if (!vb_cm_accept(ch->id, NULL, 0, ch->timeout_ms, ch->wake_fd, &local)) {
            xp_rdma_propagate(error, local, "rdma: ");
            return false;
        }
        g_mutex_lock(&ch->lock);
        xp_rdma_ch_move(ch, RDMA_CH_ESTABLISHED);
        g_mutex_unlock(&ch->lock);
        return true;
    }
    return xp_rdma_reject_reason(ch->id, status, reason, error);
}
