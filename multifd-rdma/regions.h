/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one registration model of both sides: every RAM block is a chunk map of at least one
 * chunk, and one region table per side and direction owns the chunks' transport regions,
 * which chunks are ready, their order within a block, and the wait for one of them. The
 * destination's registration threads fill a local table and publish each chunk (REGION) in
 * order; the source's control reader fills a remote table from those REGIONs; the source's
 * producer only waits for (block, chunk). The source's own blocks are a local table of whole
 * blocks (one chunk each).
 */
#pragma once

#include "mfrdma.h"
#include "state.h"
#include "wire.h"
#include "xp.h"

G_BEGIN_DECLS

typedef struct MfrFail MfrFail; /* engine.h */

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

/* The destination's layout: chunk_bytes (0: the default above, for `threads` threads)
 * rounded up to a multiple of each block's page size, and further where a block would have
 * more than MFR_MAX_CHUNKS_PER_BLOCK chunks. */
void mfr_chunk_map_init(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n,
                        uint64_t chunk_bytes, unsigned threads);
/* One chunk per block: memory registered whole (the source's guest RAM, backed already). */
void mfr_chunk_map_whole(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n);
/* The source's view of the destination's, from a validated BLOCKS_REPLY. */
void mfr_chunk_map_from_layout(MfrChunkMap *m, const MfrChunkLayout *layout, unsigned n);

typedef enum {
    MFR_REGIONS_LOCAL,  /* this process's memory: one XpRegion per chunk, registered here */
    MFR_REGIONS_REMOTE, /* the peer's: one XpRemote per chunk, imported from its REGION */
} MfrRegionKind;

typedef struct MfrRegionTable MfrRegionTable;

/* Called under the table's lock for each chunk that became ready in order (chunk 0, 1, ...
 * of its block), so publications of one block leave in chunk order whichever thread
 * completes a chunk; false (with error) stops the publishing. */
typedef bool (*MfrRegionPublishFn)(void *opaque, unsigned block, uint32_t chunk,
                                   GError **error);

/* dom (whose regions the table holds) and blocks (names and lengths, for messages and
 * ranges) outlive the table; map is copied.
 * registrar names who makes chunks ready, for the wait's timeout message ("the destination
 * rdma:10.0.0.2:4444"). */
MfrRegionTable *mfr_region_table_new(XpDomain *dom, MfrRegionKind kind,
                                     const MfrRamBlock *blocks, const MfrChunkMap *map,
                                     const char *registrar);
/* Deregisters (local) or frees (remote) every region that was set, whatever the table's
 * progress; NULL-safe. Whoever sets regions (registration threads) must have stopped. */
void mfr_region_table_free(MfrRegionTable *t);
const MfrChunkMap *mfr_region_table_map(const MfrRegionTable *t);
/* Byte range of a chunk within its block. */
void mfr_region_table_chunk_range(const MfrRegionTable *t, unsigned block, uint32_t chunk,
                                  uint64_t *offset, uint64_t *len);

/* Store a chunk's region (the table owns it from now on), once per chunk, from any thread;
 * it becomes visible to others with mfr_region_table_ready(). */
void mfr_region_table_set_local(MfrRegionTable *t, unsigned block, uint32_t chunk,
                                XpRegion *r);
void mfr_region_table_set_remote(MfrRegionTable *t, unsigned block, uint32_t chunk,
                                 XpRemote *r);
/* The chunk is ready: wakes waiters and, with publish (may be NULL), publishes every chunk
 * of the block now ready in order. False only when publish failed. */
bool mfr_region_table_ready(MfrRegionTable *t, unsigned block, uint32_t chunk,
                            MfrRegionPublishFn publish, void *opaque, GError **error);
/* Per block (map->nblocks entries): how many chunks are ready in order from chunk 0. */
void mfr_region_table_in_order(MfrRegionTable *t, uint32_t *counts);
/* Chunks not ready yet, of all blocks. */
uint32_t mfr_region_table_missing(MfrRegionTable *t);
/* Waits until chunk (block, chunk) is ready. The bound is timeout_ms without progress (no
 * chunk of the table becoming ready), not in total: chunks come in order, so a stall means
 * the registrar is stuck, while a slow but steady one may take longer overall. False with
 * MFR_ERROR_TIMEOUT naming block and chunk, or with fail's error once the session failed
 * (fail may be NULL). */
bool mfr_region_table_wait(MfrRegionTable *t, unsigned block, uint32_t chunk,
                           unsigned timeout_ms, MfrFail *fail, GError **error);
/* Wakes every waiter to look at its MfrFail again (the session's on_fail). NULL-safe. */
void mfr_region_table_wake(MfrRegionTable *t);

/* A chunk's region: valid once its readiness was seen (ready(), wait(), or a hand-off after
 * them), NULL before. */
XpRegion *mfr_region_table_local(const MfrRegionTable *t, unsigned block, uint32_t chunk);
/* The block's remotes, indexed by chunk, same validity. */
XpRemote *const *mfr_region_table_remotes(const MfrRegionTable *t, unsigned block);

G_END_DECLS
