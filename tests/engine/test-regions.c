/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The region table (regions.c) against a fake transport that counts what it frees: chunk
 * layouts and ranges, ready bits published in chunk order per block whatever order the chunks
 * come in, the bounded wait naming block and chunk, a failure releasing a waiter, and the free
 * of a half-built table.
 */
#include "engine.h"

#include <string.h>

typedef struct {
    int freed;      /* region_deregister() / remote_free() calls */
} Counts;

static Counts counts;

static void count_deregister(XpRegion *r)
{
    counts.freed++;
    g_free(r);
}

static void count_remote_free(XpRemote *r)
{
    counts.freed++;
    g_free(r);
}

static const XpOps count_ops = {
    .version = XP_OPS_VERSION,
    .name = "fake-count",
    .caps = XP_CAP_REGIONS,
    .region_deregister = count_deregister,
    .remote_free = count_remote_free,
};

/* the tables free through the domain's ops */
static XpDomain count_dom = { .ops = &count_ops };

/* 3 MiB + one page, 1 MiB, 8 MiB of 2 MiB pages; no memory behind them (none is touched). */
static const MfrRamBlock blocks[3] = {
    { .name = "ram0", .length = (3u << 20) + 4096, .page_size = 4096 },
    { .name = "ram1", .length = 1u << 20, .page_size = 4096 },
    { .name = "huge", .length = 8u << 20, .page_size = 2u << 20 },
};

static MfrRegionTable *table_new(MfrRegionKind kind, uint64_t chunk)
{
    MfrChunkMap map;
    mfr_chunk_map_init(&map, blocks, 3, chunk, 1);
    return mfr_region_table_new(&count_dom, kind, blocks, &map, "the test");
}

static void test_layout(void)
{
    MfrRegionTable *t = table_new(MFR_REGIONS_LOCAL, 1u << 20);
    const MfrChunkMap *m = mfr_region_table_map(t);
    g_assert_cmpuint(m->nblocks, ==, 3);
    g_assert_cmpuint(m->layout[0].chunks, ==, 4);
    g_assert_cmpuint(m->layout[1].chunks, ==, 1);
    g_assert_cmpuint(m->layout[2].chunk_size, ==, 2u << 20); /* whole huge pages */
    g_assert_cmpuint(m->layout[2].chunks, ==, 4);
    g_assert_cmpuint(m->first[2], ==, 5);
    g_assert_cmpuint(m->total, ==, 9);
    uint64_t off, len;
    mfr_region_table_chunk_range(t, 0, 3, &off, &len);
    g_assert_cmpuint(off, ==, 3u << 20);
    g_assert_cmpuint(len, ==, 4096); /* the last chunk is what is left */
    mfr_region_table_chunk_range(t, 2, 1, &off, &len);
    g_assert_cmpuint(off, ==, 2u << 20);
    g_assert_cmpuint(len, ==, 2u << 20);
    g_assert_cmpuint(mfr_region_table_missing(t), ==, 9);
    mfr_region_table_free(t);

    /* whole blocks: every block one chunk of its length, at least one chunk each */
    MfrChunkMap whole;
    mfr_chunk_map_whole(&whole, blocks, 3);
    g_assert_cmpuint(whole.total, ==, 3);
    for (unsigned b = 0; b < 3; b++) {
        g_assert_cmpuint(whole.layout[b].chunks, ==, 1);
        g_assert_cmpuint(whole.layout[b].chunk_size, ==, blocks[b].length);
        g_assert_cmpuint(whole.first[b], ==, b);
    }
}

typedef struct {
    unsigned calls;
    unsigned block[16];
    uint32_t chunk[16];
    int fail_at;     /* publish() of this call fails; -1 none */
} Publish;

static bool publish_record(void *opaque, unsigned block, uint32_t chunk, GError **error)
{
    Publish *p = opaque;
    if ((int)p->calls == p->fail_at) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_TRANSPORT, "publish %u failed", p->calls);
        return false;
    }
    p->block[p->calls] = block;
    p->chunk[p->calls] = chunk;
    p->calls++;
    return true;
}

/* Chunks of block 0 become ready 2, 3, 0, 1: nothing is published before chunk 0, then
 * 0, 1, 2, 3 in order; another block's chunk goes out at once. */
static void test_ready_order(void)
{
    MfrRegionTable *t = table_new(MFR_REGIONS_LOCAL, 1u << 20);
    Publish p = { .fail_at = -1 };
    uint32_t in_order[3];
    g_assert_true(mfr_region_table_ready(t, 0, 2, publish_record, &p, NULL));
    g_assert_true(mfr_region_table_ready(t, 0, 3, publish_record, &p, NULL));
    g_assert_cmpuint(p.calls, ==, 0);
    mfr_region_table_in_order(t, in_order);
    g_assert_cmpuint(in_order[0], ==, 0);
    g_assert_true(mfr_region_table_ready(t, 1, 0, publish_record, &p, NULL));
    g_assert_cmpuint(p.calls, ==, 1);
    g_assert_cmpuint(p.block[0], ==, 1);
    g_assert_true(mfr_region_table_ready(t, 0, 0, publish_record, &p, NULL));
    g_assert_cmpuint(p.calls, ==, 2); /* 0 alone: 1 is missing */
    g_assert_true(mfr_region_table_ready(t, 0, 1, publish_record, &p, NULL));
    g_assert_cmpuint(p.calls, ==, 5);
    for (unsigned i = 1; i < 5; i++) {
        g_assert_cmpuint(p.block[i], ==, 0);
        g_assert_cmpuint(p.chunk[i], ==, i - 1);
    }
    mfr_region_table_in_order(t, in_order);
    g_assert_cmpuint(in_order[0], ==, 4);
    g_assert_cmpuint(in_order[1], ==, 1);
    g_assert_cmpuint(in_order[2], ==, 0);
    g_assert_cmpuint(mfr_region_table_missing(t), ==, 4);
    mfr_region_table_free(t);
}

/* A failing publication stops the block's publishing there and says why. */
static void test_bad_publish(void)
{
    MfrRegionTable *t = table_new(MFR_REGIONS_LOCAL, 1u << 20);
    Publish p = { .fail_at = 1 };
    g_assert_true(mfr_region_table_ready(t, 0, 1, publish_record, &p, NULL));
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_region_table_ready(t, 0, 0, publish_record, &p, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TRANSPORT);
    g_assert_cmpstr(err->message, ==, "publish 1 failed");
    uint32_t in_order[3];
    mfr_region_table_in_order(t, in_order);
    g_assert_cmpuint(in_order[0], ==, 1); /* chunk 0 went out, chunk 1 did not */
    mfr_region_table_free(t);
}

/* Nothing comes: the wait ends after the bound with block and chunk named. */
static void test_bad_wait_timeout(void)
{
    MfrRegionTable *t = table_new(MFR_REGIONS_REMOTE, 1u << 20);
    g_assert_true(mfr_region_table_ready(t, 0, 0, NULL, NULL, NULL));
    g_assert_true(mfr_region_table_wait(t, 0, 0, 10, NULL, NULL)); /* ready: no wait */
    g_autoptr(GError) err = NULL;
    gint64 t0 = g_get_monotonic_time();
    g_assert_false(mfr_region_table_wait(t, 2, 3, 50, NULL, &err));
    g_assert_cmpint(g_get_monotonic_time() - t0, >=, 50 * 1000);
    g_assert_error(err, MFR_ERROR, MFR_ERROR_TIMEOUT);
    g_assert_cmpstr(err->message, ==, "chunk 3 of block 'huge' not registered by the test "
                                      "within 50 ms");
    mfr_region_table_free(t);
}

typedef struct {
    MfrRegionTable *t;
    MfrFail *fail;
} Waker;

static gpointer make_ready(gpointer opaque)
{
    Waker *w = opaque;
    XpRemote *r = (XpRemote *)g_new0(char, 1);
    mfr_region_table_set_remote(w->t, 1, 0, r);
    g_assert_true(mfr_region_table_ready(w->t, 1, 0, NULL, NULL, NULL));
    return NULL;
}

static gpointer make_fail(gpointer opaque)
{
    Waker *w = opaque;
    mfr_fail(w->fail, MFR_ERROR_CANCELLED, "cancelled by the test");
    return NULL;
}

static void wake_on_fail(void *opaque, const GError *err, bool quiet)
{
    mfr_region_table_wake(opaque);
}

/* A chunk that becomes ready on another thread ends the wait with its remote in place; a
 * session failure ends it with the session's error, long before the bound. */
static void test_wait_ready_and_failure(void)
{
    MfrRegionTable *t = table_new(MFR_REGIONS_REMOTE, 1u << 20);
    MfrFail fail;
    mfr_fail_init(&fail, wake_on_fail, t);
    Waker w = { t, &fail };
    GThread *th = g_thread_new("ready", make_ready, &w);
    g_assert_true(mfr_region_table_wait(t, 1, 0, 60000, &fail, NULL));
    g_assert_nonnull(mfr_region_table_remotes(t, 1)[0]);
    g_thread_join(th);

    th = g_thread_new("fail", make_fail, &w);
    g_autoptr(GError) err = NULL;
    gint64 t0 = g_get_monotonic_time();
    g_assert_false(mfr_region_table_wait(t, 0, 0, 60000, &fail, &err));
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 30 * G_USEC_PER_SEC);
    g_assert_error(err, MFR_ERROR, MFR_ERROR_CANCELLED);
    g_assert_cmpstr(err->message, ==, "cancelled by the test");
    g_thread_join(th);
    mfr_fail_clear(&fail);
    counts.freed = 0;
    mfr_region_table_free(t);
    g_assert_cmpint(counts.freed, ==, 1);
}

/* A table whose registration stopped halfway frees exactly what was set; NULL is fine. */
static void test_free_half_built(void)
{
    mfr_region_table_free(NULL);
    MfrRegionTable *t = table_new(MFR_REGIONS_LOCAL, 1u << 20);
    mfr_region_table_set_local(t, 0, 0, (XpRegion *)g_new0(char, 1));
    mfr_region_table_set_local(t, 0, 2, (XpRegion *)g_new0(char, 1));
    mfr_region_table_set_local(t, 2, 3, (XpRegion *)g_new0(char, 1));
    g_assert_true(mfr_region_table_ready(t, 0, 0, NULL, NULL, NULL));
    g_assert_nonnull(mfr_region_table_local(t, 0, 2));
    g_assert_null(mfr_region_table_local(t, 0, 1));
    counts.freed = 0;
    mfr_region_table_free(t);
    g_assert_cmpint(counts.freed, ==, 3);

    MfrRegionTable *r = table_new(MFR_REGIONS_REMOTE, 1u << 20);
    mfr_region_table_set_remote(r, 1, 0, (XpRemote *)g_new0(char, 1));
    counts.freed = 0;
    mfr_region_table_free(r);
    g_assert_cmpint(counts.freed, ==, 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/regions/layout", test_layout);
    g_test_add_func("/regions/ready_order", test_ready_order);
    g_test_add_func("/regions/bad_publish", test_bad_publish);
    g_test_add_func("/regions/bad_wait_timeout", test_bad_wait_timeout);
    g_test_add_func("/regions/wait_ready_and_failure", test_wait_ready_and_failure);
    g_test_add_func("/regions/free_half_built", test_free_half_built);
    return g_test_run();
}
