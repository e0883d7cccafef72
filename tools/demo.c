/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mfrdma demo`: source and destination in one process. The destination listens on a
 * loopback (or RDMA device) address with an ephemeral port and serves from its own thread;
 * the source migrates a synthetic guest whose writers keep dirtying pages; at the end the two
 * copies are compared byte for byte, on top of the engine's digests.
 */
#include "devices.h"
#include "tool.h"

#include <string.h>

static const char demo_description[] =
    "Migrates a synthetic guest (default 1 GiB, 40% random / 40% compressible / 20% zero\n"
    "pages, writers dirtying 64 MB/s) to a destination in the same process, prints progress\n"
    "and a summary, then checks the destination against the source (digests and memcmp).\n"
    "\n"
    "Transport: auto picks rdma when an RDMA device is available ('mfrdma devices'), else tcp\n"
    "on 127.0.0.1. For rdma the address is --address, else $MFR_RDMA_ADDR, else the first\n"
    "IPv4 address of the device's network interface.\n"
    "\n"
    "Examples:\n"
    "  mfrdma demo\n"
    "  mfrdma demo --size 256M --channels 2 --dirty-rate 0\n"
    "  mfrdma demo --size 2G --mix 90:0:10 --dirty-rate 500 --max-rounds 5 --force-switchover\n"
    "  mfrdma demo --json > stats.json\n"
    "  mfrdma demo --compress zstd --compress-level 3\n"
    "\n"
    TOOL_EXIT_CODES_HELP;

typedef struct {
    MfrDest *dest;
    bool ok;
    GError *error;
} DemoDest;

static gpointer dest_thread(gpointer data)
{
    DemoDest *d = data;
    d->ok = mfr_dest_run(d->dest, &d->error);
    return NULL;
}

/* Listening URI for the chosen transport; NULL with a message when rdma cannot be used. */
static char *pick_uri(const ToolSourceArgs *a, FILE *info, GError **error)
{
    const char *t = a->transport ? a->transport : "auto";
    if (strcmp(t, "tcp") == 0) {
        fprintf(info, "transport: tcp (127.0.0.1)\n");
        return g_strdup("tcp:127.0.0.1:0");
    }
    if (strcmp(t, "rdma") != 0 && strcmp(t, "auto") != 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "--transport: '%s' is not a transport (tcp, rdma or auto)", t);
        return NULL;
    }
    g_autofree char *dev = NULL;
    g_autofree char *dev_addr = NULL;
    bool have = mfr_tool_rdma_available(&dev, &dev_addr);
    const char *addr = a->address ? a->address : g_getenv("MFR_RDMA_ADDR");
    if (!addr || !*addr) {
        addr = dev_addr;
    }
    if (strcmp(t, "auto") == 0 && !have) {
        fprintf(info, "transport: tcp (127.0.0.1; no RDMA device found)\n");
        return g_strdup("tcp:127.0.0.1:0");
    }
    if (!addr || !*addr) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED,
                    have ? "--transport rdma: device %s has no IPv4 address; give one with "
                           "--address or MFR_RDMA_ADDR"
                         : "--transport rdma: no RDMA device found%s (see 'mfrdma devices'; "
                           "or give --address, or use --transport tcp)",
                    have ? dev : "");
        return NULL;
    }
    fprintf(info, "transport: rdma (device %s, address %s)\n",
            a->rdma.rdma_dev ? a->rdma.rdma_dev : (dev ? dev : "chosen by address"), addr);
    /* IPv6 literals need brackets so the port stays separable. */
    if (strchr(addr, ':')) {
        return g_strdup_printf("rdma:[%s]:0", addr);
    }
    return g_strdup_printf("rdma:%s:0", addr);
}

static int finish(bool json, const ToolSide *src, const ToolSide *dst, const GError *error,
                  const char *memcmp_result, int code)
{
    if (json) {
        static const char *const results[] = {
            [TOOL_EXIT_OK] = "ok", [TOOL_EXIT_FAILED] = "failed",
            [TOOL_EXIT_USAGE] = "usage", [TOOL_EXIT_VERIFY] = "verify-failed",
        };
        tool_print_json(stdout, src, dst, results[code], error, memcmp_result);
    }
    return code;
}

int tool_demo(ToolCtx *ctx, int argc, char **argv)
{
    ToolSourceArgs a;
    tool_source_args_init(&a);
    g_autoptr(GOptionContext) oc =
        g_option_context_new("- migrate a synthetic guest within one process");
    g_option_context_set_description(oc, demo_description);
    tool_add_source_options(oc, &a, true);
    int code = TOOL_EXIT_FAILED;
    g_autoptr(GError) error = NULL;
    g_autoptr(GError) dest_error = NULL;
    g_autofree char *listen_uri = NULL;
    g_autoptr(MfrGuest) guest = NULL;
    g_autoptr(MfrDest) dest = NULL;
    g_autoptr(MfrSource) src = NULL;
    ToolDestMem *mem = NULL;
    GThread *thread = NULL;
    DemoDest dd = { 0 };
    MfrGuestOptions go;
    MfrSourceConfig scfg;
    MfrDestConfig dcfg;
    MfrStats ss = { 0 }, ds = { 0 };
    MfrCompressionStats zs = { 0 }, zd = { 0 };
    MfrPlacement sp = { 0 }, dp = { 0 };
    ToolProgress progress;
    const char *memcmp_result = NULL;
    uint64_t reg_chunk = 0;

    if (!tool_parse(oc, "demo", &argc, &argv)) {
        tool_source_args_clear(&a);
        return TOOL_EXIT_USAGE;
    }
    if (argc > 1) {
        tool_source_args_clear(&a);
        return tool_usage_error("demo", "unexpected argument '%s'", argv[1]);
    }
    if (!tool_source_args_apply(&a, &go, &scfg, &reg_chunk, &error) ||
        !tool_check_memory(" (demo holds two copies: source and destination)", go.size, 2,
                           &error)) {
        tool_source_args_clear(&a);
        return tool_usage_error("demo", "%s", error->message);
    }
    FILE *info = a.json ? stderr : stdout;
    tool_progress_init(&progress, info, "source");

    listen_uri = pick_uri(&a, info, &error);
    if (!listen_uri) {
        code = tool_exit_code(error);
        if (code == TOOL_EXIT_USAGE) {
            tool_usage_error("demo", "%s", error->message);
        } else {
            fprintf(stderr, "mfrdma demo: %s\n", error->message);
        }
        goto out;
    }

    guest = mfr_guest_new(&go, &error);
    if (!guest) {
        fprintf(stderr, "mfrdma demo: %s\n", error->message);
        goto out;
    }
    tool_print_guest(info, guest, &go);
    if (tool_signals_interrupted(ctx->signals)) {
        g_set_error(&error, MFR_ERROR, MFR_ERROR_CANCELLED, "interrupted before the migration");
        fprintf(stderr, "mfrdma demo: %s\n", error->message);
        goto out;
    }

    mem = tool_dest_mem_new(go.thp, 0);
    mfr_dest_config_init(&dcfg);
    dcfg.uri = listen_uri;
    tool_random_token(dcfg.token);
    dcfg.timeout_ms = scfg.timeout_ms;
    dcfg.alloc_block = tool_dest_alloc_block;
    dcfg.alloc_opaque = mem;
    dcfg.memory_zeroed = true;
    /* one process, one set of transport options for both sides */
    dcfg.transport = scfg.transport;
    dcfg.registration_chunk = reg_chunk;
    dcfg.numa_node = scfg.numa_node;
    dest = mfr_dest_new(&dcfg, &error);
    /* the demo's destination accepts zstd (auto) whatever the source asks */
    if (!dest) {
        fprintf(stderr, "mfrdma demo: %s\n", error->message);
        code = tool_exit_code(error);
        goto out;
    }
    fprintf(info, "destination: listening on %s\n", mfr_dest_uri(dest));

    scfg.uri = mfr_dest_uri(dest);
    memcpy(scfg.token, dcfg.token, sizeof(scfg.token));
    scfg.progress = tool_progress_cb;
    scfg.progress_opaque = &progress;
    unsigned nblocks;
    const MfrRamBlock *blocks = mfr_guest_blocks(guest, &nblocks);
    src = mfr_source_new(&scfg, blocks, nblocks, mfr_guest_dirty_ops(), guest, &error);
    if (src && !tool_source_compression(&a, src, &error)) {
        g_clear_pointer(&src, mfr_source_free);
    }
    if (!src) {
        fprintf(stderr, "mfrdma demo: %s\n", error->message);
        code = tool_exit_code(error);
        goto out;
    }

    dd.dest = dest;
    thread = g_thread_new("demo-dest", dest_thread, &dd);
    tool_signals_watch(ctx->signals, src, dest);
    mfr_guest_start(guest, NULL);
    bool ok = mfr_source_run(src, &error);
    if (!ok) {
        /* A source that never connected would leave the destination waiting. */
        mfr_dest_cancel(dest);
    }
    g_thread_join(thread);
    thread = NULL;
    dest_error = g_steal_pointer(&dd.error);
    /* The engine stopped the writers at switchover; stop for good before comparing. */
    mfr_guest_stop(guest);
    tool_signals_watch(ctx->signals, NULL, NULL);
    tool_progress_finish(&progress);

    mfr_source_get_stats(src, &ss);
    mfr_dest_get_stats(dest, &ds);
    mfr_source_get_compression_stats(src, &zs);
    mfr_dest_get_compression_stats(dest, &zd);
    mfr_source_get_placement(src, &sp);
    mfr_dest_get_placement(dest, &dp);
    tool_print_summary(info, &ss, &ds, ok && !dest_error);
    tool_print_compression(info, &zs, &zd);
    tool_print_placement(info, &sp, &dp);
    tool_print_guest_writes(info, guest);

    if (!ok) {
        fprintf(stderr, "migration failed: %s\n", error->message);
        if (dest_error) {
            fprintf(stderr, "%s\n", dest_error->message);
        }
        code = tool_exit_code(error);
        goto out;
    }
    if (!dd.ok) {
        fprintf(stderr, "migration failed on the destination: %s\n",
                dest_error ? dest_error->message : "unknown error");
        code = tool_exit_code(dest_error);
        error = g_steal_pointer(&dest_error);
        goto out;
    }
    if (a.no_verify) {
        fprintf(info, "verification: skipped (--no-verify)\n");
        memcmp_result = "skipped";
        code = TOOL_EXIT_OK;
        goto out;
    }
    if (!tool_check_verified(info, &ss, nblocks, &error)) {
        code = TOOL_EXIT_VERIFY;
        goto out;
    }
    unsigned dn = 0;
    const MfrRamBlock *dblocks = mfr_dest_blocks(dest, &dn);
    if (!mfr_guest_compare(guest, dblocks, dn, &error)) {
        fprintf(info, "memcmp: FAILED: %s\n", error->message);
        memcmp_result = "mismatch";
        code = TOOL_EXIT_VERIFY;
        goto out;
    }
    fprintf(info, "memcmp: OK (%.1f MiB in %u block%s identical)\n",
            (double)ss.ram_bytes / (1024.0 * 1024.0), dn, dn == 1 ? "" : "s");
    memcmp_result = "ok";
    code = TOOL_EXIT_OK;

out:
    if (thread) {
        mfr_dest_cancel(dest);
        g_thread_join(thread);
        g_clear_error(&dd.error);
    }
    tool_signals_watch(ctx->signals, NULL, NULL);
    ToolSide side_src = { &ss, &zs, &sp }, side_dst = { &ds, &zd, &dp };
    code = finish(a.json, src ? &side_src : NULL, dest ? &side_dst : NULL, error, memcmp_result,
                  code);
    g_clear_pointer(&src, mfr_source_free);
    g_clear_pointer(&dest, mfr_dest_free);
    tool_dest_mem_free(mem);
    tool_progress_clear(&progress);
    tool_source_args_clear(&a);
    return code;
}
