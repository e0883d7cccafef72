/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where a session's memory and threads were (MfrPlacement), end to end (tcp here, rdma
 * inside the soft-RoCE VM): destination blocks madvised for huge pages are reported huge-page
 * backed from smaps, unadvised ones not; channel threads placed on a NUMA node run there
 * (affinity within its CPUs, as the threads themselves saw it), auto picks the device's or
 * the memory's node (rxe has none: memory), off places nothing, a missing node is refused.
 */
#include "harness.h"

#include <numa.h>
#include <string.h>
#include <sys/mman.h>

typedef struct {
    MfrDest *dst;
    bool thp;
    void *maps[4];
    uint64_t map_len[4];
    unsigned nmaps;
} TPlaceDest;

static bool tplace_alloc(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                         void **host, GError **error)
{
    TPlaceDest *t = opaque;
    g_assert_cmpuint(t->nmaps, <, 4);
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(p != MAP_FAILED);
    if (t->thp) {
        g_assert_cmpint(madvise(p, length, MADV_HUGEPAGE), ==, 0);
    } else {
        /* not advised, and kept off huge pages even where THP is "always" */
        g_assert_cmpint(madvise(p, length, MADV_NOHUGEPAGE), ==, 0);
    }
    t->maps[t->nmaps] = p;
    t->map_len[t->nmaps++] = length;
    *host = p;
    return true;
}

typedef struct {
    MfrPlacement src, dst;
    MfrStats dst_st;
} TPlaced;

/* Migrates an idle guest of one block to a destination allocating with or without THP,
 * both sides placed by numa_node. */
static void tplace_run_numa(const TCase *tc, bool thp, int numa_node, TPlaced *out)
{
    uint8_t token[16];
    ttoken(token, 21);
    TGuest *g = tguest_new(1, tc->size, 21);
    TPlaceDest t = { .thp = thp };
    MfrDestConfig dc;
    mfr_dest_config_init(&dc);
    dc.uri = tc->listen_uri;
    memcpy(dc.token, token, 16);
    dc.alloc_block = tplace_alloc;
    dc.alloc_opaque = &t;
    dc.memory_zeroed = true;
    dc.numa_node = numa_node;
    GError *err = NULL;
    t.dst = mfr_dest_new(&dc, &err);
    g_assert_no_error(err);
    g_assert_true(mfr_dest_start(t.dst, &err));
    g_assert_no_error(err);
    MfrSourceConfig sc;
    mfr_source_config_init(&sc);
    sc.uri = mfr_dest_uri(t.dst);
    memcpy(sc.token, token, 16);
    sc.channels = 2;
    sc.numa_node = numa_node;
    MfrSource *s = mfr_source_new(&sc, g->block, g->nblocks, &tguest_dirty_ops, g, &err);
    g_assert_no_error(err);
    g_assert_true(mfr_source_run(s, &err));
    g_assert_no_error(err);
    g_assert_true(mfr_dest_wait(t.dst, &err));
    g_assert_no_error(err);
    tcompare_ram(g, t.dst);
    mfr_source_get_placement(s, &out->src);
    mfr_dest_get_placement(t.dst, &out->dst);
    mfr_dest_get_stats(t.dst, &out->dst_st);
    mfr_source_free(s);
    mfr_dest_free(t.dst);
    for (unsigned i = 0; i < t.nmaps; i++) {
        munmap(t.maps[i], t.map_len[i]);
    }
    tguest_free(g);
}

static void tplace_run(const TCase *tc, bool thp, TPlaced *out)
{
    tplace_run_numa(tc, thp, MFR_NUMA_AUTO, out);
}

/* "always [madvise] never" -> "madvise" */
static char *tthp_mode(void)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/sys/kernel/mm/transparent_hugepage/enabled", &text, NULL, NULL)) {
        return g_strdup("none");
    }
    const char *a = strchr(text, '['), *b = a ? strchr(a, ']') : NULL;
    return a && b ? g_strndup(a + 1, (gsize)(b - a - 1)) : g_strdup("none");
}

static void test_huge_backed(gconstpointer data)
{
    const TCase *tc = data;
    g_autofree char *mode = tthp_mode();
    TPlaced p;
    tplace_run(tc, true, &p);
    g_assert_cmpuint(p.dst.ram_bytes, ==, tc->size);
    g_assert_true(p.dst.thp_advised);
    g_test_message("THP %s: destination %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                   " bytes on huge pages", mode, p.dst.huge_bytes, p.dst.ram_bytes);
    if (strcmp(mode, "never") == 0 || strcmp(mode, "none") == 0) {
        g_assert_cmpuint(p.dst.huge_bytes, ==, 0);
        return;
    }
    /* 3/4 of the pages were written; fragmentation may deny a few huge pages */
    g_assert_cmpuint(p.dst.huge_bytes, >=, tc->size / 4);
    g_assert_cmpuint(p.dst.huge_bytes, <=, tc->size);
    /* the harness's source guest is not advised */
    g_assert_false(p.src.thp_advised);
    g_assert_cmpuint(p.src.ram_bytes, ==, tc->size);
}

static void test_not_huge(gconstpointer data)
{
    const TCase *tc = data;
    TPlaced p;
    tplace_run(tc, false, &p);
    g_assert_cmpuint(p.dst.ram_bytes, ==, tc->size);
    g_assert_false(p.dst.thp_advised);
    g_assert_cmpuint(p.dst.huge_bytes, ==, 0);
}

/* every channel bound to node and seen running on one of its CPUs */
static void tassert_channels_on(const MfrPlacement *p, int node)
{
    g_assert_cmpuint(p->channels, ==, 2);
    for (unsigned i = 0; i < p->channels; i++) {
        g_assert_true(p->channel[i].bound);
        g_assert_cmpint(p->channel[i].cpu, >=, 0);
        g_assert_cmpint(p->channel[i].node, ==, node);
        g_assert_cmpint(numa_node_of_cpu(p->channel[i].cpu), ==, node);
    }
}

static void test_numa_node(gconstpointer data)
{
    const TCase *tc = data;
    if (numa_available() < 0) {
        g_test_skip("no NUMA support");
        return;
    }
    TPlaced p;
    tplace_run_numa(tc, true, 0, &p);
    for (const MfrPlacement *s = &p.src; s; s = s == &p.src ? &p.dst : NULL) {
        g_assert_cmpint(s->numa_node, ==, 0);
        g_assert_cmpstr(s->numa_source, ==, "numa_node");
        tassert_channels_on(s, 0);
    }
}

static void test_numa_auto(gconstpointer data)
{
    const TCase *tc = data;
    if (numa_available() < 0) {
        g_test_skip("no NUMA support");
        return;
    }
    TPlaced p;
    tplace_run_numa(tc, true, MFR_NUMA_AUTO, &p);
    g_test_message("auto: source node %d (%s), destination node %d (%s)", p.src.numa_node,
                   p.src.numa_source, p.dst.numa_node, p.dst.numa_source);
    /* loopback and rxe have no device node (-1 in sysfs): the source falls back to its
     * guest's pages, which it filled */
    g_assert_cmpstr(p.src.numa_source, ==, "memory");
    g_assert_cmpint(p.src.numa_node, >=, 0);
    g_assert_cmpint(p.src.numa_node, <=, numa_max_node());
    tassert_channels_on(&p.src, p.src.numa_node);
    /* the destination's blocks are fresh (tcp: untouched until data lands; rdma:
     * registration may have populated them already) */
    if (p.dst.numa_node < 0) {
        g_assert_cmpstr(p.dst.numa_source, ==, "unknown");
        for (unsigned i = 0; i < p.dst.channels; i++) {
            g_assert_false(p.dst.channel[i].bound);
        }
    } else {
        g_assert_cmpstr(p.dst.numa_source, ==, "memory");
        tassert_channels_on(&p.dst, p.dst.numa_node);
    }
}

static void test_numa_off(gconstpointer data)
{
    const TCase *tc = data;
    TPlaced p;
    tplace_run_numa(tc, true, MFR_NUMA_OFF, &p);
    for (const MfrPlacement *s = &p.src; s; s = s == &p.src ? &p.dst : NULL) {
        g_assert_cmpint(s->numa_node, ==, -1);
        g_assert_cmpstr(s->numa_source, ==, "off");
        g_assert_cmpuint(s->channels, ==, 2);
        for (unsigned i = 0; i < s->channels; i++) {
            g_assert_false(s->channel[i].bound);
            g_assert_cmpint(s->channel[i].cpu, >=, 0); /* seen anyway */
        }
    }
}

/* a node this host does not have: refused up front on both sides, naming it */
static void test_bad_numa_node(gconstpointer data)
{
    const TCase *tc = data;
    int node = numa_available() < 0 ? 7 : MAX(7, numa_max_node() + 1);
    g_autofree char *want = g_strdup_printf("NUMA node %d ", node);
    TGuest *g = tguest_new(1, 1 << 20, 22);
    MfrSourceConfig sc;
    mfr_source_config_init(&sc);
    sc.uri = "tcp:127.0.0.1:9";
    sc.numa_node = node;
    GError *err = NULL;
    g_assert_null(mfr_source_new(&sc, g->block, g->nblocks, &tguest_dirty_ops, g, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_nonnull(strstr(err->message, want));
    g_assert_true(g_str_has_prefix(err->message, "source: "));
    g_clear_error(&err);
    sc.numa_node = -3;
    g_assert_null(mfr_source_new(&sc, g->block, g->nblocks, &tguest_dirty_ops, g, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_clear_error(&err);
    MfrDestConfig dc;
    mfr_dest_config_init(&dc);
    dc.uri = tc->listen_uri;
    dc.numa_node = node;
    g_assert_null(mfr_dest_new(&dc, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_nonnull(strstr(err->message, want));
    g_assert_true(g_str_has_prefix(err->message, "destination: "));
    g_clear_error(&err);
    tguest_free(g);
}

int main(int argc, char **argv)
{
    TCase *cases[2];
    if (!ttest_init(&argc, &argv, 64u << 20, 16u << 20, cases)) {
        return 0;
    }
    for (unsigned i = 0; i < 2; i++) {
        const TCase *tc = cases[i];
        if (!tc) {
            continue;
        }
        ttest_add("placement", tc, "huge_backed", test_huge_backed);
        ttest_add("placement", tc, "not_huge", test_not_huge);
        ttest_add("placement", tc, "numa_node", test_numa_node);
        ttest_add("placement", tc, "numa_auto", test_numa_auto);
        ttest_add("placement", tc, "numa_off", test_numa_off);
        ttest_add("placement", tc, "bad_numa_node", test_bad_numa_node);
    }
    return g_test_run();
}
