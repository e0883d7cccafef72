/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transport channel abstraction: one versioned ops table per backend (tcp, rdma), chosen once
 * from a URI and checked then (xp_ops_check()). The engine talks to transports only through
 * the xp_*() wrappers below, never through the table (tests/check-layering.sh enforces it).
 * A transport knows messages, payload segments and registered memory regions; it knows
 * nothing of RAM blocks, rounds or pages. Backends: transport/tcp/, transport/rdma/.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

G_BEGIN_DECLS

#define XP_ERROR (xp_error_quark())
GQuark xp_error_quark(void);

typedef enum {
    XP_ERROR_FAILED,      /* anything else; message says what */
    XP_ERROR_URI,         /* malformed or unknown URI */
    XP_ERROR_CONNECT,     /* peer unreachable, address/route resolution failed */
    XP_ERROR_REJECTED,    /* peer answered our hello with a refusal (reason in message) */
    XP_ERROR_TIMEOUT,     /* connect/accept/resolve did not finish in time */
    XP_ERROR_CLOSED,      /* channel or listener shut down */
    XP_ERROR_UNSUPPORTED, /* feature the device or backend lacks (e.g. ODP) */
    XP_ERROR_MEMLOCK,     /* RLIMIT_MEMLOCK too low to pin the requested memory */
    XP_ERROR_NO_DEVICE,   /* no usable RDMA device */
} XpErrorCode;

/* Bumped whenever XpOps changes shape; xp_ops_check() refuses mismatches. */
#define XP_OPS_VERSION 4

/* Largest message (the header part of a send) a channel must carry. */
#define XP_MSG_MAX 8192u
/* The connect hello must fit RC rdma_cm private data (56 bytes). */
#define XP_HELLO_MAX 56u
/* Bytes of a reason text carried in a refusal (fits rdma_cm reject private data). */
#define XP_REASON_MAX 120u
/* Listener admission (docs/protocol.md 3.3): accept() reads the hellos of every pending
 * connection at once, gives each at most XP_HELLO_TIMEOUT_MS (or the domain's timeout when
 * that is shorter) and keeps at most XP_PENDING_MAX waiting (a newcomer drops the oldest),
 * so connections that never say hello cannot delay or starve one that does. */
#define XP_PENDING_MAX 64u
#define XP_HELLO_TIMEOUT_MS 2000
/* Opaque descriptor of an exported region (rdma: addr + rkey), carried by the engine. */
#define XP_REGION_DESC_SIZE 16u

enum {
    /* Segments of send_msg() land in peer memory by themselves (one-sided RDMA WRITE):
     * the receiver must not call recv_payload(). Without it, payload follows the message
     * in the stream and the receiver reads it with recv_payload(). */
    XP_CAP_PLACED_PAYLOAD = 1u << 0,
    /* Memory must be registered (region_*) before it is sent from or written into. */
    XP_CAP_REGIONS = 1u << 1,
    /* Can send payload without a kernel copy (MSG_ZEROCOPY). */
    XP_CAP_ZEROCOPY = 1u << 2,
};

enum {
    XP_REGION_LOCAL = 1u << 0,        /* source of sends (lkey) */
    XP_REGION_REMOTE_WRITE = 1u << 1, /* peer may write into it (rkey) */
};

typedef struct XpOps XpOps;
typedef struct XpDomain XpDomain;     /* per-session shared resources (RDMA: device, PD) */
typedef struct XpListener XpListener; /* accepts connections into one domain */
typedef struct XpChannel XpChannel;   /* one connection: control or data channel */
typedef struct XpRegion XpRegion;     /* local memory registered with a domain */
typedef struct XpRemote XpRemote;     /* peer memory imported from its descriptor */

typedef struct {
    int timeout_ms;        /* connect, accept answer, address/route resolution; 0 = 5000 */
    const char *rdma_dev;  /* NULL: chosen by address */
    int rdma_port;         /* 0: chosen by address */
    int gid_index;         /* -1: chosen by address */
    bool odp;              /* register with on-demand paging */
    bool zerocopy;         /* tcp: MSG_ZEROCOPY on data channels */
    bool control;          /* this channel carries control messages (latency over throughput) */
    unsigned max_send_wr;  /* 0: backend default */
    unsigned rc_retry;     /* rdma: RC transport retries 1-7; 0: 7 */
    unsigned rc_timeout;   /* rdma: ACK timeout exponent 1-31 (4.096 us * 2^n); 0: rdma_cm's */
} XpOptions;

/* One contiguous piece of payload: local memory, and (PLACED) where it lands at the peer. */
typedef struct {
    const void *addr;
    size_t len;
    XpRegion *region;       /* registration covering addr; NULL when !XP_CAP_REGIONS */
    XpRemote *remote;       /* destination region; NULL when !XP_CAP_PLACED_PAYLOAD */
    uint64_t remote_offset; /* byte offset inside remote */
} XpSeg;

/* Per-channel counters, read by stats and bench; plain fields, written by the owning thread. */
typedef struct {
    uint64_t msgs_sent, msgs_received;
    uint64_t bytes_sent, bytes_received; /* payload + messages */
    uint64_t wrs_posted, doorbells, completions, polls, idle_polls;
    uint64_t zerocopy_sends, zerocopy_copied;
} XpCounters;

struct XpOps {
    uint32_t version; /* XP_OPS_VERSION */
    const char *name; /* URI scheme: "tcp", "rdma" */
    uint32_t caps;    /* XP_CAP_* */

    /* --- required --- */
    XpDomain *(*domain_new)(const XpOptions *opts, GError **error);
    void (*domain_free)(XpDomain *dom);

    XpListener *(*listen)(XpDomain *dom, const char *host, const char *port, GError **error);
    /* Actual bound address as a URI ("tcp:127.0.0.1:40123"); owned by the listener. */
    const char *(*listener_uri)(XpListener *l);
    /* Wait for one connection request; returns a half-open channel and the peer's hello.
     * Every channel from accept() must be answered with answer() before use. */
    XpChannel *(*accept)(XpListener *l, int timeout_ms, void *hello, size_t *hello_len,
                         GError **error);
    /* status 0 accepts; anything else refuses with reason (the connector's error says it). */
    bool (*answer)(XpChannel *ch, uint32_t status, const char *reason, GError **error);
    /* Wakes a blocked accept() with XP_ERROR_CLOSED; thread-safe. */
    void (*listener_shutdown)(XpListener *l);
    void (*listener_close)(XpListener *l);

    /* Connect and present hello; returns only once the peer accepted it. */
    XpChannel *(*connect)(XpDomain *dom, const char *host, const char *port, const void *hello,
                          size_t hello_len, const XpOptions *opts, GError **error);

    /* Data path: 0 or -errno. send_msg() sends msg (copied before return) and the segments
     * (not copied; must stay valid until close). Messages and segments of one channel arrive
     * in order; for PLACED transports all segments are in peer memory before the peer
     * receives msg. Blocks while the peer cannot take more (credits, socket buffer). */
    int (*send_msg)(XpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                    unsigned nsegs);
    /* Receive the next message into buf; -ETIMEDOUT after timeout_ms (<0 = forever),
     * -EPIPE when the peer closed, -EMSGSIZE if the message exceeds cap. */
    int (*recv_msg)(XpChannel *ch, void *buf, size_t cap, size_t *len, int timeout_ms);
    /* Makes every blocked or future call on ch fail promptly (-EPIPE); thread-safe. */
    void (*shutdown)(XpChannel *ch);
    void (*close)(XpChannel *ch);
    /* Human-readable peer, e.g. "tcp:10.0.0.2:4444", owned by ch. */
    const char *(*peer)(XpChannel *ch);

    /* --- optional --- */
    /* Without XP_CAP_PLACED_PAYLOAD: read exactly the payload that followed the last message. */
    int (*recv_payload)(XpChannel *ch, const struct iovec *iov, unsigned iovcnt);
    /* With XP_CAP_REGIONS. */
    bool (*region_register)(XpDomain *dom, void *addr, size_t len, uint32_t access,
                            XpRegion **out, GError **error);
    void (*region_deregister)(XpRegion *r);
    void (*region_export)(XpRegion *r, uint8_t desc[XP_REGION_DESC_SIZE]);
    bool (*remote_import)(XpDomain *dom, const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len,
                          XpRemote **out, GError **error);
    void (*remote_free)(XpRemote *r);
    void (*counters)(XpChannel *ch, XpCounters *out);
    /* Waits until the peer acknowledged everything sent on ch so far (rdma: every posted WR
     * completed), so a failure of work already handed over surfaces now, not at the next
     * send: 0, -ETIMEDOUT after timeout_ms, or the channel's -errno. */
    int (*drain)(XpChannel *ch, int timeout_ms);
    /* Test seam: the next send_msg/recv_msg on ch fails with -err (the channel stays usable). */
    void (*inject_fault)(XpChannel *ch, int err);
    /* Test seam (rdma): the WRITEs of the next message that has segments carry a corrupted
     * rkey, so the device itself fails them with an error completion, as a real fault would. */
    void (*inject_completion_error)(XpChannel *ch);
    /* Why ch failed when the -errno of the data path does not say it (rdma: the failed work
     * completion's status), or NULL. Owned by ch, unchanged once set; thread-safe. */
    const char *(*error_detail)(XpChannel *ch);
    /* With XP_CAP_REGIONS: checks before any registration that `bytes` of regions plus the
     * buffers of `channels` channels can be pinned, so a session fails up front with the
     * total it needs (rdma: RLIMIT_MEMLOCK) instead of halfway through its blocks. */
    bool (*region_budget)(XpDomain *dom, uint64_t bytes, unsigned channels, GError **error);
    /* From now on a send_msg() on ch that has not completed within timeout_ms fails with
     * -ETIMEDOUT, instead of blocking while the peer does not read (tcp: socket buffer
     * full; rdma: no credits); every later send then fails with -ETIMEDOUT at once, while
     * receiving goes on. <0: no limit, the default. Control connections use it so that a
     * stalled peer cannot hold a sender forever. */
    void (*set_send_timeout)(XpChannel *ch, int timeout_ms);
    /* NUMA node of the device ch runs over (rdma: its RDMA device; tcp: the NIC of its local
     * address), -1 when unknown or none (loopback, a virtual device). For placing the
     * threads and buffers that use ch next to it. */
    int (*numa_node)(XpChannel *ch);
};

/* Every backend object starts with its base, so the wrappers can find the ops. */
struct XpDomain { const XpOps *ops; };
struct XpListener { const XpOps *ops; };
struct XpChannel { const XpOps *ops; };

/* URI "scheme:HOST:PORT", HOST may be [IPv6]. Returns the backend's ops, which passed
 * xp_ops_check(). */
const XpOps *xp_uri_parse(const char *uri, char **host, char **port, GError **error);
/* The backend named `name` if it is compiled in and passes xp_ops_check(), else NULL. */
const XpOps *xp_ops_lookup(const char *name);
/* All compiled-in backends, NULL-terminated. */
const XpOps *const *xp_ops_all(void);
/* A table is usable only with the current version, a name, every required op, and the
 * optional ops its capability bits promise; the error names the first thing missing. */
bool xp_ops_check(const XpOps *ops, GError **error);
void xp_options_init(XpOptions *opts);

/* --- the chosen table --- */
const char *xp_ops_name(const XpOps *ops);
bool xp_has_cap(const XpOps *ops, uint32_t cap);
bool xp_channel_has_cap(XpChannel *ch, uint32_t cap);

/* --- control path: the ops of the same name (see XpOps) --- */
XpDomain *xp_domain_new(const XpOps *ops, const XpOptions *opts, GError **error);
XpListener *xp_listen(XpDomain *dom, const char *host, const char *port, GError **error);
const char *xp_listener_uri(XpListener *l);
XpChannel *xp_accept(XpListener *l, int timeout_ms, void *hello, size_t *hello_len,
                     GError **error);
bool xp_answer(XpChannel *ch, uint32_t status, const char *reason, GError **error);
void xp_listener_shutdown(XpListener *l); /* NULL-safe */
XpChannel *xp_connect(XpDomain *dom, const char *host, const char *port, const void *hello,
                      size_t hello_len, const XpOptions *opts, GError **error);

#ifdef MFR_FUZZ_RECORDER
/* Fuzz build: writes a received message to $MFR_RECORD_DIR (transport/record.c). */
void xp_record_msg(const void *msg, size_t len);
#endif

/* --- regions (XP_CAP_REGIONS): the domain says whose ops --- */
bool xp_region_register(XpDomain *dom, void *addr, size_t len, uint32_t access,
                        XpRegion **out, GError **error);
void xp_region_deregister(XpDomain *dom, XpRegion *r); /* NULL-safe */
void xp_region_export(XpDomain *dom, XpRegion *r, uint8_t desc[XP_REGION_DESC_SIZE]);
bool xp_remote_import(XpDomain *dom, const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len,
                      XpRemote **out, GError **error);
void xp_remote_free(XpDomain *dom, XpRemote *r);      /* NULL-safe */
/* True at once for a backend without a budget (nothing to pin). */
bool xp_region_budget(XpDomain *dom, uint64_t bytes, unsigned channels, GError **error);

/* --- optional channel ops: false (and *out zeroed) when the backend has none --- */
bool xp_channel_counters(XpChannel *ch, XpCounters *out);
bool xp_inject_fault(XpChannel *ch, int err);
bool xp_inject_completion_error(XpChannel *ch);

/* --- data path: inline calls of the ops, 0 or -errno (see XpOps) --- */
static inline int xp_send_msg(XpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                              unsigned nsegs)
{
    return ch->ops->send_msg(ch, msg, len, segs, nsegs);
}

static inline int xp_recv_msg(XpChannel *ch, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    return ch->ops->recv_msg(ch, buf, cap, len, timeout_ms);
}

static inline int xp_recv_payload(XpChannel *ch, const struct iovec *iov, unsigned iovcnt)
{
    return ch->ops->recv_payload(ch, iov, iovcnt);
}

/* Rate limit for log lines a peer can trigger at will (refused or dropped connections): at
 * most XP_LOG_BURST lines per second; the next line let through says how many were left out.
 * Zero-initialised; one thread at a time. For the backends' listeners. */
#define XP_LOG_BURST 5u
typedef struct {
    int64_t window_us; /* monotonic start of the current one-second window */
    unsigned used;     /* lines logged in it */
    unsigned dropped;  /* lines left out since the last one logged */
} XpLogLimit;
void xp_log_limited(XpLogLimit *rl, const char *domain, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* --- channel and lifetime --- */
/* No-op for a backend without set_send_timeout. */
void xp_channel_set_send_timeout(XpChannel *ch, int timeout_ms);
/* 0 at once for a backend without drain (its sends fail synchronously). */
int xp_channel_drain(XpChannel *ch, int timeout_ms);
void xp_channel_shutdown(XpChannel *ch); /* NULL-safe */
void xp_channel_close(XpChannel *ch);    /* NULL-safe */
const char *xp_channel_peer(XpChannel *ch);
const char *xp_channel_error_detail(XpChannel *ch); /* NULL when none (or no such op) */
int xp_channel_numa_node(XpChannel *ch);   /* -1 when unknown (or no such op) */
void xp_listener_close(XpListener *l);   /* NULL-safe */
void xp_domain_free(XpDomain *dom);      /* NULL-safe */

G_DEFINE_AUTOPTR_CLEANUP_FUNC(XpChannel, xp_channel_close)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(XpListener, xp_listener_close)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(XpDomain, xp_domain_free)

G_END_DECLS
