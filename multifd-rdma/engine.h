/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine internals shared by the source (source.c, send.c) and destination (dest.c, recv.c)
 * sides: the first-error latch, the control connection and small time helpers. Not installed.
 */
#pragma once

#include "mfrdma.h"
#include "regions.h"
#include "state.h"
#include "wire.h"
#include "xp.h"

#include <stdatomic.h>

G_BEGIN_DECLS

#define MFR_LOG_DOMAIN "mfrdma"

/* ---------- first error wins ---------- */

typedef struct MfrFail MfrFail;
struct MfrFail {
    GMutex lock;
    GError *first;      /* owned; the error run() reports */
    atomic_bool failed; /* set once, never cleared */
    /* Called once, outside the lock, after the first error: shut everything down so that no
     * thread stays blocked (the session's channels, queues and semaphores). */
    void (*on_fail)(void *opaque, const GError *err);
    void *opaque;
};

void mfr_fail_init(MfrFail *f, void (*on_fail)(void *, const GError *), void *opaque);
void mfr_fail_clear(MfrFail *f);
/* Takes ownership of err. Returns true when err became the first error. */
bool mfr_fail_set(MfrFail *f, GError *err);
/* printf-style shortcut for mfr_fail_set(g_error_new(MFR_ERROR, code, ...)). */
bool mfr_fail(MfrFail *f, MfrErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static inline bool mfr_failed(MfrFail *f)
{
    return atomic_load_explicit(&f->failed, memory_order_acquire);
}
/* Copy of the first error (or a generic one) for run() to return. */
void mfr_fail_propagate(MfrFail *f, GError **error);

/* mfr_fail_set() for a failure that may be only the echo of the peer's (a send that found the
 * connection closed): first waits up to 500 ms for the peer's reported error to win. */
bool mfr_fail_echo(MfrFail *f, GError *err);

/* A transport error on a data channel is often only the echo of an error the peer reported
 * on the control connection a moment earlier; wait briefly so the precise one wins.
 * detail (may be NULL): the transport's own account (xp_channel_error_detail()), which says
 * more than err when there is one, e.g. the status of a failed work completion; being a
 * local cause, it is reported at once. */
void mfr_fail_transport(MfrFail *f, const char *what, int err, const char *detail);

/* ---------- configuration (config.c) ---------- */

/* Range checks of the transport knobs both configs share (MFR_ERROR_USAGE naming side and
 * value); the transport would otherwise clamp them silently. */
bool mfr_transport_check(const char *side, const MfrTransportConfig *t, GError **error);
/* The one place a side's transport config becomes the transport's options (domain, listener
 * and every connection): control marks the control connection (never zerocopy). */
void mfr_transport_xp_options(const MfrTransportConfig *t, unsigned timeout_ms, bool control,
                              XpOptions *o);

/* ---------- registration (register.c) ---------- */

#define MFR_REGISTER_MAX_THREADS 16u

typedef struct {
    const XpOps *ops;
    XpDomain *dom;
    const MfrRamBlock *blocks;
    unsigned nblocks;
    uint32_t access;    /* XP_REGION_* */
    bool prefault;      /* populate each chunk first (fresh memory) */
    unsigned threads;   /* 0: one per online CPU */
    unsigned channels;  /* data channels, for the up-front pinning budget */
    const char *side;   /* "source" / "destination", to prefix errors */
} MfrRegisterJob;

typedef struct {
    double ms;           /* wall time */
    double cpu_s;        /* CPU of every thread that took part */
    double helper_cpu_s; /* of that, the threads other than the caller's (all of them) */
    unsigned threads;
} MfrRegisterResult;

/* Threads a registration of nchunks chunks uses: requested (0 = one per online CPU), never
 * more than there are chunks, at most MFR_REGISTER_MAX_THREADS. */
unsigned mfr_register_threads(unsigned requested, unsigned nchunks);
/* The transport's pinning budget for all blocks at once (and the channels' buffers), so a
 * session fails before it pins anything, naming the total it needs. */
bool mfr_register_budget(const MfrRegisterJob *job, GError **error);

typedef struct {
    MfrRegisterJob base;      /* blocks, access, prefault, threads, budget, side */
    MfrRegionTable *table;    /* a LOCAL table of base.blocks: its map says the chunks; each
                               * chunk's region is set there, then made ready */
    MfrFail *fail;            /* a failed chunk fails it; once failed (by anyone) the threads
                               * stop after their current chunk */
    MfrRegionPublishFn publish; /* optional, see mfr_region_table_ready(); a failure is
                               * reported as the echo of the peer's (mfr_fail_echo()) */
    void *publish_opaque;
    int64_t inject_fail;      /* test seam: this flat chunk fails to register; -1: none */
    unsigned delay_ms;        /* test seam: extra time per chunk, like slow first touch */
} MfrRegisterChunksJob;

typedef struct MfrRegisterBg MfrRegisterBg;

/* Starts the threads (the caller checked mfr_register_budget() first), which populate (with
 * prefault) and register the chunks in flat order, i.e. in the order the source sends them.
 * NULL with an error only when not even one thread could start. */
MfrRegisterBg *mfr_register_chunks_start(const MfrRegisterChunksJob *job, GError **error);
/* Joins every thread (NULL-safe) and fills res (ms: from start until the last thread
 * finished). True when every chunk was registered. The regions stay in the table. */
bool mfr_register_chunks_join(MfrRegisterBg *bg, MfrRegisterResult *res);
/* The same at once: checks the budget, registers every chunk of table (typically whole
 * blocks: mfr_chunk_map_whole()) and waits. On failure the chunks registered so far stay in
 * the table for its free. res is filled on success and failure. */
bool mfr_register_blocks(const MfrRegisterJob *job, MfrRegionTable *table,
                         MfrRegisterResult *res, GError **error);

/* ---------- control connection ---------- */

typedef struct {
    MfrCtrlHdr hdr;
    size_t len;      /* body bytes */
    uint8_t body[];
} MfrCtrlMsg;

typedef struct MfrControl MfrControl;

/* Takes ownership of ch. The reader thread starts at once: it answers keepalives, turns
 * ERROR/CANCEL from the peer and silence longer than timeout_ms into failures of f, and
 * queues every other message for mfr_control_recv(). */
MfrControl *mfr_control_new(XpChannel *ch, unsigned timeout_ms, MfrFail *f, MfrSide side);
/* Handles a message on the reader thread; false with the error fails the session. */
typedef bool (*MfrCtrlHandler)(void *opaque, const MfrCtrlMsg *m, GError **error);
/* From now on messages of type go to handler on the reader thread, in arrival order,
 * instead of the queue, starting with those queued already (handled here, in the caller's
 * thread, before the reader dispatches any later one). False with the first handler error
 * (the queued messages of type after it are kept). The state check of mfr_control_recv()
 * does not apply to them: the handler validates. */
bool mfr_control_set_handler(MfrControl *c, MfrCtrlType type, MfrCtrlHandler handler,
                             void *opaque, GError **error);
/* The owner's session state; mfr_control_recv() refuses messages it does not accept. Read
 * only by the thread that calls mfr_control_recv(), which is the one that moves it. */
void mfr_control_track_state(MfrControl *c, const MfrState *state);
/* Stop the reader and close the channel; errors after mfr_control_done() are not failures. */
void mfr_control_free(MfrControl *c);
/* From now on the connection closing is expected (migration finished). */
void mfr_control_done(MfrControl *c);
XpChannel *mfr_control_channel(MfrControl *c);
bool mfr_control_send(MfrControl *c, MfrCtrlType type, const void *body, size_t len,
                      GError **error);
/* Best effort, for reporting our own failure to the peer. */
void mfr_control_send_error(MfrControl *c, const GError *err);
/* Next message; NULL with the session's error when it failed, or MFR_ERROR_TIMEOUT after
 * timeout_ms (<0: wait until a message or a failure). */
MfrCtrlMsg *mfr_control_recv(MfrControl *c, int timeout_ms, GError **error);
/* Same, but a message of another type is a protocol error. */
MfrCtrlMsg *mfr_control_expect(MfrControl *c, MfrCtrlType type, int timeout_ms, GError **error);
/* Wakes mfr_control_recv() (used by on_fail). */
void mfr_control_wake(MfrControl *c);
double mfr_control_cpu_s(MfrControl *c);
const char *mfr_ctrl_type_str(MfrCtrlType t);

/* ---------- test seams (not exported from libmfrdma.so) ---------- */

/* The next I/O of source channel `channel` fails with -err (err a positive errno; transport
 * inject_fault). False when the channel does not exist yet or the transport has no seam.
 * Thread-safe. */
bool mfr_source_inject_fault(MfrSource *src, unsigned channel, int err);
/* The next pages channel `channel` writes fail in the device with an error completion
 * (transport inject_completion_error). False without the channel or the seam. */
bool mfr_source_inject_completion_error(MfrSource *src, unsigned channel);
/* Before run(): the destination's registration of chunk `chunk` of block `block` (in announce
 * order) fails, as a failed ibv_reg_mr() would. */
void mfr_dest_inject_register_failure(MfrDest *dst, unsigned block, uint32_t chunk);
/* Before run(): every chunk's registration takes ms longer, as memory whose first touch is
 * slow would (seconds per GiB on some hosts), so a test can see the source send while the
 * destination still registers without migrating gigabytes. */
void mfr_dest_inject_register_delay(MfrDest *dst, unsigned ms);

/* ---------- helpers ---------- */

static inline double mfr_now_s(void)
{
    return (double)g_get_monotonic_time() / 1e6;
}
/* CPU seconds (user + system) of the calling thread. */
double mfr_thread_cpu_s(void);
/* Transport errors (XP_ERROR) become MFR_ERROR_TRANSPORT/REJECTED with the same text. */
GError *mfr_error_from_xp(GError *xp_err, const char *prefix);

G_END_DECLS
