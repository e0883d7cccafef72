/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Data channels: one thread per channel on each side. send.c (source) turns batches of dirty
 * pages into packets; recv.c (destination) validates packets and lands their pages. The two
 * files mirror each other; the sessions (source.c, dest.c) own them.
 */
#pragma once

#include "compress.h"
#include "engine.h"
#include "ratelimit.h"

#include <semaphore.h>

G_BEGIN_DECLS

/* A session's view of its RAM, shared read-only by its channel threads during migration. */
typedef struct {
    unsigned nblocks;
    const MfrRamBlock *blocks;
    uint64_t *block_len;     /* nblocks */
    uint32_t page_size;      /* migration page size (negotiated) */
    uint32_t max_pages;      /* pages per packet (negotiated) */
    /* This side's registered memory (NULL without XP_CAP_REGIONS): the source's blocks
     * whole (one chunk each), the destination's in chunks. */
    MfrRegionTable *local;
    /* source only: the destination's chunks, imported by the control reader; the producer
     * waits until the chunks of a batch are ready before it hands the batch out, and the
     * hand-off publishes them to the channel (NULL without XP_CAP_REGIONS) */
    MfrRegionTable *remote;
    uint64_t **received;     /* destination only: pages that received data (atomic bits) */
    uint64_t **zero_seen;    /* destination only: pages sent as zero pages (atomic bits);
                              * a page in neither map was never sent at all */
    bool zero_detect;        /* source: send zero pages as offsets */
    bool memory_zeroed;      /* destination: untouched memory reads as zero */
    bool prefault_huge;      /* destination: huge pages may back every block (smaps), so
                              * prefault whole huge-page extents, not page runs */
    unsigned timeout_ms;     /* source: bound for a channel's drain at the end of a round */
    MfrRateLimit *rate;      /* source: the bandwidth cap all channels share (NULL: none) */
    int numa_node;           /* channel threads run (and allocate) there; -1: anywhere */
    MfrFail *fail;
    /* zstd negotiated (CAPS): packets may travel compressed. comp_raw_max is the largest raw
     * payload one of them carries this session (max_pages * page_size, at most
     * MFR_COMP_MAX_RAW): it sizes the channels' buffers. */
    bool compress;
    XpDomain *dom;           /* compress over a placed transport: for the staging rings */
    bool comp_adaptive;      /* source: auto */
    int comp_level;          /* source */
    uint64_t comp_raw_max;
} MfrRamView;

/* Bytes one channel pins for compression over a placed transport, the same on both sides:
 * the destination's staging ring, the source's staging buffer of as many slots (the ring's
 * MFR_RING_SLOTS as this destination offers them); 0 without zstd or placement. For the
 * up-front pinning budget (register.c). */
uint64_t mfr_comp_staging_bytes(const XpOps *ops, const MfrRamView *ram);

/* ---------------- source ---------------- */

typedef struct {
    uint16_t flags;   /* MFR_PACKET_SYNC */
    uint32_t block;
    uint32_t npages;
    uint64_t round;
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
} MfrBatch;

typedef struct MfrSendChannel MfrSendChannel;
struct MfrSendChannel {
    unsigned index;
    XpChannel *xp;
    const MfrRamView *ram;
    GThread *thread;
    sem_t go;              /* posted by the producer: a batch is handed over, or quit */
    sem_t *ready;          /* session's count of idle channels, posted when a batch is done */
    atomic_bool pending;   /* true while the channel owns a handed-over batch */
    atomic_bool quit;
    MfrBatch *batch;       /* owned by the channel while pending, else by the producer slot */
    uint64_t packet_num;
    XpThreadPlace place;   /* where the thread started; read after the join */
    /* counters: written by the channel thread only, read after join or as estimates */
    MfrChannelStats stats;
    uint8_t msg[XP_MSG_MAX];
    XpSeg segs[MFR_MAX_PAGES_PER_PACKET];
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    /* compression (ram->compress): the channel's own context, output buffer and policy */
    MfrCompressor *zc;
    uint8_t *zbuf;         /* stream: one slot; placed: `slots` slots, registered */
    size_t zslot;          /* bytes per slot: mfr_comp_slot_size(ram->comp_raw_max) */
    MfrCompPolicy policy;
    MfrCompressionChannelStats zstats; /* written by the channel thread only */
    struct iovec ziov[MFR_MAX_PAGES_PER_PACKET];
    /* placed transport: the destination's staging ring. Local slot i is written into remote
     * slot i and stays busy until the destination returns it (CREDIT): its WRITE has then
     * been read out of local memory too. used/freed: slots taken / returned, cumulative. */
    XpRegion *zregion;
    XpRemote *ring;
    uint32_t slots;
    uint64_t used, freed;
    uint8_t rmsg[XP_MSG_MAX];
    atomic_bool inject_bad_frame; /* test seam: the next compressed frame is garbage */
};

/* Takes ownership of xp (closed on failure); starts the channel's thread. */
MfrSendChannel *mfr_send_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     sem_t *ready, GError **error);
/* Swap *batch with the channel's spare batch and wake it. The channel must be idle. */
void mfr_send_channel_hand(MfrSendChannel *c, MfrBatch **batch);
/* The first idle channel at or after *rr, wrapping; *rr moves past it so that the next pick,
 * in this round or the next, starts at its neighbour. NULL when all n are busy (*rr kept). */
MfrSendChannel *mfr_send_channel_pick(MfrSendChannel *const *chan, unsigned n, unsigned *rr);

/* The producer's place in one block's dirty bitmap while it cuts the block into batches
 * (source.c). Words are cleared as they are loaded, so a page leaves the bitmap exactly once. */
typedef struct {
    uint64_t *bitmap;
    uint64_t words;
    uint64_t next;  /* next word to load */
    uint64_t bits;  /* bits of word next - 1 not taken yet */
} MfrDirtyScan;

void mfr_dirty_scan_init(MfrDirtyScan *sc, uint64_t *bitmap, uint64_t npages);
/* Empties b, then takes the block's next dirty pages in page order (as byte offsets, page *
 * page_size) until b holds max_pages or the block has none left: a batch never spans two
 * blocks. Returns b->npages, 0 once the block is done. */
uint32_t mfr_batch_fill(MfrBatch *b, MfrDirtyScan *sc, uint32_t block, uint64_t round,
                        uint32_t page_size, uint32_t max_pages);
/* The packet a batch becomes (send.c), with no I/O: offsets gets the data pages in batch
 * order, then the zero pages (the header's offset list); data pages adjacent in memory share
 * one segment unless a chunk boundary lies between them. remotes: the block's destination
 * regions, one per chunk of chunk_size bytes (0: one region for the whole block), so a
 * segment's remote_offset is relative to its chunk. Returns the segment count; *normal is
 * the number of data pages. */
unsigned mfr_send_packet_layout(const MfrBatch *b, const uint8_t *host, uint32_t page_size,
                                bool zero_detect, XpRegion *region, XpRemote *const *remotes,
                                uint64_t chunk_size, uint64_t *offsets, uint32_t *normal,
                                XpSeg *segs);
/* Stops the thread (after its current batch) and closes the transport channel. */
void mfr_send_channel_free(MfrSendChannel *c);
/* Before a packet goes (ratelimit.c): waits until the session's cap lets wire_bytes more on
 * the wire. 0, or -ECANCELED once the session failed or the channel is told to quit (the
 * packet must not go then; the session's error says why). */
int mfr_send_channel_throttle(MfrSendChannel *c, uint64_t wire_bytes);

/* ---------------- destination ---------------- */

typedef struct MfrRecvChannel MfrRecvChannel;

/* Called by a channel thread when it delivered SYNC of round; the session acks the round
 * once every channel did. Returns false if the round is not the one being synced. */
typedef bool (*MfrSyncFn)(void *opaque, unsigned channel, uint64_t round);

/* Test seam (mfr_dest_inject_hold()): channel `channel` holds the first data packet it
 * receives, before landing it, until every other channel has finished a packet (landed
 * its data or delivered its SYNC) after the hold began, or has delivered the SYNC of the
 * held packet's round already (it has nothing more to land before the barrier, so waiting
 * for it would never end); shared by the session's channels. */
typedef struct {
    GMutex lock;
    GCond cond;
    unsigned channel;
    unsigned nchan;      /* the session's channels, set before they start */
    bool holding;        /* the packet is held now or was */
    bool released;
    uint64_t finished;   /* bit per other channel that finished a packet while holding */
    uint64_t synced_round[MFR_MAX_CHANNELS]; /* per channel: the last SYNC it delivered */
} MfrRecvHold;

struct MfrRecvChannel {
    unsigned index;
    XpChannel *xp;
    const MfrRamView *ram;
    GThread *thread;
    MfrSyncFn sync;
    void *sync_opaque;
    MfrRecvHold *hold;     /* test seam, usually NULL; set before the thread starts */
    atomic_bool quit;
    uint64_t packet_num;   /* last accepted */
    uint64_t round;        /* round of the packets expected next */
    XpThreadPlace place;   /* where the thread started; read after the join */
    MfrChannelStats stats;
    uint8_t msg[XP_MSG_MAX];
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    struct iovec iov[MFR_MAX_PAGES_PER_PACKET];
    /* compression (ram->compress): the channel's own context and input buffer (stream
     * transports read a compressed payload into it before decompressing into the pages) */
    MfrDecompressor *zd;
    uint8_t *zbuf;         /* stream: mfr_comp_bound(ram->comp_raw_max) bytes */
    MfrCompressionChannelStats zstats; /* written by the channel thread only */
    /* placed transport: this channel's staging ring, remotely writable by the source; slots
     * are taken in order, each returned (CREDIT) once decompressed */
    uint8_t *ring;         /* slots * zslot bytes */
    XpRegion *ring_region;
    uint32_t slots;
    size_t zslot;
    uint64_t freed;
};

/* Takes ownership of xp (closed on failure); starts the channel's thread. */
MfrRecvChannel *mfr_recv_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     MfrSyncFn sync, void *sync_opaque, MfrRecvHold *hold,
                                     GError **error);
/* The iovecs a packet's data pages land through (recv.c): pages adjacent in memory share one,
 * so they match the sender's segments one for one. Returns the iovec count. */
unsigned mfr_recv_packet_layout(uint8_t *host, uint32_t page_size, const uint64_t *offsets,
                                uint32_t normal, struct iovec *iov);
/* Makes the thread stop (no error is reported after this) and joins it; closes xp. */
void mfr_recv_channel_free(MfrRecvChannel *c);

G_END_DECLS
