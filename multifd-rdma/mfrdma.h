/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfrdma public API: live-migrate named blocks of memory ("guest RAM") from a source to a
 * destination with N multifd channels over TCP or RDMA. A process may hold any number of
 * sources and destinations at once; nothing here is global.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

#define MFR_ERROR (mfr_error_quark())
GQuark mfr_error_quark(void);

typedef enum {
    MFR_ERROR_FAILED = 1,    /* anything else */
    MFR_ERROR_PROTOCOL,      /* malformed or out-of-range message from the peer */
    MFR_ERROR_REJECTED,      /* connection refused: bad token, unknown session, ... */
    MFR_ERROR_MISMATCH,      /* RAM block list differs between source and destination */
    MFR_ERROR_CAPS,          /* no common capability (page size, compression, ...) */
    MFR_ERROR_PEER,          /* peer reported an error or went away */
    MFR_ERROR_TIMEOUT,       /* peer silent for longer than the timeout */
    MFR_ERROR_CANCELLED,     /* cancelled by the user (either side) */
    MFR_ERROR_NOT_CONVERGED, /* dirty rate outran bandwidth within max_rounds */
    MFR_ERROR_VERIFY,        /* destination RAM digest differs from the source's */
    MFR_ERROR_TRANSPORT,     /* connection or device failure (message has the cause) */
    MFR_ERROR_USAGE,         /* bad configuration */
} MfrErrorCode;

/* One named region of guest RAM. host stays owned by the caller. The same rule holds for a
 * block given to mfr_source_new() or mfr_dest_add_block(), allocated by alloc_block(), or
 * announced on the wire (no host there); anything else is refused, naming the field. */
typedef struct {
    const char *name;   /* unique, 1..63 printable ASCII bytes */
    void *host;         /* non-NULL, 4096-byte aligned (the smallest page size) */
    uint64_t length;    /* non-zero multiple of page_size */
    uint32_t page_size; /* power of two, 4096 (4 KiB) .. 2^30 (1 GiB) */
} MfrRamBlock;

/* Dirty tracking, provided by the client. */
typedef struct {
    /* OR the pages written since the last call into bitmap (bit i = page i of the block, 64
     * pages per word, LSB first) and forget them. A page's bit must be recorded after its
     * write completes. Called from the migration thread. */
    void (*harvest)(void *opaque, unsigned block, uint64_t *bitmap, uint64_t npages);
    /* Stop writing guest RAM (switchover); harvest() is called once more afterwards. */
    void (*stop)(void *opaque);
    /* Optional: the migration failed or was cancelled after stop(); writing may go on. */
    void (*resume)(void *opaque);
} MfrDirtyOps;

/* Atomically moves set bits of a shared client bitmap into out (helper for harvest()). */
void mfr_bitmap_harvest(uint64_t *shared, uint64_t *out, uint64_t npages);
/* Atomically marks page in a shared bitmap (writer side of mfr_bitmap_harvest()). */
void mfr_bitmap_mark(uint64_t *shared, uint64_t page);

typedef enum {
    MFR_PHASE_SETUP,
    MFR_PHASE_PRECOPY,
    MFR_PHASE_SWITCHOVER,
    MFR_PHASE_VERIFY,
    MFR_PHASE_DONE,
    MFR_PHASE_FAILED,
} MfrPhase;
const char *mfr_phase_str(MfrPhase p);

typedef struct {
    MfrPhase phase;
    uint64_t round;
    uint64_t ram_bytes;       /* total guest RAM */
    uint64_t sent_bytes;      /* guest bytes handled so far (normal + zero pages) */
    uint64_t round_bytes;     /* dirty bytes this round */
    uint64_t round_done;      /* of those, handled so far */
    uint64_t remaining_bytes; /* dirty bytes left after the last harvest */
    double throughput_bps;    /* recent, bytes/s */
    double elapsed_s;
} MfrProgress;

typedef struct {
    uint64_t bytes;   /* guest bytes of normal pages */
    uint64_t wire_bytes;
    uint64_t pages, zero_pages, packets;
    double busy_s;    /* CPU seconds of this channel's thread */
    double throughput_bps;
} MfrChannelStats;

/* Filled by value by mfr_source_get_stats()/mfr_dest_get_stats(), so its layout (size and
 * every offset) is part of those two functions' ABI: a release that changes it in any way,
 * appending included, gives them a new symbol version in libmfrdma.map (the old version
 * keeps filling the old layout) or bumps the soname. stats.c pins the size so a change
 * cannot slip in unnoticed. Snapshots are consistent: see the get_stats functions. */
typedef struct {
    double total_ms, setup_ms, downtime_ms, registration_ms, verify_ms;
    double transfer_ms;      /* end of setup to the last round's barrier */
    uint64_t ram_bytes;
    uint64_t wire_bytes;     /* everything sent/received on channels: headers + payload */
    uint64_t normal_pages, zero_pages, packets;
    uint64_t rounds;
    double dirty_rate_bps;   /* last measured, bytes/s */
    double throughput_bps;   /* guest bytes moved / transfer_ms */
    double cpu_s;            /* CPU seconds of this side's migration threads */
    bool converged;          /* false: switched over by force or failed to converge */
    bool verified;           /* digests compared and equal */
    char transport[16];
    unsigned channels;
    unsigned registration_threads; /* used for registration_ms (0 on tcp) */
    MfrChannelStats channel[64];
    double registration_cpu_s; /* CPU of the registering thread during registration_ms; it is
                                * part of cpu_s (first touch of fresh memory when pinning) */
    uint64_t zerocopy_sends;   /* source, tcp with zerocopy: sendmsg(MSG_ZEROCOPY) calls */
    uint64_t zerocopy_copied;  /* of those, sends the kernel copied anyway (loopback, no SG),
                                * plus pieces sent with a copy when pinning hit optmem */
    /* Pipelined registration (rdma): the destination registers its blocks in chunks while
     * the source already sends, each chunk as soon as both sides have it. */
    double first_data_ms;      /* source: run() start to the first data batch handed to a
                                * channel (0 on the destination) */
    uint64_t bytes_before_last_region; /* source: guest bytes handed to channels before the
                                * destination's last chunk arrived; > 0 means data flowed
                                * while the destination was still registering */
    double region_wait_ms;     /* source: time the producer waited for chunks to arrive */
    unsigned region_chunks;    /* destination regions (MRs) of the blocks; 0 on tcp */
} MfrStats;

/* Where a side's memory and threads were (since MFRDMA_0.3), beside MfrStats: filled by
 * value like it, so its layout is part of the get_placement functions' ABI (placement.c
 * pins the size). */
typedef struct {
    int node;   /* NUMA node of the CPU the thread started on; -1 unknown */
    int cpu;    /* the CPU it started on; -1 unknown */
    bool bound; /* its CPU affinity was the chosen node's CPUs */
} MfrThreadPlacement;

typedef struct {
    /* Memory figures: read from /proc/self/smaps by the first get_placement() after the
     * session ended (never inside it: on a large guest that takes a while), so the blocks
     * must still be mapped then; zero before. */
    uint64_t ram_bytes;   /* this side's blocks */
    /* Of those, bytes backed by huge pages: the blocks' share of AnonHugePages (transparent
     * huge pages) and of Private/Shared_Hugetlb (hugetlbfs). Measured, not inferred from
     * the THP setting. */
    uint64_t huge_bytes;
    bool thp_advised;     /* every block lies in mappings madvised MADV_HUGEPAGE or hugetlbfs
                           * (VmFlags hg/ht) */
    int numa_node;        /* node the channel and registration threads (and the channels'
                           * buffers) were placed on; -1: not placed */
    char numa_source[32]; /* why: "numa_node" (configured), "device DEV" (the RDMA device's
                           * or NIC's node), "memory" (node of the blocks' pages), "off",
                           * "unknown" (auto found no node) */
    unsigned channels;
    MfrThreadPlacement channel[64];
} MfrPlacement;

/* Fills stats as JSON (one object); caller frees. */
char *mfr_stats_to_json(const MfrStats *s, const char *side);
/* The same for a placement (since MFRDMA_0.3). */
char *mfr_placement_to_json(const MfrPlacement *p);

typedef void (*MfrProgressFn)(const MfrProgress *p, void *opaque);

/* How a side uses its transport; the same knobs on both sides, embedded as `transport` in
 * MfrSourceConfig and MfrDestConfig (e.g. cfg.transport.rdma_dev = "rxe0"). Knobs of the
 * other transport are ignored. mfr_source_new()/mfr_dest_new() refuse out-of-range values
 * with MFR_ERROR_USAGE naming the side and the value. */
typedef struct {
    const char *rdma_dev;          /* NULL: chosen by address */
    int rdma_port;                 /* 0: chosen by address */
    int gid_index;                 /* -1: chosen by address */
    bool odp;                      /* rdma: register with on-demand paging */
    bool zerocopy;                 /* tcp, source: MSG_ZEROCOPY */
    unsigned registration_threads; /* rdma: threads registering blocks; 0 = one per CPU */
    unsigned rc_retry;             /* rdma: RC transport retries 1-7; 0 = 7 */
    unsigned rc_timeout;           /* rdma: ACK timeout exponent 1-31 (4.096 us * 2^n);
                                    * 0 = rdma_cm's default */
} MfrTransportConfig;

/* MfrSourceConfig.numa_node / MfrDestConfig.numa_node: choose, or do not place at all. */
#define MFR_NUMA_AUTO (-1)
#define MFR_NUMA_OFF (-2)

/* ABI of the two configs (since MFRDMA_0.4). They are caller-allocated and grow release by
 * release, so each begins with struct_size, which mfr_source_config_init() /
 * mfr_dest_config_init() (macros) set to sizeof the struct the caller was compiled with.
 * mfr_source_new()/mfr_dest_new() read only that many bytes: a field appended after the
 * caller's header takes its default. A struct_size of 0 (the config was not initialised),
 * below the smallest layout, or larger than this library's struct (a caller built against
 * a newer mfrdma.h) is MFR_ERROR_USAGE. Programs built against an mfrdma.h before
 * MFRDMA_0.4 (no struct_size) keep working: they call the MFRDMA_0 versions of these four
 * functions, which take the MFRDMA_0.2 layout and default every later field. Append new
 * fields at the end, never in place of the old tail padding (docs/usage.md, "ABI"). */
typedef struct {
    size_t struct_size;         /* set by mfr_source_config_init(); never by hand */
    const char *uri;            /* where the destination listens: tcp:HOST:PORT, rdma:HOST:PORT */
    unsigned channels;          /* default 4 */
    uint8_t token[16];          /* must match the destination's */
    unsigned downtime_ms;       /* default 300 */
    unsigned max_rounds;        /* default 30 */
    bool force_switchover;      /* at max_rounds: switch over anyway instead of failing */
    bool verify;                /* per-block digests at completion; default true */
    bool zero_detect;           /* default true */
    unsigned timeout_ms;        /* error bound: peer silence, connect; default 5000 */
    unsigned pages_per_packet;  /* default 128 */
    MfrTransportConfig transport;
    MfrProgressFn progress;     /* optional, called from the migration thread ~10/s */
    void *progress_opaque;
    /* Bandwidth cap in bytes per second on the wire (headers and payload of every channel
     * together); 0 = unlimited, the default. Changeable while migrating:
     * mfr_source_set_max_bandwidth(). */
    uint64_t max_bandwidth;
    /* NUMA node of the channel and registration threads and the channels' buffers: a node
     * (one that does not exist is MFR_ERROR_USAGE), MFR_NUMA_AUTO (the default: the RDMA
     * device's or NIC's node, else the node of the blocks' pages, else anywhere) or
     * MFR_NUMA_OFF. MfrPlacement says what was chosen and where each channel ran. */
    int numa_node;
} MfrSourceConfig;

typedef struct {
    size_t struct_size;         /* set by mfr_dest_config_init(); never by hand */
    const char *uri;            /* address to listen on; port 0 picks one (see mfr_dest_uri) */
    uint8_t token[16];          /* what connecting sources must present */
    unsigned timeout_ms;        /* default 5000 */
    unsigned max_channels;      /* default 64 */
    /* Destination memory for an announced block. NULL: the destination must have been given
     * matching blocks with mfr_dest_add_block(). Returning false fails the migration. */
    bool (*alloc_block)(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                        void **host, GError **error);
    void *alloc_opaque;
    /* Memory handed over is known to be zero (fresh mmap): zero pages never touch it. */
    bool memory_zeroed;
    /* registration_threads: threads that populate (first touch) and register the blocks */
    MfrTransportConfig transport;
    MfrProgressFn progress;
    void *progress_opaque;
    /* rdma: bytes per registration chunk (one MR each, registered while the source already
     * sends); 0 = up to 64 MiB, less for small RAM (about 8 chunks per registration thread,
     * at least 2 MiB). Rounded up to a multiple of each block's page size. */
    uint64_t registration_chunk;
    int numa_node;              /* as MfrSourceConfig's */
} MfrDestConfig;

/* Defaults for every field, and struct_size = size (since MFRDMA_0.4; writes at most size
 * bytes). Call them through the macros, which pass the caller's sizeof. */
void mfr_source_config_init_sized(MfrSourceConfig *cfg, size_t size);
void mfr_dest_config_init_sized(MfrDestConfig *cfg, size_t size);
#define mfr_source_config_init(cfg) mfr_source_config_init_sized((cfg), sizeof(*(cfg)))
#define mfr_dest_config_init(cfg) mfr_dest_config_init_sized((cfg), sizeof(*(cfg)))

typedef struct MfrSource MfrSource;
typedef struct MfrDest MfrDest;

/* Checks a destination URI as mfr_source_new() does (scheme, host, a port other than 0)
 * without connecting, so a client can refuse a typo before it prepares its guest.
 * MFR_ERROR_USAGE naming the URI. */
bool mfr_source_check_uri(const char *uri, GError **error);
/* Blocks and dirty ops must outlive the source. dirty may be NULL for a source driven
 * step by step (below); mfr_source_run() then refuses with MFR_ERROR_USAGE. */
MfrSource *mfr_source_new(const MfrSourceConfig *cfg, const MfrRamBlock *blocks,
                          unsigned nblocks, const MfrDirtyOps *dirty, void *dirty_opaque,
                          GError **error);
/* Runs the whole migration in the calling thread: start, rounds (harvest, queue the dirty
 * bitmap, barrier) until the rest fits the downtime limit, stop(), a last round, complete.
 * False with the first error otherwise. Source RAM is never written. */
bool mfr_source_run(MfrSource *src, GError **error);

/* ---- Stepwise source (since MFRDMA_0.2): the caller runs the rounds ----
 * A hypervisor that keeps its own dirty tracking and convergence drives the session:
 *   start; { queue_page()/queue_pages() per dirty page; barrier } ...;
 *   stop the guest; mark_stopped; queue the rest; complete
 * and on any error (or to cancel) abort. All calls except mfr_source_error(),
 * mfr_source_cancel(), mfr_source_get_stats() and mfr_source_force_switchover() belong to
 * one producer thread. Misuse (wrong order, a page outside its block) is MFR_ERROR_USAGE. */

/* Connects, negotiates, announces the blocks, registers them and opens the channels; returns
 * when pages may be queued (the destination may still be registering: pages of chunks it has
 * not announced yet wait inside the hand-off, pipelined). A second call, or one after the
 * session ended, is MFR_ERROR_USAGE. On failure the session is released already. */
bool mfr_source_start(MfrSource *src, GError **error);
/* Hot path, once per page: appends page `offset` (a byte offset in block `block`, a
 * multiple of the migration page size) to the batch being filled. A full batch, or a page of
 * another block, is handed to an idle channel (waiting while all are busy). Pages may come
 * in any order and more than once. Returns 0; -EINVAL on misuse (block or offset out of
 * range or unaligned, before start() or after the end: the session fails with
 * MFR_ERROR_USAGE); after a failure -ECANCELED (cancelled), -ETIMEDOUT, or -EPIPE
 * (anything else; mfr_source_error() has the cause). */
int mfr_source_queue_page(MfrSource *src, unsigned block, uint64_t offset);
/* npages contiguous pages from offset. Same returns. */
int mfr_source_queue_pages(MfrSource *src, unsigned block, uint64_t offset, uint64_t npages);
/* Every page whose bit is set in bitmap (bit i = page i of the block, 64 per word, LSB first,
 * npages bits), clearing the bits; in page order, starting a new batch. Same returns. */
int mfr_source_queue_bitmap(MfrSource *src, unsigned block, uint64_t *bitmap,
                            uint64_t npages);
/* Round barrier: returns once every page queued before the call is in destination memory
 * (docs/protocol.md, "Round barrier"), so a page queued after it lands after every earlier
 * copy of it, whatever channels carry them. Counts a round. False with the session's first
 * error. */
bool mfr_source_barrier(MfrSource *src, GError **error);
/* Final barrier (when pages were queued since the last one), COMPLETE (with digests when
 * cfg.verify) and the destination's reply; then releases the session (threads joined,
 * registrations gone, stats final). False with the first error, released likewise. */
bool mfr_source_complete(MfrSource *src, GError **error);
/* Ends a session that will not complete: fails it with MFR_ERROR_CANCELLED unless it failed
 * already, joins its threads and releases everything. Any time after new(); idempotent;
 * nothing after a successful complete(). */
void mfr_source_abort(MfrSource *src);
/* True with a copy of the session's first error once it failed; false while it has not.
 * Thread-safe. */
bool mfr_source_error(MfrSource *src, GError **error);
/* Index of the block named name (the order given to mfr_source_new()), or -1. */
int mfr_source_block_index(MfrSource *src, const char *name);
/* The caller stopped its workload (switchover): downtime counts from here to the final
 * barrier. */
void mfr_source_mark_stopped(MfrSource *src);
/* Thread-safe; run() fails with MFR_ERROR_CANCELLED within the timeout. */
void mfr_source_cancel(MfrSource *src);
/* Thread-safe; the next round boundary switches over whatever remains. */
void mfr_source_force_switchover(MfrSource *src);
/* Thread-safe, any time (since MFRDMA_0.3): the bandwidth cap from now on, bytes per second
 * on the wire, 0 = unlimited. Channels waiting under the old cap go on at once. */
void mfr_source_set_max_bandwidth(MfrSource *src, uint64_t bytes_per_s);
/* Thread-safe, any time: a consistent snapshot, taken at the end of start(), of every
 * barrier and of the session (final after run()/complete()/abort()). */
void mfr_source_get_stats(MfrSource *src, MfrStats *out);
/* Thread-safe, any time (since MFRDMA_0.3): final once the session ended (threads joined);
 * the first call after that reads the memory figures (MfrPlacement). */
void mfr_source_get_placement(MfrSource *src, MfrPlacement *out);
void mfr_source_free(MfrSource *src);

/* Binds and listens at once, so mfr_dest_uri() is valid before run(). */
MfrDest *mfr_dest_new(const MfrDestConfig *cfg, GError **error);
const char *mfr_dest_uri(MfrDest *dst);
/* A block that an incoming announce must match (name, length, page size). */
bool mfr_dest_add_block(MfrDest *dst, const MfrRamBlock *block, GError **error);
/* Serves one migration; returns true after a verified (if requested) COMPLETE:
 * mfr_dest_start() + mfr_dest_wait(). */
bool mfr_dest_run(MfrDest *dst, GError **error);

/* ---- Stepwise destination (since MFRDMA_0.2) ---- */

/* Serves one migration in library threads (accept the control connection and channels,
 * negotiate, match or allocate blocks, register, receive) and returns at once. Blocks must
 * have been added (or cfg.alloc_block set); a second call is MFR_ERROR_USAGE. */
bool mfr_dest_start(MfrDest *dst, GError **error);
/* An eventfd that becomes readable (and stays so) when the session has ended, successfully
 * or not; poll it, never read it. Valid from mfr_dest_new() to mfr_dest_free(). */
int mfr_dest_event_fd(MfrDest *dst);
/* Waits for the session's end. True only when COMPLETE came after every channel's final
 * SYNC, verification passed if the source asked for it, and no remote write can land any
 * more (registrations gone, channels closed). False with the session's error otherwise
 * (MFR_ERROR_USAGE before start()). May be called again: same answer. */
bool mfr_dest_wait(MfrDest *dst, GError **error);
/* Sets (or replaces) the token connecting sources must present; before mfr_dest_start() or
 * mfr_dest_run(), so a token that arrives late (on a hypervisor's own stream) can be used. */
void mfr_dest_set_token(MfrDest *dst, const uint8_t token[16]);
void mfr_dest_cancel(MfrDest *dst);
/* Thread-safe, any time: a consistent snapshot, taken after setup and at the session's end
 * (final once mfr_dest_wait() returned or the eventfd fired). */
void mfr_dest_get_stats(MfrDest *dst, MfrStats *out);
/* Thread-safe, any time (since MFRDMA_0.3): final once mfr_dest_wait() returned; the first
 * call after that reads the memory figures (MfrPlacement), so call it before unmapping. */
void mfr_dest_get_placement(MfrDest *dst, MfrPlacement *out);
/* Blocks as received (valid after run); n set to the count. */
const MfrRamBlock *mfr_dest_blocks(MfrDest *dst, unsigned *n);
void mfr_dest_free(MfrDest *dst);

/* The session token as text: exactly 32 hex digits (either case), as `mfrdma listen` prints
 * it. False with MFR_ERROR_USAGE naming the text otherwise; token untouched then. */
bool mfr_token_parse(const char *hex, uint8_t token[16], GError **error);
/* token as 32 lowercase hex digits and a NUL. */
void mfr_token_format(const uint8_t token[16], char hex[33]);

/* 64-bit digest used for verification (same on both sides). */
uint64_t mfr_digest(const void *data, uint64_t len);

/* Zero-page check, vectorised. buf may sit at any byte address; len must be a multiple of 64
 * (0 is all zero): the scan reads exactly [buf, buf + len) in 64-byte chunks, so any other
 * length would read past the end. */
bool mfr_buffer_is_zero(const void *buf, size_t len);

/* ---- Compression (since MFRDMA_0.3) ----
 * zstd on the data channels, negotiated on the control connection. Set before
 * mfr_source_start()/mfr_source_run() and mfr_dest_start()/mfr_dest_run(); separate calls
 * rather than config fields, so the configs' layouts (caller-allocated) stay as they were. */
typedef enum {
    MFR_COMPRESSION_OFF = 0,  /* source: never; destination: refuse a source that requires it */
    MFR_COMPRESSION_ZSTD = 1, /* source: every data packet tried, sent compressed if it
                               * shrinks to 7/8 or less; requires the destination to accept */
    MFR_COMPRESSION_AUTO = 2, /* source: zstd when the destination accepts, per packet while
                               * it pays (not for incompressible data, nor when compressing is
                               * slower than the link), else uncompressed; destination: accept */
} MfrCompression;
/* "off", "zstd", "auto". */
const char *mfr_compression_str(MfrCompression c);
/* The reverse, for option parsers; MFR_ERROR_USAGE naming the text otherwise. */
bool mfr_compression_parse(const char *text, MfrCompression *out, GError **error);
/* Checks mode and level as mfr_source_set_compression() does, without a source, so a client
 * can refuse a typo before it prepares its guest. MFR_ERROR_USAGE naming the value. */
bool mfr_compression_check(MfrCompression mode, int level, GError **error);
/* Default OFF. level: zstd's (negative levels are faster), 0 = 1, the default; out of the
 * linked zstd's range, or after start, is MFR_ERROR_USAGE. A destination that refuses zstd
 * fails a ZSTD session with MFR_ERROR_CAPS; AUTO then runs uncompressed. */
bool mfr_source_set_compression(MfrSource *src, MfrCompression mode, int level,
                                GError **error);
/* Default AUTO (accepts zstd); OFF refuses it. After start: MFR_ERROR_USAGE. */
bool mfr_dest_set_compression(MfrDest *dst, MfrCompression mode, GError **error);

/* One channel's compression counters. Source: what it sent; destination: what it received. */
typedef struct {
    uint64_t packets;            /* data packets that travelled compressed */
    uint64_t raw_bytes;          /* guest bytes of those packets */
    uint64_t compressed_bytes;   /* their payload on the wire */
    uint64_t packets_not_shrunk; /* source: compressed, but above 7/8 of raw: sent raw */
    uint64_t bytes_not_shrunk;   /* source: guest bytes of those */
    uint64_t packets_skipped;    /* source, auto: sent raw without trying (paused) */
    uint64_t pauses;             /* source, auto: times the channel stopped trying */
    double cpu_s;                /* CPU seconds compressing (source) or decompressing */
} MfrCompressionChannelStats;

/* Filled by value: its layout is ABI of the two get functions, as MfrStats' is (mfrdma.h). */
typedef struct {
    MfrCompression mode;   /* source: as set; destination: OFF or AUTO (accepts) */
    bool negotiated;       /* zstd was chosen in CAPS */
    int level;             /* source: the zstd level used */
    unsigned channels;
    double ratio;          /* raw_bytes / compressed_bytes of compressed packets (0: none) */
    MfrCompressionChannelStats total;
    MfrCompressionChannelStats channel[64];
} MfrCompressionStats;

/* Same consistency as mfr_source_get_stats()/mfr_dest_get_stats(). */
void mfr_source_get_compression_stats(MfrSource *src, MfrCompressionStats *out);
void mfr_dest_get_compression_stats(MfrDest *dst, MfrCompressionStats *out);
/* As JSON (one object); caller frees. */
char *mfr_compression_stats_to_json(const MfrCompressionStats *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MfrSource, mfr_source_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MfrDest, mfr_dest_free)

G_END_DECLS
