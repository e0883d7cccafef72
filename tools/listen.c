/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mfrdma listen URI`: the destination in its own process. It allocates each announced block
 * (fresh anonymous memory, so zero pages are never written), prints the real listening URI and
 * the token a source must present, serves one migration and reports.
 */
#include "tool.h"

static const char listen_description[] =
    "Listens on URI (tcp:HOST:PORT or rdma:HOST:PORT; port 0 picks a free one) and serves\n"
    "one migration from 'mfrdma migrate'. It prints the URI it really listens on and the\n"
    "token the source must pass with --token (a random one unless --token is given):\n"
    "\n"
    "  listening: tcp:0.0.0.0:40213\n"
    "  token: 6f1c0e...\n"
    "\n"
    "Examples:\n"
    "  mfrdma listen tcp:0.0.0.0:4444\n"
    "  mfrdma listen rdma:192.168.1.2:4444 --token 00112233445566778899aabbccddeeff\n"
    "  mfrdma listen tcp:0.0.0.0:4444 --compress off   # refuse compressed migrations\n"
    "\n"
    TOOL_EXIT_CODES_HELP;

/* The parsed command line into cfg; TOOL_EXIT_OK or the usage error's code (printed). */
static int listen_config(int argc, char **argv, const char *token, gint timeout_ms,
                         const char *max_ram_arg, const ToolRdmaArgs *rdma, MfrDestConfig *cfg,
                         uint64_t *max_ram)
{
    if (argc < 2) {
        return tool_usage_error("listen", "missing URI (example: tcp:0.0.0.0:4444)");
    }
    if (argc > 2) {
        return tool_usage_error("listen", "unexpected argument '%s'", argv[2]);
    }
    g_autoptr(GError) error = NULL;
    if (token && !tool_parse_token(token, cfg->token, &error)) {
        return tool_usage_error("listen", "%s", error->message);
    }
    if (!token) {
        tool_random_token(cfg->token);
    }
    if (!tool_check_range("--timeout", timeout_ms, 1, G_MAXINT, &error) ||
        !tool_rdma_args_apply(rdma, &cfg->transport, &cfg->registration_chunk, &error) ||
        (max_ram_arg && !tool_parse_size("--max-ram", max_ram_arg, max_ram, &error))) {
        return tool_usage_error("listen", "%s", error->message);
    }
    cfg->timeout_ms = (unsigned)timeout_ms;
    return TOOL_EXIT_OK;
}

/* Serves one migration with cfg (token and transport set); the exit code. */
static int listen_serve(ToolCtx *ctx, const char *uri, bool json, bool thp, uint64_t max_ram,
                        MfrCompression comp, MfrDestConfig *cfg)
{
    FILE *info = json ? stderr : stdout;
    ToolDestMem *mem = tool_dest_mem_new(thp, max_ram);
    ToolProgress progress;
    tool_progress_init(&progress, info, "destination");
    cfg->uri = uri;
    cfg->alloc_block = tool_dest_alloc_block;
    cfg->alloc_opaque = mem;
    cfg->memory_zeroed = true;
    cfg->progress = tool_progress_cb;
    cfg->progress_opaque = &progress;
    int code = TOOL_EXIT_FAILED;
    MfrStats st = { 0 };
    MfrCompressionStats zst = { 0 };
    MfrPlacement pl = { 0 };
    char hex[33];
    mfr_token_format(cfg->token, hex);
    g_autoptr(GError) error = NULL;
    g_autoptr(MfrDest) dest = mfr_dest_new(cfg, &error);
    if (dest && !mfr_dest_set_compression(dest, comp, &error)) {
        g_clear_pointer(&dest, mfr_dest_free);
    }
    if (!dest) {
        /* the message names the URI already */
        code = tool_exit_code(error);
        if (code == TOOL_EXIT_USAGE) {
            tool_usage_error("listen", "%s", error->message);
        } else {
            fprintf(stderr, "mfrdma listen: %s\n", error->message);
        }
        goto out;
    }
    /* Scripts read these two lines to start the source; flush before blocking. */
    fprintf(info, "listening: %s\ntoken: %s\n", mfr_dest_uri(dest), hex);
    fflush(info);

    tool_signals_watch(ctx->signals, NULL, dest);
    bool ok = mfr_dest_run(dest, &error);
    tool_signals_watch(ctx->signals, NULL, NULL);
    tool_progress_finish(&progress);
    mfr_dest_get_stats(dest, &st);
    mfr_dest_get_compression_stats(dest, &zst);
    mfr_dest_get_placement(dest, &pl);
    tool_print_summary(info, NULL, &st, ok);
    tool_print_compression(info, NULL, &zst);
    tool_print_placement(info, NULL, &pl);
    unsigned n = 0;
    const MfrRamBlock *blocks = ok ? mfr_dest_blocks(dest, &n) : NULL;
    for (unsigned i = 0; i < n; i++) {
        fprintf(info, "block %s: %.1f MiB, %u-byte pages\n", blocks[i].name,
                (double)blocks[i].length / (1024.0 * 1024.0), blocks[i].page_size);
    }
    if (!ok) {
        fprintf(stderr, "migration failed: %s\n", error->message);
        code = tool_exit_code(error);
    } else if (st.verified) {
        code = tool_check_verified(info, &st, n, &error) ? TOOL_EXIT_OK : TOOL_EXIT_VERIFY;
    } else {
        /* The source chose --no-verify: nothing was compared. */
        fprintf(info, "verification: skipped by the source\n");
        code = TOOL_EXIT_OK;
    }

out:
    if (json) {
        ToolSide side = { &st, &zst, &pl };
        tool_print_json(stdout, NULL, dest ? &side : NULL,
                        code == TOOL_EXIT_OK ? "ok" : code == TOOL_EXIT_VERIFY ? "verify-failed"
                                                                               : "failed",
                        error, NULL);
    }
    g_clear_pointer(&dest, mfr_dest_free);
    tool_dest_mem_free(mem);
    tool_progress_clear(&progress);
    return code;
}

int tool_listen(ToolCtx *ctx, int argc, char **argv)
{
    g_autofree char *token = NULL;
    g_autofree char *max_ram_arg = NULL;
    g_autofree char *compress = NULL;
    g_autofree char *numa_arg = NULL;
    gboolean json = FALSE, thp = FALSE, no_thp = FALSE;
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    gint timeout_ms = (gint)cfg.timeout_ms;
    ToolRdmaArgs rdma;
    tool_rdma_args_init(&rdma);
    const GOptionEntry entries[] = {
        { "token", 0, 0, G_OPTION_ARG_STRING, &token,
          "Token (32 hex digits) sources must present; default: a random one, printed", "HEX" },
        { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout_ms,
          "Fail when the source is silent this long, in ms (default 5000)", "MS" },
        { "max-ram", 0, 0, G_OPTION_ARG_STRING, &max_ram_arg,
          "Refuse a source whose blocks together exceed SIZE (default: this host's RAM + "
          "swap)", "SIZE" },
        { "numa-node", 0, 0, G_OPTION_ARG_STRING, &numa_arg,
          "NUMA node of the channel and registration threads and their buffers: N, auto (the "
          "RDMA device's or NIC's node, else the memory's) or off (default auto)", "N|auto|off" },
        { "no-thp", 0, 0, G_OPTION_ARG_NONE, &no_thp,
          "Do not madvise(MADV_HUGEPAGE) the received blocks (default: do)", NULL },
        { "thp", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &thp,
          "Accepted for old scripts: huge pages are the default", NULL },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json,
          "Print the stats as JSON on stdout; everything else goes to stderr", NULL },
        { "compress", 0, 0, G_OPTION_ARG_STRING, &compress,
          "off refuses a source that requires zstd compression; zstd or auto accept it "
          "(default auto)", "MODE" },
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) oc = g_option_context_new("URI - receive one migration");
    g_option_context_set_description(oc, listen_description);
    g_option_context_add_main_entries(oc, entries, NULL);
    tool_add_rdma_options(oc, &rdma, TOOL_SIDE_DEST);
    int code = TOOL_EXIT_USAGE;
    uint64_t max_ram = 0;
    if (tool_parse(oc, "listen", &argc, &argv)) {
        code = listen_config(argc, argv, token, timeout_ms, max_ram_arg, &rdma, &cfg, &max_ram);
    }
    MfrCompression comp = MFR_COMPRESSION_AUTO;
    g_autoptr(GError) error = NULL;
    if (code == TOOL_EXIT_OK && !tool_parse_compress(compress, 0, comp, &comp, &error)) {
        code = tool_usage_error("listen", "%s", error->message);
    }
    if (code == TOOL_EXIT_OK && thp && no_thp) {
        code = tool_usage_error("listen", "--thp and --no-thp contradict");
    }
    g_autoptr(GError) numa_err = NULL;
    if (code == TOOL_EXIT_OK && numa_arg &&
        !tool_parse_numa_node("--numa-node", numa_arg, &cfg.numa_node, &numa_err)) {
        code = tool_usage_error("listen", "%s", numa_err->message);
    }
    if (code == TOOL_EXIT_OK) {
        code = listen_serve(ctx, argv[1], json, !no_thp, max_ram, comp, &cfg);
    }
    tool_rdma_args_clear(&rdma);
    return code;
}
