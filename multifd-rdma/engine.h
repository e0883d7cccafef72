/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine internals shared by the source (source.c, send.c) and destination (dest.c, recv.c)
 * sides: the first-error latch, the control connection and small time helpers. Not installed.
 */
#pragma once

#include "mfrdma.h"
#include "state.h"
#include "wire.h"
#include "xp.h"

#include <stdatomic.h>

/* The engine carries the transport's region descriptors in its messages unchanged. */
G_STATIC_ASSERT(MFR_REGION_DESC_SIZE == XP_REGION_DESC_SIZE);

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

/* Takes ownership of ch. The reader thread starts at once: it answers keepalives, turns
 * ERROR/CANCEL from the peer and silence longer than timeout_ms into failures of f, and
 * queues every other message for mfr_control_recv(). */
MfrControl *mfr_control_new(XpChannel *ch, unsigned timeout_ms, MfrFail *f, MfrSide side);
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
