/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mfrdma migrate URI --token HEX`: the source in its own process, migrating a synthetic guest
 * to a destination started with `mfrdma listen`. The transport follows the URI's scheme.
 */
#include "tool.h"

static const char migrate_description[] =
    "Migrates a synthetic guest to the destination listening on URI (as printed by\n"
    "'mfrdma listen'), presenting its token. The guest options are those of 'mfrdma demo'.\n"
    "\n"
    "Examples:\n"
    "  mfrdma migrate tcp:127.0.0.1:4444 --token 00112233445566778899aabbccddeeff\n"
    "  mfrdma migrate rdma:192.168.1.2:4444 --token $TOKEN --size 4G --channels 8\n"
    "  mfrdma migrate tcp:10.0.0.2:4444 --token $TOKEN --compress auto\n"
    "\n"
    TOOL_EXIT_CODES_HELP;

/* One digest over every block of the source guest. */
static uint64_t guest_digest(MfrGuest *guest)
{
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(guest, &n);
    uint64_t d[64] = { 0 };
    for (unsigned i = 0; i < n && i < G_N_ELEMENTS(d); i++) {
        d[i] = mfr_digest(b[i].host, b[i].length);
    }
    return mfr_digest(d, sizeof(d));
}

static int run(ToolCtx *ctx, const ToolSourceArgs *a, const MfrGuestOptions *go,
               MfrSourceConfig *cfg, const char *uri)
{
    FILE *info = a->json ? stderr : stdout;
    ToolProgress progress;
    tool_progress_init(&progress, info, "source");
    MfrStats st = { 0 };
    MfrCompressionStats zst = { 0 };
    MfrPlacement pl = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(MfrSource) src = NULL;
    g_autoptr(MfrGuest) guest = mfr_guest_new(go, &error);
    int code = TOOL_EXIT_FAILED;
    if (!guest) {
        fprintf(stderr, "mfrdma migrate: %s\n", error->message);
        goto out;
    }
    tool_print_guest(info, guest, go);
    cfg->uri = uri;
    cfg->progress = tool_progress_cb;
    cfg->progress_opaque = &progress;
    unsigned n;
    const MfrRamBlock *blocks = mfr_guest_blocks(guest, &n);
    src = mfr_source_new(cfg, blocks, n, mfr_guest_dirty_ops(), guest, &error);
    if (src && !tool_source_compression(a, src, &error)) {
        g_clear_pointer(&src, mfr_source_free);
    }
    if (!src) {
        fprintf(stderr, "mfrdma migrate: %s: %s\n", uri, error->message);
        code = tool_exit_code(error);
        goto out;
    }
    /* An idle guest's RAM can only change if the migration wrote it: however the migration
     * ends, the source says whether its RAM is what it was (the fault matrix reads this). */
    bool idle = go->dirty_rate_mbps == 0;
    uint64_t digest0 = idle ? guest_digest(guest) : 0;
    tool_signals_watch(ctx->signals, src, NULL);
    mfr_guest_start(guest, NULL);
    bool ok = mfr_source_run(src, &error);
    mfr_guest_stop(guest);
    tool_signals_watch(ctx->signals, NULL, NULL);
    tool_progress_finish(&progress);
    mfr_source_get_stats(src, &st);
    mfr_source_get_compression_stats(src, &zst);
    mfr_source_get_placement(src, &pl);
    tool_print_summary(info, &st, NULL, ok);
    tool_print_compression(info, &zst, NULL);
    tool_print_placement(info, &pl, NULL);
    tool_print_guest_writes(info, guest);
    if (idle) {
        uint64_t digest1 = guest_digest(guest);
        fprintf(digest1 == digest0 ? info : stderr, "source RAM: %s (digest %016" G_GINT64_MODIFIER
                "x before, %016" G_GINT64_MODIFIER "x after)\n",
                digest1 == digest0 ? "unchanged" : "CHANGED", digest0, digest1);
    }
    if (!ok) {
        fprintf(stderr, "migration failed: %s\n", error->message);
        code = tool_exit_code(error);
    } else if (a->no_verify) {
        fprintf(info, "verification: skipped (--no-verify)\n");
        code = TOOL_EXIT_OK;
    } else {
        code = tool_check_verified(info, &st, n, &error) ? TOOL_EXIT_OK : TOOL_EXIT_VERIFY;
    }

out:
    if (a->json) {
        ToolSide side = { &st, &zst, &pl };
        tool_print_json(stdout, src ? &side : NULL, NULL,
                        code == TOOL_EXIT_OK ? "ok" : code == TOOL_EXIT_VERIFY ? "verify-failed"
                                                                               : "failed",
                        error, NULL);
    }
    g_clear_pointer(&src, mfr_source_free);
    g_clear_pointer(&guest, mfr_guest_free);
    tool_progress_clear(&progress);
    return code;
}

int tool_migrate(ToolCtx *ctx, int argc, char **argv)
{
    ToolSourceArgs a;
    tool_source_args_init(&a);
    g_autoptr(GOptionContext) oc = g_option_context_new("URI - migrate a synthetic guest to URI");
    g_option_context_set_description(oc, migrate_description);
    const GOptionEntry token_entry[] = {
        { "token", 0, 0, G_OPTION_ARG_STRING, &a.token,
          "Token printed by 'mfrdma listen' (32 hex digits; required)", "HEX" },
        G_OPTION_ENTRY_NULL,
    };
    g_option_context_add_main_entries(oc, token_entry, NULL);
    tool_add_source_options(oc, &a, false);
    g_autoptr(GError) error = NULL;
    MfrGuestOptions go;
    MfrSourceConfig cfg;
    int code = TOOL_EXIT_USAGE;
    if (!tool_parse(oc, "migrate", &argc, &argv)) {
        goto usage_out;
    }
    if (argc < 2) {
        code = tool_usage_error("migrate", "missing URI (as printed by 'mfrdma listen')");
        goto usage_out;
    }
    if (argc > 2) {
        code = tool_usage_error("migrate", "unexpected argument '%s'", argv[2]);
        goto usage_out;
    }
    /* before the guest is built and filled (seconds for gigabytes) */
    if (!mfr_source_check_uri(argv[1], &error)) {
        code = tool_usage_error("migrate", "%s", error->message);
        goto usage_out;
    }
    if (!tool_source_args_apply(&a, &go, &cfg, NULL, &error) ||
        !tool_check_memory("", go.size, 1, &error)) {
        code = tool_usage_error("migrate", "%s", error->message);
        goto usage_out;
    }
    if (!a.token) {
        code = tool_usage_error("migrate", "--token is required (the token printed by "
                                           "'mfrdma listen')");
        goto usage_out;
    }
    if (!tool_parse_token(a.token, cfg.token, &error)) {
        code = tool_usage_error("migrate", "%s", error->message);
        goto usage_out;
    }

    code = run(ctx, &a, &go, &cfg, argv[1]);

usage_out:
    tool_source_args_clear(&a);
    return code;
}
