/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backend registry, the check of a table before it is chosen, URI parsing, and the xp_*()
 * wrappers the engine calls instead of the ops (NULL-safe where they free, defaults where an
 * op is optional). The registry is a constant table: no process-wide mutable state.
 */
#include "xp.h"
#include "xp-rdma.h"
#include "xp-tcp.h"

#include <stdarg.h>
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

/* Names the first missing op; always false so callers can `return xp_ops_missing(...)`. */
static bool xp_ops_missing(const XpOps *o, const char *op, const char *why, GError **error)
{
    g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED, "transport '%s': op %s is missing%s",
                o->name, op, why);
    return false;
}

bool xp_ops_check(const XpOps *o, GError **error)
{
    if (o->version != XP_OPS_VERSION) {
        g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED,
                    "transport '%s': ops version %u, this build needs %u",
                    o->name ? o->name : "?", o->version, XP_OPS_VERSION);
        return false;
    }
    if (!o->name || !*o->name) {
        g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED, "transport ops without a name");
        return false;
    }
    /* every op the engine calls without asking first */
    const struct {
        const char *name;
        bool present;
    } required[] = {
        { "domain_new", o->domain_new }, { "domain_free", o->domain_free },
        { "listen", o->listen }, { "listener_uri", o->listener_uri },
        { "accept", o->accept }, { "answer", o->answer },
        { "listener_shutdown", o->listener_shutdown },
        { "listener_close", o->listener_close }, { "connect", o->connect },
        { "send_msg", o->send_msg }, { "recv_msg", o->recv_msg },
        { "shutdown", o->shutdown }, { "close", o->close }, { "peer", o->peer },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(required); i++) {
        if (!required[i].present) {
            return xp_ops_missing(o, required[i].name, "", error);
        }
    }
    if (!(o->caps & XP_CAP_PLACED_PAYLOAD) && !o->recv_payload) {
        return xp_ops_missing(o, "recv_payload", " (required without PLACED_PAYLOAD)", error);
    }
    const struct {
        const char *name;
        bool present;
    } regions[] = {
        { "region_register", o->region_register },
        { "region_deregister", o->region_deregister },
        { "region_export", o->region_export }, { "remote_import", o->remote_import },
        { "remote_free", o->remote_free },
    };
    for (size_t i = 0; (o->caps & XP_CAP_REGIONS) && i < G_N_ELEMENTS(regions); i++) {
        if (!regions[i].present) {
            return xp_ops_missing(o, regions[i].name, " (required with REGIONS)", error);
        }
    }
    return true;
}

static const XpOps *xp_ops_find(const char *name)
{
    for (const XpOps *const *o = xp_backends; *o; o++) {
        if (strcmp((*o)->name, name) == 0) {
            return *o;
        }
    }
    return NULL;
}

const XpOps *xp_ops_lookup(const char *name)
{
    const XpOps *o = xp_ops_find(name);
    return o && xp_ops_check(o, NULL) ? o : NULL;
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
    const XpOps *ops = xp_ops_find(scheme);
    if (!ops) {
        g_set_error(error, XP_ERROR, XP_ERROR_URI,
                    "bad URI '%s': unknown transport '%s' (known: tcp, rdma)", uri, scheme);
        return NULL;
    }
    GError *cerr = NULL;
    if (!xp_ops_check(ops, &cerr)) {
        g_set_error(error, XP_ERROR, XP_ERROR_UNSUPPORTED,
                    "transport '%s' of URI '%s' is not available in this build: %s", scheme,
                    uri, cerr->message);
        g_error_free(cerr);
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

int xp_channel_numa_node(XpChannel *ch)
{
    return ch && ch->ops->numa_node ? ch->ops->numa_node(ch) : -1;
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

const char *xp_ops_name(const XpOps *ops)
{
    return ops->name;
}

bool xp_has_cap(const XpOps *ops, uint32_t cap)
{
    return (ops->caps & cap) == cap;
}

bool xp_channel_has_cap(XpChannel *ch, uint32_t cap)
{
    return xp_has_cap(ch->ops, cap);
}

XpDomain *xp_domain_new(const XpOps *ops, const XpOptions *opts, GError **error)
{
    return ops->domain_new(opts, error);
}

XpListener *xp_listen(XpDomain *dom, const char *host, const char *port, GError **error)
{
    return dom->ops->listen(dom, host, port, error);
}

const char *xp_listener_uri(XpListener *l)
{
    return l->ops->listener_uri(l);
}

XpChannel *xp_accept(XpListener *l, int timeout_ms, void *hello, size_t *hello_len,
                     GError **error)
{
    return l->ops->accept(l, timeout_ms, hello, hello_len, error);
}

bool xp_answer(XpChannel *ch, uint32_t status, const char *reason, GError **error)
{
    return ch->ops->answer(ch, status, reason, error);
}

void xp_listener_shutdown(XpListener *l)
{
    if (l) {
        l->ops->listener_shutdown(l);
    }
}

XpChannel *xp_connect(XpDomain *dom, const char *host, const char *port, const void *hello,
                      size_t hello_len, const XpOptions *opts, GError **error)
{
    return dom->ops->connect(dom, host, port, hello, hello_len, opts, error);
}

bool xp_region_register(XpDomain *dom, void *addr, size_t len, uint32_t access,
                        XpRegion **out, GError **error)
{
    return dom->ops->region_register(dom, addr, len, access, out, error);
}

void xp_region_deregister(XpDomain *dom, XpRegion *r)
{
    if (r) {
        dom->ops->region_deregister(r);
    }
}

void xp_region_export(XpDomain *dom, XpRegion *r, uint8_t desc[XP_REGION_DESC_SIZE])
{
    dom->ops->region_export(r, desc);
}

bool xp_remote_import(XpDomain *dom, const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len,
                      XpRemote **out, GError **error)
{
    return dom->ops->remote_import(dom, desc, len, out, error);
}

void xp_remote_free(XpDomain *dom, XpRemote *r)
{
    if (r) {
        dom->ops->remote_free(r);
    }
}

bool xp_region_budget(XpDomain *dom, uint64_t bytes, unsigned channels, GError **error)
{
    return !dom->ops->region_budget || dom->ops->region_budget(dom, bytes, channels, error);
}

bool xp_channel_counters(XpChannel *ch, XpCounters *out)
{
    if (!ch->ops->counters) {
        memset(out, 0, sizeof(*out));
        return false;
    }
    ch->ops->counters(ch, out);
    return true;
}

bool xp_inject_fault(XpChannel *ch, int err)
{
    if (!ch->ops->inject_fault) {
        return false;
    }
    ch->ops->inject_fault(ch, err);
    return true;
}

bool xp_inject_completion_error(XpChannel *ch)
{
    if (!ch->ops->inject_completion_error) {
        return false;
    }
    ch->ops->inject_completion_error(ch);
    return true;
}

void xp_channel_set_send_timeout(XpChannel *ch, int timeout_ms)
{
    if (ch->ops->set_send_timeout) {
        ch->ops->set_send_timeout(ch, timeout_ms);
    }
}

void xp_log_limited(XpLogLimit *rl, const char *domain, const char *fmt, ...)
{
    int64_t now = g_get_monotonic_time();
    if (now - rl->window_us >= G_USEC_PER_SEC) {
        rl->window_us = now;
        rl->used = 0;
    }
    if (rl->used >= XP_LOG_BURST) {
        rl->dropped++;
        return;
    }
    rl->used++;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (rl->dropped) {
        g_log(domain, G_LOG_LEVEL_MESSAGE, "%s (and %u similar messages not shown)", msg,
              rl->dropped);
        rl->dropped = 0;
    } else {
        g_log(domain, G_LOG_LEVEL_MESSAGE, "%s", msg);
    }
}
