/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbCmId: an rdma_cm id with its own event channel. Every CM event is mapped to a named step
 * (VbCmStep); waiting for one step turns any other into an error that names the step, the
 * peer and the cause (the peer's reject private data, the resolution errno, ...).
 */
#include "vb-priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>

/* IB CM reject reasons seen through rdma_cm (IBTA 12.6.7.2). */
#define VB_IB_REJ_INVALID_SERVICE_ID 8
#define VB_IB_REJ_CONSUMER_DEFINED 28

static const char *const vb_cm_step_names[] = {
    [VB_CM_ADDR_RESOLVED] = "ADDR_RESOLVED",
    [VB_CM_ADDR_ERROR] = "ADDR_ERROR",
    [VB_CM_ROUTE_RESOLVED] = "ROUTE_RESOLVED",
    [VB_CM_ROUTE_ERROR] = "ROUTE_ERROR",
    [VB_CM_CONNECT_REQUEST] = "CONNECT_REQUEST",
    [VB_CM_CONNECT_RESPONSE] = "CONNECT_RESPONSE",
    [VB_CM_CONNECT_ERROR] = "CONNECT_ERROR",
    [VB_CM_UNREACHABLE] = "UNREACHABLE",
    [VB_CM_REJECTED] = "REJECTED",
    [VB_CM_ESTABLISHED] = "ESTABLISHED",
    [VB_CM_DISCONNECTED] = "DISCONNECTED",
    [VB_CM_DEVICE_REMOVAL] = "DEVICE_REMOVAL",
    [VB_CM_MULTICAST_JOIN] = "MULTICAST_JOIN",
    [VB_CM_MULTICAST_ERROR] = "MULTICAST_ERROR",
    [VB_CM_ADDR_CHANGE] = "ADDR_CHANGE",
    [VB_CM_TIMEWAIT_EXIT] = "TIMEWAIT_EXIT",
    [VB_CM_OTHER] = "OTHER",
};

const char *vb_cm_step_str(VbCmStep step)
{
    return (unsigned)step <= VB_CM_OTHER ? vb_cm_step_names[step] : "INVALID";
}

static VbCmStep vb_cm_step_of(enum rdma_cm_event_type t)
{
    switch (t) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: return VB_CM_ADDR_RESOLVED;
    case RDMA_CM_EVENT_ADDR_ERROR: return VB_CM_ADDR_ERROR;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: return VB_CM_ROUTE_RESOLVED;
    case RDMA_CM_EVENT_ROUTE_ERROR: return VB_CM_ROUTE_ERROR;
    case RDMA_CM_EVENT_CONNECT_REQUEST: return VB_CM_CONNECT_REQUEST;
    case RDMA_CM_EVENT_CONNECT_RESPONSE: return VB_CM_CONNECT_RESPONSE;
    case RDMA_CM_EVENT_CONNECT_ERROR: return VB_CM_CONNECT_ERROR;
    case RDMA_CM_EVENT_UNREACHABLE: return VB_CM_UNREACHABLE;
    case RDMA_CM_EVENT_REJECTED: return VB_CM_REJECTED;
    case RDMA_CM_EVENT_ESTABLISHED: return VB_CM_ESTABLISHED;
    case RDMA_CM_EVENT_DISCONNECTED: return VB_CM_DISCONNECTED;
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return VB_CM_DEVICE_REMOVAL;
    case RDMA_CM_EVENT_MULTICAST_JOIN: return VB_CM_MULTICAST_JOIN;
    case RDMA_CM_EVENT_MULTICAST_ERROR: return VB_CM_MULTICAST_ERROR;
    case RDMA_CM_EVENT_ADDR_CHANGE: return VB_CM_ADDR_CHANGE;
    case RDMA_CM_EVENT_TIMEWAIT_EXIT: return VB_CM_TIMEWAIT_EXIT;
    default: return VB_CM_OTHER;
    }
}

void vb_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        g_snprintf(buf, len, "%s:%u", host, ntohs(s->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        g_snprintf(buf, len, "[%s]:%u", host, ntohs(s->sin6_port));
    } else {
        g_snprintf(buf, len, "(unbound)");
    }
}

static VbCmId *vb_cm_wrap(struct rdma_event_channel *ch, struct rdma_cm_id *cm)
{
    VbCmId *id = g_new0(VbCmId, 1);
    id->channel = ch;
    id->cm = cm;
    id->retry_count = 7; /* the most IB allows: a transient loss must not fail a migration */
    cm->context = id;
    return id;
}

static struct rdma_event_channel *vb_cm_channel_new(GError **error)
{
    struct rdma_event_channel *ch = rdma_create_event_channel();
    if (!ch) {
        vb_set_error_errno(error, errno, "create rdma_cm event channel (is rdma_ucm loaded?)");
        return NULL;
    }
    int fl = fcntl(ch->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        vb_set_error_errno(error, errno, "rdma_cm event channel non-blocking");
        rdma_destroy_event_channel(ch);
        return NULL;
    }
    return ch;
}

VbCmId *vb_cm_id_new(GError **error)
{
    struct rdma_event_channel *ch = vb_cm_channel_new(error);
    if (!ch) {
        return NULL;
    }
    struct rdma_cm_id *cm = NULL;
    if (rdma_create_id(ch, &cm, NULL, RDMA_PS_TCP) != 0) {
        vb_set_error_errno(error, errno, "create rdma_cm id");
        rdma_destroy_event_channel(ch);
        return NULL;
    }
    return vb_cm_wrap(ch, cm);
}

void vb_cm_id_free(VbCmId *id)
{
    if (!id) {
        return;
    }
    vb_qp_free(id->qp);
    if (id->cm) {
        rdma_destroy_id(id->cm);
    }
    if (id->channel) {
        rdma_destroy_event_channel(id->channel);
    }
    g_free(id);
}

int vb_cm_fd(const VbCmId *id)
{
    return id->channel->fd;
}

const char *vb_cm_peer_str(VbCmId *id)
{
    if (id->cm) {
        const struct sockaddr *sa = rdma_get_peer_addr(id->cm);
        if (sa && sa->sa_family != 0) {
            vb_sockaddr_str(sa, id->peer_str, sizeof(id->peer_str));
        }
    }
    return id->peer_str[0] ? id->peer_str : "(no peer)";
}

const char *vb_cm_local_str(VbCmId *id)
{
    vb_sockaddr_str(id->cm ? rdma_get_local_addr(id->cm) : NULL, id->local_str,
                    sizeof(id->local_str));
    return id->local_str;
}

uint16_t vb_cm_local_port(VbCmId *id)
{
    return ntohs(rdma_get_src_port(id->cm));
}

uint8_t vb_cm_port_num(VbCmId *id)
{
    return id->cm->port_num;
}

bool vb_cm_check_gid_index(VbCmId *id, int gid_index, GError **error)
{
    union ibv_gid want;
    const union ibv_gid *have = &id->cm->route.addr.addr.ibaddr.sgid;
    int ret = id->cm->verbs ? ibv_query_gid(id->cm->verbs, id->cm->port_num, gid_index, &want)
                            : ENODEV;
    char a[INET6_ADDRSTRLEN] = "?", b[INET6_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET6, have->raw, a, sizeof(a));
    if (ret != 0) {
        vb_set_error_errno(error, ret, "gid_index %d on port %u (route uses GID %s)", gid_index,
                           id->cm->port_num, a);
        return false;
    }
    if (memcmp(want.raw, have->raw, sizeof(want.raw)) != 0) {
        inet_ntop(AF_INET6, want.raw, b, sizeof(b));
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED,
                    "gid_index %d is GID %s, but the address %s resolves to source GID %s: "
                    "drop the gid_index override or use an address on that GID",
                    gid_index, b, vb_cm_local_str(id), a);
        return false;
    }
    return true;
}

static struct rdma_addrinfo *vb_cm_getaddrinfo(const char *host, const char *port, bool passive,
                                               GError **error)
{
    struct rdma_addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_port_space = RDMA_PS_TCP;
    if (passive) {
        hints.ai_flags = RAI_PASSIVE;
    }
    int ret = rdma_getaddrinfo(host, port, &hints, &res);
    if (ret != 0 || !res) {
        g_set_error(error, VB_ERROR, VB_ERROR_UNREACHABLE, "cannot resolve %s:%s: %s", host,
                    port, ret == -1 ? g_strerror(errno ? errno : EHOSTUNREACH)
                                    : gai_strerror(ret));
        return NULL;
    }
    return res;
}

bool vb_cm_listen(VbCmId *id, const char *host, const char *port, int backlog, GError **error)
{
    struct rdma_addrinfo *res = vb_cm_getaddrinfo(host, port, true, error);
    if (!res) {
        return false;
    }
    int ret = rdma_bind_addr(id->cm, res->ai_src_addr);
    int e = errno;
    rdma_freeaddrinfo(res);
    if (ret != 0) {
        vb_set_error_errno(error, e, "bind rdma_cm listener to %s:%s", host, port);
        return false;
    }
    if (rdma_listen(id->cm, backlog) != 0) {
        vb_set_error_errno(error, errno, "listen on %s", vb_cm_local_str(id));
        return false;
    }
    return true;
}

static bool vb_cm_take_request(struct rdma_cm_event *e, VbCmEvent *ev, GError **error)
{
    struct rdma_cm_id *cm = e->id;
    rdma_ack_cm_event(e); /* rdma_migrate_id waits for the id's events to be acked */
    struct rdma_event_channel *ch = vb_cm_channel_new(error);
    if (ch && rdma_migrate_id(cm, ch) != 0) {
        vb_set_error_errno(error, errno, "move new connection to its own event channel");
        rdma_destroy_event_channel(ch);
        ch = NULL;
    }
    if (!ch) {
        rdma_reject(cm, NULL, 0);
        rdma_destroy_id(cm);
        return false;
    }
    ev->new_id = vb_cm_wrap(ch, cm);
    return true;
}

bool vb_cm_next_event(VbCmId *id, int timeout_ms, int wake_fd, VbCmEvent *ev, GError **error)
{
    memset(ev, 0, sizeof(*ev));
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        struct rdma_cm_event *e = NULL;
        if (rdma_get_cm_event(id->channel, &e) == 0) {
            ev->step = vb_cm_step_of(e->event);
            ev->status = e->status;
            if (e->param.conn.private_data && e->param.conn.private_data_len) {
                ev->private_len = MIN(e->param.conn.private_data_len,
                                      (size_t)VB_CM_PRIVATE_DATA_MAX);
                memcpy(ev->private_data, e->param.conn.private_data, ev->private_len);
            }
            if (ev->step == VB_CM_CONNECT_REQUEST) {
                ev->initiator_depth = e->param.conn.initiator_depth;
                ev->responder_resources = e->param.conn.responder_resources;
                return vb_cm_take_request(e, ev, error);
            }
            if (ev->step == VB_CM_DISCONNECTED || ev->step == VB_CM_DEVICE_REMOVAL) {
                id->disconnected = true;
            }
            rdma_ack_cm_event(e);
            return true;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            vb_set_error_errno(error, errno, "read rdma_cm event for %s", vb_cm_peer_str(id));
            return false;
        }
        int wait_ms = -1;
        if (deadline >= 0) {
            gint64 left = deadline - g_get_monotonic_time();
            if (left <= 0) {
                g_set_error(error, VB_ERROR, VB_ERROR_TIMEOUT, "no rdma_cm event within %d ms",
                            timeout_ms);
                return false;
            }
            wait_ms = (int)((left + 999) / 1000);
        }
        struct pollfd pfd[2] = {
            { .fd = id->channel->fd, .events = POLLIN },
            { .fd = wake_fd, .events = POLLIN },
        };
        int ret = poll(pfd, wake_fd >= 0 ? 2 : 1, wait_ms);
        if (ret < 0 && errno != EINTR) {
            vb_set_error_errno(error, errno, "wait for rdma_cm event");
            return false;
        }
        if (wake_fd >= 0 && (pfd[1].revents & POLLIN)) {
            g_set_error(error, VB_ERROR, VB_ERROR_CLOSED, "shut down while waiting for rdma_cm");
            return false;
        }
    }
}

/* Turn an unexpected event into the error of `what`. */
static void vb_cm_event_error(VbCmId *id, const VbCmEvent *ev, VbCmStep want, const char *what,
                              GError **error)
{
    const char *step = vb_cm_step_str(ev->step);
    const char *peer = vb_cm_peer_str(id);
    int st = ev->status < 0 ? -ev->status : ev->status;
    switch (ev->step) {
    case VB_CM_ADDR_ERROR:
    case VB_CM_ROUTE_ERROR:
    case VB_CM_UNREACHABLE:
    case VB_CM_CONNECT_ERROR:
        g_set_error(error, VB_ERROR, VB_ERROR_UNREACHABLE, "%s %s: %s (%s)", what, peer, step,
                    st ? g_strerror(st) : "no detail");
        break;
    case VB_CM_REJECTED:
        if (ev->status == VB_IB_REJ_CONSUMER_DEFINED) {
            g_set_error(error, VB_ERROR, VB_ERROR_REJECTED, "%s %s: REJECTED by the peer", what,
                        peer);
        } else {
            g_set_error(error, VB_ERROR, VB_ERROR_UNREACHABLE,
                        "%s %s: REJECTED by the CM (reason %d%s)", what, peer, ev->status,
                        ev->status == VB_IB_REJ_INVALID_SERVICE_ID ? ": nobody listens there"
                                                                   : "");
        }
        break;
    case VB_CM_DISCONNECTED:
        g_set_error(error, VB_ERROR, VB_ERROR_CLOSED, "%s %s: DISCONNECTED by the peer", what,
                    peer);
        break;
    case VB_CM_DEVICE_REMOVAL:
        g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE, "%s %s: DEVICE_REMOVAL", what, peer);
        break;
    default:
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "%s %s: unexpected %s while waiting for %s",
                    what, peer, step, vb_cm_step_str(want));
        break;
    }
}

bool vb_cm_expect(VbCmId *id, VbCmStep want, int timeout_ms, int wake_fd, VbCmEvent *ev,
                  const char *what, GError **error)
{
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        int left = -1;
        if (deadline >= 0) {
            left = (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        }
        g_autoptr(GError) local = NULL;
        if (!vb_cm_next_event(id, left, wake_fd, ev, &local)) {
            if (g_error_matches(local, VB_ERROR, VB_ERROR_TIMEOUT)) {
                g_set_error(error, VB_ERROR, VB_ERROR_TIMEOUT, "%s %s: no %s within %d ms",
                            what, vb_cm_peer_str(id), vb_cm_step_str(want), timeout_ms);
            } else {
                g_propagate_prefixed_error(error, g_steal_pointer(&local), "%s %s: ", what,
                                           vb_cm_peer_str(id));
            }
            return false;
        }
        if (ev->step == want) {
            return true;
        }
        if (ev->step == VB_CM_ADDR_CHANGE || ev->step == VB_CM_TIMEWAIT_EXIT) {
            continue; /* informational while connecting */
        }
        if (ev->new_id) {
            vb_cm_id_free(g_steal_pointer(&ev->new_id));
        }
        vb_cm_event_error(id, ev, want, what, error);
        return false;
    }
}

bool vb_cm_resolve(VbCmId *id, const char *host, const char *port, int timeout_ms, int wake_fd,
                   GError **error)
{
    return vb_cm_resolve_from(id, host, port, NULL, 0, -1, timeout_ms, wake_fd, error);
}

bool vb_cm_resolve_from(VbCmId *id, const char *host, const char *port, const char *dev,
                        int dev_port, int gid_index, int timeout_ms, int wake_fd,
                        GError **error)
{
    struct rdma_addrinfo *res = vb_cm_getaddrinfo(host, port, false, error);
    if (!res) {
        return false;
    }
    struct sockaddr_storage src;
    struct sockaddr *srcp = NULL;
    if (dev) {
        /* the override picks the source address; rdma_cm then routes from that GID */
        int family = res->ai_dst_addr->sa_family;
        char a[INET6_ADDRSTRLEN];
        memset(&src, 0, sizeof(src));
        if (!vb_source_addr_for(dev, dev_port, gid_index, family, a, sizeof(a), error)) {
            rdma_freeaddrinfo(res);
            return false;
        }
        src.ss_family = (sa_family_t)family;
        void *dst = family == AF_INET ? (void *)&((struct sockaddr_in *)&src)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)&src)->sin6_addr;
        if (inet_pton(family, a, dst) != 1) {
            g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "bad source address %s", a);
            rdma_freeaddrinfo(res);
            return false;
        }
        srcp = (struct sockaddr *)&src;
    }
    int ret = rdma_resolve_addr(id->cm, srcp, res->ai_dst_addr, timeout_ms);
    int e = errno;
    vb_sockaddr_str(res->ai_dst_addr, id->peer_str, sizeof(id->peer_str));
    rdma_freeaddrinfo(res);
    if (ret != 0) {
        vb_set_error_errno(error, e, "resolve address %s", id->peer_str);
        return false;
    }
    VbCmEvent ev;
    /* The CM enforces timeout_ms itself; our wait only guards against a lost event. */
    if (!vb_cm_expect(id, VB_CM_ADDR_RESOLVED, timeout_ms + 1000, wake_fd, &ev,
                      "resolve address", error)) {
        return false;
    }
    if (rdma_resolve_route(id->cm, timeout_ms) != 0) {
        vb_set_error_errno(error, errno, "resolve route to %s", id->peer_str);
        return false;
    }
    return vb_cm_expect(id, VB_CM_ROUTE_RESOLVED, timeout_ms + 1000, wake_fd, &ev,
                        "resolve route to", error);
}

bool vb_cm_set_rc_params(VbCmId *id, int retry_count, int ack_timeout, GError **error)
{
    if (retry_count >= 0) {
        id->retry_count = (uint8_t)MIN(retry_count, 7);
    }
    if (ack_timeout > 0) {
        uint8_t t = (uint8_t)MIN(ack_timeout, 31);
        if (rdma_set_option(id->cm, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t,
                            sizeof(t)) != 0) {
            vb_set_error_errno(error, errno, "set the ACK timeout (%u) of %s", t,
                               vb_cm_peer_str(id));
            return false;
        }
    }
    return true;
}

static void vb_cm_conn_param(struct rdma_conn_param *p, const void *pdata, size_t len,
                             uint8_t rd_atom, uint8_t retry_count)
{
    memset(p, 0, sizeof(*p));
    p->private_data = pdata;
    p->private_data_len = (uint8_t)len;
    p->responder_resources = rd_atom ? rd_atom : 1;
    p->initiator_depth = rd_atom ? rd_atom : 1;
    p->retry_count = retry_count;
    /* Flow control is by credits: an RNR NAK is a bug and must surface, not be retried. */
    p->rnr_retry_count = 0;
}

bool vb_cm_connect(VbCmId *id, const void *pdata, size_t len, uint8_t rd_atom, int timeout_ms,
                   int wake_fd, VbCmEvent *rej, GError **error)
{
    if (len > VB_CM_CONNECT_PRIVATE_MAX) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED,
                    "connect private data of %zu bytes exceeds %u", len,
                    VB_CM_CONNECT_PRIVATE_MAX);
        return false;
    }
    struct rdma_conn_param p;
    vb_cm_conn_param(&p, pdata, len, rd_atom, id->retry_count);
    if (rdma_connect(id->cm, &p) != 0) {
        vb_set_error_errno(error, errno, "connect to %s", vb_cm_peer_str(id));
        return false;
    }
    VbCmEvent ev;
    if (!vb_cm_expect(id, VB_CM_ESTABLISHED, timeout_ms, wake_fd, &ev, "connect to", error)) {
        if (rej && ev.step == VB_CM_REJECTED) {
            *rej = ev;
        }
        return false;
    }
    return true;
}

bool vb_cm_accept(VbCmId *id, const void *pdata, size_t len, int timeout_ms, int wake_fd,
                  GError **error)
{
    struct rdma_conn_param p;
    vb_cm_conn_param(&p, pdata, len, 0, id->retry_count);
    if (rdma_accept(id->cm, &p) != 0) {
        vb_set_error_errno(error, errno, "accept connection from %s", vb_cm_peer_str(id));
        return false;
    }
    VbCmEvent ev;
    return vb_cm_expect(id, VB_CM_ESTABLISHED, timeout_ms, wake_fd, &ev,
                        "establish connection from", error);
}

bool vb_cm_reject(VbCmId *id, const void *pdata, size_t len, GError **error)
{
    if (rdma_reject(id->cm, pdata, (uint8_t)MIN(len, (size_t)VB_CM_REJECT_PRIVATE_MAX)) != 0) {
        vb_set_error_errno(error, errno, "reject connection from %s", vb_cm_peer_str(id));
        return false;
    }
    return true;
}

void vb_cm_disconnect(VbCmId *id)
{
    if (id && id->cm) {
        /* Also moves the QP to the error state, which flushes posted work. A second call
         * (shutdown racing close) just fails with EINVAL, harmlessly. */
        rdma_disconnect(id->cm);
    }
}
