/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfrdma command-line entry point: dispatches to the subcommands (demo, listen, migrate,
 * devices, bench) and answers help and --version itself.
 */
#include "devices.h"
#include "mfr-config.h"
#include "tool.h"

#include <errno.h>
#include <locale.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    const char *summary;
    ToolCommandFn fn;
} ToolCommand;

static int cmd_devices(ToolCtx *ctx, int argc, char **argv)
{
    return mfr_tool_devices(argc, argv);
}

static const ToolCommand commands[] = {
    { "demo", "migrate a synthetic guest to a destination in the same process", tool_demo },
    { "listen", "destination: receive one migration on URI", tool_listen },
    { "migrate", "source: migrate a synthetic guest to 'mfrdma listen' at URI", tool_migrate },
    { "devices", "list RDMA devices, ports and addresses", cmd_devices },
    { "bench", "benchmarks (see bench/run)", tool_bench },
};

static void print_help(FILE *out)
{
    fprintf(out, "Usage:\n  mfrdma COMMAND [OPTION...]\n\n"
                 "Live-migrate memory between processes or hosts with multifd channels over\n"
                 "RDMA or TCP.\n\nCommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "  %-10s %s\n", "help", "this text, or 'mfrdma help COMMAND'");
    fprintf(out, "\nOptions:\n  -h, --help     this text\n  --version      print the version\n"
                 "\nRun 'mfrdma COMMAND --help' for the options of a command.\n\n"
                 TOOL_EXIT_CODES_HELP "\n");
}

static const ToolCommand *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static int unknown_command(const char *name)
{
    fprintf(stderr, "mfrdma: unknown command '%s' (commands: demo, listen, migrate, devices, "
                    "bench, help)\nTry 'mfrdma --help'.\n", name);
    return TOOL_EXIT_USAGE;
}

/* Test seam of the fault matrix (tests/faults/matrix.py): with MFR_TOOL_TEST_SEAMS set, a
 * command that has ended (its session freed, its memory unmapped) says so and waits for its
 * stdin to close before the process exits, so that what it still holds (pinned pages, memory
 * regions, queue pairs: /proc/PID/status, `rdma resource`) can be checked on a live process. */
static void hold_exit(int code)
{
    if (!g_getenv("MFR_TOOL_TEST_SEAMS")) {
        return;
    }
    printf("held: exit status %d\n", code);
    fflush(stdout);
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EINTR)) {
            return;
        }
    }
}

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    if (argc < 2) {
        print_help(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
        (strcmp(name, "help") == 0 && argc == 2)) {
        print_help(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("mfrdma %s\n", MFR_VERSION);
        return TOOL_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        /* `mfrdma help CMD` is `mfrdma CMD --help`. */
        const ToolCommand *c = find_command(argv[2]);
        if (!c) {
            return unknown_command(argv[2]);
        }
        char *hargv[] = { argv[2], (char *)"--help", NULL };
        ToolCtx hctx = { 0 };
        return c->fn(&hctx, 2, hargv);
    }
    const ToolCommand *c = find_command(name);
    if (!c) {
        return unknown_command(name);
    }
    /* Before any thread exists, so all inherit the blocked SIGINT/SIGTERM. */
    ToolCtx ctx = { .signals = tool_signals_new() };
    int code = c->fn(&ctx, argc - 1, argv + 1);
    tool_signals_free(ctx.signals);
    hold_exit(code);
    return code;
}
