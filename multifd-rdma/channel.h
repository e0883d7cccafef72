/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Data channels: one thread per channel on each side. send.c (source) turns batches of dirty
 * pages into packets; recv.c (destination) validates packets and lands their pages. The two
 * files mirror each other; the sessions (source.c, dest.c) own them.
 */
#pragma once

#include "engine.h"

#include <semaphore.h>

G_BEGIN_DECLS

/* A session's view of its RAM, shared read-only by its channel threads during migration. */
typedef struct {
    unsigned nblocks;
    const MfrRamBlock *blocks;
    uint64_t *block_len;     /* nblocks */
    uint32_t page_size;      /* migration page size (negotiated) */
    uint32_t max_pages;      /* pages per packet (negotiated) */
    XpRegion **regions;      /* per block, NULL entries without XP_CAP_REGIONS */
    XpRemote **remotes;      /* source only: destination regions per block */
    uint64_t **received;     /* destination only: pages that received data (atomic bits) */
    bool zero_detect;        /* source: send zero pages as offsets */
    bool memory_zeroed;      /* destination: untouched memory reads as zero */
    unsigned timeout_ms;     /* source: bound for a channel's drain at the end of a round */
    MfrFail *fail;
} MfrRamView;

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
    /* counters: written by the channel thread only, read after join or as estimates */
    MfrChannelStats stats;
    uint8_t msg[XP_MSG_MAX];
    XpSeg segs[MFR_MAX_PAGES_PER_PACKET];
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
};

MfrSendChannel *mfr_send_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     sem_t *ready);
/* Swap *batch with the channel's spare batch and wake it. The channel must be idle. */
void mfr_send_channel_hand(MfrSendChannel *c, MfrBatch **batch);
/* Stops the thread (after its current batch) and closes the transport channel. */
void mfr_send_channel_free(MfrSendChannel *c);

/* ---------------- destination ---------------- */

typedef struct MfrRecvChannel MfrRecvChannel;

/* Called by a channel thread when it delivered SYNC of round; the session acks the round
 * once every channel did. Returns false if the round is not the one being synced. */
typedef bool (*MfrSyncFn)(void *opaque, unsigned channel, uint64_t round);

struct MfrRecvChannel {
    unsigned index;
    XpChannel *xp;
    const MfrRamView *ram;
    GThread *thread;
    MfrSyncFn sync;
    void *sync_opaque;
    atomic_bool quit;
    uint64_t packet_num;   /* last accepted */
    uint64_t round;        /* round of the packets expected next */
    MfrChannelStats stats;
    uint8_t msg[XP_MSG_MAX];
    uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    struct iovec iov[MFR_MAX_PAGES_PER_PACKET];
};

MfrRecvChannel *mfr_recv_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     MfrSyncFn sync, void *sync_opaque);
/* Makes the thread stop (no error is reported after this) and joins it; closes xp. */
void mfr_recv_channel_free(MfrRecvChannel *c);

G_END_DECLS
