/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Source data channels: each thread takes the batch the producer handed over, detects zero
 * pages, coalesces contiguous data pages into segments and sends one packet (header part +
 * segments) through the transport. Mirrors recv.c section by section.
 */
#include "channel.h"

#include <errno.h>
#include <string.h>

/* ---------- packet building ---------- */

unsigned mfr_send_packet_layout(const MfrBatch *b, const uint8_t *host, uint32_t page_size,
                                bool zero_detect, XpRegion *region, XpRemote *const *remotes,
                                uint64_t chunk_size, uint64_t *offsets, uint32_t *normal,
                                XpSeg *segs)
{
    uint64_t zeros[MFR_MAX_PAGES_PER_PACKET];
    unsigned nseg = 0;
    uint32_t nn = 0, nz = 0;

    for (unsigned i = 0; i < b->npages; i++) {
        uint64_t off = b->offsets[i];
        const uint8_t *p = host + off;
        if (zero_detect && mfr_buffer_is_zero(p, page_size)) {
            zeros[nz++] = off;
            continue;
        }
        offsets[nn++] = off;
        /* a chunk boundary starts a new segment: the next chunk is another remote region
         * (chunks are whole pages, so no page straddles one) */
        uint64_t chunk = chunk_size ? off / chunk_size : 0;
        uint64_t in_chunk = chunk_size ? off % chunk_size : off;
        /* same offset on both sides: contiguous here means contiguous there */
        if (nseg && (const uint8_t *)segs[nseg - 1].addr + segs[nseg - 1].len == p &&
            in_chunk != 0) {
            segs[nseg - 1].len += page_size;
            continue;
        }
        segs[nseg++] = (XpSeg){
            .addr = p,
            .len = page_size,
            .region = region,
            .remote = remotes ? remotes[chunk] : NULL,
            .remote_offset = in_chunk,
        };
    }
    memcpy(offsets + nn, zeros, nz * sizeof(uint64_t));
    *normal = nn;
    return nseg;
}

static int send_channel_packet(MfrSendChannel *c, const MfrBatch *b)
{
    const MfrRamView *ram = c->ram;
    MfrPacketHdr h = {
        .magic = MFR_PACKET_MAGIC,
        .version = MFR_WIRE_VERSION,
        .flags = b->flags,
        .packet_num = ++c->packet_num,
        .round = b->round,
        .block = b->block,
    };
    unsigned nseg = 0;

    if (!(b->flags & MFR_PACKET_SYNC)) {
        uint32_t ps = ram->page_size;
        XpRemote *const *remotes = NULL;
        uint64_t chunk_size = 0;
        if (ram->remote) {
            remotes = mfr_region_table_remotes(ram->remote, b->block);
            chunk_size = mfr_region_table_map(ram->remote)->layout[b->block].chunk_size;
        }
        /* the source registers its blocks whole: chunk 0 is the block */
        XpRegion *region = ram->local ? mfr_region_table_local(ram->local, b->block, 0) : NULL;
        nseg = mfr_send_packet_layout(b, ram->blocks[b->block].host, ps, ram->zero_detect,
                                      region, remotes, chunk_size, c->offsets,
                                      &h.normal_pages, c->segs);
        h.zero_pages = b->npages - h.normal_pages;
        h.payload_len = (uint64_t)h.normal_pages * ps;
        c->stats.pages += h.normal_pages;
        c->stats.zero_pages += h.zero_pages;
        c->stats.bytes += h.payload_len;
    }

    size_t len = mfr_wire_pack_packet(&h, c->offsets, c->msg, sizeof(c->msg));
    g_assert(len > 0);
    if (mfr_send_channel_throttle(c, len + h.payload_len) < 0) {
        return 0; /* the session failed or the channel quits: not this packet's error */
    }
    int r = xp_send_msg(c->xp, c->msg, len, c->segs, nseg);
    if (r < 0) {
        return r;
    }
    c->stats.packets++;
    c->stats.wire_bytes += len + h.payload_len;
    if (b->flags & MFR_PACKET_SYNC) {
        /* One-sided WRITEs fail asynchronously: wait for this round's work to be
         * acknowledged, so an error completion fails the session now, with its status,
         * instead of the destination only seeing its QP flushed. The barrier waits for the
         * destination's ack anyway, so this costs no throughput. */
        r = xp_channel_drain(c->xp, (int)ram->timeout_ms);
    }
    return r;
}

/* ---------- thread ---------- */

static gpointer send_channel_thread(gpointer opaque)
{
    MfrSendChannel *c = opaque;
    for (;;) {
        while (sem_wait(&c->go) != 0 && errno == EINTR) {
        }
        if (atomic_load(&c->quit)) {
            break;
        }
        /* pairs with the release store in mfr_send_channel_hand() */
        if (!atomic_load_explicit(&c->pending, memory_order_acquire)) {
            continue;
        }
        if (!mfr_failed(c->ram->fail)) {
            int r = send_channel_packet(c, c->batch);
            if (r < 0 && !atomic_load(&c->quit)) {
                g_autofree char *what = g_strdup_printf("channel %u to %s", c->index,
                                                        xp_channel_peer(c->xp));
                mfr_fail_transport(c->ram->fail, what, r, xp_channel_error_detail(c->xp));
            }
        }
        /* pairs with the acquire load in the producer's idle-channel scan */
        atomic_store_explicit(&c->pending, false, memory_order_release);
        sem_post(c->ready);
    }
    c->stats.busy_s = mfr_thread_cpu_s();
    return NULL;
}

/* ---------- lifetime ---------- */

MfrSendChannel *mfr_send_channel_new(unsigned index, XpChannel *xp, const MfrRamView *ram,
                                     sem_t *ready, GError **error)
{
    MfrSendChannel *c = g_new0(MfrSendChannel, 1);
    c->index = index;
    c->xp = xp;
    c->ram = ram;
    c->ready = ready;
    c->batch = g_new0(MfrBatch, 1);
    sem_init(&c->go, 0, 0);
    g_autofree char *name = g_strdup_printf("mfr-send-%u", index);
    GError *terr = NULL;
    c->thread = xp_thread_new_on(name, send_channel_thread, c, ram->numa_node, &c->place, &terr);
    if (!c->thread) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "source: channel %u: %s", index,
                    terr->message);
        g_error_free(terr);
        mfr_send_channel_free(c);
        return NULL;
    }
    return c;
}

void mfr_send_channel_hand(MfrSendChannel *c, MfrBatch **batch)
{
    MfrBatch *spare = c->batch;
    c->batch = *batch;
    *batch = spare;
    atomic_store_explicit(&c->pending, true, memory_order_release);
    sem_post(&c->go);
}

void mfr_send_channel_free(MfrSendChannel *c)
{
    if (!c) {
        return;
    }
    if (c->thread) {
        atomic_store(&c->quit, true);
        xp_channel_shutdown(c->xp);
        sem_post(&c->go);
        g_thread_join(c->thread);
    }
    xp_channel_close(c->xp);
    sem_destroy(&c->go);
    g_free(c->batch);
    g_free(c);
}
