/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared pieces of the mfrdma command-line tool: exit codes, option parsing helpers, the
 * Ctrl-C watcher, progress output and the stats summary. Each subcommand lives in its own file.
 */
#pragma once

#include <mfrdma.h>
#include <stdio.h>

#include "guest.h"

G_BEGIN_DECLS

/* Exit codes; keep in sync with docs/usage.md and the --help texts. */
enum {
    TOOL_EXIT_OK = 0,
    TOOL_EXIT_FAILED = 1,  /* migration failed, cancelled, or setup error */
    TOOL_EXIT_USAGE = 2,   /* bad command line */
    TOOL_EXIT_VERIFY = 3,  /* digest or memcmp mismatch */
};

#define TOOL_EXIT_CODES_HELP \
    "Exit status: 0 success, 1 migration failed or cancelled, 2 usage error,\n" \
    "3 verification failed (digest or memcmp mismatch)."

/* Ctrl-C / SIGTERM: the first cancels whatever is being watched (cleanly, via the engine's
 * thread-safe cancel), the second exits at once. Create it before any other thread so every
 * thread inherits the blocked signal mask. */
typedef struct ToolSignals ToolSignals;
ToolSignals *tool_signals_new(void);
void tool_signals_free(ToolSignals *s);
/* Either may be NULL. Cancels at once if a signal came already. Pass NULLs to stop watching
 * before freeing the objects. */
void tool_signals_watch(ToolSignals *s, MfrSource *src, MfrDest *dst);
bool tool_signals_interrupted(ToolSignals *s);

/* Context every subcommand receives. */
typedef struct {
    ToolSignals *signals;
} ToolCtx;

typedef int (*ToolCommandFn)(ToolCtx *ctx, int argc, char **argv);
int tool_demo(ToolCtx *ctx, int argc, char **argv);
int tool_listen(ToolCtx *ctx, int argc, char **argv);
int tool_migrate(ToolCtx *ctx, int argc, char **argv);
int tool_bench(ToolCtx *ctx, int argc, char **argv);

/* The transport options (MfrTransportConfig, plus the destination's registration chunk):
 * one option table and one check for demo, listen and migrate. */
typedef struct {
    char *rdma_dev;
    char *registration_chunk; /* destination (rdma) */
    gint rdma_port, gid_index, registration_threads, rc_retry, rc_timeout;
    gboolean odp, zerocopy;
} ToolRdmaArgs;

enum {
    TOOL_SIDE_SOURCE = 1u << 0, /* adds --zerocopy */
    TOOL_SIDE_DEST = 1u << 1,   /* adds --registration-chunk */
};

/* Defaults from MfrTransportConfig's (mfr_source_config_init()). */
void tool_rdma_args_init(ToolRdmaArgs *a);
void tool_rdma_args_clear(ToolRdmaArgs *a);
/* sides: the TOOL_SIDE_* of the command (demo runs both). */
void tool_add_rdma_options(GOptionContext *ctx, ToolRdmaArgs *a, unsigned sides);
/* Validates and converts (MFR_ERROR_USAGE naming the option); registration_chunk may be NULL
 * for a source-only command, else it gets 0 (the engine's default) or the parsed size. */
bool tool_rdma_args_apply(const ToolRdmaArgs *a, MfrTransportConfig *t,
                          uint64_t *registration_chunk, GError **error);

/* Source-side options shared by demo and migrate. */
typedef struct {
    char *size, *dirty_rate, *mix, *transport, *address, *token, *max_bandwidth, *numa_node;
    ToolRdmaArgs rdma;
    gint channels, blocks, downtime_ms, max_rounds, timeout_ms, writers;
    gint64 seed;
    gboolean force_switchover, no_verify, json, thp, no_thp, hugetlb;
    char *compress;         /* --compress off|zstd|auto */
    gint compress_level;    /* --compress-level N */
    MfrCompression comp_mode; /* parsed by tool_source_args_apply() */
} ToolSourceArgs;

/* Defaults from mfr_source_config_init() and mfr_guest_options_init(). */
void tool_source_args_init(ToolSourceArgs *a);
void tool_source_args_clear(ToolSourceArgs *a);
/* Adds the guest, migration and transport options; with_transport adds --transport/--address
 * and the destination's options (demo). */
void tool_add_source_options(GOptionContext *ctx, ToolSourceArgs *a, bool with_transport);
/* Validates and converts (a->comp_mode too); errors are MFR_ERROR_USAGE naming the option.
 * registration_chunk as for tool_rdma_args_apply(). */
bool tool_source_args_apply(ToolSourceArgs *a, MfrGuestOptions *go, MfrSourceConfig *cfg,
                            uint64_t *registration_chunk, GError **error);

/* --compress (NULL: default) and --compress-level into mode; MFR_ERROR_USAGE naming them. */
bool tool_parse_compress(const char *text, gint level, MfrCompression def, MfrCompression *mode,
                         GError **error);
/* The source's compression as the options say (after mfr_source_new()). */
bool tool_source_compression(const ToolSourceArgs *a, MfrSource *src, GError **error);

/* Parses the subcommand line; on a usage error prints it with a hint and returns false. */
bool tool_parse(GOptionContext *ctx, const char *cmd, int *argc, char ***argv);
/* Prints "mfrdma CMD: message" and the --help hint; returns TOOL_EXIT_USAGE. */
int tool_usage_error(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

bool tool_parse_size(const char *opt, const char *text, uint64_t *out, GError **error);
/* --numa-node N|auto|off: a node (its existence is the library's check), MFR_NUMA_AUTO or
 * MFR_NUMA_OFF. */
bool tool_parse_numa_node(const char *opt, const char *text, int *out, GError **error);
/* A rate in bytes per second: a size as tool_parse_size() reads it (125M, 1G, 500K, plain
 * bytes; binary suffixes), or 0 for unlimited. */
bool tool_parse_rate(const char *opt, const char *text, uint64_t *out, GError **error);
/* MFR_ERROR_USAGE "OPT: V is out of range (LO..HI)" unless lo <= v <= hi. */
bool tool_check_range(const char *opt, gint v, gint lo, gint hi, GError **error);
/* --token TEXT (mfr_token_parse()), the error naming the option. */
bool tool_parse_token(const char *text, uint8_t token[16], GError **error);
void tool_random_token(uint8_t token[16]);
/* 0, 1 or 3 for a migration result (error NULL = success). */
int tool_exit_code(const GError *error);

/* Destination memory: mmap per announced block, unmapped by tool_dest_mem_free(). Blocks
 * beyond max_ram bytes in total (0: this host's RAM + swap) are refused before mapping. */
typedef struct ToolDestMem ToolDestMem;
ToolDestMem *tool_dest_mem_new(bool thp, uint64_t max_ram);
void tool_dest_mem_free(ToolDestMem *m);
bool tool_dest_alloc_block(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                           void **host, GError **error);

/* Progress: `\r` line on a terminal, about one plain line per second otherwise. */
typedef struct {
    FILE *out;
    bool tty;
    const char *side;
    gint64 last_us;
    MfrPhase last_phase;
    bool pending_line; /* a `\r` line was drawn and needs a newline before other output */
    uint64_t last_sent; /* for a rate of our own when the engine reports none yet */
    double last_elapsed;
    unsigned pause_ms;  /* test seam MFR_TOOL_PAUSE_MS: the source stops at each new phase */
    GMutex lock;
} ToolProgress;
void tool_progress_init(ToolProgress *p, FILE *out, const char *side);
void tool_progress_cb(const MfrProgress *p, void *opaque);
void tool_progress_finish(ToolProgress *p);
void tool_progress_clear(ToolProgress *p);

/* Summary table; either side may be NULL. ok: the migration succeeded. */
void tool_print_summary(FILE *out, const MfrStats *src, const MfrStats *dst, bool ok);
/* Compression lines of the summary (nothing when neither side negotiated zstd); either side
 * may be NULL. */
void tool_print_compression(FILE *out, const MfrCompressionStats *src,
                            const MfrCompressionStats *dst);
/* What one side reports; any part may be NULL. */
typedef struct {
    const MfrStats *stats;
    const MfrCompressionStats *comp;
    const MfrPlacement *place;
} ToolSide;
/* {"source":...,"destination":...,...} on out; either side (or its stats) may be NULL. A
 * side's compression stats and placement go inside its object as "compression" and
 * "placement". */
void tool_print_json(FILE *out, const ToolSide *src, const ToolSide *dst, const char *result,
                     const GError *error, const char *memcmp_result);
/* "memory:" and "placement:" lines of each side (either may be NULL). */
void tool_print_placement(FILE *out, const MfrPlacement *src, const MfrPlacement *dst);

/* "guest: ..." line: size, blocks, mix, fill time, dirty rate. */
void tool_print_guest(FILE *out, MfrGuest *g, const MfrGuestOptions *go);
/* What the writers did: pages dirtied and the measured rate. */
void tool_print_guest_writes(FILE *out, MfrGuest *g);
/* "verification: OK (N blocks, digests match)" when stats say so; else prints the failure
 * and sets an MFR_ERROR_VERIFY error. */
bool tool_check_verified(FILE *out, const MfrStats *s, unsigned nblocks, GError **error);

/* Usage error when `copies` guests of `size` bytes exceed physical RAM; what is appended to
 * the message (e.g. why there are two copies). */
bool tool_check_memory(const char *what, uint64_t size, unsigned copies, GError **error);

G_END_DECLS
