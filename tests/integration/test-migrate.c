/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * End-to-end migrations through the public API, written once and registered per transport
 * (tcp on loopback here; rdma under soft-RoCE when MFR_TEST_RDMA_ADDR is set). Every test
 * checks destination RAM byte for byte, or the exact error of a refused/failed migration.
 */
#include "harness.h"
#include "xp.h"

#include <string.h>
#include <sys/mman.h>

static void tsource_config(MfrSourceConfig *cfg, const char *uri, const uint8_t token[16],
                           unsigned channels)
{
    mfr_source_config_init(cfg);
    cfg->uri = uri;
    if (token) {
        memcpy(cfg->token, token, 16);
    }
    cfg->channels = channels;
}

typedef struct {
    bool ok;
    GError *err;
    MfrStats st;
    MfrStats dst_st;
} TResult;

static void tresult_clear(TResult *r)
{
    g_clear_error(&r->err);
}

/* Migrate g to a fresh destination (dest_opts may be NULL) and check the outcome both sides
 * agree on. */
static void trun_opts(const TCase *tc, TGuest *g, MfrSourceConfig *cfg_in, TResult *r,
                      bool compare, const TDestOpts *dest_opts)
{
    uint8_t token[16];
    ttoken(token, 7);
    TDestOpts none = { 0 };
    TDest *t = tdest_start_opts(tc->listen_uri, token, dest_opts ? dest_opts : &none);
    MfrSourceConfig cfg = *cfg_in;
    cfg.uri = mfr_dest_uri(t->dst);
    memcpy(cfg.token, token, 16);
    uint64_t pinned0 = tpinned_bytes();
    MfrSource *s = mfr_source_new(&cfg, g->block, g->nblocks, &tguest_dirty_ops, g, &r->err);
    g_assert_no_error(r->err);
    r->ok = mfr_source_run(s, &r->err);
    mfr_source_get_stats(s, &r->st);
    tdest_join(t);
    /* both run()s returned, neither object freed yet: the session's registrations (every
     * rkey the source was given, every pinned page) are gone already */
    g_assert_cmpuint(tpinned_bytes(), ==, pinned0);
    mfr_source_free(s);
    mfr_dest_get_stats(t->dst, &r->dst_st);
    if (r->ok) {
        g_assert_no_error(t->error);
        g_assert_true(t->ok);
        if (compare) {
            tcompare_ram(g, t->dst);
        }
    } else {
        g_assert_false(t->ok);
    }
    tdest_free(t);
}

static void trun(const TCase *tc, TGuest *g, MfrSourceConfig *cfg_in, TResult *r,
                 bool compare)
{
    trun_opts(tc, g, cfg_in, r, compare, NULL);
}

/* Timeouts differ per side and are never exchanged: a source with a 1 s timeout must not
 * take a destination on the default 5 s for dead while that one is busy allocating its
 * blocks (1.5 s here) and has nothing to say but keepalives. */
static void test_timeouts_differ(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(1, tc->size, 4);
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 2);
    cfg.timeout_ms = 1000;
    TDestOpts o = { .alloc_delay_ms = 1500 }; /* destination timeout: the default 5000 */
    TResult r = { 0 };
    trun_opts(tc, g, &cfg, &r, true, &o);
    g_assert_no_error(r.err);
    g_assert_true(r.st.verified);
    g_assert_cmpfloat(r.st.setup_ms, >=, 1500);
    tresult_clear(&r);
    tguest_free(g);
}

/* Out-of-range rdma knobs are refused by the constructors, not clamped by the transport. */
static void test_bad_config(void)
{
    TGuest *g = tguest_new(1, 1 << 20, 9);
    struct {
        unsigned threads, retry, timeout;
        const char *src, *dst;
    } bad[] = {
        { 17, 0, 0, "source: 17 registration threads, allowed 0 (one per CPU)..16",
          "destination: 17 registration threads, allowed 0 (one per CPU)..16" },
        { 0, 8, 0, "source: RC retry count 8, allowed 0 (default 7)..7",
          "destination: RC retry count 8, allowed 0 (default 7)..7" },
        { 0, 0, 32, "source: RC ACK timeout exponent 32, allowed 0 (rdma_cm's default)..31",
          "destination: RC ACK timeout exponent 32, allowed 0 (rdma_cm's default)..31" },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
        MfrSourceConfig sc;
        tsource_config(&sc, "tcp:127.0.0.1:1", NULL, 1);
        sc.transport.registration_threads = bad[i].threads;
        sc.transport.rc_retry = bad[i].retry;
        sc.transport.rc_timeout = bad[i].timeout;
        g_autoptr(GError) err = NULL;
        g_assert_null(mfr_source_new(&sc, g->block, 1, &tguest_dirty_ops, g, &err));
        g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
        g_assert_cmpstr(err->message, ==, bad[i].src);
        MfrDestConfig dc;
        mfr_dest_config_init(&dc);
        dc.uri = "tcp:127.0.0.1:0";
        dc.transport.registration_threads = bad[i].threads;
        dc.transport.rc_retry = bad[i].retry;
        dc.transport.rc_timeout = bad[i].timeout;
        g_autoptr(GError) derr = NULL;
        g_assert_null(mfr_dest_new(&dc, &derr));
        g_assert_error(derr, MFR_ERROR, MFR_ERROR_USAGE);
        g_assert_cmpstr(derr->message, ==, bad[i].dst);
    }
    tguest_free(g);
}

/* One rule for a RAM block on both sides: each edge case accepted or refused alike by
 * mfr_source_new() and mfr_dest_add_block(), with the same reason. */
static void test_bad_block_rule(void)
{
    uint8_t *mem = mmap(NULL, 8u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    g_assert_true(mem != MAP_FAILED);
    char name63[64], name64[65];
    memset(name63, 'n', 63);
    name63[63] = '\0';
    memset(name64, 'n', 64);
    name64[64] = '\0';
    struct {
        MfrRamBlock b;
        const char *why; /* NULL: accepted */
    } cases[] = {
        { { name63, mem, 4096, 4096 }, NULL },
        { { name64, mem, 4096, 4096 }, "name is longer than 63 bytes" },
        { { "", mem, 4096, 4096 }, "name is empty" },
        { { NULL, mem, 4096, 4096 }, "name is missing" },
        { { "tab\t", mem, 4096, 4096 }, "name byte 3 is 0x09, not printable ASCII" },
        { { "p", mem, 4096, 2048 }, "'p' page size 2048 is not a power of two in "
                                    "4096..1073741824" },
        { { "p", mem, 12288, 12288 }, "'p' page size 12288 is not a power of two in "
                                      "4096..1073741824" },
        { { "p", mem, 1ull << 31, 1u << 31 }, "'p' page size 2147483648 is not a power of two "
                                              "in 4096..1073741824" },
        { { "p", mem, 4u << 20, 2u << 20 }, NULL },
        { { "p", mem, (2u << 20) + 4096, 2u << 20 }, "'p' length 0x201000 is not a non-zero "
                                                     "multiple of its page size 0x200000" },
        { { "p", mem, 0, 4096 }, "'p' length 0x0 is not a non-zero multiple of its page size "
                                 "0x1000" },
        { { "p", NULL, 4096, 4096 }, "'p' has no memory (host is NULL)" },
        { { "p", mem + 2048, 4096, 4096 }, NULL /* message has the address */ },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        const MfrRamBlock *b = &cases[i].b;
        bool misaligned = b->host == mem + 2048;
        MfrSourceConfig sc;
        mfr_source_config_init(&sc);
        sc.uri = "tcp:127.0.0.1:1";
        g_autoptr(GError) serr = NULL;
        MfrSource *src = mfr_source_new(&sc, b, 1, &tguest_dirty_ops, NULL, &serr);
        MfrDestConfig dc;
        mfr_dest_config_init(&dc);
        dc.uri = "tcp:127.0.0.1:0";
        g_autoptr(GError) derr = NULL;
        g_autoptr(MfrDest) dst = mfr_dest_new(&dc, &derr);
        g_assert_no_error(derr);
        bool added = mfr_dest_add_block(dst, b, &derr);
        if (!cases[i].why && !misaligned) {
            g_assert_no_error(serr);
            g_assert_no_error(derr);
            g_assert_nonnull(src);
            g_assert_true(added);
            mfr_source_free(src);
            continue;
        }
        g_assert_null(src);
        g_assert_false(added);
        g_assert_error(serr, MFR_ERROR, MFR_ERROR_USAGE);
        g_assert_error(derr, MFR_ERROR, MFR_ERROR_USAGE);
        g_autofree char *why = misaligned
            ? g_strdup_printf("'p' host address %p is not 4096-byte aligned", b->host)
            : g_strdup(cases[i].why);
        g_autofree char *swant = g_strdup_printf("source: block 0 %s", why);
        g_autofree char *dwant = g_strdup_printf("destination: block 0 %s", why);
        g_assert_cmpstr(serr->message, ==, swant);
        g_assert_cmpstr(derr->message, ==, dwant);
    }
    munmap(mem, 8u << 20);
}

static void test_idle(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(2, tc->size, 1);
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 4);
    TResult r = { 0 };
    trun(tc, g, &cfg, &r, true);
    g_assert_no_error(r.err);
    g_assert_true(r.st.verified);
    g_assert_true(r.st.converged);
    /* idle: one round of data, one final (empty) round */
    g_assert_cmpuint(r.st.rounds, ==, 2);
    uint64_t pages = 2 * tc->size / 4096;
    g_assert_cmpuint(r.st.normal_pages + r.st.zero_pages, ==, pages);
    g_assert_cmpuint(r.dst_st.normal_pages, ==, r.st.normal_pages);
    g_assert_cmpuint(r.dst_st.zero_pages, ==, r.st.zero_pages);
    /* about a quarter of the guest is zero pages (see tguest_new) */
    g_assert_cmpuint(r.st.zero_pages, >, pages / 8);
    g_assert_cmpuint(r.st.zero_pages, <, pages / 2);
    g_assert_cmpstr(r.st.transport, ==, tc->transport);
    tresult_clear(&r);
    tguest_free(g);
}

static void test_channels(const TCase *tc, unsigned n)
{
    TGuest *g = tguest_new(1, tc->size, 2 + n);
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, n);
    TResult r = { 0 };
    trun(tc, g, &cfg, &r, true);
    g_assert_no_error(r.err);
    g_assert_cmpuint(r.st.channels, ==, n);
    g_assert_cmpuint(r.dst_st.channels, ==, n);
    /* round-robin hand-off: every channel carried data */
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpuint(r.st.channel[i].packets, >, 1);
        g_assert_cmpuint(r.dst_st.channel[i].packets, ==, r.st.channel[i].packets);
    }
    tresult_clear(&r);
    tguest_free(g);
}

static void test_channels1(gconstpointer data)
{
    test_channels(data, 1);
}

static void test_channels8(gconstpointer data)
{
    test_channels(data, 8);
}

static void test_dirty(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(2, tc->size, 3);
    tguest_start_writer(g, strcmp(tc->transport, "tcp") == 0 ? 40 : 2);
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 4);
    /* converges only once a round leaves nothing dirty: the writer races every round */
    cfg.downtime_ms = 0;
    cfg.max_rounds = 50;
    cfg.force_switchover = true;
    TResult r = { 0 };
    trun(tc, g, &cfg, &r, true);
    g_assert_no_error(r.err);
    g_assert_true(r.st.verified);
    g_assert_cmpuint(atomic_load(&g->writes), >, 0);
    /* round 1 takes long enough for the writer to dirty pages: >= 1 more data round */
    g_assert_cmpuint(r.st.rounds, >=, 3);
    g_assert_cmpuint(r.st.normal_pages + r.st.zero_pages, >, 2 * tc->size / 4096);
    tresult_clear(&r);
    tguest_free(g);
}

/* The same pages get a new version every round; round-robin puts consecutive rounds on
 * different channels. Without the SYNC barrier an old version could land last. */
static void test_ordering(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(1, tc->size, 4);
    /* nothing but the re-dirtied pages holds data, so a channel's count of data pages says
     * how many copies of them it carried */
    memset(g->block[0].host, 0, tc->size);
    g->redirty_pages = 64;
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 4);
    cfg.downtime_ms = 0;       /* never "converged": run max_rounds */
    cfg.max_rounds = 8;
    cfg.force_switchover = true;
    cfg.pages_per_packet = 64; /* the re-dirtied set is exactly one batch */
    TResult r = { 0 };
    trun(tc, g, &cfg, &r, true);
    g_assert_no_error(r.err);
    g_assert_false(r.st.converged);
    g_assert_cmpuint(r.st.rounds, ==, 9);
    /* final content is the last version, checked by tcompare_ram(); make sure the pages
     * really changed every round */
    uint64_t *w = g->block[0].host;
    g_assert_cmpuint(w[0], ==, g->redirty_round * 1000003);
    g_assert_cmpuint(g->redirty_round, >=, 9);
    /* Round 1 cuts pages 0..127 (even ones re-dirtied) into two batches on channels 0 and 1:
     * at most 32 data pages per channel. Rounds 2..9 are the 64 pages each, one batch on
     * one channel. A channel with more than 32 data pages carried a later round; two such
     * channels mean that at least two consecutive rounds' copies took different channels. */
    uint64_t total = 0;
    unsigned carriers = 0;
    for (unsigned i = 0; i < 4; i++) {
        uint64_t pages = r.dst_st.channel[i].pages;
        g_test_message("channel %u: %" G_GUINT64_FORMAT " data pages", i, pages);
        g_assert_cmpuint(pages, ==, r.st.channel[i].pages);
        g_assert_cmpuint(pages % 32, ==, 0);
        total += pages;
        carriers += pages > 32;
    }
    g_assert_cmpuint(total, ==, 9 * 64);
    g_assert_cmpuint(r.dst_st.normal_pages, ==, 9 * 64);
    g_assert_cmpuint(carriers, >=, 2);
    tresult_clear(&r);
    tguest_free(g);
}

static void test_not_converged(gconstpointer data)
{
    const TCase *tc = data;
    TGuest *g = tguest_new(1, tc->size, 5);
    g->redirty_pages = 256;
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 2);
    cfg.downtime_ms = 0;
    cfg.max_rounds = 3;
    TResult r = { 0 };
    trun(tc, g, &cfg, &r, false);
    g_assert_error(r.err, MFR_ERROR, MFR_ERROR_NOT_CONVERGED);
    g_assert_nonnull(strstr(r.err->message, "does not converge: after 3 rounds"));
    g_assert_nonnull(strstr(r.err->message, "--force-switchover"));
    /* the guest keeps running: stop() was never called */
    g_assert_false(g->stopped);
    tresult_clear(&r);
    tguest_free(g);
}

/* Writes one destination byte when the source reaches VERIFY: every round is acknowledged
 * (the last page has landed) and COMPLETE is not sent yet. Source and destination share this
 * process, so the source's progress callback can reach the destination's memory. */
typedef struct {
    uint8_t *byte;
    bool done;
} TScribble;

static void scribble_at_verify(const MfrProgress *p, void *opaque)
{
    TScribble *sc = opaque;
    if (p->phase == MFR_PHASE_VERIFY && sc->byte && !sc->done) {
        *sc->byte ^= 0x01;
        sc->done = true;
    }
}

/* Destination RAM that differs from the source's after the last page landed must fail
 * COMPLETE's digest check on both sides, naming the block: dest_side, the destination's
 * memory changes under it; otherwise the source writes a page at stop() and loses its dirty
 * bit, so the page is never sent again. The changed byte is the last of block ram1. */
static void run_bad_verify(const TCase *tc, bool dest_side)
{
    const uint64_t size = tc->size / 4;
    uint8_t token[16];
    ttoken(token, 11);
    TGuest *g = tguest_new(2, size, 8);
    /* the destination's own blocks, added in the other order: the reply names the block by
     * its index in the source's announce */
    MfrRamBlock dblocks[2];
    for (unsigned i = 0; i < 2; i++) {
        const MfrRamBlock *b = &g->block[1 - i];
        void *host = mmap(NULL, b->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
        g_assert(host != MAP_FAILED);
        dblocks[i] = (MfrRamBlock){ .name = b->name, .host = host, .length = b->length,
                                    .page_size = b->page_size };
    }
    uint8_t *dst_ram1 = dblocks[0].host;
    uint8_t *src_ram1 = g->block[1].host;
    const uint64_t at = size - 1;
    TScribble sc = { .byte = dest_side ? dst_ram1 + at : NULL };
    if (!dest_side) {
        g->unmarked_write = true;
        g->unmarked_offset = at;
    }
    TDest *t = tdest_start_with(tc->listen_uri, token, dblocks, 2);
    MfrSourceConfig cfg;
    tsource_config(&cfg, mfr_dest_uri(t->dst), token, 2);
    cfg.progress = scribble_at_verify;
    cfg.progress_opaque = &sc;
    g_autoptr(GError) err = NULL;
    MfrSource *s = mfr_source_new(&cfg, g->block, 2, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    g_assert_false(mfr_source_run(s, &err));
    MfrStats st, dst_st;
    mfr_source_get_stats(s, &st);
    mfr_source_free(s);
    tdest_join(t);
    mfr_dest_get_stats(t->dst, &dst_st);
    g_test_message("source: %s; destination: %s", err->message, t->error->message);
    g_assert_true(sc.done == dest_side);
    g_assert_false(g->unmarked_write);

    g_assert_false(t->ok);
    g_assert_error(t->error, MFR_ERROR, MFR_ERROR_VERIFY);
    g_assert_cmpstr(t->error->message, ==,
                    "verification failed: block 'ram1' differs from the source");
    g_assert_error(err, MFR_ERROR, MFR_ERROR_VERIFY);
    g_autofree char *want = g_strdup_printf("verification failed: block 'ram1' differs on the "
                                            "destination %s", cfg.uri);
    g_assert_cmpstr(err->message, ==, want);
    g_assert_false(st.verified);
    g_assert_false(dst_st.verified);
    g_assert_cmpuint(st.rounds, ==, 2);
    /* the failure came after stop(): the guest was resumed */
    g_assert_false(g->stopped);
    /* everything else arrived: undo the one change and the blocks are equal */
    g_assert_cmpuint(dst_ram1[at], !=, src_ram1[at]);
    if (dest_side) {
        dst_ram1[at] ^= 0x01;
    } else {
        src_ram1[at] ^= 0x01;
    }
    tcompare_ram(g, t->dst);
    tdest_free(t);
    for (unsigned i = 0; i < 2; i++) {
        munmap(dblocks[i].host, dblocks[i].length);
    }
    tguest_free(g);
}

static void test_bad_verify_dest_modified(gconstpointer data)
{
    run_bad_verify(data, true);
}

static void test_bad_verify_unmarked_write(gconstpointer data)
{
    run_bad_verify(data, false);
}

static void test_bad_block_mismatch(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16];
    ttoken(token, 9);
    TGuest *g = tguest_new(1, tc->size, 6);
    TGuest *other = tguest_new(1, tc->size / 2, 6);
    TDest *t = tdest_start_with(tc->listen_uri, token, other->block, 1);
    MfrSourceConfig cfg;
    tsource_config(&cfg, mfr_dest_uri(t->dst), token, 2);
    g_autoptr(GError) err = NULL;
    MfrSource *s = mfr_source_new(&cfg, g->block, 1, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    g_assert_false(mfr_source_run(s, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_MISMATCH);
    g_autofree char *want = g_strdup_printf("RAM block 'ram0': source has %" G_GUINT64_FORMAT
                                            " bytes", tc->size);
    g_assert_nonnull(strstr(err->message, want));
    mfr_source_free(s);
    tdest_join(t);
    g_assert_error(t->error, MFR_ERROR, MFR_ERROR_MISMATCH);
    g_assert_nonnull(strstr(t->error->message, want));
    tdest_free(t);
    tguest_free(other);
    tguest_free(g);
}

/* Registration pipelined with the first round: 1 MiB chunks (the last of a block may be
 * shorter), one registration thread, each chunk 25 ms slower than it is (the seam stands in
 * for memory whose first touch costs seconds per GiB), so that registering takes about a
 * second, longer than setting up the channels. Pages must land in the right chunk of the
 * right block, and data must have been sent while the destination was still registering. */
static void test_pipelined(gconstpointer data)
{
    const TCase *tc = data;
    static const uint64_t sizes[3] = {
        (24u << 20) + 5 * 4096,  /* 25 chunks, the last 20 KiB */
        (12u << 20) - 4096,      /* 12 chunks, the last one page short */
        (4u << 20),              /* 4 whole chunks */
    };
    TGuest *g = tguest_new_sizes(3, sizes, 21);
    MfrSourceConfig cfg;
    tsource_config(&cfg, NULL, NULL, 4);
    TDestOpts o = { .registration_chunk = 1u << 20, .registration_threads = 1,
                    .register_delay_ms = 25 };
    TResult r = { 0 };
    trun_opts(tc, g, &cfg, &r, true, &o);
    g_assert_no_error(r.err);
    g_assert_true(r.st.verified);
    g_test_message("source: first data at %.1f ms, %" G_GUINT64_FORMAT " bytes before the last "
                   "chunk, waited %.1f ms for chunks; destination: registration %.1f ms, "
                   "setup %.1f ms", r.st.first_data_ms, r.st.bytes_before_last_region,
                   r.st.region_wait_ms, r.dst_st.registration_ms, r.dst_st.setup_ms);
    g_assert_cmpuint(r.dst_st.region_chunks, ==, 25 + 12 + 4);
    g_assert_cmpuint(r.st.region_chunks, ==, 25 + 12 + 4);
    g_assert_cmpuint(r.dst_st.registration_threads, ==, 1);
    g_assert_cmpfloat(r.dst_st.registration_ms, >, 0);
    g_assert_cmpfloat(r.st.first_data_ms, >, 0);
    /* the overlap: pages went out before the destination had registered everything */
    g_assert_cmpuint(r.st.bytes_before_last_region, >, 0);
    g_assert_cmpuint(r.st.bytes_before_last_region, <, sizes[0] + sizes[1] + sizes[2]);
    tresult_clear(&r);
    tguest_free(g);
}

static void test_bad_token(gconstpointer data)
{
    const TCase *tc = data;
    uint8_t token[16], wrong[16];
    ttoken(token, 1);
    ttoken(wrong, 2);
    TGuest *g = tguest_new(1, 1 << 20, 7);
    TDest *t = tdest_start(tc->listen_uri, token, 0);
    MfrSourceConfig cfg;
    tsource_config(&cfg, mfr_dest_uri(t->dst), wrong, 2);
    g_autoptr(GError) err = NULL;
    MfrSource *s = mfr_source_new(&cfg, g->block, 1, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    g_assert_false(mfr_source_run(s, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_REJECTED);
    g_assert_nonnull(strstr(err->message, "bad token"));
    mfr_source_free(s);
    /* a refused connection does not end the destination's service */
    g_usleep(100 * 1000);
    g_assert_nonnull(t->thread);
    g_assert_cmpfloat(t->t_end, ==, 0);
    tdest_free(t); /* cancels */
    tguest_free(g);
}

int main(int argc, char **argv)
{
    TCase *cases[2];
    if (!ttest_init(&argc, &argv, 32 << 20, 8 << 20, cases)) {
        return 0;
    }
    for (unsigned i = 0; i < 2; i++) {
        TCase *tc = cases[i];
        if (!tc) {
            continue;
        }
#define ADD(name, fn) ttest_add("migrate", tc, name, fn)
        ADD("idle", test_idle);
        if (tc != cases[1]) {
            /* keepalive timing is the control reader's, the same on every transport; the
             * 1 s timeout would be at the mercy of the VM's scheduling over rdma */
            ADD("timeouts_differ", test_timeouts_differ);
        }
        ADD("channels1", test_channels1);
        ADD("channels8", test_channels8);
        ADD("dirty", test_dirty);
        ADD("ordering", test_ordering);
        ADD("not_converged", test_not_converged);
        ADD("bad_verify_dest_modified", test_bad_verify_dest_modified);
        ADD("bad_verify_unmarked_write", test_bad_verify_unmarked_write);
        ADD("bad_block_mismatch", test_bad_block_mismatch);
        ADD("bad_token", test_bad_token);
        if (tc == cases[1]) {
            ADD("pipelined", test_pipelined);
        }
#undef ADD
    }
    if (cases[0]) {
        g_test_add_func("/migrate/bad_config", test_bad_config);
        g_test_add_func("/migrate/bad_block_rule", test_bad_block_rule);
    }
    const char *addr6 = xp_ops_lookup("rdma") ? g_getenv("MFR_TEST_RDMA_ADDR6") : NULL;
    if (cases[1] && addr6 && *addr6) {
        /* RDMA over IPv6 (RoCE v2 GID of the IPv6 address) */
        static TCase rdma6 = { "rdma", NULL, 4 << 20 };
        rdma6.listen_uri = g_strdup_printf("rdma:[%s]:0", addr6);
        g_test_add_data_func("/migrate/rdma6/idle", &rdma6, test_idle);
    }
    if (cases[0]) {
        /* IPv6 loopback: the same engine over an AF_INET6 listener and connections */
        static TCase tcp6 = { "tcp", "tcp:[::1]:0", 8 << 20 };
        g_test_add_data_func("/migrate/tcp6/idle", &tcp6, test_idle);
    }
    return g_test_run();
}
