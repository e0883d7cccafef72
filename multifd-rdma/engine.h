/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine internals shared by the source (source.c, send.c) and destination (dest.c, recv.c)
 * sides: the first-error latch, the control connection and small time helpers. Not installed.
 */
#pragma once

#include "mfrdma.h"
#include "regions.h"
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

/* ---------- configuration (config.c) ---------- */

/* Range checks of the transport knobs both configs share (MFR_ERROR_USAGE naming side and
 * value); the transport would otherwise clamp them silently. */
bool mfr_transport_check(const char *side, const MfrTransportConfig *t, GError **error);
/* The caller's config as this library's full struct: its struct_size checked (0, too small or
 * too large: MFR_ERROR_USAGE), fields beyond it at their defaults. */
bool mfr_source_config_take(const MfrSourceConfig *cfg, MfrSourceConfig *out, GError **error);
bool mfr_dest_config_take(const MfrDestConfig *cfg, MfrDestConfig *out, GError **error);
/* The one place a side's transport config becomes the transport's options (domain, listener
 * and every connection): control marks the control connection (never zerocopy). */
void mfr_transport_xp_options(const MfrTransportConfig *t, unsigned timeout_ms, bool control,
                              XpOptions *o);

/* ---------- compression stats (stats.c) ---------- */

/* Adds channel `index`'s counters to s (channel entry and total; channels grows to cover
 * index) and recomputes the ratio. */
void mfr_compression_stats_add(MfrCompressionStats *s, unsigned index,
                               const MfrCompressionChannelStats *c);
/* ---------- placement (placement.c) ---------- */

/* ---------- NUMA (numa.c) ---------- */

/* A configured numa_node: MFR_NUMA_AUTO, MFR_NUMA_OFF, or a node this host has
 * (MFR_ERROR_USAGE naming side and node otherwise). */
bool mfr_numa_check(const char *side, int node, GError **error);
/* The node a session's threads go on for the configured cfg_node: itself, or for
 * MFR_NUMA_AUTO the node of ch's device, else of most of the blocks' present pages; -1 for
 * none (MFR_NUMA_OFF, nothing known). Records it and why in p. */
int mfr_numa_choose(int cfg_node, XpChannel *ch, const MfrRamBlock *blocks, unsigned n,
                    MfrPlacement *p);
/* The calling thread's memory policy, saved while it prefers a node. */
typedef struct {
    int mode;
    unsigned long mask[1024 / (8 * sizeof(unsigned long))];
    bool set;
} MfrNumaPolicy;
/* From now on the calling thread allocates from node by preference (the buffers of the
 * channels it opens land there); node < 0: nothing changes. */
void mfr_numa_prefer(int node, MfrNumaPolicy *saved);
/* Back to the policy saved by mfr_numa_prefer(); idempotent. */
void mfr_numa_restore(MfrNumaPolicy *saved);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MfrNumaPolicy, mfr_numa_restore)
/* Channel index started as t says. */
void mfr_placement_thread(MfrPlacement *p, unsigned index, const XpThreadPlace *t);

/* Nothing known yet: not placed, no thread seen. */
void mfr_placement_init(MfrPlacement *p);
/* ram_bytes, huge_bytes and thp_advised of p for these blocks, from /proc/self/smaps (all
 * zero and false where it cannot be read). Control path: reads a file the size of the
 * process's mappings. */
void mfr_placement_memory(MfrPlacement *p, const MfrRamBlock *blocks, unsigned n);
/* Whether the kernel may back all of these blocks with huge pages (smaps: THPeligible, or
 * hugetlbfs), so that a first touch allocates a whole huge page. False when smaps cannot be
 * read. Control path, as above. */
bool mfr_blocks_huge_eligible(const MfrRamBlock *blocks, unsigned n);

/* ---------- digest in pieces (digest.c) ---------- */

/* mfr_digest() fed piece by piece: the destination verifies in slices between which it
 * checks for failure, and feeds never-received pages of fresh memory from a zero page
 * instead of reading (and faulting in) them. Same value as mfr_digest() of the whole. */
typedef struct {
    uint64_t s[4]; /* the four lanes */
    uint64_t len;  /* bytes consumed so far */
} MfrDigestState;

void mfr_digest_init(MfrDigestState *st);
/* len must be a multiple of 32 (whole stripes); the rest goes to mfr_digest_final(). */
void mfr_digest_update(MfrDigestState *st, const void *data, uint64_t len);
/* The last piece (any length) and the digest of everything fed. */
uint64_t mfr_digest_final(MfrDigestState *st, const void *tail, uint64_t tail_len);

/* ---------- registration (register.c) ---------- */

#define MFR_REGISTER_MAX_THREADS 16u

typedef struct {
    XpDomain *dom;
    const MfrRamBlock *blocks;
    unsigned nblocks;
    uint32_t access;    /* XP_REGION_* */
    bool prefault;      /* populate each chunk first (fresh memory) */
    unsigned threads;   /* 0: one per online CPU */
    unsigned channels;  /* data channels, for the up-front pinning budget */
    uint64_t channel_staging; /* bytes each channel pins beyond the transport's own buffers:
                               * its staging ring (destination) or buffer (source) when
                               * compressing over a placed transport; 0 otherwise */
    int numa_node;      /* the threads run there; -1: anywhere (every initializer sets it) */
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

/* Takes ownership of ch (closed on failure). The reader thread starts at once: it answers
 * keepalives, turns ERROR/CANCEL from the peer and silence longer than timeout_ms into
 * failures of f, and queues every other message for mfr_control_recv(). */
MfrControl *mfr_control_new(XpChannel *ch, unsigned timeout_ms, MfrFail *f, MfrSide side,
                            GError **error);
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
/* In a failed session, before its error is handed out (at its end, before
 * mfr_control_done()/free(); a failed control-path call of a stepwise source): when that
 * error is only an echo, joins the reader, which reads on until the peer's own account (ERROR/CANCEL)
 * replaces it, the connection ends, or MFR_CONTROL_ECHO_WAIT_MS (0.5 s, at most timeout_ms)
 * passed since the failure. */
void mfr_control_settle(MfrControl *c);
/* From now on the connection closing is expected (migration finished). */
void mfr_control_done(MfrControl *c);
XpChannel *mfr_control_channel(MfrControl *c);
bool mfr_control_send(MfrControl *c, MfrCtrlType type, const void *body, size_t len,
                      GError **error);
/* Reports our own failure to the peer (ERROR, or CANCEL), best effort: waits up to 100 ms
 * for a send in progress, then gives up; errors are ignored. */
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
/* The next frame channel `channel` compresses goes out without its zstd magic, so the
 * destination must refuse it (MFR_ERROR_PROTOCOL). False without the channel or without
 * compression. Thread-safe. */
bool mfr_source_inject_bad_frame(MfrSource *src, unsigned channel);
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
/* A counter one thread adds to while another reads it as it goes (progress): relaxed
 * atomics, plain loads and stores on x86, and no torn or undefined reads. */
static inline void mfr_counter_add(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline uint64_t mfr_counter_read(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}
/* CPU seconds (user + system) of the calling thread. */
double mfr_thread_cpu_s(void);
/* Transport errors (XP_ERROR) become MFR_ERROR_TRANSPORT/REJECTED with the same text. */
GError *mfr_error_from_xp(GError *xp_err, const char *prefix);

G_END_DECLS
