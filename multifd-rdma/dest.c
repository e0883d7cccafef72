/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The destination session: listen, accept the control connection of one session (token
 * checked), answer capability negotiation and the RAM block announce (matching or allocating
 * blocks, registering them), accept the N channels, acknowledge each round's barrier once
 * every channel delivered its SYNC, and verify the per-block digests at COMPLETE.
 */
#include "channel.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct MfrDest {
    MfrDestConfig cfg;
    char *uri_cfg;
    const XpOps *ops;
    XpDomain *dom;
    XpListener *listener;
    char *uri;

    /* blocks: given with add_block() or allocated on announce */
    GArray *blocks;          /* MfrRamBlock, names owned */
    MfrRamView ram;
    uint32_t max_pages;

    uint8_t session_id[MFR_SESSION_ID_LEN];
    unsigned nchan_expected;
    double reg_helper_cpu_s; /* registration threads' CPU, beside the main thread's */

    /* Pipelined registration (XP_CAP_REGIONS): reg's threads register the chunks of
     * ram.local after BLOCKS_REPLY while this thread accepts channels and serves; the table
     * is freed only after they are joined. */
    MfrRegisterBg *reg;      /* run() thread only */
    MfrRecvHold *hold;       /* test seams */
    bool inject_reg_fail;
    unsigned inject_reg_delay_ms;
    unsigned inject_block;
    uint32_t inject_chunk;
    /* progress (main thread only) */
    double t_prog_at, prog_bps;
    uint64_t prog_bytes_mark;
    MfrCaps caps;

    XpLogLimit refuse_log;   /* refused connections: anyone can cause them (run() thread) */

    MfrFail fail;
    GMutex lock;             /* guards ctl/chan publication against on_fail */
    MfrControl *ctl;
    MfrRecvChannel **chan;
    unsigned nchan;
    atomic_bool listener_down;

    GMutex sync_lock;
    uint64_t sync_round;     /* round whose SYNCs are being collected */
    unsigned sync_count;
    double sync_transfer_ms; /* when the last round's barrier completed */

    /* Lifecycle: start() spawns `session`, which serves, releases everything and only then
     * sets `ok` and signals event_fd; wait() joins it. Caller's thread only, except ok
     * (written by the session thread before the eventfd write, read after the join). */
    bool started;
    GThread *session;
    bool ok;
    int event_fd;
    MfrState state;          /* session thread only */
    double t_start;
    /* written by the session thread; published to stats_pub under stats_lock after setup
     * and at the end, so get_stats() from any thread reads one consistent snapshot */
    MfrStats stats;
    MfrStats stats_pub;
    MfrCompressionStats zstats;     /* same rule as stats */
    MfrCompressionStats zstats_pub;
    MfrPlacement place;      /* like stats: session thread, published with them */
    MfrPlacement place_pub;
    bool place_ready;        /* the session ended: place is final (session thread) */
    bool place_final;        /* place_pub is final; under stats_lock */
    bool place_measured;     /* its memory figures were read (get_placement()); likewise */
    GMutex stats_lock;
    MfrCompression comp_mode;       /* OFF refuses zstd; set before start */
};

/* ---------- failure ---------- */

static void dest_on_fail(void *opaque, const GError *err, bool quiet)
{
    MfrDest *d = opaque;
    g_mutex_lock(&d->lock);
    if (d->ctl) {
        if (!quiet) {
            mfr_control_send_error(d->ctl, err);
        }
        /* the reader stops within a tick by itself; see mfr_control_free() */
        mfr_control_wake(d->ctl);
    }
    for (unsigned i = 0; !quiet && i < d->nchan; i++) {
        xp_channel_shutdown(d->chan[i]->xp);
    }
    /* Even for an echo (a lost connection, whose cause the peer may still send): whatever
     * replaces it, the session has failed and accepts no more connections. Woken now, a
     * session thread waiting for channels ends at once instead of at its next accept tick
     * (up to 500 ms later). */
    if (d->listener) {
        xp_listener_shutdown(d->listener);
        atomic_store(&d->listener_down, true);
    }
    g_mutex_unlock(&d->lock);
}

static void dest_publish_stats(MfrDest *d)
{
    g_mutex_lock(&d->stats_lock);
    d->stats_pub = d->stats;
    d->zstats_pub = d->zstats;
    d->place_pub = d->place;
    d->place_final = d->place_ready;
    g_mutex_unlock(&d->stats_lock);
}

/* ---------- setup ---------- */

MfrDest *mfr_dest_new(const MfrDestConfig *cfg_in, GError **error)
{
    MfrDestConfig full;
    if (!mfr_dest_config_take(cfg_in, &full, error)) {
        return NULL;
    }
    const MfrDestConfig *cfg = &full;
    if (!cfg->uri) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "destination: no listen URI given");
        return NULL;
    }
    if (!mfr_transport_check("destination", &cfg->transport, error) ||
        !mfr_numa_check("destination", cfg->numa_node, error)) {
        return NULL;
    }
    g_autofree char *host = NULL, *port = NULL;
    GError *xerr = NULL;
    const XpOps *ops = xp_uri_parse(cfg->uri, &host, &port, &xerr);
    if (!ops) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "destination: %s", xerr->message);
        g_error_free(xerr);
        return NULL;
    }
    MfrDest *d = g_new0(MfrDest, 1);
    d->event_fd = -1;
    d->cfg = *cfg;
    d->cfg.timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
    d->cfg.max_channels = cfg->max_channels ? MIN(cfg->max_channels, MFR_MAX_CHANNELS)
                                            : MFR_MAX_CHANNELS;
    d->uri_cfg = g_strdup(cfg->uri);
    d->cfg.uri = d->uri_cfg;
    d->ops = ops;
    d->blocks = g_array_new(FALSE, TRUE, sizeof(MfrRamBlock));
    g_mutex_init(&d->lock);
    g_mutex_init(&d->sync_lock);
    g_mutex_init(&d->stats_lock);
    mfr_fail_init(&d->fail, dest_on_fail, d);
    d->ram.fail = &d->fail;
    d->ram.numa_node = -1; /* chosen once the blocks are known */
    d->sync_round = 1;
    d->comp_mode = MFR_COMPRESSION_AUTO;
    d->zstats.mode = d->comp_mode;
    d->zstats_pub = d->zstats;
    g_strlcpy(d->stats.transport, xp_ops_name(ops), sizeof(d->stats.transport));
    d->stats_pub = d->stats;
    mfr_placement_init(&d->place);
    d->place_pub = d->place;
    d->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->event_fd < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "destination: eventfd: %s",
                    g_strerror(errno));
        mfr_dest_free(d);
        return NULL;
    }

    XpOptions o;
    mfr_transport_xp_options(&d->cfg.transport, d->cfg.timeout_ms, false, &o);
    d->dom = xp_domain_new(ops, &o, &xerr);
    if (!d->dom) {
        g_propagate_error(error, mfr_error_from_xp(xerr, "destination"));
        mfr_dest_free(d);
        return NULL;
    }
    d->ram.dom = d->dom;
    d->listener = xp_listen(d->dom, host, port, &xerr);
    if (!d->listener) {
        /* the transport's message says "cannot listen on URI: cause" */
        g_propagate_error(error, mfr_error_from_xp(xerr, "destination"));
        mfr_dest_free(d);
        return NULL;
    }
    d->uri = g_strdup(xp_listener_uri(d->listener));
    return d;
}

bool mfr_dest_set_compression(MfrDest *d, MfrCompression mode, GError **error)
{
    if (d->started) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "destination: compression set after mfr_dest_start()");
        return false;
    }
    if ((unsigned)mode > MFR_COMPRESSION_AUTO) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "destination: compression mode %d, "
                    "allowed 0 (off), 1 (zstd), 2 (auto)", (int)mode);
        return false;
    }
    /* a destination has nothing to decide per packet: zstd and auto both accept */
    d->comp_mode = mode == MFR_COMPRESSION_OFF ? MFR_COMPRESSION_OFF : MFR_COMPRESSION_AUTO;
    d->zstats.mode = d->comp_mode;
    d->zstats_pub = d->zstats;
    return true;
}

const char *mfr_dest_uri(MfrDest *d)
{
    return d->uri;
}

bool mfr_dest_add_block(MfrDest *d, const MfrRamBlock *b, GError **error)
{
    if (!mfr_ram_block_check(b, true, error)) {
        g_prefix_error(error, "destination: block %u ", d->blocks->len);
        return false;
    }
    for (guint i = 0; i < d->blocks->len; i++) {
        if (strcmp(g_array_index(d->blocks, MfrRamBlock, i).name, b->name) == 0) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                        "destination: block name '%s' added twice", b->name);
            return false;
        }
    }
    MfrRamBlock copy = *b;
    copy.name = g_strdup(b->name);
    g_array_append_val(d->blocks, copy);
    return true;
}

const MfrRamBlock *mfr_dest_blocks(MfrDest *d, unsigned *n)
{
    *n = d->blocks->len;
    return (const MfrRamBlock *)(void *)d->blocks->data;
}

/* Constant-time, so a wrong token's prefix tells an attacker nothing. */
static bool dest_token_equal(const uint8_t *a, const uint8_t *b)
{
    uint8_t diff = 0;
    for (unsigned i = 0; i < MFR_TOKEN_LEN; i++) {
        diff |= a[i] ^ b[i];
    }
    return diff == 0;
}

/* Accept the next connection whose hello passes check(); refuse the others with a reason. */
typedef const char *(*DestHelloCheck)(MfrDest *d, const MfrHello *h);

static XpChannel *dest_accept(MfrDest *d, DestHelloCheck check, MfrHello *out, gint64 deadline,
                              GError **error)
{
    for (;;) {
        if (mfr_failed(&d->fail)) {
            mfr_fail_propagate(&d->fail, error);
            return NULL;
        }
        gint64 now = g_get_monotonic_time();
        if (deadline && now >= deadline) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_TIMEOUT,
                        "destination: %s: no valid connection within %u ms", d->uri,
                        d->cfg.timeout_ms);
            return NULL;
        }
        int tick = 500;
        if (deadline) {
            tick = (int)MIN(tick, (deadline - now) / 1000 + 1);
        }
        uint8_t hello[XP_HELLO_MAX];
        size_t hlen = sizeof(hello);
        GError *xerr = NULL;
        XpChannel *ch = xp_accept(d->listener, tick, hello, &hlen, &xerr);
        if (!ch) {
            if (g_error_matches(xerr, XP_ERROR, XP_ERROR_TIMEOUT)) {
                g_error_free(xerr);
                continue;
            }
            if (mfr_failed(&d->fail)) {
                g_error_free(xerr);
                continue; /* reports the session's error above */
            }
            if (g_error_matches(xerr, XP_ERROR, XP_ERROR_NO_DEVICE)) {
                /* the listener's device went away (DEVICE_REMOVAL): nothing can connect
                 * any more, so waiting on would hang */
                g_propagate_error(error, mfr_error_from_xp(xerr, "destination: listener"));
                return NULL;
            }
            /* one broken connection attempt must not end the service */
            xp_log_limited(&d->refuse_log, G_LOG_DOMAIN, "destination: %s: %s", d->uri,
                           xerr->message);
            g_error_free(xerr);
            continue;
        }
        MfrHello h;
        g_autoptr(GError) perr = NULL;
        const char *reason = NULL;
        g_autofree char *reason_buf = NULL;
        if (!mfr_wire_unpack_hello(hello, hlen, &h, &perr)) {
            reason = reason_buf = g_strdup_printf("bad hello: %s", perr->message);
        } else if (!dest_token_equal(h.token, d->cfg.token)) {
            reason = "bad token";
        } else {
            reason = check(d, &h);
        }
        if (reason) {
            xp_log_limited(&d->refuse_log, G_LOG_DOMAIN,
                           "destination: refused connection from %s: %s",
                           xp_channel_peer(ch), reason);
            xp_answer(ch, 1, reason, NULL);
            xp_channel_close(ch);
            continue;
        }
        if (!xp_answer(ch, 0, NULL, &xerr)) {
            xp_log_limited(&d->refuse_log, G_LOG_DOMAIN,
                           "destination: accepting %s failed: %s", xp_channel_peer(ch),
                           xerr->message);
            g_error_free(xerr);
            xp_channel_close(ch);
            continue;
        }
        *out = h;
        return ch;
    }
}

static const char *dest_check_control(MfrDest *d, const MfrHello *h)
{
    if (h->role != MFR_ROLE_CONTROL) {
        return "no session: the control connection must come first";
    }
    if (h->channel_count < 1) {
        return "channel count 0";
    }
    return NULL;
}

static const char *dest_check_channel(MfrDest *d, const MfrHello *h)
{
    if (h->role != MFR_ROLE_CHANNEL) {
        return "a session is already being served";
    }
    if (memcmp(h->session_id, d->session_id, MFR_SESSION_ID_LEN) != 0) {
        return "unknown session id";
    }
    if (h->channel_count != d->nchan_expected) {
        return "channel count differs from the negotiated one";
    }
    if (h->channel_index >= d->nchan_expected) {
        return "channel index out of range";
    }
    for (unsigned i = 0; i < d->nchan; i++) {
        if (d->chan[i]->index == h->channel_index) {
            return "channel index already connected";
        }
    }
    return NULL;
}

static bool dest_negotiate(MfrDest *d, GError **error)
{
    g_autofree MfrCtrlMsg *m = mfr_control_expect(d->ctl, MFR_CTRL_CAPS, d->cfg.timeout_ms,
                                                   error);
    if (!m) {
        return false;
    }
    MfrCaps offer;
    if (!mfr_wire_unpack_caps(m->body, m->len, &offer, error)) {
        g_prefix_error(error, "destination: CAPS from %s: ",
                       xp_channel_peer(mfr_control_channel(d->ctl)));
        return false;
    }
    bool zstd = d->comp_mode != MFR_COMPRESSION_OFF && (offer.compression & MFR_COMP_ZSTD);
    MfrCaps c = {
        .page_size = offer.page_size,
        .zero_modes = (offer.zero_modes & MFR_ZERO_DETECT) ? MFR_ZERO_DETECT
                    : (offer.zero_modes & MFR_ZERO_NONE) ? MFR_ZERO_NONE : 0,
        .compression = zstd ? MFR_COMP_ZSTD : offer.compression & MFR_COMP_NONE,
        .channels = MIN(offer.channels, d->cfg.max_channels),
        .max_channels = d->cfg.max_channels,
        .max_pages_per_packet = MIN(offer.max_pages_per_packet, MFR_MAX_PAGES_PER_PACKET),
    };
    if (!c.zero_modes) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_CAPS,
                    "destination: no common zero-page mode (source offers 0x%x, destination "
                    "supports 0x%x)", offer.zero_modes, MFR_ZERO_NONE | MFR_ZERO_DETECT);
        return false;
    }
    if (!c.compression) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_CAPS,
                    "destination: the source requires compression 0x%x (zstd), which this "
                    "destination refuses (compression off)", offer.compression);
        return false;
    }
    d->caps = c;
    d->nchan_expected = c.channels;
    if (d->hold) {
        d->hold->nchan = c.channels; /* before any channel thread reads it */
    }
    d->ram.page_size = c.page_size;
    d->ram.max_pages = c.max_pages_per_packet;
    d->ram.compress = zstd;
    d->ram.comp_raw_max = MIN((uint64_t)c.max_pages_per_packet * c.page_size,
                              (uint64_t)MFR_COMP_MAX_RAW);
    d->zstats.negotiated = zstd;
    uint8_t body[MFR_CAPS_SIZE];
    mfr_wire_pack_caps(&c, body);
    return mfr_control_send(d->ctl, MFR_CTRL_CAPS, body, sizeof(body), error);
}

static bool dest_match_blocks(MfrDest *d, const MfrBlockInfo *info, uint32_t count,
                              GError **error)
{
    if (d->cfg.alloc_block && d->blocks->len == 0) {
        for (uint32_t i = 0; i < count; i++) {
            void *host = NULL;
            if (!d->cfg.alloc_block(d->cfg.alloc_opaque, info[i].name, info[i].length,
                                    info[i].page_size, &host, error)) {
                g_prefix_error(error, "destination: block '%s': ", info[i].name);
                return false;
            }
            MfrRamBlock b = { .name = info[i].name, .host = host,
                              .length = info[i].length, .page_size = info[i].page_size };
            if (!mfr_ram_block_check(&b, true, error)) {
                g_prefix_error(error, "destination: alloc_block() gave block %u ", i);
                return false;
            }
            b.name = g_strdup(info[i].name);
            g_array_append_val(d->blocks, b);
        }
        return true;
    }
    /* announce order becomes the block index order on the wire */
    GArray *ordered = g_array_new(FALSE, TRUE, sizeof(MfrRamBlock));
    for (uint32_t i = 0; i < count; i++) {
        const MfrRamBlock *found = NULL;
        for (guint j = 0; j < d->blocks->len; j++) {
            const MfrRamBlock *b = &g_array_index(d->blocks, MfrRamBlock, j);
            if (strcmp(b->name, info[i].name) == 0) {
                found = b;
            }
        }
        if (!found) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_MISMATCH,
                        "RAM block '%s' announced by the source does not exist on the "
                        "destination", info[i].name);
        } else if (found->length != info[i].length || found->page_size != info[i].page_size) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_MISMATCH,
                        "RAM block '%s': source has %" G_GUINT64_FORMAT " bytes in %u-byte "
                        "pages, destination %" G_GUINT64_FORMAT " bytes in %u-byte pages",
                        info[i].name, info[i].length, info[i].page_size, found->length,
                        found->page_size);
        } else {
            g_array_append_val(ordered, *found);
            continue;
        }
        g_array_free(ordered, TRUE);
        return false;
    }
    if (ordered->len != d->blocks->len) {
        for (guint j = 0; j < d->blocks->len; j++) {
            const MfrRamBlock *b = &g_array_index(d->blocks, MfrRamBlock, j);
            bool announced = false;
            for (uint32_t i = 0; i < count; i++) {
                announced |= strcmp(b->name, info[i].name) == 0;
            }
            if (!announced) {
                g_set_error(error, MFR_ERROR, MFR_ERROR_MISMATCH,
                            "RAM block '%s' of the destination was not announced by the "
                            "source", b->name);
                break;
            }
        }
        g_array_free(ordered, TRUE);
        return false;
    }
    /* same elements (names owned), new order */
    g_array_set_size(d->blocks, 0);
    g_array_append_vals(d->blocks, ordered->data, ordered->len);
    g_array_free(ordered, TRUE);
    return true;
}

/* Registration threads, under ram.local's lock, in chunk order per block (the table sees to
 * that): chunk `chunk` of `block` is registered, tell the source (REGION). */
static bool dest_publish_region(void *opaque, unsigned block, uint32_t chunk, GError **error)
{
    MfrDest *d = opaque;
    if (mfr_failed(&d->fail)) {
        return false; /* nothing to tell any more; the session has its error */
    }
    MfrRegionMsg r = { .block = block, .chunk = chunk };
    mfr_region_table_chunk_range(d->ram.local, block, chunk, &r.offset, &r.length);
    xp_region_export(d->dom, mfr_region_table_local(d->ram.local, block, chunk), r.desc);
    uint8_t body[MFR_REGION_SIZE];
    mfr_wire_pack_region(&r, body);
    return mfr_control_send(d->ctl, MFR_CTRL_REGION, body, sizeof(body), error);
}

/* The receive side's view of the matched blocks: lengths, and per page whether data or a
 * zero page arrived (verification reads only those; zero pages need it too). */
static void dest_ram_init(MfrDest *d)
{
    unsigned n = d->blocks->len;
    d->ram.nblocks = n;
    d->ram.blocks = (const MfrRamBlock *)(void *)d->blocks->data;
    d->ram.block_len = g_new0(uint64_t, n);
    d->ram.received = g_new0(uint64_t *, n);
    d->ram.zero_seen = g_new0(uint64_t *, n);
    d->ram.memory_zeroed = d->cfg.memory_zeroed;
    for (unsigned i = 0; i < n; i++) {
        d->ram.block_len[i] = d->ram.blocks[i].length;
        uint64_t npages = d->ram.blocks[i].length / d->ram.page_size;
        d->ram.received[i] = g_new0(uint64_t, (npages + 63) / 64);
        d->ram.zero_seen[i] = g_new0(uint64_t, (npages + 63) / 64);
        d->stats.ram_bytes += d->ram.blocks[i].length;
    }
    /* how the channels prefault fresh memory (recv.c): read once, before they start */
    d->ram.prefault_huge = mfr_blocks_huge_eligible(d->ram.blocks, n);
    /* before registration and the channels: the control connection knows the device */
    d->ram.numa_node = mfr_numa_choose(d->cfg.numa_node, mfr_control_channel(d->ctl),
                                       d->ram.blocks, n, &d->place);
}

static bool dest_blocks(MfrDest *d, GError **error)
{
    g_autofree MfrCtrlMsg *m = mfr_control_expect(d->ctl, MFR_CTRL_BLOCKS, d->cfg.timeout_ms,
                                                   error);
    if (!m) {
        return false;
    }
    MfrBlockInfo info[MFR_MAX_BLOCKS];
    uint32_t count = 0;
    if (!mfr_wire_unpack_blocks(m->body, m->len, info, &count, error)) {
        g_prefix_error(error, "destination: BLOCKS: ");
        return false;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (info[i].page_size < d->ram.page_size || info[i].length % d->ram.page_size) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                        "destination: block '%s': page size %u / length %" G_GUINT64_FORMAT
                        " do not fit the negotiated page size %u", info[i].name,
                        info[i].page_size, info[i].length, d->ram.page_size);
            return false;
        }
    }
    if (!dest_match_blocks(d, info, count, error)) {
        return false;
    }
    dest_ram_init(d);
    unsigned n = d->ram.nblocks;
    MfrBlocksReply reply = { .count = n };
    /* fresh memory: populate in parallel first, unless ODP pins nothing up front */
    MfrRegisterJob job = {
        .dom = d->dom, .blocks = d->ram.blocks, .nblocks = n,
        .access = XP_REGION_REMOTE_WRITE | XP_REGION_LOCAL, .prefault = !d->cfg.transport.odp,
        .threads = d->cfg.transport.registration_threads, .channels = d->nchan_expected,
        .side = "destination", .numa_node = d->ram.numa_node,
        .channel_staging = mfr_comp_staging_bytes(d->ops, &d->ram),
    };
    if (xp_has_cap(d->ops, XP_CAP_REGIONS)) {
        /* the budget now, so a memlock failure comes before the reply and pins nothing */
        if (!mfr_register_budget(&job, error)) {
            return false;
        }
        MfrChunkMap map;
        mfr_chunk_map_init(&map, d->ram.blocks, n, d->cfg.registration_chunk,
                           mfr_register_threads(d->cfg.transport.registration_threads,
                                                UINT32_MAX));
        d->ram.local = mfr_region_table_new(d->dom, MFR_REGIONS_LOCAL, d->ram.blocks, &map,
                                            "the destination");
        reply.flags = MFR_REPLY_REGIONS;
        memcpy(reply.layout, map.layout, n * sizeof(reply.layout[0]));
        d->stats.region_chunks = map.total;
    }
    uint8_t body[XP_MSG_MAX];
    size_t len = mfr_wire_pack_blocks_reply(&reply, body, sizeof(body) - MFR_CTRL_HDR_SIZE);
    g_assert(len);
    if (!mfr_control_send(d->ctl, MFR_CTRL_BLOCKS_REPLY, body, len, error)) {
        return false;
    }
    if (xp_has_cap(d->ops, XP_CAP_REGIONS)) {
        /* every REGION follows the reply: the threads start only now */
        MfrRegisterChunksJob cj = {
            .base = job, .table = d->ram.local, .fail = &d->fail,
            .publish = dest_publish_region, .publish_opaque = d, .inject_fail = -1,
            .delay_ms = d->inject_reg_delay_ms,
        };
        const MfrChunkMap *map = mfr_region_table_map(d->ram.local);
        if (d->inject_reg_fail && d->inject_block < n &&
            d->inject_chunk < map->layout[d->inject_block].chunks) {
            cj.inject_fail = map->first[d->inject_block] + d->inject_chunk;
        }
        d->reg = mfr_register_chunks_start(&cj, error);
        if (!d->reg) {
            return false;
        }
    }
    return true;
}

/* Runs on channel threads: the barrier of design section 5. */
static bool dest_sync(void *opaque, unsigned channel, uint64_t round)
{
    MfrDest *d = opaque;
    g_mutex_lock(&d->sync_lock);
    if (round != d->sync_round) {
        g_mutex_unlock(&d->sync_lock);
        mfr_fail(&d->fail, MFR_ERROR_PROTOCOL,
                 "destination: channel %u sent SYNC for round %" G_GUINT64_FORMAT
                 " while round %" G_GUINT64_FORMAT " is being synchronised", channel, round,
                 d->sync_round);
        return false;
    }
    bool ok = true;
    if (++d->sync_count == d->nchan_expected) {
        uint8_t body[MFR_SYNC_ACK_SIZE];
        mfr_wire_pack_u64(round, body);
        GError *err = NULL;
        if (!mfr_control_send(d->ctl, MFR_CTRL_SYNC_ACK, body, sizeof(body), &err)) {
            /* a send deadline is our own finding (the peer stopped reading), not an echo */
            if (g_error_matches(err, MFR_ERROR, MFR_ERROR_TIMEOUT)) {
                mfr_fail_set(&d->fail, err);
            } else {
                mfr_fail_echo(&d->fail, err);
            }
            ok = false;
        }
        d->sync_count = 0;
        d->sync_round++;
        d->sync_transfer_ms = (mfr_now_s() - d->t_start) * 1000;
    }
    g_mutex_unlock(&d->sync_lock);
    return ok;
}

static bool dest_open_channels(MfrDest *d, GError **error)
{
    /* the channels' buffers (rings, headers) are allocated while they are accepted */
    g_auto(MfrNumaPolicy) numa_policy;
    mfr_numa_prefer(d->ram.numa_node, &numa_policy);
    d->chan = g_new0(MfrRecvChannel *, d->nchan_expected);
    gint64 deadline = g_get_monotonic_time() + d->cfg.timeout_ms * 1000LL;
    while (d->nchan < d->nchan_expected) {
        MfrHello h;
        XpChannel *ch = dest_accept(d, dest_check_channel, &h, deadline, error);
        if (!ch) {
            return false;
        }
        MfrRecvChannel *c = mfr_recv_channel_new(h.channel_index, ch, &d->ram, dest_sync, d,
                                                 d->hold, error);
        if (!c) {
            return false;
        }
        g_mutex_lock(&d->lock);
        d->chan[d->nchan++] = c;
        g_mutex_unlock(&d->lock);
        if (mfr_failed(&d->fail)) {
            xp_channel_shutdown(ch);
        }
    }
    d->stats.channels = d->nchan;
    return true;
}

/* Received bytes so far, as the channel threads count them (an estimate while they run). */
static void dest_progress(MfrDest *d)
{
    if (!d->cfg.progress) {
        return;
    }
    double now = mfr_now_s();
    /* the destination cannot tell precopy from the switchover: both read as precopy */
    MfrProgress p = { .phase = mfr_state_phase(d->state, true), .ram_bytes = d->stats.ram_bytes,
                      .elapsed_s = d->t_start ? now - d->t_start : 0 };
    g_mutex_lock(&d->sync_lock);
    p.round = d->sync_round;
    g_mutex_unlock(&d->sync_lock);
    for (unsigned i = 0; i < d->nchan; i++) {
        const MfrChannelStats *c = &d->chan[i]->stats;
        p.sent_bytes += (mfr_counter_read(&c->pages) + mfr_counter_read(&c->zero_pages)) *
                        (uint64_t)d->ram.page_size;
    }
    /* the destination cannot know a round's size: show how much of RAM has arrived */
    p.round_bytes = p.ram_bytes;
    p.round_done = MIN(p.sent_bytes, p.ram_bytes);
    if (now - d->t_prog_at >= 0.5) {
        d->prog_bps = (double)(p.sent_bytes - MIN(p.sent_bytes, d->prog_bytes_mark)) /
                      (now - d->t_prog_at);
        d->prog_bytes_mark = p.sent_bytes;
        d->t_prog_at = now;
    }
    p.throughput_bps = d->prog_bps;
    d->cfg.progress(&p, d->cfg.progress_opaque);
}

/* Bytes verified between two checks for a failed or cancelled session (~10-30 ms). */
#define DEST_VERIFY_SLICE (64ull << 20)

/* Block i's digest as the source computes it, in slices: a session that fails or is
 * cancelled meanwhile (the source gone, Ctrl-C) stops it within one slice. Pages of fresh
 * memory the source never sent (neither data nor a zero page) are known to be zero: hashed
 * from a zero page, not read (reading would allocate them, a whole block's memory for a
 * source that sent nothing). Pages it sent are read, so whatever changed them is caught. */
static bool dest_block_digest(MfrDest *d, unsigned i, uint64_t *out, GError **error)
{
    static const uint8_t zero[4096];
    const uint8_t *host = d->ram.blocks[i].host;
    const uint64_t *received = d->ram.received[i];
    const uint64_t *zero_seen = d->ram.zero_seen[i];
    uint32_t ps = d->ram.page_size;
    uint64_t npages = d->ram.block_len[i] / ps;
    MfrDigestState st;
    mfr_digest_init(&st);
    for (uint64_t p = 0; p < npages; p++) {
        if (p % (DEST_VERIFY_SLICE / ps) == 0 && mfr_failed(&d->fail)) {
            mfr_fail_propagate(&d->fail, error);
            return false;
        }
        uint64_t sent = (received[p / 64] | zero_seen[p / 64]) & (1ull << (p % 64));
        if (d->ram.memory_zeroed && !sent) {
            for (uint32_t off = 0; off < ps; off += sizeof(zero)) {
                mfr_digest_update(&st, zero, sizeof(zero));
            }
        } else {
            mfr_digest_update(&st, host + p * ps, ps);
        }
    }
    *out = mfr_digest_final(&st, NULL, 0);
    return true;
}

static bool dest_complete(MfrDest *d, MfrCtrlMsg *m, GError **error)
{
    uint64_t round;
    uint64_t digest[MFR_MAX_BLOCKS];
    uint32_t count = m->len == MFR_COMPLETE_HDR_SIZE ? 0 : d->ram.nblocks;
    if (!mfr_wire_unpack_complete(m->body, m->len, count, &round, digest, error)) {
        g_prefix_error(error, "destination: COMPLETE: ");
        return false;
    }
    g_mutex_lock(&d->sync_lock);
    uint64_t synced = d->sync_round - 1;
    g_mutex_unlock(&d->sync_lock);
    /* COMPLETE names the final round whose SYNC_ACK we sent; a source always runs at least
     * one round (all of RAM), so before any there is nothing to complete */
    if (synced == 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "destination: COMPLETE (round %" G_GUINT64_FORMAT ") from %s before any "
                    "round was synchronised", round,
                    xp_channel_peer(mfr_control_channel(d->ctl)));
        return false;
    }
    if (round != synced) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "destination: COMPLETE names round %" G_GUINT64_FORMAT
                    " but round %" G_GUINT64_FORMAT " was the last synchronised", round, synced);
        return false;
    }
    MfrCompleteReply r = { 0 };
    double t0 = mfr_now_s();
    if (count) {
        dest_progress(d); /* COMPLETING: the verify phase */
    }
    for (uint32_t i = 0; i < count; i++) {
        uint64_t got;
        if (!dest_block_digest(d, i, &got, error)) {
            return false;
        }
        if (got != digest[i]) {
            r.status = 1;
            r.block = i;
            break;
        }
    }
    d->stats.verify_ms = (mfr_now_s() - t0) * 1000;
    uint8_t body[MFR_COMPLETE_REPLY_SIZE];
    mfr_wire_pack_complete_reply(&r, body);
    /* done first: once the source has the reply it may close at once, and that must not
     * race our reader into reporting a lost connection */
    mfr_control_done(d->ctl);
    if (!mfr_control_send(d->ctl, MFR_CTRL_COMPLETE_REPLY, body, sizeof(body), error)) {
        return false;
    }
    if (r.status) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_VERIFY,
                    "verification failed: block '%s' differs from the source",
                    d->ram.blocks[r.block].name);
        return false;
    }
    d->stats.verified = count > 0;
    d->stats.converged = true;
    return true;
}

static bool dest_serve(MfrDest *d, GError **error)
{
    MfrHello h;
    XpChannel *ch = dest_accept(d, dest_check_control, &h, 0, error);
    if (!ch) {
        return false;
    }
    d->t_start = mfr_now_s();
    memcpy(d->session_id, h.session_id, sizeof(d->session_id));
    MfrControl *ctl = mfr_control_new(ch, d->cfg.timeout_ms, &d->fail, MFR_SIDE_DEST, error);
    if (!ctl) {
        return false;
    }
    g_mutex_lock(&d->lock);
    d->ctl = ctl;
    mfr_control_track_state(d->ctl, &d->state);
    g_mutex_unlock(&d->lock);
    if (!mfr_state_move(&d->state, MFR_STATE_CONNECTED, error) ||
        !dest_negotiate(d, error) ||
        !mfr_state_move(&d->state, MFR_STATE_NEGOTIATED, error) ||
        !dest_blocks(d, error) ||
        !mfr_state_move(&d->state, MFR_STATE_BLOCKS_AGREED, error) ||
        !dest_open_channels(d, error) ||
        !mfr_state_move(&d->state, MFR_STATE_CHANNELS_UP, error) ||
        !mfr_state_move(&d->state, MFR_STATE_PRECOPY, error)) {
        return false;
    }
    /* the channel threads are running and read it in dest_sync(): under their lock */
    g_mutex_lock(&d->sync_lock);
    d->stats.setup_ms = (mfr_now_s() - d->t_start) * 1000;
    g_mutex_unlock(&d->sync_lock);
    dest_publish_stats(d);
    for (;;) {
        /* with a progress callback, wake ~10 times a second to call it */
        GError *rerr = NULL;
        g_autofree MfrCtrlMsg *m = mfr_control_recv(d->ctl, d->cfg.progress ? 100 : -1, &rerr);
        if (!m && !mfr_failed(&d->fail) && g_error_matches(rerr, MFR_ERROR, MFR_ERROR_TIMEOUT)) {
            g_clear_error(&rerr);
            dest_progress(d);
            continue;
        }
        if (!m) {
            g_propagate_error(error, rerr);
            return false;
        }
        if (m->hdr.type == MFR_CTRL_COMPLETE) {
            return mfr_state_move(&d->state, MFR_STATE_COMPLETING, error) &&
                   dest_complete(d, m, error) &&
                   mfr_state_move(&d->state, MFR_STATE_DONE, error);
        }
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "destination: unexpected %s from %s during migration",
                    mfr_ctrl_type_str(m->hdr.type), xp_channel_peer(mfr_control_channel(d->ctl)));
        return false;
    }
}

static void dest_collect_stats(MfrDest *d, double cpu_main)
{
    MfrStats *st = &d->stats;
    st->total_ms = d->t_start ? (mfr_now_s() - d->t_start) * 1000 : 0;
    /* the channel threads that wrote the sync fields are joined */
    st->rounds = d->sync_round - 1;
    st->transfer_ms = d->sync_transfer_ms ? d->sync_transfer_ms - st->setup_ms : 0;
    st->cpu_s = cpu_main + mfr_control_cpu_s(d->ctl) + d->reg_helper_cpu_s;
    double xfer_s = MAX((st->transfer_ms ? st->transfer_ms : st->total_ms - st->setup_ms) / 1000,
                        1e-6);
    for (unsigned i = 0; i < d->nchan && i < G_N_ELEMENTS(st->channel); i++) {
        MfrChannelStats *c = &d->chan[i]->stats;
        c->throughput_bps = c->bytes / xfer_s;
        st->channel[d->chan[i]->index] = *c;
        st->normal_pages += c->pages;
        st->zero_pages += c->zero_pages;
        st->packets += c->packets;
        st->wire_bytes += c->wire_bytes;
        st->cpu_s += c->busy_s;
        mfr_compression_stats_add(&d->zstats, d->chan[i]->index, &d->chan[i]->zstats);
        mfr_placement_thread(&d->place, d->chan[i]->index, &d->chan[i]->place);
    }
    st->throughput_bps = (double)(st->normal_pages + st->zero_pages) * d->ram.page_size / xfer_s;
    /* the memory figures are read when asked for (mfr_dest_get_placement()): reading smaps
     * walks the page tables of all guest RAM, which must not delay the guest's resume */
    d->place_ready = true;
}

/* Nothing of the session outlives run(): channels (QPs) first, then the registrations, so
 * no rkey the source was given stays valid. Guest memory itself stays with the client. */
static void dest_release(MfrDest *d)
{
    g_mutex_lock(&d->lock);
    MfrRecvChannel **chan = g_steal_pointer(&d->chan);
    unsigned n = d->nchan;
    d->nchan = 0;
    g_mutex_unlock(&d->lock);
    for (unsigned i = 0; i < n; i++) {
        mfr_recv_channel_free(chan[i]);
    }
    g_free(chan);
    /* the registration threads are joined (dest_join_registration()) */
    mfr_region_table_free(g_steal_pointer(&d->ram.local));
}

/* The registration threads end before run() does, on success (every chunk was needed for
 * round 1) and on failure (they stop after their current chunk). */
static void dest_join_registration(MfrDest *d)
{
    if (!d->reg) {
        return;
    }
    MfrRegisterResult res = { 0 };
    mfr_register_chunks_join(g_steal_pointer(&d->reg), &res);
    d->stats.registration_ms = res.ms;
    d->stats.registration_cpu_s = res.cpu_s;
    d->stats.registration_threads = res.threads;
    d->reg_helper_cpu_s = res.helper_cpu_s;
}

/* The session, on its own thread: serve, then tear down (channels joined, registrations
 * gone), and only then say it is over, so no remote write lands after event_fd fires. */
static gpointer dest_session_thread(gpointer opaque)
{
    MfrDest *d = opaque;
    double cpu0 = mfr_thread_cpu_s();
    GError *err = NULL;
    bool ok = dest_serve(d, &err);
    if (!ok) {
        mfr_fail_set_result(&d->fail, err);
        d->state = MFR_STATE_FAILED;
    }
    /* an echo as the session's error: the peer's own account may still be on its way */
    mfr_control_settle(d->ctl);
    mfr_fail_finalize(&d->fail);
    dest_join_registration(d);
    /* stop channel threads before reading their counters; no error is reported after this */
    for (unsigned i = 0; i < d->nchan; i++) {
        atomic_store(&d->chan[i]->quit, true);
        xp_channel_shutdown(d->chan[i]->xp);
        g_thread_join(d->chan[i]->thread);
        d->chan[i]->thread = NULL;
    }
    mfr_control_done(d->ctl);
    g_mutex_lock(&d->lock);
    MfrControl *ctl = g_steal_pointer(&d->ctl);
    g_mutex_unlock(&d->lock);
    mfr_control_free(ctl); /* joins the reader, whose CPU time is known only then */
    d->ctl = NULL;
    dest_collect_stats(d, mfr_thread_cpu_s() - cpu0);
    dest_publish_stats(d);
    dest_progress(d);
    dest_release(d);
    d->ok = ok;
    uint64_t one = 1;
    /* pairs with the join in mfr_dest_wait(); a full counter (never here) stays readable */
    if (write(d->event_fd, &one, sizeof(one)) != sizeof(one)) {
        g_warning("destination: eventfd write: %s", g_strerror(errno));
    }
    return NULL;
}

bool mfr_dest_start(MfrDest *d, GError **error)
{
    if (d->started) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "destination: mfr_dest_start() called twice (one session per MfrDest)");
        return false;
    }
    d->started = true;
    GError *terr = NULL;
    d->session = xp_thread_new("mfr-dest", dest_session_thread, d, &terr);
    if (!d->session) {
        GError *e = g_error_new(MFR_ERROR, MFR_ERROR_FAILED, "destination: %s", terr->message);
        g_error_free(terr);
        mfr_fail_set_result(&d->fail, e);
        mfr_fail_propagate(&d->fail, error);
        uint64_t one = 1;
        (void)!write(d->event_fd, &one, sizeof(one));
        return false;
    }
    return true;
}

int mfr_dest_event_fd(MfrDest *d)
{
    return d->event_fd;
}

bool mfr_dest_wait(MfrDest *d, GError **error)
{
    if (!d->started) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "destination: mfr_dest_wait() before mfr_dest_start()");
        return false;
    }
    if (d->session) {
        g_thread_join(g_steal_pointer(&d->session));
    }
    if (!d->ok) {
        mfr_fail_propagate(&d->fail, error);
    }
    return d->ok;
}

void mfr_dest_set_token(MfrDest *d, const uint8_t token[16])
{
    /* the session thread reads the token from start() on */
    g_return_if_fail(!d->started);
    memcpy(d->cfg.token, token, sizeof(d->cfg.token));
}

bool mfr_dest_run(MfrDest *d, GError **error)
{
    return mfr_dest_start(d, error) && mfr_dest_wait(d, error);
}

void mfr_dest_cancel(MfrDest *d)
{
    mfr_fail_set_first(&d->fail, g_error_new_literal(MFR_ERROR, MFR_ERROR_CANCELLED,
                                                     "destination: migration cancelled"));
}

void mfr_dest_inject_register_failure(MfrDest *d, unsigned block, uint32_t chunk)
{
    d->inject_reg_fail = true;
    d->inject_block = block;
    d->inject_chunk = chunk;
}

void mfr_dest_inject_hold(MfrDest *d, unsigned channel)
{
    d->hold = g_new0(MfrRecvHold, 1);
    g_mutex_init(&d->hold->lock);
    g_cond_init(&d->hold->cond);
    d->hold->channel = channel;
}

void mfr_dest_hold_wait(MfrDest *d)
{
    MfrRecvHold *h = d->hold;
    g_mutex_lock(&h->lock);
    while (!h->holding) {
        g_cond_wait(&h->cond, &h->lock);
    }
    g_mutex_unlock(&h->lock);
}

void mfr_dest_inject_register_delay(MfrDest *d, unsigned ms)
{
    d->inject_reg_delay_ms = ms;
}

void mfr_dest_get_stats(MfrDest *d, MfrStats *out)
{
    g_mutex_lock(&d->stats_lock);
    *out = d->stats_pub;
    g_mutex_unlock(&d->stats_lock);
}

void mfr_dest_get_compression_stats(MfrDest *d, MfrCompressionStats *out)
{
    g_mutex_lock(&d->stats_lock);
    *out = d->zstats_pub;
    g_mutex_unlock(&d->stats_lock);
}

void mfr_dest_get_placement(MfrDest *d, MfrPlacement *out)
{
    g_mutex_lock(&d->stats_lock);
    if (d->place_final && !d->place_measured) {
        mfr_placement_memory(&d->place_pub, d->ram.blocks, d->ram.nblocks);
        d->place_measured = true;
    }
    *out = d->place_pub;
    g_mutex_unlock(&d->stats_lock);
}

void mfr_dest_free(MfrDest *d)
{
    if (!d) {
        return;
    }
    if (d->session) {
        mfr_dest_cancel(d);
        g_thread_join(g_steal_pointer(&d->session));
    }
    if (d->event_fd >= 0) {
        close(d->event_fd);
    }
    for (unsigned i = 0; i < d->nchan; i++) {
        mfr_recv_channel_free(d->chan[i]);
    }
    g_free(d->chan);
    mfr_control_free(d->ctl);
    mfr_region_table_free(d->ram.local);
    if (d->hold) {
        g_mutex_clear(&d->hold->lock);
        g_cond_clear(&d->hold->cond);
        g_free(d->hold);
    }
    for (unsigned i = 0; i < d->ram.nblocks; i++) {
        g_free(d->ram.received[i]);
        g_free(d->ram.zero_seen[i]);
    }
    g_free(d->ram.received);
    g_free(d->ram.zero_seen);
    g_free(d->ram.block_len);
    for (guint i = 0; i < d->blocks->len; i++) {
        g_free((char *)g_array_index(d->blocks, MfrRamBlock, i).name);
    }
    g_array_free(d->blocks, TRUE);
    xp_listener_close(d->listener);
    xp_domain_free(d->dom);
    g_free(d->uri);
    g_free(d->uri_cfg);
    mfr_fail_clear(&d->fail);
    g_mutex_clear(&d->lock);
    g_mutex_clear(&d->sync_lock);
    g_mutex_clear(&d->stats_lock);
    g_free(d);
}
