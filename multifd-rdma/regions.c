/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Region tables (regions.h): chunk layouts, and per chunk its transport region and ready bit,
 * with the in-order publication the destination needs and the bounded wait the source's
 * producer needs. One lock per table; nothing here does I/O except what publish() does.
 */
#include "engine.h"

#include <string.h>

/* ---------- chunk maps ---------- */

void mfr_chunk_map_init(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n,
                        uint64_t chunk_bytes, unsigned threads)
{
    uint64_t want = chunk_bytes;
    if (want == 0) {
        /* The source waits for the first chunk, and the threads finish their first chunks
         * together: with RAM / threads below a few chunks nothing would overlap. */
        uint64_t total = 0;
        for (unsigned b = 0; b < n; b++) {
            total += blocks[b].length;
        }
        want = total / ((uint64_t)MAX(threads, 1u) * MFR_REGION_CHUNKS_PER_THREAD);
        want = CLAMP(want, MFR_REGION_CHUNK_MIN, MFR_REGION_CHUNK_DEFAULT);
    }
    MfrChunkLayout layout[MFR_MAX_BLOCKS];
    for (unsigned b = 0; b < n; b++) {
        uint64_t ps = blocks[b].page_size, len = blocks[b].length;
        /* fewer, larger chunks where a block would need too many REGION messages */
        uint64_t cs = MAX(want, mfr_chunk_count(len, MFR_MAX_CHUNKS_PER_BLOCK));
        cs = MIN(cs, len);
        cs = mfr_chunk_count(cs, ps) * ps; /* whole pages: len is a multiple of ps */
        layout[b] = (MfrChunkLayout){ .chunk_size = cs,
                                      .chunks = (uint32_t)mfr_chunk_count(len, cs) };
    }
    mfr_chunk_map_from_layout(m, layout, n);
}

void mfr_chunk_map_whole(MfrChunkMap *m, const MfrRamBlock *blocks, unsigned n)
{
    mfr_chunk_map_init(m, blocks, n, UINT64_MAX, 1);
}

void mfr_chunk_map_from_layout(MfrChunkMap *m, const MfrChunkLayout *layout, unsigned n)
{
    memset(m, 0, sizeof(*m));
    m->nblocks = n;
    for (unsigned b = 0; b < n; b++) {
        m->layout[b] = layout[b];
        m->first[b] = m->total;
        m->total += layout[b].chunks;
    }
}

/* ---------- the table ---------- */

struct MfrRegionTable {
    XpDomain *dom;         /* not owned; outlives the table */
    MfrRegionKind kind;
    const MfrRamBlock *blocks;
    MfrChunkMap map;
    char *registrar;
    XpRegion **local;      /* map.total, LOCAL tables */
    XpRemote **remote;     /* map.total, REMOTE tables */
    GMutex lock;           /* everything below */
    GCond cond;            /* a chunk became ready, or wake() */
    bool *ready;           /* map.total */
    uint32_t nready;
    uint32_t in_order[MFR_MAX_BLOCKS];
};

MfrRegionTable *mfr_region_table_new(XpDomain *dom, MfrRegionKind kind,
                                     const MfrRamBlock *blocks, const MfrChunkMap *map,
                                     const char *registrar)
{
    MfrRegionTable *t = g_new0(MfrRegionTable, 1);
    t->dom = dom;
    t->kind = kind;
    t->blocks = blocks;
    t->map = *map;
    t->registrar = g_strdup(registrar);
    if (kind == MFR_REGIONS_LOCAL) {
        t->local = g_new0(XpRegion *, MAX(map->total, 1u));
    } else {
        t->remote = g_new0(XpRemote *, MAX(map->total, 1u));
    }
    t->ready = g_new0(bool, MAX(map->total, 1u));
    g_mutex_init(&t->lock);
    g_cond_init(&t->cond);
    return t;
}

void mfr_region_table_free(MfrRegionTable *t)
{
    if (!t) {
        return;
    }
    for (uint32_t i = 0; i < t->map.total; i++) {
        if (t->local && t->local[i]) {
            xp_region_deregister(t->dom, t->local[i]);
        }
        if (t->remote && t->remote[i]) {
            xp_remote_free(t->dom, t->remote[i]);
        }
    }
    g_free(t->local);
    g_free(t->remote);
    g_free(t->ready);
    g_free(t->registrar);
    g_mutex_clear(&t->lock);
    g_cond_clear(&t->cond);
    g_free(t);
}

const MfrChunkMap *mfr_region_table_map(const MfrRegionTable *t)
{
    return &t->map;
}

void mfr_region_table_chunk_range(const MfrRegionTable *t, unsigned block, uint32_t chunk,
                                  uint64_t *offset, uint64_t *len)
{
    uint64_t cs = t->map.layout[block].chunk_size;
    *offset = (uint64_t)chunk * cs;
    *len = MIN(cs, t->blocks[block].length - *offset);
}

static uint32_t table_flat(const MfrRegionTable *t, unsigned block, uint32_t chunk)
{
    g_assert(block < t->map.nblocks && chunk < t->map.layout[block].chunks);
    return t->map.first[block] + chunk;
}

static void table_set(MfrRegionTable *t, unsigned block, uint32_t chunk, MfrRegionKind kind,
                      void *r)
{
    uint32_t i = table_flat(t, block, chunk);
    g_assert(t->kind == kind);
    g_mutex_lock(&t->lock);
    if (kind == MFR_REGIONS_LOCAL) {
        g_assert(!t->local[i]);
        t->local[i] = r;
    } else {
        g_assert(!t->remote[i]);
        t->remote[i] = r;
    }
    g_mutex_unlock(&t->lock);
}

void mfr_region_table_set_local(MfrRegionTable *t, unsigned block, uint32_t chunk,
                                XpRegion *r)
{
    table_set(t, block, chunk, MFR_REGIONS_LOCAL, r);
}

void mfr_region_table_set_remote(MfrRegionTable *t, unsigned block, uint32_t chunk,
                                 XpRemote *r)
{
    table_set(t, block, chunk, MFR_REGIONS_REMOTE, r);
}

bool mfr_region_table_ready(MfrRegionTable *t, unsigned block, uint32_t chunk,
                            MfrRegionPublishFn publish, void *opaque, GError **error)
{
    uint32_t i = table_flat(t, block, chunk);
    bool ok = true;
    g_mutex_lock(&t->lock);
    g_assert(!t->ready[i]);
    t->ready[i] = true;
    t->nready++;
    uint32_t *next = &t->in_order[block];
    while (*next < t->map.layout[block].chunks && t->ready[t->map.first[block] + *next]) {
        if (publish && !publish(opaque, block, *next, error)) {
            ok = false;
            break;
        }
        (*next)++;
    }
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
    return ok;
}

void mfr_region_table_in_order(MfrRegionTable *t, uint32_t *counts)
{
    g_mutex_lock(&t->lock);
    memcpy(counts, t->in_order, t->map.nblocks * sizeof(counts[0]));
    g_mutex_unlock(&t->lock);
}

uint32_t mfr_region_table_missing(MfrRegionTable *t)
{
    g_mutex_lock(&t->lock);
    uint32_t n = t->map.total - t->nready;
    g_mutex_unlock(&t->lock);
    return n;
}

bool mfr_region_table_wait(MfrRegionTable *t, unsigned block, uint32_t chunk,
                           unsigned timeout_ms, MfrFail *fail, GError **error)
{
    uint32_t i = table_flat(t, block, chunk);
    bool ok = true;
    g_mutex_lock(&t->lock);
    uint32_t seen = t->nready;
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000LL;
    while (!t->ready[i]) {
        if (fail && mfr_failed(fail)) {
            ok = false;
            mfr_fail_propagate(fail, error);
            break;
        }
        if (t->nready != seen) {
            /* progress: the registrar is alive, the bound starts again */
            seen = t->nready;
            deadline = g_get_monotonic_time() + timeout_ms * 1000LL;
        }
        if (!g_cond_wait_until(&t->cond, &t->lock, deadline) && t->nready == seen &&
            !t->ready[i] && !(fail && mfr_failed(fail))) {
            ok = false;
            g_set_error(error, MFR_ERROR, MFR_ERROR_TIMEOUT,
                        "chunk %u of block '%s' not registered by %s within %u ms", chunk,
                        t->blocks[block].name, t->registrar, timeout_ms);
            break;
        }
    }
    g_mutex_unlock(&t->lock);
    return ok;
}

void mfr_region_table_wake(MfrRegionTable *t)
{
    if (t) {
        g_mutex_lock(&t->lock);
        g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
    }
}

XpRegion *mfr_region_table_local(const MfrRegionTable *t, unsigned block, uint32_t chunk)
{
    return t->local ? t->local[table_flat(t, block, chunk)] : NULL;
}

XpRemote *const *mfr_region_table_remotes(const MfrRegionTable *t, unsigned block)
{
    return t->remote ? t->remote + t->map.first[block] : NULL;
}
