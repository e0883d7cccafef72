/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to transport/rdma/: the backend's object layouts (domain, region, remote, channel,
 * listener), its tuning constants and the functions its files share. The RDMA backend: one RC
 * QP per channel over librdmacm, payload placed by one-sided RDMA WRITEs into the peer's
 * registered regions, messages as SENDs into a ring of posted RECVs. Flow control is by
 * credits carried in each SEND's immediate data, so correctness never depends on RNR retries
 * (the QPs are created with rnr_retry 0: an RNR is a bug, and fails). Everything
 * verbs-specific goes through verbs/vb.h.
 */
#pragma once

#include "xp.h"
#include "xp-rdma.h"

#include "state.h"
#include "vb.h"
#include "wire.h"

#include <stdatomic.h>

/* RECV buffers per channel, i.e. messages the peer may have in flight (its credits). */
#define RDMA_RECV_RING 32u
/* Registered send buffers for messages that do not fit inline. */
#define RDMA_SEND_BUFS 16u
/* Default send queue depth; XpOptions.max_send_wr overrides. */
#define RDMA_SQ_DEPTH 256u
/* Requested inline size: covers packet headers (48 bytes plus zero-page offsets). */
#define RDMA_INLINE_WANT 256u
/* Unsignaled WRITEs between two signaled ones (recycles send queue slots). */
#define RDMA_SIGNAL_EVERY 16u
/* WRs built before one post (one doorbell). */
#define RDMA_WR_BATCH 32u
/* Largest SGE / WRITE we build (segments above are split). */
#define RDMA_WR_MAX_BYTES (1u << 30)
/* CQ entries processed per poll call. */
#define RDMA_POLL_BUDGET 32
/* Bounded wait in close() for sends already posted to be acknowledged. */
#define RDMA_CLOSE_DRAIN_MS 2000

/* ------------------------------------------------------------------ domain.c, region.c */

/* One session: options and, once the first connection or region needs them, the device and
 * the PD every channel and region of the session shares. */
typedef struct {
    XpDomain base;
    XpOptions opts;  /* copy; rdma_dev owned */
    GMutex lock;     /* lazy device/PD creation (control path only) */
    VbDevice *dev;   /* NULL until the first cm_id or region */
    VbPd *pd;
} RdmaDomain;

typedef struct {
    RdmaDomain *dom;
    VbMr *mr;
} RdmaRegion;

typedef struct {
    uint64_t addr;
    uint32_t rkey;
    uint64_t len;
} RdmaRemote;

/* ------------------------------------------------------------------ channel */

typedef struct RdmaChannel RdmaChannel;

typedef struct {
    VbCqe cqe;
    RdmaChannel *ch;
    unsigned idx;
} RdmaRecvSlot;

/* A signaled send-queue WR: completing it retires every WR up to seq (completions are in
 * order on a send queue); uses_buf: it was a SEND from the oldest busy send buffer. */
typedef struct {
    VbCqe cqe;
    RdmaChannel *ch;
    uint64_t seq;
    bool uses_buf;
} RdmaSqMark;

/* One connection. Owns its cm_id (and event channel), CQ (and completion channel), QP,
 * buffers and MRs; borrows the domain. All mutable state is under `lock`, which only this
 * channel's callers take: channels never share a lock on the data path. */
struct RdmaChannel {
    XpChannel base;
    RdmaDomain *dom;
    char *peer;
    int timeout_ms;
    VbCmId *id;
    VbCq *cq;
    VbQp *qp;
    int wake_fd;          /* eventfd: written by shutdown, never drained */
    atomic_int inject;    /* pending injected fault (errno) */
    atomic_bool inject_bad_rkey; /* the next message with WRITEs corrupts their rkey */

    GMutex lock;
    GCond cond;           /* signalled when the poller finishes a round */
    bool polling;         /* one thread at a time sleeps on the fds for the others */
    RdmaChState state;    /* moved only by xp_rdma_ch_move() */
    int err;              /* FAILED: the first fatal error (negative errno) */
    char *err_detail;     /* FAILED: what failed, e.g. a completion status */

    /* receive side */
    uint8_t *recv_buf;
    VbMr *recv_mr;
    RdmaRecvSlot recv[RDMA_RECV_RING];
    unsigned ready_idx[RDMA_RECV_RING]; /* completed slots in arrival order */
    uint32_t ready_len[RDMA_RECV_RING];
    unsigned ready_head, ready_count;
    unsigned recv_posted;
    unsigned credits_owed; /* RECVs re-posted since we last told the peer */

    /* send side */
    int send_timeout_ms;   /* <0: a send waits for credits as long as the peer gives none */
    gint64 send_deadline;  /* of the send_msg() in progress (monotonic us, -1: none) */
    bool send_timed_out;   /* a send met its deadline: later ones fail at once, as tcp's */
    unsigned credits;      /* peer RECVs we may still consume */
    uint8_t *send_buf;
    VbMr *send_mr;
    unsigned sbuf_head, sbuf_busy; /* ring: next to use, in use (oldest = head - busy) */
    VbQpCaps caps;
    RdmaSqMark *marks;     /* caps.max_send_wr entries, indexed by seq % depth */
    VbCqe unsignaled_cqe;  /* error completions of unsignaled WRITEs */
    uint64_t sq_posted, sq_done;
    unsigned since_signal;
    VbWr wrs[RDMA_WR_BATCH + 1];
    VbSge *sges;           /* RDMA_WR_BATCH * caps.max_send_sge */
    uint32_t max_wr_bytes; /* one WRITE's bytes: RDMA_WR_MAX_BYTES or the port's max_msg_sz */
    unsigned nwr, nsge;

    XpCounters ctr;
};

/* ------------------------------------------------------------------ listener (cm.c) */

typedef struct {
    XpListener base;
    RdmaDomain *dom;
    VbCmId *id;
    int wake_fd;
    char *uri;
    XpLogLimit refuse_log; /* malformed hellos, refused without a channel */
} RdmaListener;

/* ------------------------------------------------------------------ shared functions */

/* domain.c: re-home a verbs error into XP_ERROR, keeping its message (frees vb_err). */
void xp_rdma_propagate(GError **error, GError *vb_err, const char *prefix);
char *xp_rdma_uri_of(const char *hostport);
XpDomain *xp_rdma_domain_new(const XpOptions *opts, GError **error);
void xp_rdma_domain_free(XpDomain *xd);
/* A connection's device must be the session's: one PD serves all channels and regions. */
bool xp_rdma_domain_bind(RdmaDomain *d, VbCmId *id, GError **error);
VbPd *xp_rdma_domain_pd(RdmaDomain *d, GError **error);
/* Address-chosen port/GID must agree with explicit overrides. */
bool xp_rdma_check_overrides(const XpOptions *o, VbCmId *id, GError **error);

/* region.c */
bool xp_rdma_region_register(XpDomain *xd, void *addr, size_t len, uint32_t access,
                             XpRegion **out, GError **error);
bool xp_rdma_region_budget(XpDomain *xd, uint64_t bytes, unsigned channels, GError **error);
void xp_rdma_region_deregister(XpRegion *xr);
void xp_rdma_region_export(XpRegion *xr, uint8_t desc[XP_REGION_DESC_SIZE]);
bool xp_rdma_remote_import(XpDomain *xd, const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len,
                           XpRemote **out, GError **error);
void xp_rdma_remote_free(XpRemote *r);

/* channel.c: lifecycle, completions common to both sides, progress */
RdmaChannel *xp_rdma_channel_new(RdmaDomain *d, VbCmId *id, const XpOptions *opts,
                                 GError **error);
void xp_rdma_channel_destroy(RdmaChannel *ch);
/* With ch->lock held: moves the channel to `to` when state.h's table allows it and says
 * whether it did; an event the state already implies is dropped (logged at debug level). */
bool xp_rdma_ch_move(RdmaChannel *ch, RdmaChState to);
/* With ch->lock held: shut down or failed, i.e. nothing is worth waiting for. */
static inline bool xp_rdma_ch_stopped(const RdmaChannel *ch)
{
    return ch->state == RDMA_CH_SHUT || ch->state == RDMA_CH_FAILED;
}
/* With ch->lock held: the first failure moves the channel to FAILED and records err/detail;
 * later ones are dropped. */
void xp_rdma_fail(RdmaChannel *ch, int err, const char *what, const char *detail);
bool xp_rdma_wc_ok(RdmaChannel *ch, const VbWc *wc, const char *what);
int xp_rdma_progress(RdmaChannel *ch, gint64 deadline);
int xp_rdma_wait_sq_done(RdmaChannel *ch, gint64 deadline);
int xp_rdma_poll_cq(RdmaChannel *ch);
int xp_rdma_take_fault(RdmaChannel *ch);
int xp_rdma_drain(XpChannel *xc, int timeout_ms);
void xp_rdma_shutdown(XpChannel *xc);
void xp_rdma_close(XpChannel *xc);
const char *xp_rdma_peer(XpChannel *xc);
void xp_rdma_counters(XpChannel *xc, XpCounters *out);
void xp_rdma_inject_fault(XpChannel *xc, int err);
void xp_rdma_set_send_timeout(XpChannel *xc, int timeout_ms);
void xp_rdma_inject_completion_error(XpChannel *xc);
const char *xp_rdma_error_detail(XpChannel *xc);
int xp_rdma_numa_node(XpChannel *xc);

/* send.c */
void xp_rdma_sq_done(VbCqe *cqe, const VbWc *wc);
void xp_rdma_unsignaled_done(VbCqe *cqe, const VbWc *wc);
void xp_rdma_maybe_return_credits(RdmaChannel *ch);
int xp_rdma_send_check(RdmaChannel *ch);
int xp_rdma_send_msg(XpChannel *xc, const void *msg, size_t len, const XpSeg *segs,
                     unsigned nsegs);

/* recv.c */
void xp_rdma_recv_done(VbCqe *cqe, const VbWc *wc);
int xp_rdma_post_recv_slot(RdmaChannel *ch, unsigned idx);
int xp_rdma_recv_msg(XpChannel *xc, void *buf, size_t cap, size_t *len, int timeout_ms);

/* cm.c: connect, listen, accept, answer */
XpChannel *xp_rdma_connect(XpDomain *xd, const char *host, const char *port, const void *hello,
                           size_t hello_len, const XpOptions *opts, GError **error);
XpListener *xp_rdma_listen(XpDomain *xd, const char *host, const char *port, GError **error);
const char *xp_rdma_listener_uri(XpListener *xl);
XpChannel *xp_rdma_accept(XpListener *xl, int timeout_ms, void *hello, size_t *hello_len,
                          GError **error);
bool xp_rdma_answer(XpChannel *xc, uint32_t status, const char *reason, GError **error);
void xp_rdma_listener_shutdown(XpListener *xl);
void xp_rdma_listener_close(XpListener *xl);
