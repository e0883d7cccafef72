/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The configs' ABI (mfrdma.h, MFRDMA_0.4): linked against the shared library, as a client
 * is. A program built before struct_size calls the MFRDMA_0 versions with the MFRDMA_0.2
 * layout (shorter): its init writes no byte past it, new() reads none, and a migration runs
 * with every later field at its default. A sized config is read as far as struct_size goes;
 * a size of 0, too small or too large is MFR_ERROR_USAGE.
 */
#include "mfrdma.h"

#include <string.h>
#include <sys/mman.h>

#define BLOCK_SIZE (4u << 20)
#define GARBAGE 0x7f /* read as numa_node: node 0x7f7f7f7f, refused; as max_bandwidth: huge */

/* What a program built against the MFRDMA_0.2 header declares (no struct_size; ends at
 * progress_opaque / registration_chunk), followed in memory by bytes it never wrote. */
typedef struct {
    const char *uri;
    unsigned channels;
    uint8_t token[16];
    unsigned downtime_ms, max_rounds;
    bool force_switchover, verify, zero_detect;
    unsigned timeout_ms, pages_per_packet;
    MfrTransportConfig transport;
    MfrProgressFn progress;
    void *progress_opaque;
} OldSourceConfig;

typedef struct {
    const char *uri;
    uint8_t token[16];
    unsigned timeout_ms, max_channels;
    bool (*alloc_block)(void *, const char *, uint64_t, uint32_t, void **, GError **);
    void *alloc_opaque;
    bool memory_zeroed;
    MfrTransportConfig transport;
    MfrProgressFn progress;
    void *progress_opaque;
    uint64_t registration_chunk;
} OldDestConfig;

typedef struct {
    OldSourceConfig cfg;
    uint8_t after[64];
} OldSourceBuf;

typedef struct {
    OldDestConfig cfg;
    uint8_t after[64];
} OldDestBuf;

/* the MFRDMA_0 entry points, as an old binary binds them */
void old_source_config_init(OldSourceConfig *cfg);
void old_dest_config_init(OldDestConfig *cfg);
MfrSource *old_source_new(const OldSourceConfig *cfg, const MfrRamBlock *blocks,
                          unsigned nblocks, const MfrDirtyOps *dirty, void *opaque,
                          GError **error);
MfrDest *old_dest_new(const OldDestConfig *cfg, GError **error);
__asm__(".symver old_source_config_init, mfr_source_config_init@MFRDMA_0");
__asm__(".symver old_dest_config_init, mfr_dest_config_init@MFRDMA_0");
__asm__(".symver old_source_new, mfr_source_new@MFRDMA_0");
__asm__(".symver old_dest_new, mfr_dest_new@MFRDMA_0");

static void harvest(void *opaque, unsigned block, uint64_t *bitmap, uint64_t npages)
{
    /* nothing written: round 1 (every page) is the migration */
}

static void stop(void *opaque)
{
}

static const MfrDirtyOps ops = { .harvest = harvest, .stop = stop };

static void assert_untouched(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_assert_cmphex(p[i], ==, GARBAGE);
    }
}

static uint8_t *map_block(void)
{
    uint8_t *p = mmap(NULL, BLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    g_assert_true(p != MAP_FAILED);
    return p;
}

/* An old binary's init and new() on both sides, then a whole migration. */
static void test_old_layout(void)
{
    OldDestBuf d;
    OldSourceBuf s;
    memset(&d, GARBAGE, sizeof(d));
    memset(&s, GARBAGE, sizeof(s));
    old_dest_config_init(&d.cfg);
    old_source_config_init(&s.cfg);
    /* the defaults, and not one byte written past the old struct */
    assert_untouched(d.after, sizeof(d.after));
    assert_untouched(s.after, sizeof(s.after));
    g_assert_cmpuint(s.cfg.channels, ==, 4);
    g_assert_cmpuint(s.cfg.downtime_ms, ==, 300);
    g_assert_cmpuint(s.cfg.max_rounds, ==, 30);
    g_assert_true(s.cfg.verify && s.cfg.zero_detect);
    g_assert_cmpuint(s.cfg.timeout_ms, ==, 5000);
    g_assert_cmpuint(s.cfg.pages_per_packet, ==, 128);
    g_assert_cmpint(s.cfg.transport.gid_index, ==, -1);
    g_assert_null(s.cfg.uri);
    g_assert_cmpuint(d.cfg.timeout_ms, ==, 5000);
    g_assert_cmpuint(d.cfg.max_channels, ==, 64);
    g_assert_cmpint(d.cfg.transport.gid_index, ==, -1);
    g_assert_cmpuint(d.cfg.registration_chunk, ==, 0);

    /* new(): the garbage after the old structs would be numa_node 0x7f7f7f7f (refused) and
     * a cap; read, either would show */
    uint8_t token[16];
    memset(token, 0x42, sizeof(token));
    d.cfg.uri = "tcp:127.0.0.1:0";
    memcpy(d.cfg.token, token, sizeof(token));
    d.cfg.memory_zeroed = true;
    g_autoptr(GError) err = NULL;
    g_autoptr(MfrDest) dst = old_dest_new(&d.cfg, &err);
    g_assert_no_error(err);
    uint8_t *sh = map_block(), *dh = map_block();
    for (uint32_t i = 0; i < BLOCK_SIZE; i++) {
        sh[i] = (uint8_t)(i * 2654435761u >> 24);
    }
    MfrRamBlock sb = { .name = "ram0", .host = sh, .length = BLOCK_SIZE, .page_size = 4096 };
    MfrRamBlock db = sb;
    db.host = dh;
    g_assert_true(mfr_dest_add_block(dst, &db, &err));
    g_assert_true(mfr_dest_start(dst, &err));
    s.cfg.uri = mfr_dest_uri(dst);
    memcpy(s.cfg.token, token, sizeof(token));
    s.cfg.channels = 2;
    g_autoptr(MfrSource) src = old_source_new(&s.cfg, &sb, 1, &ops, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(mfr_source_run(src, &err));
    g_assert_no_error(err);
    g_assert_true(mfr_dest_wait(dst, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(sh, BLOCK_SIZE, dh, BLOCK_SIZE);
    MfrPlacement p;
    mfr_source_get_placement(src, &p);
    /* numa_node took its default, auto, which never refuses */
    g_assert_cmpstr(p.numa_source, !=, "numa_node");
    munmap(sh, BLOCK_SIZE);
    munmap(dh, BLOCK_SIZE);
}

static MfrSource *source_sized(size_t size, int numa_node, GError **error)
{
    static uint8_t host[2 * 4096] __attribute__((aligned(4096)));
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    g_assert_cmpuint(cfg.struct_size, ==, sizeof(cfg));
    cfg.uri = "tcp:127.0.0.1:9";
    cfg.numa_node = numa_node;
    cfg.struct_size = size;
    MfrRamBlock b = { .name = "ram0", .host = host, .length = sizeof(host),
                      .page_size = 4096 };
    return mfr_source_new(&cfg, &b, 1, &ops, NULL, error);
}

/* A sized config: fields past struct_size take their defaults; bad sizes are refused. */
static void test_sized(void)
{
    size_t full = sizeof(MfrSourceConfig);
    size_t short_size = offsetof(MfrSourceConfig, numa_node); /* as if numa_node came later */
    g_autoptr(GError) err = NULL;
    /* numa_node inside the caller's struct: read, and a missing node refused */
    MfrSource *src = source_sized(full, 12345, &err);
    g_assert_null(src);
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_nonnull(strstr(err->message, "12345"));
    g_clear_error(&err);
    /* past it: the default (auto) whatever the bytes say */
    src = source_sized(short_size, 12345, &err);
    g_assert_no_error(err);
    mfr_source_free(src);
    /* 0, larger than this library's, smaller than the smallest layout */
    size_t bad[] = { 0, full + 8, offsetof(MfrSourceConfig, max_bandwidth) - 8 };
    for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
        src = source_sized(bad[i], MFR_NUMA_AUTO, &err);
        g_assert_null(src);
        g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
        g_assert_nonnull(strstr(err->message, "MfrSourceConfig"));
        g_clear_error(&err);
    }
    /* a config never initialised (struct_size 0) says how to fix it */
    MfrDestConfig dc;
    memset(&dc, 0, sizeof(dc));
    dc.uri = "tcp:127.0.0.1:0";
    g_assert_null(mfr_dest_new(&dc, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_assert_nonnull(strstr(err->message, "mfr_dest_config_init"));
    g_clear_error(&err);
    /* destination: numa_node past the size is not read either */
    mfr_dest_config_init(&dc);
    dc.uri = "tcp:127.0.0.1:0";
    dc.numa_node = 12345;
    g_assert_null(mfr_dest_new(&dc, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_USAGE);
    g_clear_error(&err);
    dc.struct_size = offsetof(MfrDestConfig, numa_node);
    MfrDest *dst = mfr_dest_new(&dc, &err);
    g_assert_no_error(err);
    mfr_dest_free(dst);
    /* the sized init writes no more than it is given */
    struct {
        MfrDestConfig cfg;
        uint8_t after[16];
    } buf;
    memset(&buf, GARBAGE, sizeof(buf));
    mfr_dest_config_init_sized(&buf.cfg, offsetof(MfrDestConfig, numa_node));
    g_assert_cmpuint(buf.cfg.struct_size, ==, offsetof(MfrDestConfig, numa_node));
    assert_untouched((const uint8_t *)&buf.cfg.numa_node,
                     sizeof(buf) - offsetof(MfrDestConfig, numa_node));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/abi/old_layout", test_old_layout);
    g_test_add_func("/abi/sized", test_sized);
    return g_test_run();
}
