/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backend registry and URI parsing for the transport layer, plus the NULL-safe lifetime
 * wrappers. The registry is a constant table: no process-wide mutable state.
 */
#include "xp.h"
#include "xp-rdma.h"
#include "xp-tcp.h"

#include <string.h>

G_DEFINE_QUARK(xp-error-quark, xp_error)

static const XpOps *const xp_backends[] = {
    &xp_tcp_ops,
    &xp_rdma_ops,
    NULL,
};

const XpOps *const *xp_ops_all(void)
{
    return xp_backends;
}

/* A backend is usable only when its version matches and every required op (and the optional
 * ones its capability bits promise) is there. */
static bool xp_ops_complete(const XpOps *o)
{
    if (o->version != XP_OPS_VERSION || !o->domain_new || !o->domain_free || !o->listen ||
        !o->listener_uri || !o->accept || !o->answer || !o->listener_close || !o->connect ||
        !o->send_msg || !o->recv_msg || !o->shutdown || !o->close || !o->peer) {
        return false;
    }
    if (!(o->caps & XP_CAP_PLACED_PAYLOAD) && !o->recv_payload) {
        return false;
    }
    if ((o->caps & XP_CAP_REGIONS) && (!o->region_register || !o->region_deregister ||
                                       !o->region_export || !o->remote_import ||
                                       !o->remote_free)) {
        return false;
    }
    return true;
}

const XpOps *xp_ops_lookup(const char *name)
{
    for (const XpOps *const *o = xp_backends; *o; o++) {
        if (strcmp((*o)->name, name) == 0 && xp_ops_complete(*o)) {
            return *o;
        }
    }
    return NULL;
}

void xp_options_init(XpOptions *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->timeout_ms = 5000;
    opts->gid_index = -1;
}

const XpOps *xp_uri_parse(const char *uri, char **host, char **port, GError **error)
{
    const char *colon = strchr(uri, ':');
    if (!colon || colon == uri) {
        g_set_error(error, XP_ERROR, XP_ERROR_URI,
                    "bad URI '%s': expected SCHEME:HOST:PORT, e.g. tcp:127.0.0.1:4444", uri);
        return NULL;
    }
    g_autofree char *scheme = g_strndup(uri, colon - uri);
    const XpOps *ops = xp_ops_lookup(scheme);
    if (!ops) {
        bool known = false;
        for (const XpOps *const *o = xp_backends; *o; o++) {
            known |= strcmp((*o)->name, scheme) == 0;
        }
        if (known) {
            g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED,
                        "transport '%s' of URI '%s' is not available in this build", scheme,
                        uri);
        } else {
            g_set_error(error, XP_ERROR, XP_ERROR_URI,
                        "bad URI '%s': unknown transport '%s' (known: tcp, rdma)", uri, scheme);
        }
        return NULL;
    }
    const char *rest = colon + 1;
    const char *port_start;
    g_autofree char *h = NULL;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':') {
            g_set_error(error, XP_ERROR, XP_ERROR_URI,
                        "bad URI '%s': IPv6 host must be written [ADDR]:PORT", uri);
            return NULL;
        }
        h = g_strndup(rest + 1, close - rest - 1);
        port_start = close + 2;
    } else {
        const char *last = strrchr(rest, ':');
        if (!last) {
            g_set_error(error, XP_ERROR, XP_ERROR_URI, "bad URI '%s': missing :PORT", uri);
            return NULL;
        }
        if (memchr(rest, ':', last - rest)) {
            g_set_error(error, XP_ERROR, XP_ERROR_URI,
                        "bad URI '%s': IPv6 host must be written [ADDR]:PORT", uri);
            return NULL;
        }
        h = g_strndup(rest, last - rest);
        port_start = last + 1;
    }
    char *end = NULL;
    unsigned long p = strtoul(port_start, &end, 10);
    if (!*port_start || *end || p > 65535) {
        g_set_error(error, XP_ERROR, XP_ERROR_URI,
                    "bad URI '%s': port '%s' is not a number in 0..65535", uri, port_start);
        return NULL;
    }
    if (!*h) {
        g_set_error(error, XP_ERROR, XP_ERROR_URI, "bad URI '%s': empty host", uri);
        return NULL;
    }
    *host = g_steal_pointer(&h);
    *port = g_strdup(port_start);
    return ops;
}

void xp_channel_shutdown(XpChannel *ch)
{
    if (ch) {
        ch->ops->shutdown(ch);
    }
}

void xp_channel_close(XpChannel *ch)
{
    if (ch) {
        ch->ops->close(ch);
    }
}

const char *xp_channel_peer(XpChannel *ch)
{
    return ch ? ch->ops->peer(ch) : "(none)";
}

int xp_channel_drain(XpChannel *ch, int timeout_ms)
{
    return ch->ops->drain ? ch->ops->drain(ch, timeout_ms) : 0;
}

const char *xp_channel_error_detail(XpChannel *ch)
{
    return ch && ch->ops->error_detail ? ch->ops->error_detail(ch) : NULL;
}

void xp_listener_close(XpListener *l)
{
    if (l) {
        l->ops->listener_close(l);
    }
}

void xp_domain_free(XpDomain *dom)
{
    if (dom) {
        dom->ops->domain_free(dom);
    }
}
