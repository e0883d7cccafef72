/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thin, safe layer over libibverbs and librdmacm. Nothing outside verbs/ includes their
 * headers; callers see opaque Vb* objects, plain structs and GError messages. Control path
 * calls take GError **; data path calls (post, poll) return 0 or -errno.
 */
#pragma once
#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

#define VB_ERROR (vb_error_quark())
GQuark vb_error_quark(void);

typedef enum {
    VB_ERROR_FAILED,      /* anything else; message says what */
    VB_ERROR_NO_DEVICE,   /* no (matching) RDMA device */
    VB_ERROR_UNSUPPORTED, /* device lacks a feature (ODP, ...) */
    VB_ERROR_MEMLOCK,     /* RLIMIT_MEMLOCK too low */
    VB_ERROR_UNREACHABLE, /* address/route resolution failed, peer unreachable, refused */
    VB_ERROR_REJECTED,    /* peer rejected with consumer private data (a reason) */
    VB_ERROR_TIMEOUT,     /* a CM step did not finish in time */
    VB_ERROR_CLOSED,      /* woken by a shutdown, or the peer disconnected */
} VbErrorCode;

/* The one helper turning errno from libibverbs/librdmacm into an error: "WHAT: strerror". */
void vb_set_error_errno(GError **error, int errnum, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* Data-path form: negative errno of a verbs return code (positive errno or -1 + errno). */
int vb_errno_ret(int ret);

typedef struct VbDevice VbDevice;
typedef struct VbPd VbPd;
typedef struct VbCq VbCq;
typedef struct VbQp VbQp;
typedef struct VbMr VbMr;
typedef struct VbCmId VbCmId;

/* ---------------------------------------------------------------- device.c */

typedef struct {
    char name[64];
    uint64_t node_guid;     /* network order, as the device reports it */
    uint64_t max_mr_size;
    int max_qp, max_qp_wr, max_sge, max_cqe, max_mr, max_qp_rd_atom;
    int phys_port_cnt;
    bool odp;              /* general ODP support */
    bool odp_rc_send, odp_rc_recv, odp_rc_write, odp_rc_read;
    bool odp_implicit;
} VbDeviceAttr;

typedef struct {
    int state;              /* IBV_PORT_* value */
    const char *state_str;  /* "ACTIVE", "DOWN", ... (static) */
    bool active;
    const char *link_layer; /* "InfiniBand" or "Ethernet" (static) */
    int active_mtu, max_mtu; /* bytes */
    int gid_tbl_len;
    int lid;
    uint32_t max_msg_sz;    /* largest message (one WR's bytes) the port carries */
} VbPortAttr;

/* Open by name through librdmacm's context list (so cm_ids on it share the context);
 * name NULL picks the first device with an ACTIVE port. */
VbDevice *vb_device_open(const char *name, GError **error);
void vb_device_free(VbDevice *dev);
const char *vb_device_name(const VbDevice *dev);
const VbDeviceAttr *vb_device_attr(const VbDevice *dev);
bool vb_device_port_attr(VbDevice *dev, int port, VbPortAttr *out, GError **error);
/* true when both refer to the same verbs context. */
bool vb_device_same(const VbDevice *a, const VbDevice *b);

/* ---------------------------------------------------------------- pd.c */

VbPd *vb_pd_new(VbDevice *dev, GError **error);
void vb_pd_free(VbPd *pd);
VbDevice *vb_pd_device(VbPd *pd);

/* ---------------------------------------------------------------- mr.c */

enum {
    VB_ACCESS_LOCAL_WRITE = 1u << 0,
    VB_ACCESS_REMOTE_WRITE = 1u << 1,
    VB_ACCESS_REMOTE_READ = 1u << 2,
    VB_ACCESS_ON_DEMAND = 1u << 3, /* ODP: no pinning; device must report support */
};

/* Fails with VB_ERROR_MEMLOCK ("need N MiB pinned ... ulimit -l") unless `bytes` more can be
 * pinned under RLIMIT_MEMLOCK (CAP_IPC_LOCK lifts the limit, as in the kernel). */
bool vb_memlock_check(uint64_t bytes, GError **error);
VbMr *vb_mr_reg(VbPd *pd, void *addr, size_t len, uint32_t access, GError **error);
void vb_mr_free(VbMr *mr);
uint32_t vb_mr_lkey(const VbMr *mr);
uint32_t vb_mr_rkey(const VbMr *mr);
void *vb_mr_addr(const VbMr *mr);
size_t vb_mr_length(const VbMr *mr);

/* ---------------------------------------------------------------- cq.c */

typedef enum {
    VB_WC_SEND,
    VB_WC_RDMA_WRITE,
    VB_WC_RDMA_READ,
    VB_WC_RECV,
    VB_WC_OTHER,
} VbWcOpcode;

/* The part of a work completion a consumer needs. status 0 = success. */
typedef struct {
    int status;             /* IBV_WC_* status */
    const char *status_str; /* ibv_wc_status_str(status) */
    VbWcOpcode opcode;      /* valid for successful completions */
    uint32_t byte_len;
    bool has_imm;
    uint32_t imm;           /* host order */
    uint32_t vendor_err;
} VbWc;

/* A completion is an object: embed a VbCqe in the request and recover the request in done()
 * with container_of. Never bits in wr_id. */
typedef struct VbCqe VbCqe;
struct VbCqe {
    void (*done)(VbCqe *cqe, const VbWc *wc);
};

/* The request that embeds cqe as `member`. */
#define vb_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define VB_WC_STATUS_SUCCESS 0
#define VB_WC_STATUS_FLUSH 5 /* IBV_WC_WR_FLUSH_ERR: QP went to error, work flushed */

/* CQ of `depth` entries with its own completion channel (non-blocking fd). */
VbCq *vb_cq_new(VbDevice *dev, int depth, GError **error);
void vb_cq_free(VbCq *cq);
/* Polls at most budget completions, calling each one's done(). Returns the count or -errno. */
int vb_cq_poll(VbCq *cq, int budget);
/* Request an event for the next completion. */
int vb_cq_arm(VbCq *cq);
/* The completion channel fd: readable when an armed CQ got a completion. */
int vb_cq_fd(const VbCq *cq);
/* Consume (and ack) a pending channel event; 1 if one was pending, 0 if none, -errno. */
int vb_cq_consume_event(VbCq *cq);
/* Poll; when idle, arm and block on the channel (and wake_fd if >= 0) up to timeout_ms
 * (<0 forever). Returns completions processed (0 = timed out or woken) or -errno. */
int vb_cq_wait(VbCq *cq, int budget, int timeout_ms, int wake_fd);
const char *vb_wc_status_str(int status);

/* ---------------------------------------------------------------- qp.c */

/* Same layout as struct ibv_sge (checked in qp.c), so lists pass through without copies. */
typedef struct {
    uint64_t addr;
    uint32_t length;
    uint32_t lkey;
} VbSge;

typedef struct {
    uint32_t max_send_wr, max_recv_wr, max_send_sge, max_recv_sge, max_inline;
} VbQpCaps;

typedef enum {
    VB_WR_WRITE,
    VB_WR_SEND,
} VbWrOpcode;

/* One work request of a post list. */
typedef struct {
    VbWrOpcode opcode;
    const VbSge *sge;
    unsigned nsge;
    uint64_t remote_addr; /* WRITE */
    uint32_t rkey;        /* WRITE */
    bool has_imm;
    uint32_t imm;          /* host order */
    bool inline_data;      /* copy payload into the WQE (len <= max_inline) */
    bool signaled;         /* false: completes silently unless it fails */
    VbCqe *cqe;            /* gets the completion: always when signaled, and the error
                            * completion of an unsignaled WR (give one, or errors are lost) */
} VbWr;

/* RC QP on a cm_id (rdma_create_qp) with both queues on cq. `want` is clamped to the device's
 * limits; the granted caps are stored and returned by vb_qp_caps(). */
VbQp *vb_qp_new(VbCmId *id, VbPd *pd, VbCq *cq, const VbQpCaps *want, GError **error);
void vb_qp_free(VbQp *qp);
const VbQpCaps *vb_qp_caps(const VbQp *qp);

/* The RC transport parameters a connected QP ended up with. */
typedef struct {
    unsigned retry_count; /* transport retries before an error completion */
    unsigned rnr_retry;   /* 0: an RNR NAK fails at once (we never depend on RNR) */
    unsigned ack_timeout; /* 4.096 us * 2^ack_timeout per try; 0 = infinite */
} VbQpRc;
bool vb_qp_query_rc(VbQp *qp, VbQpRc *out, GError **error);
/* Post wrs as one chain (one doorbell). 0 or -errno. */
int vb_qp_post_list(VbQp *qp, const VbWr *wrs, unsigned n);
int vb_qp_post_write(VbQp *qp, const VbSge *sge, unsigned nsge, uint64_t remote_addr,
                     uint32_t rkey, VbCqe *signal);
int vb_qp_post_send(VbQp *qp, const VbSge *sge, unsigned nsge, bool has_imm, uint32_t imm,
                    VbCqe *signal);
int vb_qp_post_recv(VbQp *qp, const VbSge *sge, unsigned nsge, VbCqe *cqe);
/* Move to the error state: all posted work completes with VB_WC_STATUS_FLUSH. */
int vb_qp_to_error(VbQp *qp);

/* ---------------------------------------------------------------- cm.c */

/* Every rdma_cm event, as a named step. */
typedef enum {
    VB_CM_ADDR_RESOLVED,
    VB_CM_ADDR_ERROR,
    VB_CM_ROUTE_RESOLVED,
    VB_CM_ROUTE_ERROR,
    VB_CM_CONNECT_REQUEST,
    VB_CM_CONNECT_RESPONSE,
    VB_CM_CONNECT_ERROR,
    VB_CM_UNREACHABLE,
    VB_CM_REJECTED,
    VB_CM_ESTABLISHED,
    VB_CM_DISCONNECTED,
    VB_CM_DEVICE_REMOVAL,
    VB_CM_MULTICAST_JOIN,
    VB_CM_MULTICAST_ERROR,
    VB_CM_ADDR_CHANGE,
    VB_CM_TIMEWAIT_EXIT,
    VB_CM_OTHER,
} VbCmStep;

#define VB_CM_PRIVATE_DATA_MAX 196u
#define VB_CM_CONNECT_PRIVATE_MAX 56u /* RC connect request */
#define VB_CM_REJECT_PRIVATE_MAX 148u

typedef struct {
    VbCmStep step;
    int status;                 /* event status (reject reason code, errno, ...) */
    uint8_t private_data[VB_CM_PRIVATE_DATA_MAX];
    size_t private_len;
    /* CONNECT_REQUEST: the connector's RDMA read depths (see vb_cm_connect's rd_atom). */
    uint8_t initiator_depth, responder_resources;
    VbCmId *new_id;             /* CONNECT_REQUEST: the new connection, on its own channel */
} VbCmEvent;

const char *vb_cm_step_str(VbCmStep step);

/* A cm_id with its own event channel (non-blocking fd). */
VbCmId *vb_cm_id_new(GError **error);
/* Destroys the QP first if one was created, then the id and its event channel. */
void vb_cm_id_free(VbCmId *id);
int vb_cm_fd(const VbCmId *id);
/* Human "IP:PORT" / "[IPv6]:PORT" of the peer or local side (owned by id, refreshed on call). */
const char *vb_cm_peer_str(VbCmId *id);
const char *vb_cm_local_str(VbCmId *id);
uint16_t vb_cm_local_port(VbCmId *id);
uint8_t vb_cm_port_num(VbCmId *id);
/* Checks that the resolved route's source GID is entry gid_index of the port's table; the
 * error names both GIDs. (rdma_cm picks the GID from the address; this honours an override
 * by verifying it, never by silently using another one.) */
bool vb_cm_check_gid_index(VbCmId *id, int gid_index, GError **error);

bool vb_cm_listen(VbCmId *id, const char *host, const char *port, int backlog,
                  GError **error);
/* Next event without blocking longer than timeout_ms (<0: forever; 0: just check);
 * wake_fd (>= 0) readable ends the wait with VB_ERROR_CLOSED. Returns false on timeout
 * (VB_ERROR_TIMEOUT) or error. The event is acked before return; for CONNECT_REQUEST the new
 * id is migrated to a fresh event channel and returned in ev->new_id (caller owns it). */
bool vb_cm_next_event(VbCmId *id, int timeout_ms, int wake_fd, VbCmEvent *ev, GError **error);
/* Wait for `want`; any other event becomes an error naming its step. On REJECTED the peer's
 * private data stays in *ev for the caller to decode. */
bool vb_cm_expect(VbCmId *id, VbCmStep want, int timeout_ms, int wake_fd, VbCmEvent *ev,
                  const char *what, GError **error);
/* Resolve address then route of host:port (IPv4 or IPv6). */
bool vb_cm_resolve(VbCmId *id, const char *host, const char *port, int timeout_ms, int wake_fd,
                   GError **error);
/* The same from a chosen source: dev (NULL: rdma_cm's choice), its port (0: any ACTIVE) and
 * GID (-1: by family); see vb_source_addr_for(). */
bool vb_cm_resolve_from(VbCmId *id, const char *host, const char *port, const char *dev,
                        int dev_port, int gid_index, int timeout_ms, int wake_fd,
                        GError **error);
/* RC transport parameters for the next connect/accept on id: retry_count (0-7; <0 keeps 7)
 * and the local ACK timeout exponent (1-31; 0 keeps rdma_cm's default), set after route
 * resolution (connector) or on the request's id (acceptor). */
bool vb_cm_set_rc_params(VbCmId *id, int retry_count, int ack_timeout, GError **error);
/* Connect with private data and wait for ESTABLISHED. rd_atom (0 = 1) is used for both
 * initiator_depth and responder_resources; the acceptor sees it in its CONNECT_REQUEST event,
 * so it can carry a small value beside the private data. On REJECTED the error is
 * VB_ERROR_REJECTED and *rej (if not NULL) holds the peer's private data. */
bool vb_cm_connect(VbCmId *id, const void *pdata, size_t len, uint8_t rd_atom, int timeout_ms,
                   int wake_fd, VbCmEvent *rej, GError **error);
bool vb_cm_accept(VbCmId *id, const void *pdata, size_t len, int timeout_ms, int wake_fd,
                  GError **error);
bool vb_cm_reject(VbCmId *id, const void *pdata, size_t len, GError **error);
/* Starts a disconnect (moves the QP to error, sends DREQ). Idempotent. */
void vb_cm_disconnect(VbCmId *id);

/* ---------------------------------------------------------------- cm-route.c */

/* Wrap the device a connected/bound cm_id resolved to (not owned by the VbDevice). */
VbDevice *vb_device_from_cm_id(VbCmId *id, GError **error);
/* true when id resolved to dev's verbs context. */
bool vb_device_is_cm_id_device(const VbDevice *dev, VbCmId *id);
/* The source address that makes rdma_cm use device dev, port (0: its first ACTIVE one) and
 * GID gid_index (-1: its first RoCE v2 GID, else any GID, of the family) towards a
 * destination of family AF_INET / AF_INET6: the GID's IP address, textual, into out. */
bool vb_source_addr_for(const char *dev, int port, int gid_index, int family, char *out,
                        size_t outlen, GError **error);

/* ---------------------------------------------------------------- devinfo.c */

typedef struct {
    int index;
    char type[16];    /* "IB", "RoCE v1", "RoCE v2" */
    char addr[64];    /* IPv6 textual form of the 16 GID bytes */
    char netdev[32];  /* "" if none */
} VbGidInfo;

typedef struct {
    int num;
    VbPortAttr attr;
    GArray *gids; /* VbGidInfo */
} VbPortInfo;

typedef struct {
    VbDeviceAttr attr;
    int numa_node; /* -1 unknown */
    char transport[16];
    GArray *ports; /* VbPortInfo */
} VbDevInfo;

/* Describe every RDMA device; an empty array (not an error) when there is none. */
GPtrArray *vb_devinfo_list(GError **error);
void vb_devinfo_free(VbDevInfo *info);
/* The device's NUMA node from sysfs; -1 when unknown (rxe and other virtual devices). */
int vb_device_numa_node(const VbDevice *dev);
/* First device with an ACTIVE port: its name (caller frees) or NULL. */
char *vb_devinfo_first_active(void);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbDevice, vb_device_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbPd, vb_pd_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbCq, vb_cq_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbQp, vb_qp_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbMr, vb_mr_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbCmId, vb_cm_id_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbDevInfo, vb_devinfo_free)

G_END_DECLS
