/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The source session and precopy driver: connect and negotiate on the control connection,
 * announce RAM blocks, open N channels, then run rounds (harvest dirty bitmap, hand batches
 * to idle channels, SYNC barrier acknowledged by the destination) until the rest fits the
 * downtime limit, switch over, and finish with COMPLETE and per-block digests.
 */
#include "channel.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

struct MfrSource {
    /* Producer hot path (mfr_source_queue_page()), together for one cache line or two:
     * the batch being filled, and the gate its pages pass. q_room is the batch's capacity
     * while pages may be queued and 0 otherwise, so one compare covers "started, not
     * completed" as well as "batch full"; q_len and q_mask check the page against the
     * batch's block. Producer thread only. */
    MfrBatch *batch;
    uint32_t q_room;
    uint64_t q_len;
    uint64_t q_mask;
    MfrFail fail;

    MfrSourceConfig cfg;
    char *uri;
    MfrRamBlock *blocks;
    unsigned nblocks;
    double reg_helper_cpu_s; /* registration threads' CPU, beside the main thread's */
    const MfrDirtyOps *dirty; /* NULL: stepwise use only */
    void *dirty_opaque;
    uint64_t **bitmap;  /* per block: pages to send this round (run() only) */
    uint64_t *npages;   /* per block, in migration pages */

    const XpOps *ops;
    XpDomain *dom;
    char *host, *port;
    MfrRamView ram;
    MfrCaps caps;       /* negotiated */
    /* pipelined registration: some chunk of ram.remote may still be missing (migration
     * thread only; once false, batches need no wait) */
    bool chunks_pending;
    uint8_t session_id[MFR_SESSION_ID_LEN];

    GMutex lock;        /* guards ctl/chan publication against on_fail */
    MfrControl *ctl;
    MfrSendChannel **chan;
    unsigned nchan;
    sem_t ready;        /* idle channels */
    unsigned rr;        /* next channel to try (round-robin across rounds) */

    atomic_bool force;
    /* The session's lifecycle, producer thread only. state is the one truth of where the
     * session is (the public phase derives from it); started and released bracket the
     * resources: start() acquires, finish releases (threads joined, MRs deregistered). */
    MfrState state;
    bool started;
    bool released;
    uint64_t round;     /* round being queued: 1 + rounds barriered */
    bool queued_since_barrier;
    double t_stop;      /* mark_stopped(): when the workload stopped; 0 while it runs */
    double cpu_s;       /* producer CPU inside start(), barrier() and complete() */

    /* progress (producer thread only) */
    MfrProgress prog;
    double t_start, t_last_prog, t_prog_bytes_at, prog_bytes_mark;
    /* stats: written by the producer thread only; published to stats_pub under stats_lock
     * at the end of start(), of every barrier and of the session, so get_stats() from any
     * thread reads one consistent snapshot */
    MfrStats stats;
    MfrStats stats_pub;
    MfrCompressionStats zstats;     /* same rule as stats */
    MfrCompressionStats zstats_pub;
    MfrPlacement place;     /* like stats: producer thread, published with them */
    MfrPlacement place_pub;
    bool place_ready;        /* the session ended: place is final (producer thread) */
    bool place_final;        /* place_pub is final; under stats_lock */
    bool place_measured;     /* its memory figures were read (get_placement()); likewise */
    GMutex stats_lock;
    /* mfr_source_set_compression(), before start */
    MfrCompression comp_mode;
    int comp_level;
};

/* ---------- failure ---------- */

static void source_on_fail(void *opaque, const GError *err, bool quiet)
{
    MfrSource *s = opaque;
    g_mutex_lock(&s->lock);
    /* release a producer waiting for a chunk */
    mfr_region_table_wake(s->ram.remote);
    if (s->ctl) {
        if (!quiet) {
            mfr_control_send_error(s->ctl, err);
        }
        /* the reader stops within a tick by itself; see mfr_control_free() */
        mfr_control_wake(s->ctl);
    }
    for (unsigned i = 0; !quiet && i < s->nchan; i++) {
        if (s->chan[i]) {
            xp_channel_shutdown(s->chan[i]->xp);
        }
    }
    /* release a producer waiting for an idle channel */
    for (unsigned i = 0; i < MAX(s->nchan, 1u); i++) {
        sem_post(&s->ready);
    }
    g_mutex_unlock(&s->lock);
}

/* ---------- setup ---------- */

bool mfr_source_check_uri(const char *uri, GError **error)
{
    g_autofree char *host = NULL, *port = NULL;
    g_autoptr(GError) xerr = NULL;
    if (!xp_uri_parse(uri, &host, &port, &xerr)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: %s", xerr->message);
        return false;
    }
    /* listening on port 0 picks a free one; connecting to it means nothing */
    if (g_ascii_strtoull(port, NULL, 10) == 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: bad URI '%s': port 0 (give the port the destination printed)",
                    uri);
        return false;
    }
    return true;
}

/* Everything mfr_source_new() refuses, before anything is allocated: the packet size and
 * the smallest page size of the blocks come out. */
static bool source_config_check(const MfrSourceConfig *cfg, const MfrRamBlock *blocks,
                                unsigned nblocks, const MfrDirtyOps *dirty, unsigned *ppp_out,
                                uint32_t *page_size_out, GError **error)
{
    if (!cfg->uri) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: no destination URI given");
        return false;
    }
    if (cfg->channels < 1 || cfg->channels > MFR_MAX_CHANNELS) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: %u channels requested, allowed 1..%u", cfg->channels,
                    MFR_MAX_CHANNELS);
        return false;
    }
    if (nblocks < 1 || nblocks > MFR_MAX_BLOCKS) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: %u RAM blocks, allowed 1..%u",
                    nblocks, MFR_MAX_BLOCKS);
        return false;
    }
    if (dirty && (!dirty->harvest || !dirty->stop)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: dirty tracking needs harvest() and stop()");
        return false;
    }
    if (!mfr_transport_check("source", &cfg->transport, error) ||
        !mfr_numa_check("source", cfg->numa_node, error)) {
        return false;
    }
    unsigned ppp = cfg->pages_per_packet ? cfg->pages_per_packet : 128;
    if (ppp > MFR_MAX_PAGES_PER_PACKET) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: %u pages per packet, allowed 1..%u", ppp, MFR_MAX_PAGES_PER_PACKET);
        return false;
    }
    uint32_t page_size = UINT32_MAX;
    for (unsigned i = 0; i < nblocks; i++) {
        const MfrRamBlock *b = &blocks[i];
        if (!mfr_ram_block_check(b, true, error)) {
            g_prefix_error(error, "source: block %u ", i);
            return false;
        }
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(blocks[j].name, b->name) == 0) {
                g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                            "source: block name '%s' used twice", b->name);
                return false;
            }
        }
        page_size = MIN(page_size, b->page_size);
    }
    if (!mfr_source_check_uri(cfg->uri, error)) {
        return false;
    }
    *ppp_out = ppp;
    *page_size_out = page_size;
    return true;
}

MfrSource *mfr_source_new(const MfrSourceConfig *cfg_in, const MfrRamBlock *blocks,
                          unsigned nblocks, const MfrDirtyOps *dirty, void *dirty_opaque,
                          GError **error)
{
    MfrSourceConfig full;
    if (!mfr_source_config_take(cfg_in, &full, error)) {
        return NULL;
    }
    const MfrSourceConfig *cfg = &full;
    unsigned ppp;
    uint32_t page_size;
    if (!source_config_check(cfg, blocks, nblocks, dirty, &ppp, &page_size, error)) {
        return NULL;
    }
    g_autofree char *host = NULL, *port = NULL;
    const XpOps *ops = xp_uri_parse(cfg->uri, &host, &port, NULL); /* checked above */

    MfrSource *s = g_new0(MfrSource, 1);
    s->cfg = *cfg;
    s->cfg.pages_per_packet = ppp;
    s->cfg.timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
    s->cfg.max_rounds = cfg->max_rounds ? cfg->max_rounds : 30;
    s->uri = g_strdup(cfg->uri);
    s->cfg.uri = s->uri;
    s->ops = ops;
    s->host = g_steal_pointer(&host);
    s->port = g_steal_pointer(&port);
    s->nblocks = nblocks;
    s->blocks = g_new0(MfrRamBlock, nblocks);
    s->bitmap = g_new0(uint64_t *, nblocks);
    s->npages = g_new0(uint64_t, nblocks);
    s->ram.block_len = g_new0(uint64_t, nblocks);
    for (unsigned i = 0; i < nblocks; i++) {
        s->blocks[i] = blocks[i];
        s->blocks[i].name = g_strdup(blocks[i].name);
        s->npages[i] = blocks[i].length / page_size;
        s->bitmap[i] = g_new0(uint64_t, (s->npages[i] + 63) / 64);
        s->ram.block_len[i] = blocks[i].length;
    }
    s->dirty = dirty;
    s->dirty_opaque = dirty_opaque;
    s->ram.nblocks = nblocks;
    s->ram.blocks = s->blocks;
    s->ram.page_size = page_size;
    s->ram.zero_detect = cfg->zero_detect;
    s->ram.fail = &s->fail;
    s->ram.timeout_ms = s->cfg.timeout_ms;
    /* always there, so a cap can be set mid-migration; unlimited costs one load a packet */
    s->ram.rate = mfr_ratelimit_new(cfg->max_bandwidth, NULL);
    s->ram.numa_node = -1; /* chosen once connected */
    g_mutex_init(&s->lock);
    g_mutex_init(&s->stats_lock);
    sem_init(&s->ready, 0, 0);
    mfr_fail_init(&s->fail, source_on_fail, s);
    s->batch = g_new0(MfrBatch, 1);
    s->batch->block = UINT32_MAX; /* no block yet: the first page takes the slow path */
    if (getrandom(s->session_id, sizeof(s->session_id), 0) != sizeof(s->session_id)) {
        for (unsigned i = 0; i < sizeof(s->session_id); i++) {
            s->session_id[i] = (uint8_t)g_random_int();
        }
    }
    s->prog.ram_bytes = 0;
    for (unsigned i = 0; i < nblocks; i++) {
        s->prog.ram_bytes += blocks[i].length;
    }
    g_strlcpy(s->stats.transport, xp_ops_name(ops), sizeof(s->stats.transport));
    s->stats_pub = s->stats;
    mfr_placement_init(&s->place);
    s->place_pub = s->place;
    s->round = 1;
    s->q_mask = page_size - 1;
    s->comp_level = MFR_COMP_DEFAULT_LEVEL;
    s->zstats.level = s->comp_level;
    s->zstats_pub = s->zstats;
    return s;
}

bool mfr_source_set_compression(MfrSource *s, MfrCompression mode, int level, GError **error)
{
    if (s->started) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: compression set after mfr_source_start()");
        return false;
    }
    if (!mfr_compression_check(mode, level, error)) {
        g_prefix_error(error, "source: ");
        return false;
    }
    s->comp_mode = mode;
    s->comp_level = level ? level : MFR_COMP_DEFAULT_LEVEL;
    s->zstats.mode = mode;
    s->zstats.level = s->comp_level;
    s->zstats_pub = s->zstats;
    return true;
}

static void source_hello(MfrSource *s, MfrRole role, unsigned index, unsigned count,
                         uint8_t out[MFR_HELLO_SIZE])
{
    MfrHello h = {
        .magic = MFR_HELLO_MAGIC,
        .version = MFR_WIRE_VERSION,
        .role = role,
        .channel_index = index,
        .channel_count = count,
    };
    memcpy(h.session_id, s->session_id, sizeof(h.session_id));
    memcpy(h.token, s->cfg.token, sizeof(h.token));
    mfr_wire_pack_hello(&h, out);
}

static XpChannel *source_connect(MfrSource *s, MfrRole role, unsigned index, unsigned count,
                                 GError **error)
{
    uint8_t hello[MFR_HELLO_SIZE];
    XpOptions o;
    mfr_transport_xp_options(&s->cfg.transport, s->cfg.timeout_ms, role == MFR_ROLE_CONTROL,
                             &o);
    source_hello(s, role, index, count, hello);
    GError *xerr = NULL;
    XpChannel *ch = xp_connect(s->dom, s->host, s->port, hello, sizeof(hello), &o, &xerr);
    if (!ch) {
        g_autofree char *what = role == MFR_ROLE_CONTROL
            ? g_strdup_printf("source: control connection to %s", s->uri)
            : g_strdup_printf("source: channel %u to %s", index, s->uri);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
    }
    return ch;
}

static bool source_negotiate(MfrSource *s, GError **error)
{
    MfrCaps offer = {
        .page_size = s->ram.page_size,
        .zero_modes = s->cfg.zero_detect ? (MFR_ZERO_DETECT | MFR_ZERO_NONE) : MFR_ZERO_NONE,
        .compression = s->comp_mode == MFR_COMPRESSION_ZSTD ? MFR_COMP_ZSTD
                     : s->comp_mode == MFR_COMPRESSION_AUTO ? (MFR_COMP_NONE | MFR_COMP_ZSTD)
                     : MFR_COMP_NONE,
        .channels = s->cfg.channels,
        .max_channels = MFR_MAX_CHANNELS,
        .max_pages_per_packet = s->cfg.pages_per_packet,
    };
    uint8_t body[MFR_CAPS_SIZE];
    mfr_wire_pack_caps(&offer, body);
    if (!mfr_control_send(s->ctl, MFR_CTRL_CAPS, body, sizeof(body), error)) {
        return false;
    }
    g_autofree MfrCtrlMsg *m = mfr_control_expect(s->ctl, MFR_CTRL_CAPS, s->cfg.timeout_ms,
                                                   error);
    if (!m) {
        return false;
    }
    MfrCaps c;
    if (!mfr_wire_unpack_caps(m->body, m->len, &c, error)) {
        g_prefix_error(error, "source: CAPS choice from %s: ", s->uri);
        return false;
    }
    /* a choice must be one of the offered values */
    if (c.page_size != offer.page_size || (c.zero_modes & ~offer.zero_modes) ||
        __builtin_popcount(c.zero_modes) != 1 || (c.compression & ~offer.compression) ||
        __builtin_popcount(c.compression) != 1 || c.channels > offer.channels ||
        c.max_pages_per_packet > offer.max_pages_per_packet) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_CAPS,
                    "source: destination %s chose capabilities outside the offer (page size %u, "
                    "zero modes 0x%x, compression 0x%x, %u channels, %u pages/packet)",
                    s->uri, c.page_size, c.zero_modes, c.compression, c.channels,
                    c.max_pages_per_packet);
        return false;
    }
    s->caps = c;
    s->ram.zero_detect = c.zero_modes == MFR_ZERO_DETECT;
    s->ram.max_pages = c.max_pages_per_packet;
    s->ram.compress = c.compression == MFR_COMP_ZSTD;
    s->ram.comp_adaptive = s->comp_mode == MFR_COMPRESSION_AUTO;
    s->ram.comp_level = s->comp_level;
    s->ram.comp_raw_max = MIN((uint64_t)c.max_pages_per_packet * c.page_size,
                              (uint64_t)MFR_COMP_MAX_RAW);
    s->zstats.negotiated = s->ram.compress;
    return true;
}

static bool source_expect_chunks(MfrSource *s, const MfrChunkLayout *layout, GError **error);
static bool source_region(void *opaque, const MfrCtrlMsg *m, GError **error);

static bool source_announce(MfrSource *s, GError **error)
{
    MfrBlockInfo info[MFR_MAX_BLOCKS];
    memset(info, 0, sizeof(info));
    for (unsigned i = 0; i < s->nblocks; i++) {
        g_strlcpy(info[i].name, s->blocks[i].name, sizeof(info[i].name));
        info[i].length = s->blocks[i].length;
        info[i].page_size = s->blocks[i].page_size;
    }
    uint8_t body[XP_MSG_MAX];
    size_t len = mfr_wire_pack_blocks(info, s->nblocks, body, sizeof(body) - MFR_CTRL_HDR_SIZE);
    g_assert(len);
    if (!mfr_control_send(s->ctl, MFR_CTRL_BLOCKS, body, len, error)) {
        return false;
    }
    /* Our registration overlaps the destination's: both only depend on the block list. */
    if (xp_has_cap(s->ops, XP_CAP_REGIONS)) {
        MfrChunkMap whole;
        mfr_chunk_map_whole(&whole, s->blocks, s->nblocks);
        s->ram.local = mfr_region_table_new(s->dom, MFR_REGIONS_LOCAL, s->blocks, &whole,
                                            "the source");
        MfrRegisterJob job = {
            .dom = s->dom, .blocks = s->blocks, .nblocks = s->nblocks,
            .access = XP_REGION_LOCAL, .prefault = false, /* guest RAM: present already */
            .threads = s->cfg.transport.registration_threads, .channels = s->caps.channels,
            .side = "source", .numa_node = s->ram.numa_node,
            .channel_staging = mfr_comp_staging_bytes(s->ops, &s->ram),
        };
        MfrRegisterResult res;
        bool ok = mfr_register_blocks(&job, s->ram.local, &res, error);
        s->stats.registration_ms = res.ms;
        s->stats.registration_cpu_s = res.cpu_s;
        s->stats.registration_threads = res.threads;
        s->reg_helper_cpu_s = res.helper_cpu_s;
        if (!ok) {
            return false;
        }
    }
    /* Registration on the destination pins memory: allow it more than the liveness bound. */
    g_autofree MfrCtrlMsg *m = mfr_control_expect(s->ctl, MFR_CTRL_BLOCKS_REPLY, -1, error);
    if (!m) {
        return false;
    }
    MfrBlocksReply reply;
    if (!mfr_wire_unpack_blocks_reply(m->body, m->len, info, s->nblocks, &reply, error)) {
        g_prefix_error(error, "source: BLOCKS_REPLY from %s: ", s->uri);
        return false;
    }
    bool regions = xp_has_cap(s->ops, XP_CAP_REGIONS);
    if (!(reply.flags & MFR_REPLY_REGIONS) != !regions) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "source: BLOCKS_REPLY from %s %s registration chunks, but %s %s regions",
                    s->uri, regions ? "lacks" : "announces", xp_ops_name(s->ops),
                    regions ? "needs" : "has no");
        return false;
    }
    return !regions || source_expect_chunks(s, reply.layout, error);
}

/* The destination's chunk layout: its REGIONs are imported by the control reader from now
 * on (source_region()), the producer waits for the chunks it needs (source_wait_chunk()). */
static bool source_expect_chunks(MfrSource *s, const MfrChunkLayout *layout, GError **error)
{
    MfrChunkMap map;
    mfr_chunk_map_from_layout(&map, layout, s->nblocks);
    g_autofree char *registrar = g_strdup_printf("the destination %s", s->uri);
    MfrRegionTable *remote = mfr_region_table_new(s->dom, MFR_REGIONS_REMOTE, s->blocks, &map,
                                                  registrar);
    g_mutex_lock(&s->lock);
    s->ram.remote = remote;
    g_mutex_unlock(&s->lock);
    s->stats.region_chunks = map.total;
    s->chunks_pending = true;
    return mfr_control_set_handler(s->ctl, MFR_CTRL_REGION, source_region, s, error);
}

/* Control reader thread: one REGION, imported into ram.remote (in order within its block:
 * the wire check refuses anything else). */
static bool source_region(void *opaque, const MfrCtrlMsg *m, GError **error)
{
    MfrSource *s = opaque;
    MfrRegionTable *t = s->ram.remote;
    uint32_t received[MFR_MAX_BLOCKS];
    mfr_region_table_in_order(t, received);
    MfrRegionLimits lim = {
        .nblocks = s->nblocks,
        .block_len = s->ram.block_len,
        .layout = mfr_region_table_map(t)->layout,
        .received = received,
    };
    MfrRegionMsg r;
    if (!mfr_wire_unpack_region(m->body, m->len, &lim, &r, error)) {
        g_prefix_error(error, "source: REGION from %s: ", s->uri);
        return false;
    }
    GError *xerr = NULL;
    XpRemote *remote = NULL;
    if (!xp_remote_import(s->dom, r.desc, r.length, &remote, &xerr)) {
        g_autofree char *what = g_strdup_printf("source: block '%s' chunk %u",
                                                s->blocks[r.block].name, r.chunk);
        g_propagate_error(error, mfr_error_from_xp(xerr, what));
        return false;
    }
    mfr_region_table_set_remote(t, r.block, r.chunk, remote);
    return mfr_region_table_ready(t, r.block, r.chunk, NULL, NULL, error);
}

/* Before a batch of block b up to chunk `chunk` is handed out: wait until the destination's
 * chunk is imported, bounded by the session's timeout without progress (the destination
 * registers and sends chunks in order, so a chunk that takes longer means it is stuck) and
 * by the failure latch. */
static bool source_wait_chunk(MfrSource *s, unsigned b, uint32_t chunk)
{
    double t0 = mfr_now_s();
    GError *err = NULL;
    if (!mfr_region_table_wait(s->ram.remote, b, chunk, s->cfg.timeout_ms, &s->fail, &err)) {
        if (!mfr_failed(&s->fail)) {
            g_prefix_error(&err, "source: ");
        }
        mfr_fail_set_result(&s->fail, err);
        return false;
    }
    s->stats.region_wait_ms += (mfr_now_s() - t0) * 1000;
    if (mfr_region_table_missing(s->ram.remote) == 0) {
        s->chunks_pending = false;
        s->stats.bytes_before_last_region = s->prog.sent_bytes;
    }
    return true;
}

static bool source_open_channels(MfrSource *s, GError **error)
{
    /* the channels' buffers (rings, headers) are allocated while they connect */
    g_auto(MfrNumaPolicy) numa_policy;
    mfr_numa_prefer(s->ram.numa_node, &numa_policy);
    unsigned n = s->caps.channels;
    s->chan = g_new0(MfrSendChannel *, n);
    for (unsigned i = 0; i < n; i++) {
        XpChannel *ch = source_connect(s, MFR_ROLE_CHANNEL, i, n, error);
        if (!ch) {
            return false;
        }
        MfrSendChannel *c = mfr_send_channel_new(i, ch, &s->ram, &s->ready, error);
        if (!c) {
            return false;
        }
        g_mutex_lock(&s->lock);
        s->chan[i] = c;
        s->nchan = i + 1;
        g_mutex_unlock(&s->lock);
        sem_post(&s->ready);
        if (mfr_failed(&s->fail)) {
            xp_channel_shutdown(ch);
            mfr_fail_propagate(&s->fail, error);
            return false;
        }
    }
    s->stats.channels = n;
    return true;
}

/* ---------- batches ---------- */

static void source_publish_stats(MfrSource *s)
{
    g_mutex_lock(&s->stats_lock);
    s->stats_pub = s->stats;
    s->zstats_pub = s->zstats;
    s->place_pub = s->place;
    s->place_final = s->place_ready;
    g_mutex_unlock(&s->stats_lock);
}

static void source_progress(MfrSource *s, bool force)
{
    if (!s->cfg.progress) {
        return;
    }
    double now = mfr_now_s();
    if (!force && now - s->t_last_prog < 0.1) {
        return;
    }
    double dt = now - s->t_prog_bytes_at;
    if (dt >= 0.5) {
        s->prog.throughput_bps = (s->prog.sent_bytes - s->prog_bytes_mark) / dt;
        s->prog_bytes_mark = s->prog.sent_bytes;
        s->t_prog_bytes_at = now;
    }
    s->t_last_prog = now;
    s->prog.elapsed_s = now - s->t_start;
    s->prog.phase = mfr_state_phase(s->state, s->cfg.verify);
    s->cfg.progress(&s->prog, s->cfg.progress_opaque);
}

MfrSendChannel *mfr_send_channel_pick(MfrSendChannel *const *chan, unsigned n, unsigned *rr)
{
    for (unsigned k = 0; k < n; k++) {
        MfrSendChannel *c = chan[(*rr + k) % n];
        /* pairs with the release store at the end of send_channel_thread() */
        if (!atomic_load_explicit(&c->pending, memory_order_acquire)) {
            *rr = (*rr + k + 1) % n;
            return c;
        }
    }
    return NULL;
}

/* Hand the producer's batch to the next idle channel, round-robin. */
static bool source_hand_off(MfrSource *s)
{
    while (sem_wait(&s->ready) != 0 && errno == EINTR) {
    }
    if (mfr_failed(&s->fail)) {
        return false;
    }
    MfrSendChannel *c = mfr_send_channel_pick(s->chan, s->nchan, &s->rr);
    if (c) {
        mfr_send_channel_hand(c, &s->batch);
        return true;
    }
    /* the semaphore said one is idle: only a failure wakes us without one */
    return !mfr_failed(&s->fail);
}

/* The chunk of the batch's highest page: queue_page() takes pages in any order. */
static uint32_t source_batch_last_chunk(const MfrSource *s, const MfrBatch *b)
{
    uint64_t hi = 0;
    for (uint32_t i = 0; i < b->npages; i++) {
        hi = MAX(hi, b->offsets[i]);
    }
    return (uint32_t)(hi / mfr_region_table_map(s->ram.remote)->layout[b->block].chunk_size);
}

/* Hands the batch being filled (if it has pages) to a channel; the producer continues with
 * an empty one of the same block. False once the session failed (the latch has why). */
static bool source_flush_batch(MfrSource *s)
{
    MfrBatch *b = s->batch;
    if (b->npages == 0) {
        return !mfr_failed(&s->fail);
    }
    uint32_t block = b->block;
    uint64_t bytes = (uint64_t)b->npages * s->ram.page_size;
    if (s->chunks_pending) {
        /* chunks arrive in order: with the batch's last chunk the earlier are in too */
        if (!source_wait_chunk(s, block, source_batch_last_chunk(s, b))) {
            return false;
        }
    }
    b->flags = 0;
    b->round = s->round;
    if (!source_hand_off(s)) {
        return false;
    }
    if (s->stats.first_data_ms == 0) {
        s->stats.first_data_ms = MAX((mfr_now_s() - s->t_start) * 1000, 1e-3);
    }
    s->batch->block = block;
    s->batch->npages = 0;
    s->queued_since_barrier = true;
    s->prog.sent_bytes += bytes;
    s->prog.round_done += bytes;
    s->prog.remaining_bytes = s->prog.round_bytes - MIN(s->prog.round_done, s->prog.round_bytes);
    source_progress(s, false);
    return true;
}

/* What queue_page() returns once the session failed: the first error's kind. */
static int source_errno(MfrSource *s)
{
    int r = -EPIPE;
    g_mutex_lock(&s->fail.lock);
    if (s->fail.first && s->fail.first->domain == MFR_ERROR) {
        switch (s->fail.first->code) {
        case MFR_ERROR_CANCELLED: r = -ECANCELED; break;
        case MFR_ERROR_USAGE: r = -EINVAL; break;
        case MFR_ERROR_TIMEOUT: r = -ETIMEDOUT; break;
        default: break;
        }
    }
    g_mutex_unlock(&s->fail.lock);
    return r;
}

/* Misuse of the hot path fails the session: a caller that queues wrong pages would
 * otherwise migrate a guest with holes in it. */
static int source_misuse(MfrSource *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int source_misuse(MfrSource *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    mfr_fail(&s->fail, MFR_ERROR_USAGE, "source: %s", msg);
    return -EINVAL;
}

/* Pages may be queued from start() until complete() or the first failure. */
static int source_queue_check(MfrSource *s, unsigned block, uint64_t offset, uint64_t npages)
{
    if (s->state != MFR_STATE_PRECOPY && s->state != MFR_STATE_SWITCHOVER) {
        if (mfr_failed(&s->fail)) {
            return source_errno(s);
        }
        return source_misuse(s, "page queued %s",
                             !s->started ? "before mfr_source_start()"
                             : "after the session ended");
    }
    if (mfr_failed(&s->fail)) {
        return source_errno(s);
    }
    if (block >= s->nblocks) {
        return source_misuse(s, "page queued in block %u, the source has %u blocks", block,
                             s->nblocks);
    }
    uint64_t len = s->blocks[block].length, ps = s->ram.page_size;
    if (offset % ps || npages == 0 || offset >= len || npages > (len - offset) / ps) {
        return source_misuse(s, "block '%s': %" G_GUINT64_FORMAT " pages at offset %"
                             G_GUINT64_FORMAT " are not whole %" G_GUINT64_FORMAT
                             "-byte pages within its %" G_GUINT64_FORMAT " bytes",
                             s->blocks[block].name, npages, offset, ps, len);
    }
    return 0;
}

int mfr_source_queue_pages(MfrSource *s, unsigned block, uint64_t offset, uint64_t npages)
{
    int r = source_queue_check(s, block, offset, npages);
    if (r < 0) {
        return r;
    }
    MfrBatch *b = s->batch;
    if (b->block != block) {
        if (!source_flush_batch(s)) {
            return source_errno(s);
        }
        b = s->batch;
        b->block = block;
        s->q_len = s->blocks[block].length;
    }
    for (uint64_t i = 0; i < npages; i++) {
        if (b->npages == s->q_room) {
            if (!source_flush_batch(s)) {
                return source_errno(s);
            }
            b = s->batch;
        }
        b->offsets[b->npages++] = offset + i * s->ram.page_size;
    }
    return 0;
}

int mfr_source_queue_page(MfrSource *s, unsigned block, uint64_t offset)
{
    MfrBatch *b = s->batch;
    /* the whole per-page cost when the batch has room: see the struct's comment */
    if (G_LIKELY(block == b->block && b->npages < s->q_room && offset < s->q_len &&
                 !(offset & s->q_mask) && !mfr_failed(&s->fail))) {
        b->offsets[b->npages++] = offset;
        return 0;
    }
    return mfr_source_queue_pages(s, block, offset, 1);
}

int mfr_source_queue_bitmap(MfrSource *s, unsigned block, uint64_t *bitmap, uint64_t npages)
{
    int r = source_queue_check(s, block, 0, MAX(npages, 1));
    if (r < 0) {
        return r;
    }
    /* bitmap batches start empty, so a round of run() is cut exactly as before */
    if (!source_flush_batch(s)) {
        return source_errno(s);
    }
    MfrDirtyScan sc;
    mfr_dirty_scan_init(&sc, bitmap, npages);
    while (mfr_batch_fill(s->batch, &sc, block, s->round, s->ram.page_size, s->q_room)) {
        if (!source_flush_batch(s)) {
            return source_errno(s);
        }
    }
    s->q_len = s->blocks[block].length;
    return 0;
}

void mfr_dirty_scan_init(MfrDirtyScan *sc, uint64_t *bitmap, uint64_t npages)
{
    *sc = (MfrDirtyScan){ .bitmap = bitmap, .words = (npages + 63) / 64 };
}

uint32_t mfr_batch_fill(MfrBatch *b, MfrDirtyScan *sc, uint32_t block, uint64_t round,
                        uint32_t page_size, uint32_t max_pages)
{
    b->flags = 0;
    b->block = block;
    b->round = round;
    b->npages = 0;
    while (b->npages < max_pages) {
        while (!sc->bits) {
            if (sc->next == sc->words) {
                return b->npages;
            }
            sc->bits = sc->bitmap[sc->next];
            sc->bitmap[sc->next++] = 0;
        }
        unsigned bit = __builtin_ctzll(sc->bits);
        sc->bits &= sc->bits - 1;
        b->offsets[b->npages++] = ((sc->next - 1) * 64 + bit) * (uint64_t)page_size;
    }
    return b->npages;
}

/* ---------- barrier and completion ---------- */

/* End of round: SYNC on every channel after its data, then wait for the destination's ack. */
static bool source_sync_round(MfrSource *s, uint64_t round, GError **error)
{
    for (unsigned i = 0; i < s->nchan; i++) {
        while (sem_wait(&s->ready) != 0 && errno == EINTR) {
        }
        if (mfr_failed(&s->fail)) {
            mfr_fail_propagate(&s->fail, error);
            return false;
        }
    }
    /* every channel is idle now: give each its SYNC */
    uint32_t block = s->batch->block;
    for (unsigned i = 0; i < s->nchan; i++) {
        MfrBatch *bt = s->batch;
        bt->flags = MFR_PACKET_SYNC;
        bt->npages = 0;
        bt->block = 0;
        bt->round = round;
        mfr_send_channel_hand(s->chan[i], &s->batch);
    }
    s->batch->flags = 0;
    s->batch->npages = 0;
    s->batch->block = block;
    g_autofree MfrCtrlMsg *m = mfr_control_expect(s->ctl, MFR_CTRL_SYNC_ACK, -1, error);
    if (!m) {
        return false;
    }
    uint64_t acked;
    if (!mfr_wire_unpack_u64(m->body, m->len, &acked, error)) {
        g_prefix_error(error, "source: SYNC_ACK from %s: ", s->uri);
        return false;
    }
    if (acked != round) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "source: SYNC_ACK from %s for round %" G_GUINT64_FORMAT
                    ", expected round %" G_GUINT64_FORMAT, s->uri, acked, round);
        return false;
    }
    return true;
}

/* Before SYNC(1) the source has taken every REGION (docs/protocol.md 4.8): round 1 of run()
 * needs them all anyway; a stepwise caller may not have queued a page of every chunk. */
static bool source_wait_all_chunks(MfrSource *s, GError **error)
{
    const MfrChunkMap *map = mfr_region_table_map(s->ram.remote);
    for (unsigned b = 0; s->chunks_pending && b < s->nblocks; b++) {
        if (!source_wait_chunk(s, b, map->layout[b].chunks - 1)) {
            mfr_fail_propagate(&s->fail, error);
            return false;
        }
    }
    return true;
}

/* The partial batch, SYNC everywhere, the ack: the round is in destination memory. */
static bool source_barrier(MfrSource *s, GError **error)
{
    if (!source_flush_batch(s)) {
        mfr_fail_propagate(&s->fail, error);
        return false;
    }
    if (s->chunks_pending && !source_wait_all_chunks(s, error)) {
        return false;
    }
    if (!source_sync_round(s, s->round, error)) {
        return false;
    }
    double now = mfr_now_s();
    s->stats.rounds = s->round++;
    s->queued_since_barrier = false;
    s->stats.transfer_ms = (now - s->t_start) * 1000 - s->stats.setup_ms;
    if (s->t_stop) {
        s->stats.downtime_ms = (now - s->t_stop) * 1000;
    }
    return true;
}

/* The failed session's error for the caller of a control-path call. When it is an echo (our
 * view of the peer's failure: a channel or the control connection the peer closed), the
 * peer's own account may be on its way: the control reader reads on for it, within its
 * grace (MFR_CONTROL_ECHO_WAIT_MS), and it replaces the echo. Waiting for that here, as
 * source_finish() does, tells the caller the root cause rather than the symptom. */
static void source_propagate(MfrSource *s, GError **error)
{
    mfr_control_settle(s->ctl);
    mfr_fail_propagate(&s->fail, error);
}

/* Makes err the session's error unless it has one; copies the first error out. */
static bool source_failed(MfrSource *s, GError *err, GError **error)
{
    if (err) {
        mfr_fail_set_result(&s->fail, err);
    }
    source_propagate(s, error);
    return false;
}

/* The control-path calls between start() and complete(): a clear error otherwise. */
static bool source_check_live(MfrSource *s, const char *call, GError **error)
{
    if (!s->started || s->released) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: %s %s", call,
                    !s->started ? "before mfr_source_start()" : "after the session ended");
        return false;
    }
    if (mfr_failed(&s->fail)) {
        source_propagate(s, error);
        return false;
    }
    return true;
}

bool mfr_source_barrier(MfrSource *s, GError **error)
{
    if (!source_check_live(s, "mfr_source_barrier()", error)) {
        return false;
    }
    double cpu0 = mfr_thread_cpu_s();
    GError *err = NULL;
    bool ok = source_barrier(s, &err);
    s->cpu_s += mfr_thread_cpu_s() - cpu0;
    source_publish_stats(s);
    return ok || source_failed(s, err, error);
}

static void source_digests(MfrSource *s, uint64_t *digest)
{
    for (unsigned i = 0; i < s->nblocks; i++) {
        digest[i] = mfr_digest(s->blocks[i].host, s->blocks[i].length);
    }
}

static bool source_complete_exchange(MfrSource *s, GError **error)
{
    uint64_t digest[MFR_MAX_BLOCKS];
    uint32_t count = 0;
    double t0 = mfr_now_s();
    if (s->cfg.verify) {
        source_progress(s, true);
        source_digests(s, digest);
        count = s->nblocks;
    }
    uint8_t body[XP_MSG_MAX];
    size_t len = mfr_wire_pack_complete(s->round - 1, digest, count, body,
                                        sizeof(body) - MFR_CTRL_HDR_SIZE);
    g_assert(len);
    if (!mfr_control_send(s->ctl, MFR_CTRL_COMPLETE, body, len, error)) {
        return false;
    }
    /* the destination digests its RAM too: allow it time proportional to nothing we know */
    g_autofree MfrCtrlMsg *m = mfr_control_expect(s->ctl, MFR_CTRL_COMPLETE_REPLY, -1, error);
    if (!m) {
        return false;
    }
    MfrCompleteReply r;
    if (!mfr_wire_unpack_complete_reply(m->body, m->len, s->nblocks, &r, error)) {
        g_prefix_error(error, "source: COMPLETE_REPLY from %s: ", s->uri);
        return false;
    }
    s->stats.verify_ms = (mfr_now_s() - t0) * 1000;
    if (r.status != 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_VERIFY,
                    "verification failed: block '%s' differs on the destination %s",
                    s->blocks[r.block].name, s->uri);
        return false;
    }
    s->stats.verified = s->cfg.verify;
    return true;
}

/* Final barrier (unless the last barrier left nothing behind), COMPLETE and its reply. */
static bool source_complete(MfrSource *s, GError **error)
{
    if ((s->queued_since_barrier || s->batch->npages || s->round == 1) &&
        !source_barrier(s, error)) {
        return false;
    }
    if (!mfr_state_move(&s->state, MFR_STATE_COMPLETING, error) ||
        !source_complete_exchange(s, error) ||
        !mfr_state_move(&s->state, MFR_STATE_DONE, error)) {
        return false;
    }
    mfr_control_done(s->ctl);
    return true;
}

/* ---------- session ---------- */

static bool source_setup(MfrSource *s, GError **error)
{
    GError *xerr = NULL;
    XpOptions o;
    mfr_transport_xp_options(&s->cfg.transport, s->cfg.timeout_ms, true, &o);
    s->dom = xp_domain_new(s->ops, &o, &xerr);
    if (!s->dom) {
        g_propagate_error(error, mfr_error_from_xp(xerr, "source"));
        return false;
    }
    s->ram.dom = s->dom;
    XpChannel *ch = source_connect(s, MFR_ROLE_CONTROL, 0, s->cfg.channels, error);
    if (!ch) {
        return false;
    }
    MfrControl *ctl = mfr_control_new(ch, s->cfg.timeout_ms, &s->fail, MFR_SIDE_SOURCE, error);
    if (!ctl) {
        return false;
    }
    g_mutex_lock(&s->lock);
    s->ctl = ctl;
    mfr_control_track_state(s->ctl, &s->state);
    g_mutex_unlock(&s->lock);
    /* before anything registers or opens: the control connection knows the device */
    s->ram.numa_node = mfr_numa_choose(s->cfg.numa_node, ch, s->blocks, s->nblocks, &s->place);
    if (!mfr_state_move(&s->state, MFR_STATE_CONNECTED, error) ||
        !source_negotiate(s, error) ||
        !mfr_state_move(&s->state, MFR_STATE_NEGOTIATED, error) ||
        !source_announce(s, error) ||
        !mfr_state_move(&s->state, MFR_STATE_BLOCKS_AGREED, error) ||
        !source_open_channels(s, error) ||
        !mfr_state_move(&s->state, MFR_STATE_CHANNELS_UP, error) ||
        !mfr_state_move(&s->state, MFR_STATE_PRECOPY, error)) {
        return false;
    }
    s->stats.setup_ms = (mfr_now_s() - s->t_start) * 1000;
    s->stats.converged = true; /* a stepwise caller decides convergence; run() may not */
    s->q_room = s->ram.max_pages;
    return true;
}

static void source_collect_stats(MfrSource *s)
{
    MfrStats *st = &s->stats;
    st->ram_bytes = s->prog.ram_bytes;
    st->total_ms = (mfr_now_s() - s->t_start) * 1000;
    st->cpu_s = s->cpu_s + mfr_control_cpu_s(s->ctl) + s->reg_helper_cpu_s;
    st->normal_pages = st->zero_pages = st->packets = st->wire_bytes = 0;
    st->zerocopy_sends = st->zerocopy_copied = 0;
    s->zstats.total = (MfrCompressionChannelStats){ 0 };
    double xfer_s = MAX((st->transfer_ms ? st->transfer_ms : st->total_ms - st->setup_ms) / 1000,
                        1e-6);
    for (unsigned i = 0; i < s->nchan && i < G_N_ELEMENTS(st->channel); i++) {
        MfrChannelStats *c = &s->chan[i]->stats;
        c->throughput_bps = c->bytes / xfer_s;
        st->channel[i] = *c;
        st->normal_pages += c->pages;
        st->zero_pages += c->zero_pages;
        st->packets += c->packets;
        st->wire_bytes += c->wire_bytes;
        st->cpu_s += c->busy_s;
        mfr_compression_stats_add(&s->zstats, i, &s->chan[i]->zstats);
        mfr_placement_thread(&s->place, i, &s->chan[i]->place);
        XpCounters xc;
        xp_channel_counters(s->chan[i]->xp, &xc); /* zeros without counters */
        st->zerocopy_sends += xc.zerocopy_sends;
        st->zerocopy_copied += xc.zerocopy_copied;
    }
    st->throughput_bps = (double)(st->normal_pages + st->zero_pages) * s->ram.page_size / xfer_s;
    /* the memory figures are read when asked for (mfr_source_get_placement()): reading
     * smaps walks the page tables of all guest RAM, which must not delay complete() */
    s->place_ready = true;
}

/* Nothing of the session outlives it: channels (QPs) first, then the registrations they
 * used, so no rkey stays valid and no guest page stays pinned. */
static void source_release(MfrSource *s)
{
    g_mutex_lock(&s->lock);
    MfrSendChannel **chan = g_steal_pointer(&s->chan);
    unsigned n = s->nchan;
    s->nchan = 0;
    g_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < n; i++) {
        mfr_send_channel_free(chan[i]);
    }
    g_free(chan);
    /* the control reader, which fills ram.remote, has stopped (run() freed it) */
    g_mutex_lock(&s->lock);
    MfrRegionTable *remote = g_steal_pointer(&s->ram.remote);
    g_mutex_unlock(&s->lock);
    mfr_region_table_free(remote);
    mfr_region_table_free(g_steal_pointer(&s->ram.local));
}

/* The end of every session, successful or not: threads joined, stats final and published,
 * everything released. Runs once. */
static void source_finish(MfrSource *s, bool ok)
{
    if (s->released) {
        return;
    }
    s->released = true;
    s->q_room = 0;
    if (!ok) {
        s->state = MFR_STATE_FAILED;
    }
    /* an echo as the session's error: the peer's own account may still be on its way;
     * what stays the verdict then shuts the channels down (blocked senders wake) */
    mfr_control_settle(s->ctl);
    mfr_fail_finalize(&s->fail);
    /* stop channel threads before reading their counters */
    for (unsigned i = 0; i < s->nchan; i++) {
        atomic_store(&s->chan[i]->quit, true);
        sem_post(&s->chan[i]->go);
        g_thread_join(s->chan[i]->thread);
        s->chan[i]->thread = NULL;
    }
    mfr_control_done(s->ctl);
    g_mutex_lock(&s->lock);
    MfrControl *ctl = g_steal_pointer(&s->ctl);
    g_mutex_unlock(&s->lock);
    mfr_control_free(ctl); /* joins the reader, whose CPU time is known only then */
    s->ctl = ctl = NULL;
    if (s->started) {
        source_collect_stats(s);
    }
    source_publish_stats(s);
    source_release(s);
    if (s->started) {
        source_progress(s, true);
    }
}

bool mfr_source_start(MfrSource *s, GError **error)
{
    if (s->started || s->released) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: mfr_source_start() %s",
                    s->started ? "called twice" : "after the session ended");
        return false;
    }
    s->started = true;
    s->t_start = s->t_last_prog = s->t_prog_bytes_at = mfr_now_s();
    double cpu0 = mfr_thread_cpu_s();
    GError *err = NULL;
    bool ok = !mfr_failed(&s->fail) && source_setup(s, &err);
    s->cpu_s += mfr_thread_cpu_s() - cpu0;
    if (!ok) {
        if (err) {
            mfr_fail_set_result(&s->fail, err);
        }
        source_finish(s, false);
        mfr_fail_propagate(&s->fail, error);
        return false;
    }
    source_publish_stats(s);
    source_progress(s, true);
    return true;
}

bool mfr_source_complete(MfrSource *s, GError **error)
{
    if (!source_check_live(s, "mfr_source_complete()", error)) {
        if (s->started) {
            source_finish(s, false);
        }
        return false;
    }
    double cpu0 = mfr_thread_cpu_s();
    GError *err = NULL;
    bool ok = source_complete(s, &err);
    if (!ok) {
        mfr_fail_set_result(&s->fail, err);
    }
    s->cpu_s += mfr_thread_cpu_s() - cpu0;
    source_finish(s, ok);
    return ok || source_failed(s, NULL, error);
}

void mfr_source_abort(MfrSource *s)
{
    if (s->released) {
        return;
    }
    mfr_fail_set_first(&s->fail, g_error_new_literal(MFR_ERROR, MFR_ERROR_CANCELLED,
                                                     "source: migration aborted"));
    source_finish(s, false);
}

bool mfr_source_error(MfrSource *s, GError **error)
{
    if (!mfr_failed(&s->fail)) {
        return false;
    }
    mfr_fail_propagate(&s->fail, error);
    return true;
}

int mfr_source_block_index(MfrSource *s, const char *name)
{
    for (unsigned i = 0; name && i < s->nblocks; i++) {
        if (strcmp(s->blocks[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

void mfr_source_mark_stopped(MfrSource *s)
{
    if (s->t_stop == 0) {
        s->t_stop = mfr_now_s();
    }
    /* precopy ends here; any other state keeps what it is (a failed session stays failed) */
    if (s->state == MFR_STATE_PRECOPY) {
        mfr_state_move(&s->state, MFR_STATE_SWITCHOVER, NULL);
    }
}

/* ---------- precopy driver (run) ---------- */

static uint64_t source_harvest(MfrSource *s)
{
    uint64_t pages = 0;
    for (unsigned b = 0; b < s->nblocks; b++) {
        s->dirty->harvest(s->dirty_opaque, b, s->bitmap[b], s->npages[b]);
        uint64_t words = (s->npages[b] + 63) / 64;
        /* bits beyond the block are not pages: never send them */
        if (s->npages[b] % 64) {
            s->bitmap[b][words - 1] &= (1ULL << (s->npages[b] % 64)) - 1;
        }
        for (uint64_t w = 0; w < words; w++) {
            pages += __builtin_popcountll(s->bitmap[b][w]);
        }
    }
    return pages;
}

/* One round of run(): every harvested page queued, then the barrier. */
static bool source_round(MfrSource *s, uint64_t dirty_pages, GError **error)
{
    s->prog.round = s->round;
    s->prog.round_bytes = dirty_pages * s->ram.page_size;
    s->prog.round_done = 0;
    s->prog.remaining_bytes = s->prog.round_bytes;
    source_progress(s, true);
    for (unsigned b = 0; b < s->nblocks; b++) {
        if (mfr_source_queue_bitmap(s, b, s->bitmap[b], s->npages[b]) < 0) {
            mfr_fail_propagate(&s->fail, error);
            return false;
        }
    }
    return mfr_source_barrier(s, error);
}

/* Rounds until the rest fits the downtime limit (or a forced switchover); false with the
 * error otherwise. *converged says which. */
static bool source_precopy(MfrSource *s, bool *converged, GError **error)
{
    /* Round 1 sends everything; forget what was dirtied before. */
    for (unsigned b = 0; b < s->nblocks; b++) {
        s->dirty->harvest(s->dirty_opaque, b, s->bitmap[b], s->npages[b]);
        memset(s->bitmap[b], 0xff, (s->npages[b] + 63) / 64 * 8);
    }
    uint64_t dirty_pages = source_harvest(s);
    *converged = false;
    for (;;) {
        uint64_t round = s->round;
        double t0 = mfr_now_s();
        if (!source_round(s, dirty_pages, error)) {
            return false;
        }
        double dt = MAX(mfr_now_s() - t0, 1e-6);
        double bw = (double)dirty_pages * s->ram.page_size / dt;
        dirty_pages = source_harvest(s);
        uint64_t remaining = dirty_pages * s->ram.page_size;
        s->stats.dirty_rate_bps = remaining / dt;
        s->prog.remaining_bytes = remaining;
        double expect_ms = bw > 0 ? remaining / bw * 1000 : 0;
        g_debug("round %" G_GUINT64_FORMAT ": %.1f MB/s, %" G_GUINT64_FORMAT
                " bytes dirty, expected downtime %.0f ms", round, bw / 1e6, remaining, expect_ms);
        if (expect_ms <= s->cfg.downtime_ms) {
            *converged = true;
            return true;
        }
        if (atomic_load(&s->force) || (round >= s->cfg.max_rounds && s->cfg.force_switchover)) {
            return true;
        }
        if (round >= s->cfg.max_rounds) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_NOT_CONVERGED,
                        "migration does not converge: after %" G_GUINT64_FORMAT " rounds %.1f "
                        "MiB are still dirty (dirty rate %.1f MB/s, bandwidth %.1f MB/s, "
                        "expected downtime %.0f ms > limit %u ms); raise the downtime limit, "
                        "lower the dirty rate, or force the switchover (--force-switchover)",
                        round, remaining / 1048576.0, s->stats.dirty_rate_bps / 1e6, bw / 1e6,
                        expect_ms, s->cfg.downtime_ms);
            return false;
        }
    }
}

/* Precopy, then switchover: the workload stops, the rest goes in one last round. */
static bool source_drive(MfrSource *s, GError **error)
{
    bool converged;
    if (!source_precopy(s, &converged, error)) {
        return false;
    }
    s->dirty->stop(s->dirty_opaque);
    mfr_source_mark_stopped(s);
    s->stats.converged = converged;
    return source_round(s, source_harvest(s), error);
}

bool mfr_source_run(MfrSource *s, GError **error)
{
    if (!s->dirty) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "source: mfr_source_run() needs dirty tracking; this source was made "
                    "without it (stepwise use: mfr_source_start() and the calls after it)");
        return false;
    }
    /* the producer's CPU is the whole of this thread's, harvests included */
    double cpu0 = mfr_thread_cpu_s();
    if (!mfr_source_start(s, error)) {
        return false;
    }
    GError *err = NULL;
    bool ok = source_drive(s, &err);
    if (ok) {
        s->cpu_s = mfr_thread_cpu_s() - cpu0;
        ok = mfr_source_complete(s, &err);
    } else {
        mfr_fail_set_result(&s->fail, err);
        err = NULL;
        s->cpu_s = mfr_thread_cpu_s() - cpu0;
        source_finish(s, false);
    }
    if (!ok) {
        g_clear_error(&err);
        if (s->t_stop && s->dirty->resume) {
            s->dirty->resume(s->dirty_opaque);
        }
        mfr_fail_propagate(&s->fail, error);
    }
    return ok;
}

void mfr_source_cancel(MfrSource *s)
{
    mfr_fail_set_first(&s->fail, g_error_new_literal(MFR_ERROR, MFR_ERROR_CANCELLED,
                                                     "source: migration cancelled"));
}

bool mfr_source_inject_fault(MfrSource *s, unsigned channel, int err)
{
    bool ok = false;
    g_mutex_lock(&s->lock);
    if (channel < s->nchan && s->chan[channel]) {
        ok = xp_inject_fault(s->chan[channel]->xp, err);
    }
    g_mutex_unlock(&s->lock);
    return ok;
}

bool mfr_source_inject_bad_frame(MfrSource *s, unsigned channel)
{
    bool ok = false;
    g_mutex_lock(&s->lock);
    if (channel < s->nchan && s->chan[channel] && s->chan[channel]->zc) {
        atomic_store(&s->chan[channel]->inject_bad_frame, true);
        ok = true;
    }
    g_mutex_unlock(&s->lock);
    return ok;
}

bool mfr_source_inject_completion_error(MfrSource *s, unsigned channel)
{
    bool ok = false;
    g_mutex_lock(&s->lock);
    if (channel < s->nchan && s->chan[channel]) {
        ok = xp_inject_completion_error(s->chan[channel]->xp);
    }
    g_mutex_unlock(&s->lock);
    return ok;
}

void mfr_source_force_switchover(MfrSource *s)
{
    atomic_store(&s->force, true);
}

void mfr_source_set_max_bandwidth(MfrSource *s, uint64_t bytes_per_s)
{
    mfr_ratelimit_set(s->ram.rate, bytes_per_s);
}

void mfr_source_get_stats(MfrSource *s, MfrStats *out)
{
    g_mutex_lock(&s->stats_lock);
    *out = s->stats_pub;
    g_mutex_unlock(&s->stats_lock);
}

void mfr_source_get_compression_stats(MfrSource *s, MfrCompressionStats *out)
{
    g_mutex_lock(&s->stats_lock);
    *out = s->zstats_pub;
    g_mutex_unlock(&s->stats_lock);
}

void mfr_source_get_placement(MfrSource *s, MfrPlacement *out)
{
    g_mutex_lock(&s->stats_lock);
    if (s->place_final && !s->place_measured) {
        mfr_placement_memory(&s->place_pub, s->blocks, s->nblocks);
        s->place_measured = true;
    }
    *out = s->place_pub;
    g_mutex_unlock(&s->stats_lock);
}

void mfr_source_free(MfrSource *s)
{
    if (!s) {
        return;
    }
    if (s->started) {
        mfr_source_abort(s);
    }
    /* never started, or released already: both NULL-safe */
    mfr_region_table_free(s->ram.remote);
    mfr_region_table_free(s->ram.local);
    for (unsigned i = 0; i < s->nblocks; i++) {
        g_free((char *)s->blocks[i].name);
        g_free(s->bitmap[i]);
    }
    xp_domain_free(s->dom);
    g_free(s->ram.block_len);
    mfr_ratelimit_free(s->ram.rate);
    g_free(s->blocks);
    g_free(s->bitmap);
    g_free(s->npages);
    g_free(s->batch);
    g_free(s->uri);
    g_free(s->host);
    g_free(s->port);
    sem_destroy(&s->ready);
    mfr_fail_clear(&s->fail);
    g_mutex_clear(&s->lock);
    g_mutex_clear(&s->stats_lock);
    g_free(s);
}
