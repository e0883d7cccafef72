/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine internals shared by the source (source.c, send.c) and destination (dest.c, recv.c)
 * sides: the first-error latch, the control connection and small time helpers. Not installed.
 */
#pragma once

#include "mfrdma.h"
#include "state.h"
#include "thread.h"
#include "wire.h"
#include "xp.h"

#include <stdatomic.h>

/* The engine carries the transport's region descriptors in its messages unchanged. */
G_STATIC_ASSERT(MFR_REGION_DESC_SIZE == XP_REGION_DESC_SIZE);

G_BEGIN_DECLS

#define MFR_LOG_DOMAIN "mfrdma"

/* ---------- first error wins ---------- */

/* The first error wins, with one exception decided explicitly, never by a blind wait: an
 * error recorded as an *echo* (a symptom of the peer's failure: a connection it closed, a
 * send that found it gone) ends the session too, but a root cause that arrives later
 * (typically the peer's ERROR message, which the control reader keeps reading for:
 * mfr_control_settle()) replaces it. Until then the echo is kept quiet: it wakes the
 * session's threads but neither reports to the peer nor shuts the channels down, since that
 * would race the peer's own account (its channels would see ours close and call it an echo
 * in turn). */
typedef struct MfrFail MfrFail;
struct MfrFail {
    GMutex lock;
    GError *first;      /* owned; the error run() reports */
    bool echo;          /* first is only an echo; under lock */
    GError *replaced;   /* the echo a root cause replaced: kept until clear, since on_fail
                         * may still be reading it */
    bool loud;          /* on_fail ran for a root cause, or for the echo at finalize */
    atomic_bool failed; /* set once, never cleared */
    /* Called outside the lock. quiet (an echo, first error): wake every thread waiting on
     * the session (queues, semaphores) so it sees the failure. Otherwise: report err to the
     * peer and shut everything down, so that no thread stays blocked; that happens once,
     * for the first root cause or for an echo finalized by mfr_fail_finalize(). */
    void (*on_fail)(void *opaque, const GError *err, bool quiet);
    void *opaque;
};

void mfr_fail_init(MfrFail *f, void (*on_fail)(void *, const GError *, bool), void *opaque);
void mfr_fail_clear(MfrFail *f);
/* Takes ownership of err, a root cause. Returns true when err became the first error (or
 * replaced an echo). */
bool mfr_fail_set(MfrFail *f, GError *err);
/* printf-style shortcut for mfr_fail_set(g_error_new(MFR_ERROR, code, ...)). */
bool mfr_fail(MfrFail *f, MfrErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static inline bool mfr_failed(MfrFail *f)
{
    return atomic_load_explicit(&f->failed, memory_order_acquire);
}
/* Copy of the first error (or a generic one) for run() to return. */
void mfr_fail_propagate(MfrFail *f, GError **error);

/* mfr_fail_set() for a failure that may be only the echo of the peer's (a send or receive
 * that found the connection closed): it fails the session at once, and a root cause still
 * to come replaces it. */
bool mfr_fail_echo(MfrFail *f, GError *err);
/* For the user's cancel: the first error only when the session has none (a cancel of a
 * session that is failing anyway must not hide why, nor settle an echo). */
bool mfr_fail_set_first(MfrFail *f, GError *err);
/* For the error a session step returned: a copy of the session's own error (the step saw
 * the failure) is dropped, so it cannot turn an echo into a final verdict; anything else is
 * a cause the step found (mfr_fail_set()). */
bool mfr_fail_set_result(MfrFail *f, GError *err);
/* Whether the session failed with a root cause (or an echo a root cause replaced): its
 * error is final. */
bool mfr_fail_settled(MfrFail *f);
/* At teardown, after mfr_control_settle(): an echo that stayed the verdict gets the loud
 * on_fail now (the peer hears of it, the channels shut down). No-op otherwise. */
void mfr_fail_finalize(MfrFail *f);

/* A transport error on a data channel. The peer closing the connection (-EPIPE, the
 * transports' code for it) is an echo: the peer's ERROR on the control connection usually
 * says why a moment later. Any other error, or one with a detail
 * (xp_channel_error_detail(), may be NULL: the transport's own account, e.g. the status of
 * a failed work completion), is a local root cause. */
void mfr_fail_transport(MfrFail *f, const char *what, int err, const char *detail);

/* Range checks of the rdma knobs both configs share (MFR_ERROR_USAGE naming side and value);
 * the transport would otherwise clamp them silently. */
bool mfr_rdma_knobs_check(const char *side, unsigned registration_threads, unsigned rc_retry,
                          unsigned rc_timeout, GError **error);

/* ---------- registration (register.c) ---------- */

#define MFR_REGISTER_MAX_THREADS 16u

typedef struct {
    XpDomain *dom;
    const MfrRamBlock *blocks;
    unsigned nblocks;
    uint32_t access;    /* XP_REGION_* */
    bool prefault;      /* chunked registration: populate each chunk first (fresh memory) */
    unsigned threads;   /* 0: one per online CPU */
    unsigned channels;  /* data channels, for the up-front pinning budget */
    const char *side;   /* "source" / "destination", to prefix errors */
} MfrRegisterJob;

typedef struct {
    double ms;           /* wall time */
    double cpu_s;        /* CPU of every thread that took part, the caller's included */
    double helper_cpu_s; /* of that, the threads other than the caller */
    unsigned threads;
} MfrRegisterResult;

/* Threads mfr_register_blocks() will use: requested (0 = one per online CPU), never more
 * than there are blocks, at most MFR_REGISTER_MAX_THREADS. */
unsigned mfr_register_threads(unsigned requested, unsigned nblocks);
/* The transport's pinning budget for all blocks at once (and the channels' buffers), so a
 * session fails before it pins anything, naming the total it needs. */
bool mfr_register_budget(const MfrRegisterJob *job, GError **error);
/* Checks the transport's pinning budget for all blocks at once, then registers every block,
 * block-parallel, as it is (memory already backed: the source's guest RAM; job->prefault
 * must be false). regions[i] for blocks[i], NULL-initialised by the caller; on failure the
 * ones registered stay there for the caller's cleanup. res is filled on success and
 * failure. */
bool mfr_register_blocks(const MfrRegisterJob *job, XpRegion **regions, MfrRegisterResult *res,
                         GError **error);

/* ---------- pipelined registration in chunks (register.c, destination) ---------- */

/* Registration chunk when the configuration says 0: at most 64 MiB (big enough that one
 * ibv_reg_mr() per chunk costs nothing next to pinning it, small enough that the source can
 * start after a fraction of a second), but small enough for about 8 chunks per registration
 * thread, and at least 2 MiB (one huge page: fewer MRs and REGIONs for small RAM). */
#define MFR_REGION_CHUNK_DEFAULT (64ull << 20)
#define MFR_REGION_CHUNK_MIN (2ull << 20)
#define MFR_REGION_CHUNKS_PER_THREAD 8u

/* Every block's chunk layout, and where its chunks sit in flat per-session arrays. */
typedef struct {
    unsigned nblocks;
    MfrChunkLayout layout[MFR_MAX_BLOCKS];
    uint32_t first[MFR_MAX_BLOCKS]; /* flat index of the block's chunk 0 */
    uint32_t total;                 /* chunks of all blocks */
} MfrChunkMap;

/* Registration threads for `requested` (0: one per online CPU), at most 16. */
unsigned mfr_register_chunk_threads(unsigned requested);
/* The destination's layout: chunk_bytes (0: the default above, for `threads` threads)
 * rounded up to a multiple of each block's page size, and further where a block would have
 * more than MFR_MAX_CHUNKS_PER_BLOCK chunks. */
void mfr_chunk_map_init(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n,
                        uint64_t chunk_bytes, unsigned threads);
/* The source's, from a validated BLOCKS_REPLY. */
void mfr_chunk_map_from_layout(MfrChunkMap *m, const MfrChunkLayout *layout, unsigned n);

/* Called on a registration thread once chunk `chunk` of `block` is registered (regions[flat
 * index] is set before the call), in no particular order. */
typedef void (*MfrChunkReadyFn)(void *opaque, unsigned block, uint32_t chunk);

typedef struct {
    MfrRegisterJob base;      /* blocks, access, prefault, threads, budget, side */
    const MfrChunkMap *map;   /* outlives the run */
    XpRegion **regions;       /* map->total entries, NULL-initialised, owned by the caller */
    MfrFail *fail;            /* a failed chunk fails the session; a failed session stops
                               * the threads after their current chunk */
    MfrChunkReadyFn ready;
    void *ready_opaque;
    int64_t inject_fail;      /* test seam: this flat chunk fails to register; -1: none */
    unsigned delay_ms;        /* test seam: extra time per chunk, like slow first touch */
} MfrRegisterChunksJob;

typedef struct MfrRegisterBg MfrRegisterBg;

/* Starts the threads (the caller checked mfr_register_budget() first), which populate (with
 * prefault) and register the chunks in flat order, i.e. in the order the source sends them.
 * NULL with an error only when not even one thread could start. */
MfrRegisterBg *mfr_register_chunks_start(const MfrRegisterChunksJob *job, GError **error);
/* Joins every thread (NULL-safe) and fills res (ms: from start until the last thread
 * finished). True when every chunk was registered. The regions stay with the caller. */
bool mfr_register_chunks_join(MfrRegisterBg *bg, MfrRegisterResult *res);

/* ---------- control connection ---------- */

typedef struct {
    MfrCtrlHdr hdr;
    size_t len;      /* body bytes */
    uint8_t body[];
} MfrCtrlMsg;

typedef struct MfrControl MfrControl;

/* Takes ownership of ch (closed on failure). The reader thread starts at once: it answers
 * keepalives, turns ERROR/CANCEL from the peer and silence longer than timeout_ms into
 * failures of f, and queues every other message for mfr_control_recv(). */
MfrControl *mfr_control_new(XpChannel *ch, unsigned timeout_ms, MfrFail *f, MfrSide side,
                            GError **error);
/* The owner's session state; mfr_control_recv() refuses messages it does not accept. Read
 * only by the thread that calls mfr_control_recv(), which is the one that moves it. */
void mfr_control_track_state(MfrControl *c, const MfrState *state);
/* Stop the reader and close the channel; errors after mfr_control_done() are not failures. */
void mfr_control_free(MfrControl *c);
/* At the end of a failed session, before mfr_control_done()/free(): when its error is only
 * an echo, joins the reader, which reads on until the peer's own account (ERROR/CANCEL)
 * replaces it, the connection ends, or MFR_CONTROL_ECHO_WAIT_MS (0.5 s, at most timeout_ms)
 * passed since the failure. */
void mfr_control_settle(MfrControl *c);
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
/* The next queued message without waiting: NULL without error when there is none; NULL
 * with the error when the session failed or the state refuses the message. */
MfrCtrlMsg *mfr_control_poll(MfrControl *c, GError **error);
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

/* Before start: destination channel `channel` holds the first data packet it receives,
 * before landing it, until every other channel has finished a packet after it (landed data
 * or delivered a SYNC): the slow channel of an ordering race, made deterministic. Over rdma
 * the data of a packet lands before its header arrives, so this delays only stream
 * transports. */
void mfr_dest_inject_hold(MfrDest *dst, unsigned channel);
/* Waits until the held channel holds its packet (after mfr_dest_inject_hold()). */
void mfr_dest_hold_wait(MfrDest *dst);

/* ---------- helpers ---------- */

static inline double mfr_now_s(void)
{
    return (double)g_get_monotonic_time() / 1e6;
}
/* CPU seconds (user + system) of the calling thread. */
double mfr_thread_cpu_s(void);
/* Transport errors (XP_ERROR) become MFR_ERROR_TRANSPORT/REJECTED with the same text. */
GError *mfr_error_from_xp(GError *xp_err, const char *prefix);
/* Role of a block name check etc. */
bool mfr_block_name_valid(const char *name);

G_END_DECLS
