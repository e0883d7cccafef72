/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the mfrdma subcommands: option parsing with errors that say what to fix,
 * the Ctrl-C watcher thread, destination memory, progress lines and the final summary.
 */
#include "tool.h"

#ifdef MFR_TOOL_FAULT_SEAMS
#include "engine.h" /* the source's fault seams: tests/faults/mfrdma-seams only */
#endif
#include "mfr-config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/* ---- signals ---------------------------------------------------------------------------- */

struct ToolSignals {
    pthread_t thread;
    bool thread_started;
    sigset_t set;
    GMutex lock;       /* guards everything below; held while cancelling */
    MfrSource *src;
    MfrDest *dst;
    int count;         /* SIGINT/SIGTERM received */
    bool quitting;     /* tool_signals_free() asked the thread to return */
};

/* Test seam of the fault matrix (MFR_TOOL_TEST_SEAMS, tests/faults/matrix.py), in the build
 * of the tool on the engine's internal library only (the installed library exports no seam):
 * SIGUSR2 makes the source's channel 0 fail as a broken link would: over rdma the next pages
 * it writes complete in error (a bad rkey: the QPs of both sides go to the error state), over
 * tcp its next I/O fails with EIO. What happened is said on stderr, for the matrix to check. */
static void signal_inject(ToolSignals *s)
{
#ifdef MFR_TOOL_FAULT_SEAMS
    const char *what = "nothing: no source channel yet";
    if (s->src && mfr_source_inject_completion_error(s->src, 0)) {
        what = "an error completion on channel 0";
    } else if (s->src && mfr_source_inject_fault(s->src, 0, EIO)) {
        what = "EIO on channel 0";
    } else if (!s->src) {
        what = "nothing: not a source";
    }
#else
    const char *what = "nothing: this build has no fault seams (tests/faults/mfrdma-seams has)";
#endif
    fprintf(stderr, "mfrdma: test seam: injected %s\n", what);
}

/* The only thread that sees SIGINT/SIGTERM: the rest have them blocked, so the cancel calls
 * below run in ordinary thread context rather than in a signal handler. */
static void *signal_thread(void *data)
{
    ToolSignals *s = data;
    for (;;) {
        int sig = 0;
        if (sigwait(&s->set, &sig) != 0) {
            continue;
        }
        g_mutex_lock(&s->lock);
        if (sig == SIGUSR1) {
            if (s->quitting) {
                g_mutex_unlock(&s->lock);
                return NULL;
            }
            g_mutex_unlock(&s->lock);
            continue;
        }
        if (sig == SIGUSR2) {
            signal_inject(s);
            g_mutex_unlock(&s->lock);
            continue;
        }
        s->count++;
        if (s->count >= 2) {
            static const char msg[] = "\nmfrdma: interrupted twice, exiting now\n";
            ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
            (void)r;
            _exit(TOOL_EXIT_FAILED);
        }
        fprintf(stderr, "\nmfrdma: interrupted: cancelling the migration "
                        "(press Ctrl-C again to exit at once)\n");
        if (s->src) {
            mfr_source_cancel(s->src);
        }
        if (s->dst) {
            mfr_dest_cancel(s->dst);
        }
        g_mutex_unlock(&s->lock);
    }
}

ToolSignals *tool_signals_new(void)
{
    ToolSignals *s = g_new0(ToolSignals, 1);
    g_mutex_init(&s->lock);
    sigemptyset(&s->set);
    sigaddset(&s->set, SIGINT);
    sigaddset(&s->set, SIGTERM);
    sigaddset(&s->set, SIGUSR1);
    if (g_getenv("MFR_TOOL_TEST_SEAMS")) {
        sigaddset(&s->set, SIGUSR2);
    }
    /* Threads created from here on inherit the mask. */
    pthread_sigmask(SIG_BLOCK, &s->set, NULL);
    if (pthread_create(&s->thread, NULL, signal_thread, s) == 0) {
        s->thread_started = true;
    } else {
        /* Without the watcher Ctrl-C keeps its default action: exit at once. */
        pthread_sigmask(SIG_UNBLOCK, &s->set, NULL);
    }
    return s;
}

void tool_signals_free(ToolSignals *s)
{
    if (!s) {
        return;
    }
    if (s->thread_started) {
        g_mutex_lock(&s->lock);
        s->quitting = true;
        g_mutex_unlock(&s->lock);
        pthread_kill(s->thread, SIGUSR1);
        pthread_join(s->thread, NULL);
    }
    g_mutex_clear(&s->lock);
    g_free(s);
}

void tool_signals_watch(ToolSignals *s, MfrSource *src, MfrDest *dst)
{
    g_mutex_lock(&s->lock);
    s->src = src;
    s->dst = dst;
    if (s->count > 0) {
        if (src) {
            mfr_source_cancel(src);
        }
        if (dst) {
            mfr_dest_cancel(dst);
        }
    }
    g_mutex_unlock(&s->lock);
}

bool tool_signals_interrupted(ToolSignals *s)
{
    g_mutex_lock(&s->lock);
    bool r = s->count > 0;
    g_mutex_unlock(&s->lock);
    return r;
}

/* ---- parsing ---------------------------------------------------------------------------- */

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "mfrdma %s: %s\nTry 'mfrdma %s --help'.\n", cmd, msg, cmd);
    return TOOL_EXIT_USAGE;
}

bool tool_parse(GOptionContext *ctx, const char *cmd, int *argc, char ***argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *prgname = g_strdup_printf("mfrdma %s", cmd);
    g_set_prgname(prgname);
    if (!g_option_context_parse(ctx, argc, argv, &error)) {
        tool_usage_error(cmd, "%s", error->message);
        return false;
    }
    return true;
}

bool tool_parse_size(const char *opt, const char *text, uint64_t *out, GError **error)
{
    const char *p = text;
    char *end = NULL;
    uint64_t shift = 0;
    errno = 0;
    guint64 v = g_ascii_isdigit(*p) ? g_ascii_strtoull(p, &end, 10) : 0;
    bool ok = end && end != p && errno == 0;
    if (ok) {
        switch (g_ascii_toupper(*end)) {
        case '\0': break;
        case 'K': shift = 10; end++; break;
        case 'M': shift = 20; end++; break;
        case 'G': shift = 30; end++; break;
        case 'T': shift = 40; end++; break;
        default: ok = false;
        }
    }
    if (ok && shift && *end) {
        /* Accept 512M, 512MB, 512MiB (all binary). */
        ok = g_ascii_strcasecmp(end, "B") == 0 || g_ascii_strcasecmp(end, "iB") == 0;
    }
    if (ok && shift && v > (G_MAXUINT64 >> shift)) {
        ok = false;
    }
    if (!ok || v == 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: '%s' is not a size (examples: 512M, 2G)", opt, text);
        return false;
    }
    *out = v << shift;
    return true;
}

bool tool_parse_numa_node(const char *opt, const char *text, int *out, GError **error)
{
    guint64 v = 0;
    if (strcmp(text, "auto") == 0) {
        *out = MFR_NUMA_AUTO;
    } else if (strcmp(text, "off") == 0) {
        *out = MFR_NUMA_OFF;
    } else if (g_ascii_string_to_unsigned(text, 10, 0, 4095, &v, NULL)) {
        *out = (int)v;
    } else {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: '%s' is not a NUMA node (a number, auto or off)", opt, text);
        return false;
    }
    return true;
}

bool tool_parse_rate(const char *opt, const char *text, uint64_t *out, GError **error)
{
    if (strcmp(text, "0") == 0) {
        *out = 0;
        return true;
    }
    if (!tool_parse_size(opt, text, out, NULL)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: '%s' is not a rate in bytes per second (examples: 125M, 1G, 500K, "
                    "0 for unlimited)", opt, text);
        return false;
    }
    return true;
}

bool tool_parse_token(const char *text, uint8_t token[16], GError **error)
{
    g_autoptr(GError) err = NULL;
    if (!mfr_token_parse(text, token, &err)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "--token: %s (use the token printed by 'mfrdma listen')", err->message);
        return false;
    }
    return true;
}

void tool_random_token(uint8_t token[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(token + got, 16 - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* No kernel entropy interface: GLib's generator still makes a guess unlikely. */
            for (; got < 16; got++) {
                token[got] = (uint8_t)g_random_int();
            }
            return;
        }
        got += (size_t)n;
    }
}

int tool_exit_code(const GError *error)
{
    if (!error) {
        return TOOL_EXIT_OK;
    }
    if (error->domain == MFR_ERROR && error->code == MFR_ERROR_VERIFY) {
        return TOOL_EXIT_VERIFY;
    }
    if (error->domain == MFR_ERROR && error->code == MFR_ERROR_USAGE) {
        return TOOL_EXIT_USAGE;
    }
    return TOOL_EXIT_FAILED;
}

/* ---- source options (demo, migrate) ------------------------------------------------------ */

void tool_source_args_init(ToolSourceArgs *a)
{
    MfrSourceConfig cfg;
    MfrGuestOptions go;
    mfr_source_config_init(&cfg);
    mfr_guest_options_init(&go);
    *a = (ToolSourceArgs){
        .channels = (gint)cfg.channels,
        .blocks = (gint)go.nblocks,
        .downtime_ms = (gint)cfg.downtime_ms,
        .max_rounds = (gint)cfg.max_rounds,
        .timeout_ms = (gint)cfg.timeout_ms,
        .writers = (gint)go.writers,
        .seed = (gint64)go.seed,
    };
    tool_rdma_args_init(&a->rdma);
}

void tool_source_args_clear(ToolSourceArgs *a)
{
    g_free(a->size);
    g_free(a->dirty_rate);
    g_free(a->mix);
    g_free(a->transport);
    g_free(a->address);
    g_free(a->token);
    g_free(a->compress);
    g_free(a->max_bandwidth);
    g_free(a->numa_node);
    tool_rdma_args_clear(&a->rdma);
}

void tool_add_source_options(GOptionContext *ctx, ToolSourceArgs *a, bool with_transport)
{
    const GOptionEntry guest[] = {
        { "size", 's', 0, G_OPTION_ARG_STRING, &a->size,
          "Guest RAM over all blocks (K/M/G/T are binary; default 1G)", "SIZE" },
        { "blocks", 'b', 0, G_OPTION_ARG_INT, &a->blocks,
          "Number of RAM blocks ram0, ram1, ... (default 1)", "N" },
        { "mix", 0, 0, G_OPTION_ARG_STRING, &a->mix,
          "Page mix in percent random:compressible:zero (default 40:40:20)", "R:C:Z" },
        { "dirty-rate", 'd', 0, G_OPTION_ARG_STRING, &a->dirty_rate,
          "Guest writers dirty this many MB/s while migrating; 0 = idle (default 64)", "MB/S" },
        { "writers", 0, 0, G_OPTION_ARG_INT, &a->writers,
          "Writer threads sharing the dirty rate (default 1)", "N" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &a->seed,
          "Seed of the guest contents and writers (default 1)", "N" },
        { "no-thp", 0, 0, G_OPTION_ARG_NONE, &a->no_thp,
          "Do not madvise(MADV_HUGEPAGE) guest and destination memory (default: do, as "
          "QEMU does with guest RAM)", NULL },
        { "thp", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &a->thp,
          "Accepted for old scripts: huge pages are the default", NULL },
        { "hugetlb", 0, 0, G_OPTION_ARG_NONE, &a->hugetlb,
          "Back the guest with 2 MiB hugetlbfs pages (needs vm.nr_hugepages)", NULL },
        G_OPTION_ENTRY_NULL,
    };
    const GOptionEntry mig[] = {
        { "channels", 'c', 0, G_OPTION_ARG_INT, &a->channels,
          "Data channels (default 4)", "N" },
        { "downtime", 0, 0, G_OPTION_ARG_INT, &a->downtime_ms,
          "Downtime limit for the switchover in ms (default 300)", "MS" },
        { "max-rounds", 0, 0, G_OPTION_ARG_INT, &a->max_rounds,
          "Precopy rounds before giving up (default 30)", "N" },
        { "force-switchover", 0, 0, G_OPTION_ARG_NONE, &a->force_switchover,
          "Switch over at --max-rounds instead of failing to converge", NULL },
        { "no-verify", 0, 0, G_OPTION_ARG_NONE, &a->no_verify,
          "Skip the per-block digests (and, in demo, the memcmp)", NULL },
        { "timeout", 't', 0, G_OPTION_ARG_INT, &a->timeout_ms,
          "Fail when the peer is silent this long, in ms (default 5000)", "MS" },
        { "numa-node", 0, 0, G_OPTION_ARG_STRING, &a->numa_node,
          "NUMA node of the channel and registration threads and their buffers: N, auto (the "
          "RDMA device's or NIC's node, else the guest memory's) or off (default auto)",
          "N|auto|off" },
        { "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &a->max_bandwidth,
          "Cap on the wire, bytes per second over all channels (K/M/G binary as for --size: "
          "125M, 1G; default 0 = unlimited)", "RATE" },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &a->json,
          "Print the stats as JSON on stdout; progress and messages go to stderr", NULL },
        { "compress", 0, 0, G_OPTION_ARG_STRING, &a->compress,
          "zstd on the data channels: off, zstd (every packet; the destination must accept "
          "it) or auto (per packet, while it pays; off if the destination refuses) "
          "(default off)", "MODE" },
        { "compress-level", 0, 0, G_OPTION_ARG_INT, &a->compress_level,
          "zstd level; negative levels are faster (default 1)", "N" },
        G_OPTION_ENTRY_NULL,
    };
    const GOptionEntry xport[] = {
        { "transport", 'T', 0, G_OPTION_ARG_STRING, &a->transport,
          "tcp, rdma or auto: rdma when a device is available (default auto)", "NAME" },
        { "address", 'a', 0, G_OPTION_ARG_STRING, &a->address,
          "Local address for rdma (default $MFR_RDMA_ADDR, else the device's IPv4 address)",
          "ADDR" },
        G_OPTION_ENTRY_NULL,
    };
    /* All in the main group: --help must show --size and friends without --help-all. */
    g_option_context_add_main_entries(ctx, guest, NULL);
    g_option_context_add_main_entries(ctx, mig, NULL);
    tool_add_rdma_options(ctx, &a->rdma,
                          with_transport ? TOOL_SIDE_SOURCE | TOOL_SIDE_DEST : TOOL_SIDE_SOURCE);
    if (with_transport) {
        g_option_context_add_main_entries(ctx, xport, NULL);
    }
}

/* ---- transport options (demo, listen, migrate) ------------------------------------------- */

void tool_rdma_args_init(ToolRdmaArgs *a)
{
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    *a = (ToolRdmaArgs){ .gid_index = cfg.transport.gid_index };
}

void tool_rdma_args_clear(ToolRdmaArgs *a)
{
    g_free(a->rdma_dev);
    g_free(a->registration_chunk);
}

void tool_add_rdma_options(GOptionContext *ctx, ToolRdmaArgs *a, unsigned sides)
{
    const GOptionEntry rdma[] = {
        { "rdma-dev", 0, 0, G_OPTION_ARG_STRING, &a->rdma_dev,
          "RDMA device to use instead of the one owning the address", "DEV" },
        { "rdma-port", 0, 0, G_OPTION_ARG_INT, &a->rdma_port,
          "RDMA port: with --rdma-dev (source) the one to use, else a check of the route "
          "(default: any)", "N" },
        { "gid-index", 0, 0, G_OPTION_ARG_INT, &a->gid_index,
          "GID table index: with --rdma-dev (source) the one to use, else a check of the route "
          "(default: any)", "N" },
        { "odp", 0, 0, G_OPTION_ARG_NONE, &a->odp,
          "rdma: register with on-demand paging (pins nothing; needs device support)", NULL },
        { "registration-threads", 0, 0, G_OPTION_ARG_INT, &a->registration_threads,
          "rdma: threads that register (destination: populate and register) the blocks "
          "(default: one per CPU)", "N" },
        { "rc-retry", 0, 0, G_OPTION_ARG_INT, &a->rc_retry,
          "rdma: RC transport retries 1-7 before a connection fails (default 7)", "N" },
        { "rc-timeout", 0, 0, G_OPTION_ARG_INT, &a->rc_timeout,
          "rdma: ACK timeout exponent 1-31, 4.096 us * 2^N per try (default: rdma_cm's)", "N" },
        G_OPTION_ENTRY_NULL,
    };
    const GOptionEntry source[] = {
        { "zerocopy", 0, 0, G_OPTION_ARG_NONE, &a->zerocopy,
          "tcp: send pages with MSG_ZEROCOPY (pays off on real NICs, not on loopback)", NULL },
        G_OPTION_ENTRY_NULL,
    };
    const GOptionEntry dest[] = {
        { "registration-chunk", 0, 0, G_OPTION_ARG_STRING, &a->registration_chunk,
          "rdma: the destination registers (and announces) its RAM in chunks of SIZE while "
          "the source sends (default: up to 64M, ~8 per registration thread)", "SIZE" },
        G_OPTION_ENTRY_NULL,
    };
    g_option_context_add_main_entries(ctx, rdma, NULL);
    if (sides & TOOL_SIDE_SOURCE) {
        g_option_context_add_main_entries(ctx, source, NULL);
    }
    if (sides & TOOL_SIDE_DEST) {
        g_option_context_add_main_entries(ctx, dest, NULL);
    }
}

bool tool_rdma_args_apply(const ToolRdmaArgs *a, MfrTransportConfig *t,
                          uint64_t *registration_chunk, GError **error)
{
    if (!tool_check_range("--rdma-port", a->rdma_port, 0, 255, error) ||
        !tool_check_range("--gid-index", a->gid_index, -1, 65535, error) ||
        !tool_check_range("--registration-threads", a->registration_threads, 0, 16, error) ||
        !tool_check_range("--rc-retry", a->rc_retry, 0, 7, error) ||
        !tool_check_range("--rc-timeout", a->rc_timeout, 0, 31, error)) {
        return false;
    }
    if (registration_chunk) {
        *registration_chunk = 0;
        if (a->registration_chunk &&
            !tool_parse_size("--registration-chunk", a->registration_chunk,
                             registration_chunk, error)) {
            return false;
        }
    }
    *t = (MfrTransportConfig){
        .rdma_dev = a->rdma_dev,
        .rdma_port = a->rdma_port,
        .gid_index = a->gid_index,
        .odp = a->odp,
        .zerocopy = a->zerocopy,
        .registration_threads = (unsigned)a->registration_threads,
        .rc_retry = (unsigned)a->rc_retry,
        .rc_timeout = (unsigned)a->rc_timeout,
    };
    return true;
}

bool tool_check_range(const char *opt, gint v, gint lo, gint hi, GError **error)
{
    if (v < lo || v > hi) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "%s: %d is out of range (%d..%d)",
                    opt, v, lo, hi);
        return false;
    }
    return true;
}

bool tool_parse_compress(const char *text, gint level, MfrCompression def, MfrCompression *mode,
                         GError **error)
{
    *mode = def;
    if (text && !mfr_compression_parse(text, mode, error)) {
        g_prefix_error(error, "--compress: ");
        return false;
    }
    if (!mfr_compression_check(*mode, level, error)) {
        g_prefix_error(error, "--compress-level: ");
        return false;
    }
    return true;
}

bool tool_source_compression(const ToolSourceArgs *a, MfrSource *src, GError **error)
{
    return mfr_source_set_compression(src, a->comp_mode, a->compress_level, error);
}

bool tool_source_args_apply(ToolSourceArgs *a, MfrGuestOptions *go, MfrSourceConfig *cfg,
                            uint64_t *registration_chunk, GError **error)
{
    mfr_guest_options_init(go);
    mfr_source_config_init(cfg);
    if (!tool_parse_compress(a->compress, a->compress_level, MFR_COMPRESSION_OFF,
                             &a->comp_mode, error)) {
        return false;
    }
    if (a->size && !tool_parse_size("--size", a->size, &go->size, error)) {
        return false;
    }
    if (a->max_bandwidth &&
        !tool_parse_rate("--max-bandwidth", a->max_bandwidth, &cfg->max_bandwidth, error)) {
        return false;
    }
    if (a->numa_node && !tool_parse_numa_node("--numa-node", a->numa_node, &cfg->numa_node,
                                               error)) {
        return false;
    }
    if (a->mix && !mfr_guest_parse_mix(a->mix, go, error)) {
        g_prefix_error(error, "--mix: ");
        return false;
    }
    if (a->dirty_rate) {
        char *end = NULL;
        double r = g_ascii_strtod(a->dirty_rate, &end);
        if (end == a->dirty_rate || *end || !isfinite(r) || r < 0) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                        "--dirty-rate: '%s' is not a rate in MB/s (examples: 0, 64, 250.5)",
                        a->dirty_rate);
            return false;
        }
        go->dirty_rate_mbps = r;
    }
    if (!tool_check_range("--channels", a->channels, 1, 64, error) ||
        !tool_check_range("--blocks", a->blocks, 1, 64, error) ||
        !tool_check_range("--writers", a->writers, 1, 64, error) ||
        !tool_check_range("--downtime", a->downtime_ms, 1, 3600 * 1000, error) ||
        !tool_check_range("--max-rounds", a->max_rounds, 1, 1000000, error) ||
        !tool_check_range("--timeout", a->timeout_ms, 1, G_MAXINT, error) ||
        !tool_rdma_args_apply(&a->rdma, &cfg->transport, registration_chunk, error)) {
        return false;
    }
    uint64_t page = a->hugetlb ? (2u << 20) : 4096u;
    if (go->size % page != 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "--size: %" G_GUINT64_FORMAT " bytes is not a multiple of the "
                    "%" G_GUINT64_FORMAT "-byte page size", go->size, page);
        return false;
    }
    if (go->size / page < (uint64_t)a->blocks) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "--blocks: %d blocks need at least %d pages of guest RAM (--size)",
                    a->blocks, a->blocks);
        return false;
    }
    go->nblocks = (unsigned)a->blocks;
    go->writers = (unsigned)a->writers;
    go->seed = (uint64_t)a->seed;
    if (a->thp && a->no_thp) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "--thp and --no-thp contradict");
        return false;
    }
    go->thp = !a->no_thp;
    go->hugetlb = a->hugetlb;

    cfg->channels = (unsigned)a->channels;
    cfg->downtime_ms = (unsigned)a->downtime_ms;
    cfg->max_rounds = (unsigned)a->max_rounds;
    cfg->force_switchover = a->force_switchover;
    cfg->verify = !a->no_verify;
    cfg->timeout_ms = (unsigned)a->timeout_ms;
    return true;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

/* "1.5 GiB": ASCII only, as it may travel in an ERROR message. */
static char *size_str(uint64_t b)
{
    static const char *const unit[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)b;
    unsigned u = 0;
    while (v >= 1024 && u + 1 < G_N_ELEMENTS(unit)) {
        v /= 1024;
        u++;
    }
    return u ? g_strdup_printf("%.1f %s", v, unit[u]) : g_strdup_printf("%" G_GUINT64_FORMAT
                                                                         " bytes", b);
}

/* ---- destination memory ----------------------------------------------------------------- */

typedef struct {
    void *host;
    uint64_t length;
} ToolMapping;

struct ToolDestMem {
    GMutex lock; /* alloc_block runs on the destination's thread */
    GArray *maps;
    bool thp;
    uint64_t limit;   /* bytes all blocks together may take */
    bool limit_given; /* --max-ram, not RAM + swap */
    uint64_t mapped;  /* bytes of the blocks mapped so far; under lock */
};

ToolDestMem *tool_dest_mem_new(bool thp, uint64_t max_ram)
{
    ToolDestMem *m = g_new0(ToolDestMem, 1);
    g_mutex_init(&m->lock);
    m->maps = g_array_new(FALSE, FALSE, sizeof(ToolMapping));
    m->thp = thp;
    m->limit = max_ram;
    m->limit_given = max_ram > 0;
    struct sysinfo si;
    if (!m->limit_given && sysinfo(&si) == 0) {
        m->limit = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
    }
    if (!m->limit) {
        m->limit = UINT64_MAX; /* unknown: let mmap decide */
    }
    return m;
}

void tool_dest_mem_free(ToolDestMem *m)
{
    if (!m) {
        return;
    }
    for (guint i = 0; i < m->maps->len; i++) {
        ToolMapping *t = &g_array_index(m->maps, ToolMapping, i);
        munmap(t->host, t->length);
    }
    g_array_free(m->maps, TRUE);
    g_mutex_clear(&m->lock);
    g_free(m);
}

bool tool_dest_alloc_block(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                           void **host, GError **error)
{
    ToolDestMem *m = opaque;
    /* The source announces the sizes: without this, a block of any size is mapped (lazily,
     * so it looks fine) and the host runs out of memory only as pages arrive. */
    g_mutex_lock(&m->lock);
    uint64_t before = m->mapped;
    bool fits = length <= m->limit - MIN(before, m->limit);
    if (fits) {
        m->mapped += length;
    }
    g_mutex_unlock(&m->lock);
    if (!fits) {
        g_autofree char *len_s = size_str(length);
        g_autofree char *before_s = size_str(before);
        g_autofree char *limit_s = size_str(m->limit);
        g_autofree char *after = before ? g_strdup_printf(" (after %s of other blocks)",
                                                          before_s) : g_strdup("");
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "%s%s exceed the %s %s", len_s, after,
                    limit_s, m->limit_given ? "of --max-ram" : "this host can allocate (RAM + "
                                                               "swap; see --max-ram)");
        return false;
    }
    /* Huge pages reserved at mmap time (no MAP_NORESERVE): a shortage is an error here, not
     * a SIGBUS when the first page arrives. */
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (page_size > 4096 ? MAP_HUGETLB : MAP_NORESERVE);
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        g_mutex_lock(&m->lock);
        m->mapped -= length;
        g_mutex_unlock(&m->lock);
        /* the engine prefixes "destination: block 'NAME': " */
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED,
                    "cannot allocate %" G_GUINT64_FORMAT " MiB in %u-byte pages: mmap: %s",
                    length >> 20, page_size, g_strerror(err));
        return false;
    }
    if (m->thp && page_size == 4096) {
        (void)madvise(p, length, MADV_HUGEPAGE); /* advisory: cheaper first touch */
    }
    g_mutex_lock(&m->lock);
    g_array_append_val(m->maps, ((ToolMapping){ .host = p, .length = length }));
    g_mutex_unlock(&m->lock);
    *host = p;
    return true;
}

/* ---- progress --------------------------------------------------------------------------- */

void tool_progress_init(ToolProgress *p, FILE *out, const char *side)
{
    *p = (ToolProgress){ .out = out, .tty = isatty(fileno(out)) == 1, .side = side,
                         .last_phase = MFR_PHASE_SETUP };
    const char *pause = g_getenv("MFR_TOOL_TEST_SEAMS") ? g_getenv("MFR_TOOL_PAUSE_MS") : NULL;
    if (pause && strcmp(side, "source") == 0) {
        p->pause_ms = (unsigned)MIN(g_ascii_strtoull(pause, NULL, 10), 10000);
    }
    g_mutex_init(&p->lock);
}

void tool_progress_clear(ToolProgress *p)
{
    g_mutex_clear(&p->lock);
}

void tool_progress_cb(const MfrProgress *pr, void *opaque)
{
    ToolProgress *p = opaque;
    gint64 now = g_get_monotonic_time();
    gint64 interval = p->tty ? G_USEC_PER_SEC / 10 : G_USEC_PER_SEC;
    g_mutex_lock(&p->lock);
    if (pr->phase == p->last_phase && p->last_us && now - p->last_us < interval) {
        g_mutex_unlock(&p->lock);
        return;
    }
    MfrPhase phase_before = p->last_phase;
    p->last_us = now;
    p->last_phase = pr->phase;
    double rate = pr->throughput_bps;
    if ((pr->phase == MFR_PHASE_DONE || pr->phase == MFR_PHASE_FAILED) && pr->elapsed_s > 0) {
        rate = (double)pr->sent_bytes / pr->elapsed_s; /* the final line shows the average */
    } else if (rate <= 0 && pr->elapsed_s > p->last_elapsed) {
        rate = (double)(pr->sent_bytes - MIN(pr->sent_bytes, p->last_sent)) /
               (pr->elapsed_s - p->last_elapsed);
    }
    p->last_sent = pr->sent_bytes;
    p->last_elapsed = pr->elapsed_s;
    double pct = pr->round_bytes ? 100.0 * (double)pr->round_done / (double)pr->round_bytes : 0;
    pct = MIN(pct, 100.0);
    if (p->tty) {
        char bar[21];
        unsigned fill = (unsigned)(pct / 5.0);
        for (unsigned i = 0; i < 20; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[20] = '\0';
        fprintf(p->out, "\r%-10s round %-3" G_GUINT64_FORMAT " [%s] %3.0f%%  %8.1f MB/s  "
                        "remaining %8.1f MiB  %6.1f s\033[K",
                mfr_phase_str(pr->phase), pr->round, bar, pct, rate / 1e6,
                mib(pr->remaining_bytes), pr->elapsed_s);
        p->pending_line = true;
    } else {
        fprintf(p->out, "%s: %s round %" G_GUINT64_FORMAT ", %.0f%% of round, %.1f MB/s, "
                        "sent %.1f MiB, remaining %.1f MiB, %.1f s\n",
                p->side, mfr_phase_str(pr->phase), pr->round, pct, rate / 1e6,
                mib(pr->sent_bytes), mib(pr->remaining_bytes), pr->elapsed_s);
    }
    fflush(p->out);
    bool pause = p->pause_ms && pr->phase >= MFR_PHASE_PRECOPY && pr->phase <= MFR_PHASE_VERIFY &&
                 pr->phase != phase_before;
    g_mutex_unlock(&p->lock);
    if (pause) {
        /* the migration thread stays in the phase it just announced, so that a fault the
         * matrix sends on seeing the line lands in that phase, not after the end of a
         * phase that is over in a millisecond (an idle guest's switchover) */
        g_usleep(p->pause_ms * 1000ull);
    }
}

void tool_progress_finish(ToolProgress *p)
{
    g_mutex_lock(&p->lock);
    if (p->pending_line) {
        fputc('\n', p->out);
        fflush(p->out);
        p->pending_line = false;
    }
    g_mutex_unlock(&p->lock);
}

/* ---- summary ---------------------------------------------------------------------------- */

typedef enum { COL_F1, COL_U64, COL_STR } ColKind;

static void row(FILE *out, const char *label, ColKind kind, const MfrStats *src,
                const MfrStats *dst, size_t off)
{
    fprintf(out, "  %-22s", label);
    const MfrStats *sides[2] = { src, dst };
    for (unsigned i = 0; i < 2; i++) {
        if (!sides[i]) {
            continue;
        }
        const char *base = (const char *)sides[i] + off;
        switch (kind) {
        case COL_F1:
            fprintf(out, " %14.1f", *(const double *)base);
            break;
        case COL_U64:
            fprintf(out, " %14" G_GUINT64_FORMAT, *(const uint64_t *)base);
            break;
        case COL_STR:
            fprintf(out, " %14s", base);
            break;
        }
    }
    fputc('\n', out);
}

static void row_values(FILE *out, const char *label, const MfrStats *src, const MfrStats *dst,
                       double vs, double vd, int prec)
{
    fprintf(out, "  %-22s", label);
    if (src) {
        fprintf(out, " %14.*f", prec, vs);
    }
    if (dst) {
        fprintf(out, " %14.*f", prec, vd);
    }
    fputc('\n', out);
}

void tool_print_summary(FILE *out, const MfrStats *src, const MfrStats *dst, bool ok)
{
    static const MfrStats none;
    const MfrStats *s = src ? src : &none;
    const MfrStats *d = dst ? dst : &none;
    fprintf(out, "\n  %-22s", "");
    if (src) {
        fprintf(out, " %14s", "source");
    }
    if (dst) {
        fprintf(out, " %14s", "destination");
    }
    fputc('\n', out);
    row(out, "transport", COL_STR, src, dst, G_STRUCT_OFFSET(MfrStats, transport));
    row_values(out, "channels", src, dst, s->channels, d->channels, 0);
    row(out, "total ms", COL_F1, src, dst, G_STRUCT_OFFSET(MfrStats, total_ms));
    row(out, "setup ms", COL_F1, src, dst, G_STRUCT_OFFSET(MfrStats, setup_ms));
    row(out, "registration ms", COL_F1, src, dst, G_STRUCT_OFFSET(MfrStats, registration_ms));
    row(out, "downtime ms", COL_F1, src, dst, G_STRUCT_OFFSET(MfrStats, downtime_ms));
    row(out, "verify ms", COL_F1, src, dst, G_STRUCT_OFFSET(MfrStats, verify_ms));
    row(out, "rounds", COL_U64, src, dst, G_STRUCT_OFFSET(MfrStats, rounds));
    row_values(out, "RAM MiB", src, dst, mib(s->ram_bytes), mib(d->ram_bytes), 1);
    row_values(out, "wire MiB", src, dst, mib(s->wire_bytes), mib(d->wire_bytes), 1);
    row(out, "normal pages", COL_U64, src, dst, G_STRUCT_OFFSET(MfrStats, normal_pages));
    row(out, "zero pages", COL_U64, src, dst, G_STRUCT_OFFSET(MfrStats, zero_pages));
    row(out, "packets", COL_U64, src, dst, G_STRUCT_OFFSET(MfrStats, packets));
    row_values(out, "throughput MB/s", src, dst, s->throughput_bps / 1e6,
               d->throughput_bps / 1e6, 1);
    row_values(out, "dirty rate MB/s", src, dst, s->dirty_rate_bps / 1e6,
               d->dirty_rate_bps / 1e6, 1);
    row_values(out, "CPU s", src, dst, s->cpu_s, d->cpu_s, 2);
    if (src) {
        /* a run that did not converge succeeds only by a forced switchover */
        fprintf(out, "  %-22s %14s\n", "converged",
                s->converged ? "yes" : ok ? "no (forced)" : "no");
    }
    unsigned nch = MIN(64u, MAX(s->channels, d->channels));
    for (unsigned c = 0; c < nch; c++) {
        g_autofree char *label = g_strdup_printf("channel %u MB/s", c);
        row_values(out, label, src, dst, s->channel[c].throughput_bps / 1e6,
                   d->channel[c].throughput_bps / 1e6, 1);
    }
    fputc('\n', out);
    fflush(out);
}

static void comp_row(FILE *out, const char *label, const MfrCompressionStats *src,
                     const MfrCompressionStats *dst, size_t off, bool is_double)
{
    fprintf(out, "  %-22s", label);
    const MfrCompressionStats *sides[2] = { src, dst };
    for (unsigned i = 0; i < 2; i++) {
        if (!sides[i]) {
            continue;
        }
        const char *base = (const char *)&sides[i]->total + off;
        if (is_double) {
            fprintf(out, " %14.2f", *(const double *)base);
        } else {
            fprintf(out, " %14" G_GUINT64_FORMAT, *(const uint64_t *)base);
        }
    }
    fputc('\n', out);
}

void tool_print_compression(FILE *out, const MfrCompressionStats *src,
                            const MfrCompressionStats *dst)
{
    if (!(src && src->negotiated) && !(dst && dst->negotiated)) {
        if (src && src->mode != MFR_COMPRESSION_OFF) {
            fprintf(out, "compression: %s requested, the destination refused it: none used\n",
                    mfr_compression_str(src->mode));
        }
        return;
    }
    if (src) {
        fprintf(out, "compression: %s, zstd level %d\n", mfr_compression_str(src->mode),
                src->level);
    }
    fprintf(out, "  %-22s", "");
    if (src) {
        fprintf(out, " %14s", "source");
    }
    if (dst) {
        fprintf(out, " %14s", "destination");
    }
    fputc('\n', out);
    typedef MfrCompressionChannelStats Z;
    comp_row(out, "compressed packets", src, dst, G_STRUCT_OFFSET(Z, packets), false);
    comp_row(out, "raw bytes", src, dst, G_STRUCT_OFFSET(Z, raw_bytes), false);
    comp_row(out, "compressed bytes", src, dst, G_STRUCT_OFFSET(Z, compressed_bytes), false);
    fprintf(out, "  %-22s", "ratio (raw/compressed)");
    if (src) {
        fprintf(out, " %14.2f", src->ratio);
    }
    if (dst) {
        fprintf(out, " %14.2f", dst->ratio);
    }
    fputc('\n', out);
    comp_row(out, "sent raw: no shrink", src, dst, G_STRUCT_OFFSET(Z, packets_not_shrunk), false);
    comp_row(out, "sent raw: auto paused", src, dst, G_STRUCT_OFFSET(Z, packets_skipped), false);
    comp_row(out, "auto pauses", src, dst, G_STRUCT_OFFSET(Z, pauses), false);
    comp_row(out, "zstd CPU s", src, dst, G_STRUCT_OFFSET(Z, cpu_s), true);
    fputc('\n', out);
    fflush(out);
}

static void json_string(GString *s, const char *text)
{
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\') {
            g_string_append_printf(s, "\\%c", *p);
        } else if (*p < 0x20) {
            g_string_append_printf(s, "\\u%04x", *p);
        } else {
            g_string_append_c(s, (char)*p);
        }
    }
    g_string_append_c(s, '"');
}

/* A side's stats object, with its compression stats ("compression") and placement
 * ("placement") inside when known. */
static void json_side(GString *s, const char *name, const ToolSide *side)
{
    g_autofree char *j = mfr_stats_to_json(side->stats, name);
    g_string_append_printf(s, ",\"%s\":", name);
    g_string_append_len(s, j, (gssize)strlen(j) - 1); /* without its closing brace */
    if (side->comp) {
        g_autofree char *zj = mfr_compression_stats_to_json(side->comp);
        g_string_append_printf(s, ",\"compression\":%s", zj);
    }
    if (side->place) {
        g_autofree char *pj = mfr_placement_to_json(side->place);
        g_string_append_printf(s, ",\"placement\":%s", pj);
    }
    g_string_append_c(s, '}');
}

void tool_print_json(FILE *out, const ToolSide *src, const ToolSide *dst, const char *result,
                     const GError *error, const char *memcmp_result)
{
    g_autoptr(GString) s = g_string_new("{\"version\":");
    json_string(s, MFR_VERSION);
    g_string_append(s, ",\"result\":");
    json_string(s, result);
    g_string_append(s, ",\"error\":");
    if (error) {
        json_string(s, error->message);
    } else {
        g_string_append(s, "null");
    }
    if (memcmp_result) {
        g_string_append(s, ",\"memcmp\":");
        json_string(s, memcmp_result);
    }
    if (src && src->stats) {
        json_side(s, "source", src);
    }
    if (dst && dst->stats) {
        json_side(s, "destination", dst);
    }
    g_string_append(s, "}\n");
    fputs(s->str, out);
    fflush(out);
}

/* ---- placement -------------------------------------------------------------------------- */

static void print_placement_side(FILE *out, const char *side, const MfrPlacement *p)
{
    fprintf(out, "memory: %s %.1f MiB, %.1f MiB (%.0f%%) on huge pages (smaps), %s\n", side,
            mib(p->ram_bytes), mib(p->huge_bytes),
            p->ram_bytes ? 100.0 * (double)p->huge_bytes / (double)p->ram_bytes : 0.0,
            p->thp_advised ? "madvised for huge pages" : "not madvised for huge pages");
    g_autoptr(GString) ch = g_string_new("");
    bool unbound = false;
    for (unsigned i = 0; i < p->channels && i < G_N_ELEMENTS(p->channel); i++) {
        const MfrThreadPlacement *t = &p->channel[i];
        g_string_append_printf(ch, "%s%d/%d%s", i ? " " : "", t->node, t->cpu,
                               t->bound ? "" : "*");
        unbound |= !t->bound;
    }
    if (unbound) {
        g_string_append(ch, " (*: not bound)");
    }
    if (p->numa_node >= 0) {
        fprintf(out, "placement: %s threads on NUMA node %d (%s); channels node/cpu: %s\n",
                side, p->numa_node, p->numa_source, ch->str);
    } else {
        fprintf(out, "placement: %s threads not placed (%s); channels node/cpu: %s\n", side,
                p->numa_source, ch->str);
    }
}

void tool_print_placement(FILE *out, const MfrPlacement *src, const MfrPlacement *dst)
{
    if (src) {
        print_placement_side(out, "source", src);
    }
    if (dst) {
        print_placement_side(out, "destination", dst);
    }
    fflush(out);
}

/* ---- guest and verification lines ------------------------------------------------------- */

void tool_print_guest(FILE *out, MfrGuest *g, const MfrGuestOptions *go)
{
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    fprintf(out, "guest: %.1f MiB in %u block%s (%s%s, %u KiB pages), random %u%% / "
                 "compressible %u%% / zero %u%%, filled in %.2f s; writers dirty %.1f MB/s\n",
            mib(go->size), n, n == 1 ? "" : "s", b[0].name, n > 1 ? ".." : "",
            b[0].page_size / 1024, go->pct_random, go->pct_compressible, go->pct_zero,
            mfr_guest_fill_seconds(g), go->dirty_rate_mbps);
    fflush(out);
}

void tool_print_guest_writes(FILE *out, MfrGuest *g)
{
    unsigned n;
    const MfrRamBlock *b = mfr_guest_blocks(g, &n);
    uint64_t pages = mfr_guest_pages_dirtied(g);
    double s = mfr_guest_writer_seconds(g);
    fprintf(out, "guest: writers dirtied %" G_GUINT64_FORMAT " pages in %.2f s (%.1f MB/s)\n",
            pages, s, s > 0 ? (double)pages * b[0].page_size / s / 1e6 : 0.0);
}

bool tool_check_verified(FILE *out, const MfrStats *s, unsigned nblocks, GError **error)
{
    if (s->verified) {
        fprintf(out, "verification: OK (%u block%s, digests match)\n", nblocks,
                nblocks == 1 ? "" : "s");
        fflush(out);
        return true;
    }
    static const char msg[] = "verification: FAILED: the migration ended without matching digests";
    fprintf(out, "%s\n", msg);
    fflush(out);
    g_set_error_literal(error, MFR_ERROR, MFR_ERROR_VERIFY, msg);
    return false;
}

bool tool_check_memory(const char *what, uint64_t size, unsigned copies, GError **error)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0) {
        return true; /* unknown: let mmap decide */
    }
    uint64_t phys = (uint64_t)pages * (uint64_t)psize;
    if (size > phys / copies) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "--size: %.1f GiB does not fit in this host's %.1f GiB of RAM%s",
                    mib(size) / 1024, mib(phys) / 1024, what);
        return false;
    }
    return true;
}
