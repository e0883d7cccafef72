/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backend registry and URI parsing for the transport layer, plus the NULL-safe lifetime
 * wrappers. The registry is a constant table: no process-wide mutable state.
 */
#include "xp.h"

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

const XpOps *xp_ops_lookup(const char *name)
{
    for (const XpOps *const *o = xp_backends; *o; o++) {
        if (strcmp((*o)->name, name) == 0 && (*o)->version == XP_OPS_VERSION) {
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
        g_set_error(error, XP_ERROR, XP_ERROR_URI,
                    "bad URI '%s': unknown transport '%s' (known: tcp, rdma)", uri, scheme);
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
