/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfrdma-bench: runs migrations of a synthetic guest for a list of cases (transport,
 * channels, size, page mix, dirty rate) and, in the same repetition, the raw limits they are
 * judged by: N TCP streams or N RDMA QPs pushing the same bytes with no protocol, memcpy,
 * and the zero-page scan. Prints a table with every figure's ratio to its baseline and writes
 * results.json / results.csv. The destination is an agent in a thread, or on another host.
 */
#include "bench.h"
#include "guest.h"

#include <mfrdma.h>

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define ZERO_SCAN_BYTES (32u << 20)
#define MEMCPY_MAX_BYTES (256ull << 20)

/* ---------- figures ---------- */

typedef enum {
    M_TOTAL_MS, M_SETUP_MS, M_DOWNTIME_MS, M_TRANSFER_MS, M_ROUNDS,
    M_GIBS_RAM, M_GIBS_WIRE, M_GIBS_TOTAL,
    M_SRC_CPU_GIB, M_SRC_CPU_GIB_XREG, M_DST_CPU_GIB, M_DST_CPU_GIB_XREG,
    M_SRC_REG_MS_GIB, M_DST_REG_MS_GIB, M_SRC_REG_CPU_GIB, M_DST_REG_CPU_GIB,
    M_ZC_SENDS, M_ZC_COPIED, M_DST_HUGE_PCT,
    M_BASE_GIBS_FRESH, M_BASE_GIBS_WARM, M_BASE_SRC_CPU_GIB, M_BASE_SRC_CPU_GIB_XREG,
    M_BASE_DST_CPU_GIB_FRESH, M_BASE_DST_CPU_GIB_FRESH_XREG, M_BASE_DST_CPU_GIB_WARM,
    M_BASE_SRC_REG_MS_GIB, M_BASE_DST_REG_MS_GIB, M_BASE_SRC_REG_CPU_GIB,
    M_BASE_DST_REG_CPU_GIB, M_BASE_ZC_SENDS, M_BASE_ZC_COPIED,
    M_MEMCPY_WARM_GBS, M_MEMCPY_FRESH_GBS, M_ZERO_SCAN_GBS, M_DIGEST_GBS,
    M_RATIO_GIBS, M_RATIO_GIBS_WARM, M_RATIO_WIRE, M_RATIO_SRC_CPU, M_RATIO_SRC_CPU_XREG,
    M_RATIO_DST_CPU, M_RATIO_DST_CPU_XREG, M_RATIO_SRC_REG, M_RATIO_DST_REG,
    M_RATIO_SRC_REG_CPU, M_RATIO_DST_REG_CPU, M_RATIO_ZERO_SCAN,
    M_COMP_RATIO, M_COMP_SHARE, M_COMP_SRC_CPU, M_COMP_DST_CPU, M_COMP_SKIPPED,
    M_VS_OFF_TOTAL, M_VS_OFF_GIBS, M_VS_OFF_WIRE,
    M_COUNT
} Metric;

typedef struct {
    const char *name;
    const char *what;
} MetricInfo;

/* CPU figures without "_excl_reg" include registration on both sides (the engine's cpu_s
 * does: its main thread registers); registration figures are per GiB of guest RAM. */
static const MetricInfo metrics[M_COUNT] = {
    [M_TOTAL_MS] = { "total_ms", "migration, connect to COMPLETE answered" },
    [M_SETUP_MS] = { "setup_ms", "connect, negotiate, announce, registration (source)" },
    [M_DOWNTIME_MS] = { "downtime_ms", "guest stopped to last barrier" },
    [M_TRANSFER_MS] = { "transfer_ms", "end of setup to the last barrier" },
    [M_ROUNDS] = { "rounds", "precopy rounds incl. the final one" },
    [M_GIBS_RAM] = { "gib_s_ram", "guest bytes handled / transfer time, GiB/s" },
    [M_GIBS_WIRE] = { "gib_s_wire", "channel bytes (headers + payload) / transfer time" },
    [M_GIBS_TOTAL] = { "gib_s_total", "guest RAM / total time (setup included)" },
    [M_SRC_CPU_GIB] = { "src_cpu_s_per_gib", "source CPU s per GiB handled, registration "
                                             "included" },
    [M_SRC_CPU_GIB_XREG] = { "src_cpu_s_per_gib_excl_reg", "source CPU s per GiB handled, "
                                                           "registration excluded" },
    [M_DST_CPU_GIB] = { "dst_cpu_s_per_gib", "destination CPU s per GiB handled, registration "
                                             "included" },
    [M_DST_CPU_GIB_XREG] = { "dst_cpu_s_per_gib_excl_reg", "destination CPU s per GiB handled, "
                                                           "registration excluded" },
    [M_SRC_REG_MS_GIB] = { "src_reg_ms_per_gib", "source registration ms per GiB" },
    [M_DST_REG_MS_GIB] = { "dst_reg_ms_per_gib", "destination registration ms per GiB" },
    [M_SRC_REG_CPU_GIB] = { "src_reg_cpu_s_per_gib", "source registration CPU s per GiB" },
    [M_DST_REG_CPU_GIB] = { "dst_reg_cpu_s_per_gib", "destination registration CPU s per GiB" },
    [M_ZC_SENDS] = { "zerocopy_sends", "tcpzc: source sendmsg(MSG_ZEROCOPY) calls" },
    [M_ZC_COPIED] = { "zerocopy_copied", "tcpzc: of those, copied by the kernel anyway" },
    [M_DST_HUGE_PCT] = { "dst_huge_pct", "percent of the destination's blocks on huge pages at "
                                         "the end (MfrPlacement, from smaps)" },
    [M_BASE_GIBS_FRESH] = { "base_gib_s_fresh", "raw streams into fresh memory, GiB/s" },
    [M_BASE_GIBS_WARM] = { "base_gib_s_warm", "raw streams into warm memory, GiB/s" },
    [M_BASE_SRC_CPU_GIB] = { "base_src_cpu_s_per_gib", "raw sender CPU s per GiB (fresh run), "
                                                       "registration included" },
    [M_BASE_SRC_CPU_GIB_XREG] = { "base_src_cpu_s_per_gib_excl_reg", "raw sender, "
                                                                     "registration excluded" },
    [M_BASE_DST_CPU_GIB_FRESH] = { "base_dst_cpu_s_per_gib_fresh", "raw receiver, fresh memory, "
                                                                   "registration included" },
    [M_BASE_DST_CPU_GIB_FRESH_XREG] = { "base_dst_cpu_s_per_gib_fresh_excl_reg",
                                        "raw receiver, fresh memory, registration excluded" },
    [M_BASE_DST_CPU_GIB_WARM] = { "base_dst_cpu_s_per_gib_warm", "raw receiver, warm memory, "
                                                                 "registration included" },
    [M_BASE_SRC_REG_MS_GIB] = { "base_src_reg_ms_per_gib", "raw rdma: one MR per QP, "
                                                           "sequential" },
    [M_BASE_DST_REG_MS_GIB] = { "base_dst_reg_ms_per_gib", "raw rdma: one MR per QP, "
                                                           "sequential" },
    [M_BASE_SRC_REG_CPU_GIB] = { "base_src_reg_cpu_s_per_gib", "raw rdma: CPU of those" },
    [M_BASE_DST_REG_CPU_GIB] = { "base_dst_reg_cpu_s_per_gib", "raw rdma: CPU of those" },
    [M_BASE_ZC_SENDS] = { "base_zerocopy_sends", "tcpzc: raw sendmsg(MSG_ZEROCOPY) calls (fresh "
                                                 "run)" },
    [M_BASE_ZC_COPIED] = { "base_zerocopy_copied", "tcpzc: of those, copied by the kernel" },
    [M_MEMCPY_WARM_GBS] = { "memcpy_warm_gb_s", "one thread, GB/s (1e9)" },
    [M_MEMCPY_FRESH_GBS] = { "memcpy_fresh_gb_s", "one thread into never-touched memory" },
    [M_ZERO_SCAN_GBS] = { "zero_scan_gb_s", "mfr_buffer_is_zero per 4 KiB page, one thread" },
    [M_DIGEST_GBS] = { "digest_gb_s", "mfr_digest (verification) over 32 MiB, one thread" },
    [M_RATIO_GIBS] = { "ratio_gib_s", "gib_s_ram / base_gib_s_fresh" },
    [M_RATIO_GIBS_WARM] = { "ratio_gib_s_warm", "gib_s_ram / base_gib_s_warm" },
    [M_RATIO_WIRE] = { "ratio_gib_s_wire", "gib_s_wire / base_gib_s_fresh" },
    [M_RATIO_SRC_CPU] = { "ratio_src_cpu", "src_cpu_s_per_gib / base_src_cpu_s_per_gib" },
    [M_RATIO_SRC_CPU_XREG] = { "ratio_src_cpu_excl_reg", "the same, registration excluded" },
    [M_RATIO_DST_CPU] = { "ratio_dst_cpu", "dst_cpu_s_per_gib / base_dst_cpu_s_per_gib_fresh" },
    [M_RATIO_DST_CPU_XREG] = { "ratio_dst_cpu_excl_reg", "the same, registration excluded" },
    [M_RATIO_SRC_REG] = { "ratio_src_reg", "src_reg_ms_per_gib / base_src_reg_ms_per_gib" },
    [M_RATIO_DST_REG] = { "ratio_dst_reg", "dst_reg_ms_per_gib / base_dst_reg_ms_per_gib" },
    [M_RATIO_SRC_REG_CPU] = { "ratio_src_reg_cpu", "src_reg_cpu_s_per_gib / "
                                                   "base_src_reg_cpu_s_per_gib" },
    [M_RATIO_DST_REG_CPU] = { "ratio_dst_reg_cpu", "dst_reg_cpu_s_per_gib / "
                                                   "base_dst_reg_cpu_s_per_gib" },
    [M_RATIO_ZERO_SCAN] = { "ratio_zero_scan", "gib_s_ram per channel (GB/s) / zero_scan_gb_s" },
    [M_COMP_RATIO] = { "comp_ratio", "raw / compressed bytes of the packets sent compressed" },
    [M_COMP_SHARE] = { "comp_share", "guest bytes of data packets that went compressed / all of "
                                     "them" },
    [M_COMP_SRC_CPU] = { "comp_src_cpu_s", "source CPU s in zstd (compressing)" },
    [M_COMP_DST_CPU] = { "comp_dst_cpu_s", "destination CPU s in zstd (decompressing; local "
                                           "agent only)" },
    [M_COMP_SKIPPED] = { "comp_skipped_packets", "auto: data packets sent without trying" },
    [M_VS_OFF_TOTAL] = { "ratio_total_vs_off", "total_ms / total_ms of the same case without "
                                               "compression in this run (medians)" },
    [M_VS_OFF_GIBS] = { "ratio_gib_s_vs_off", "gib_s_ram / that of the same case without "
                                              "compression in this run (medians)" },
    [M_VS_OFF_WIRE] = { "ratio_wire_vs_off", "wire bytes / those of the same case without "
                                             "compression (medians of wire GiB/s x time)" },
};

typedef struct {
    char spec[128];
    char transport[8];     /* as in the spec: tcp, tcpzc, rdma */
    const char *scheme;    /* the engine's URI scheme: tcp or rdma */
    bool zerocopy;         /* tcpzc: MfrSourceConfig.transport.zerocopy, raw streams with
                            * MSG_ZEROCOPY */
    unsigned channels;
    uint64_t size;
    char mix[32];
    MfrGuestOptions go;
    double dirty_mbps;
    MfrCompression comp;   /* optional 6th field: off (default), zstd, auto */
    GArray *runs[M_COUNT]; /* double per measured repetition; NAN = not applicable */
    char error[512];
} BenchCase;

typedef struct {
    gint repeats, warmup, pages_per_packet, timeout_ms, registration_threads;
    gboolean verify, thp, no_thp, no_baseline;
    char *listen, *peer, *address, *out, *max_bandwidth_arg, *dump_guest;
    uint64_t max_bandwidth; /* bytes/s on the wire, 0 = unlimited */
    char **cases;
} BenchArgs;

static bool parse_size(const char *t, uint64_t *out)
{
    char *end = NULL;
    double v = g_ascii_strtod(t, &end);
    if (end == t || v <= 0) {
        return false;
    }
    switch (g_ascii_toupper(*end)) {
    case 'K': v *= 1024; end++; break;
    case 'M': v *= 1024 * 1024; end++; break;
    case 'G': v *= GIB; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B') {
        end++;
    }
    *out = (uint64_t)v / 4096 * 4096;
    return *end == '\0' && *out > 0;
}

/* "TRANSPORT/CHANNELS/SIZE/MIX/DIRTY_MBPS[/COMPRESSION]", e.g. "tcp/4/1G/random/0" or
 * "tcp/4/1G/mixed/0/auto"; TRANSPORT tcp, tcpzc (tcp with MSG_ZEROCOPY on the source) or
 * rdma; COMPRESSION off (default), zstd or auto. */
static bool case_parse(const char *text, BenchCase *c, GError **error)
{
    g_auto(GStrv) f = g_strsplit(text, "/", 0);
    memset(c, 0, sizeof(*c));
    g_strlcpy(c->spec, text, sizeof(c->spec));
    unsigned nf = g_strv_length(f);
    if (nf != 5 && nf != 6) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "case '%s': want TRANSPORT/CHANNELS/SIZE/"
                    "MIX/DIRTY_MBPS[/COMPRESSION], e.g. tcp/4/1G/random/0", text);
        return false;
    }
    if (nf == 6 && !mfr_compression_parse(f[5], &c->comp, error)) {
        g_prefix_error(error, "case '%s': ", text);
        return false;
    }
    static const struct { const char *name, *scheme; bool zerocopy; } transports[] = {
        { "tcp", "tcp", false }, { "tcpzc", "tcp", true }, { "rdma", "rdma", false },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(transports); i++) {
        if (strcmp(f[0], transports[i].name) == 0) {
            c->scheme = transports[i].scheme;
            c->zerocopy = transports[i].zerocopy;
        }
    }
    if (!c->scheme) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "case '%s': transport '%s' is not tcp, "
                    "tcpzc or rdma", text, f[0]);
        return false;
    }
    g_strlcpy(c->transport, f[0], sizeof(c->transport));
    c->channels = (unsigned)g_ascii_strtoull(f[1], NULL, 10);
    if (c->channels < 1 || c->channels > 64) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "case '%s': channels must be 1..64", text);
        return false;
    }
    if (!parse_size(f[2], &c->size)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "case '%s': bad size '%s' (e.g. 256M, 1G)",
                    text, f[2]);
        return false;
    }
    mfr_guest_options_init(&c->go);
    c->go.size = c->size;
    static const struct { const char *name, *mix; } mixes[] = {
        { "random", "100:0:0" }, { "compressible", "0:100:0" }, { "zero", "5:5:90" },
        { "mixed", "40:40:20" },
    };
    const char *mix = f[3];
    for (unsigned i = 0; i < G_N_ELEMENTS(mixes); i++) {
        if (strcmp(f[3], mixes[i].name) == 0) {
            mix = mixes[i].mix;
        }
    }
    if (!mfr_guest_parse_mix(mix, &c->go, error)) {
        g_prefix_error(error, "case '%s': mix: ", text);
        return false;
    }
    g_strlcpy(c->mix, f[3], sizeof(c->mix));
    char *end = NULL;
    c->dirty_mbps = g_ascii_strtod(f[4], &end);
    if (end == f[4] || *end || c->dirty_mbps < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "case '%s': bad dirty rate '%s' (MB/s)",
                    text, f[4]);
        return false;
    }
    c->go.dirty_rate_mbps = c->dirty_mbps;
    for (unsigned m = 0; m < M_COUNT; m++) {
        c->runs[m] = g_array_new(FALSE, FALSE, sizeof(double));
    }
    return true;
}

static void case_clear(BenchCase *c)
{
    for (unsigned m = 0; m < M_COUNT; m++) {
        if (c->runs[m]) {
            g_array_unref(c->runs[m]);
        }
    }
}

static int cmp_double(gconstpointer a, gconstpointer b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* min / median / max over the repetitions with a value; false when there is none. */
static bool case_summary(const BenchCase *c, Metric m, double *mn, double *med, double *mx)
{
    g_autoptr(GArray) v = g_array_new(FALSE, FALSE, sizeof(double));
    for (unsigned i = 0; i < c->runs[m]->len; i++) {
        double x = g_array_index(c->runs[m], double, i);
        if (isfinite(x)) {
            g_array_append_val(v, x);
        }
    }
    if (v->len == 0) {
        return false;
    }
    g_array_sort(v, cmp_double);
    *mn = g_array_index(v, double, 0);
    *mx = g_array_index(v, double, v->len - 1);
    *med = v->len % 2 ? g_array_index(v, double, v->len / 2)
                      : (g_array_index(v, double, v->len / 2 - 1) +
                         g_array_index(v, double, v->len / 2)) / 2;
    return true;
}

static double case_median(const BenchCase *c, Metric m)
{
    double a, b, d;
    return case_summary(c, m, &a, &b, &d) ? b : NAN;
}

/* ---------- local measurements ---------- */

static double measure_zero_scan(const uint8_t *zero)
{
    double t0 = bench_now_s(), t;
    uint64_t bytes = 0;
    unsigned hits = 0;
    do {
        for (size_t off = 0; off < ZERO_SCAN_BYTES; off += 4096) {
            hits += mfr_buffer_is_zero(zero + off, 4096);
        }
        bytes += ZERO_SCAN_BYTES;
        t = bench_now_s() - t0;
    } while (t < 0.1);
    g_assert(hits == bytes / 4096); /* the buffer is zero: every page must say so */
    return bytes / t / 1e9;
}

/* The verification digest's rate: what cfg.verify costs per GB on each side. */
static double measure_digest(const uint8_t *buf)
{
    double t0 = bench_now_s(), t;
    uint64_t bytes = 0, acc = 0;
    do {
        acc += mfr_digest(buf, ZERO_SCAN_BYTES);
        bytes += ZERO_SCAN_BYTES;
        t = bench_now_s() - t0;
    } while (t < 0.1);
    g_assert(acc != 0 || bytes == 0); /* keeps the calls */
    return bytes / t / 1e9;
}

static bool measure_memcpy(const uint8_t *src, uint64_t len, bool thp, double *warm, double *fresh,
                           GError **error)
{
    len = MIN(len, MEMCPY_MAX_BYTES);
    uint8_t *dst = bench_map_fresh(len, thp, error);
    if (!dst) {
        return false;
    }
    double t0 = bench_now_s();
    memcpy(dst, src, len);
    *fresh = len / (bench_now_s() - t0) / 1e9;
    t0 = bench_now_s();
    memcpy(dst, src, len);
    *warm = len / (bench_now_s() - t0) / 1e9;
    bench_unmap(dst, len);
    return true;
}

/* ---------- one migration ---------- */

typedef struct {
    double total_ms, setup_ms, reg_ms, downtime_ms, transfer_ms, cpu_s;
    uint64_t wire_bytes;
    double reg_cpu_s; /* NAN from an agent that does not report it */
    double zstd_cpu_s; /* NAN likewise */
    double huge_bytes; /* likewise */
} DestFigures;

static bool run_migration(int ctl, const BenchArgs *a, BenchCase *c, MfrGuest *guest,
                          MfrStats *ss, MfrCompressionStats *zs, DestFigures *df,
                          GError **error)
{
    MfrSourceConfig sc;
    mfr_source_config_init(&sc);
    for (unsigned i = 0; i < sizeof(sc.token); i++) {
        sc.token[i] = (uint8_t)g_random_int();
    }
    char hex[33];
    mfr_token_format(sc.token, hex);
    char line[BENCH_LINE_MAX], uri[512];
    if (!bench_ctl_send(ctl, error, "MFR %s %s", c->scheme, hex) ||
        !bench_ctl_recv(ctl, line, sizeof(line), 60000, error)) {
        return false;
    }
    if (sscanf(line, "OK %511s", uri) != 1) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "agent: %s", line);
        return false;
    }
    sc.uri = uri;
    sc.channels = c->channels;
    sc.verify = a->verify;
    sc.force_switchover = true;
    sc.max_bandwidth = a->max_bandwidth;
    sc.transport.zerocopy = c->zerocopy;
    sc.timeout_ms = (unsigned)a->timeout_ms;
    sc.transport.registration_threads = (unsigned)a->registration_threads;
    if (a->pages_per_packet > 0) {
        sc.pages_per_packet = (unsigned)a->pages_per_packet;
    }
    unsigned nb;
    const MfrRamBlock *blocks = mfr_guest_blocks(guest, &nb);
    g_autoptr(MfrSource) src = mfr_source_new(&sc, blocks, nb, mfr_guest_dirty_ops(), guest, error);
    bool ok = src != NULL && mfr_source_set_compression(src, c->comp, 0, error);
    if (ok) {
        mfr_guest_start(guest, NULL);
        ok = mfr_source_run(src, error);
        mfr_guest_stop(guest);
        mfr_source_get_stats(src, ss);
        mfr_source_get_compression_stats(src, zs);
    }
    if (!ok) {
        bench_ctl_send(ctl, NULL, "CANCEL");
    }
    GError *lerr = NULL;
    if (!bench_ctl_recv(ctl, line, sizeof(line), -1, &lerr)) {
        if (ok) {
            g_propagate_error(error, lerr);
        } else {
            g_clear_error(&lerr);
        }
        return false;
    }
    df->reg_cpu_s = NAN;
    df->zstd_cpu_s = NAN;
    df->huge_bytes = NAN;
    if (sscanf(line, "DONE %lf %lf %lf %lf %lf %lf %" G_GUINT64_FORMAT " %lf %lf %lf",
               &df->total_ms, &df->setup_ms, &df->reg_ms, &df->downtime_ms, &df->transfer_ms,
               &df->cpu_s, &df->wire_bytes, &df->reg_cpu_s, &df->zstd_cpu_s,
               &df->huge_bytes) < 7) {
        if (ok) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "agent: %s", line);
        } else if (g_str_has_prefix(line, "ERR ")) {
            /* the destination's view often names the cause the source only saw as a loss */
            g_prefix_error(error, "%s; source: ", line + 4);
        }
        return false;
    }
    return ok;
}

static void put(BenchCase *c, Metric m, double v)
{
    g_array_append_val(c->runs[m], v);
}

static double ratio(double a, double b)
{
    return b > 0 && isfinite(a) && isfinite(b) ? a / b : NAN;
}

/* One repetition: migration, raw baseline (fresh then warm), memcpy, zero scan. */
static bool run_once(int ctl, const BenchArgs *a, BenchCase *c, MfrGuest *guest,
                     const uint8_t *zero, bool record, GError **error)
{
    MfrStats ss = { 0 };
    MfrCompressionStats zs = { 0 };
    DestFigures df = { 0 };
    if (!run_migration(ctl, a, c, guest, &ss, &zs, &df, error)) {
        return false;
    }
    double handled = (double)(ss.normal_pages + ss.zero_pages) * 4096;
    double gib = handled / GIB, ram_gib = c->size / GIB;
    double xfer_s = MAX(ss.transfer_ms / 1000, 1e-9);
    double v[M_COUNT];
    for (unsigned m = 0; m < M_COUNT; m++) {
        v[m] = NAN;
    }
    v[M_TOTAL_MS] = ss.total_ms;
    v[M_SETUP_MS] = ss.setup_ms;
    v[M_DOWNTIME_MS] = ss.downtime_ms;
    v[M_TRANSFER_MS] = ss.transfer_ms;
    v[M_ROUNDS] = (double)ss.rounds;
    v[M_GIBS_RAM] = handled / GIB / xfer_s;
    v[M_GIBS_WIRE] = ss.wire_bytes / GIB / xfer_s;
    v[M_GIBS_TOTAL] = ram_gib / MAX(ss.total_ms / 1000, 1e-9);
    /* cpu_s includes the registering thread's CPU; registration_cpu_s says how much */
    v[M_SRC_CPU_GIB] = ss.cpu_s / gib;
    v[M_SRC_CPU_GIB_XREG] = (ss.cpu_s - ss.registration_cpu_s) / gib;
    v[M_DST_CPU_GIB] = df.cpu_s / gib;
    v[M_DST_CPU_GIB_XREG] = (df.cpu_s - df.reg_cpu_s) / gib;
    v[M_SRC_REG_MS_GIB] = ss.registration_ms / ram_gib;
    v[M_DST_REG_MS_GIB] = df.reg_ms / ram_gib;
    v[M_SRC_REG_CPU_GIB] = ss.registration_cpu_s / ram_gib;
    v[M_DST_REG_CPU_GIB] = df.reg_cpu_s / ram_gib;
    v[M_DST_HUGE_PCT] = 100.0 * df.huge_bytes / (double)c->size;
    if (c->zerocopy) {
        v[M_ZC_SENDS] = (double)ss.zerocopy_sends;
        v[M_ZC_COPIED] = (double)ss.zerocopy_copied;
    }
    if (c->comp != MFR_COMPRESSION_OFF) {
        v[M_COMP_RATIO] = zs.ratio;
        v[M_COMP_SHARE] = ss.normal_pages ? (double)zs.total.raw_bytes /
                                                ((double)ss.normal_pages * 4096) : NAN;
        v[M_COMP_SRC_CPU] = zs.total.cpu_s;
        v[M_COMP_SKIPPED] = (double)zs.total.packets_skipped;
        v[M_COMP_DST_CPU] = df.zstd_cpu_s;
    }

    if (!a->no_baseline) {
        unsigned nb;
        const MfrRamBlock *blocks = mfr_guest_blocks(guest, &nb);
        /* Same message sizes as the migration: its mean header, its packet payload. */
        uint64_t data_packets = MAX(ss.packets, 1);
        uint64_t hdr = (ss.wire_bytes - MIN(ss.wire_bytes, ss.normal_pages * 4096)) / data_packets;
        BenchRawSpec spec = {
            .streams = c->channels,
            .bytes = MIN(c->size, blocks[0].length),
            .chunk = (uint64_t)(a->pages_per_packet > 0 ? a->pages_per_packet : 128) * 4096,
            .hdr = MIN(hdr, 8192),
            .fresh = true,
            .zerocopy = c->zerocopy,
        };
        BenchRawResult fr, wr;
        bool rdma = strcmp(c->transport, "rdma") == 0;
        bool ok = rdma ? bench_raw_rdma_run(ctl, &spec, blocks[0].host, &fr, error)
                       : bench_raw_tcp_run(ctl, &spec, blocks[0].host, &fr, error);
        spec.fresh = false;
        ok = ok && (rdma ? bench_raw_rdma_run(ctl, &spec, blocks[0].host, &wr, error)
                         : bench_raw_tcp_run(ctl, &spec, blocks[0].host, &wr, error));
        if (!ok) {
            g_prefix_error(error, "raw %s baseline: ", c->transport);
            return false;
        }
        /* Like for like with the engine, whose cpu_s includes registration: the raw CPU
         * figures add the CPU of the raw registration loops (0 on tcp). */
        double bg = spec.bytes / GIB;
        v[M_BASE_GIBS_FRESH] = bg / fr.elapsed_s;
        v[M_BASE_GIBS_WARM] = bg / wr.elapsed_s;
        v[M_BASE_SRC_CPU_GIB] = (fr.src_cpu_s + fr.src_reg_cpu_s) / bg;
        v[M_BASE_SRC_CPU_GIB_XREG] = fr.src_cpu_s / bg;
        v[M_BASE_DST_CPU_GIB_FRESH] = (fr.dst_cpu_s + fr.dst_reg_cpu_s) / bg;
        v[M_BASE_DST_CPU_GIB_FRESH_XREG] = fr.dst_cpu_s / bg;
        v[M_BASE_DST_CPU_GIB_WARM] = (wr.dst_cpu_s + wr.dst_reg_cpu_s) / bg;
        if (rdma) {
            v[M_BASE_SRC_REG_MS_GIB] = fr.src_reg_ms / bg;
            v[M_BASE_DST_REG_MS_GIB] = fr.reg_ms / bg;
            v[M_BASE_SRC_REG_CPU_GIB] = fr.src_reg_cpu_s / bg;
            v[M_BASE_DST_REG_CPU_GIB] = fr.dst_reg_cpu_s / bg;
        }
        if (c->zerocopy) {
            v[M_BASE_ZC_SENDS] = (double)fr.zc_sends;
            v[M_BASE_ZC_COPIED] = (double)fr.zc_copied;
        }
    }
    double warm = NAN, fresh = NAN;
    unsigned nb;
    const MfrRamBlock *blocks = mfr_guest_blocks(guest, &nb);
    if (!measure_memcpy(blocks[0].host, blocks[0].length, a->thp, &warm, &fresh, error)) {
        return false;
    }
    v[M_MEMCPY_WARM_GBS] = warm;
    v[M_MEMCPY_FRESH_GBS] = fresh;
    v[M_ZERO_SCAN_GBS] = measure_zero_scan(zero);
    v[M_DIGEST_GBS] = measure_digest(zero);

    v[M_RATIO_GIBS] = ratio(v[M_GIBS_RAM], v[M_BASE_GIBS_FRESH]);
    v[M_RATIO_GIBS_WARM] = ratio(v[M_GIBS_RAM], v[M_BASE_GIBS_WARM]);
    v[M_RATIO_WIRE] = ratio(v[M_GIBS_WIRE], v[M_BASE_GIBS_FRESH]);
    v[M_RATIO_SRC_CPU] = ratio(v[M_SRC_CPU_GIB], v[M_BASE_SRC_CPU_GIB]);
    v[M_RATIO_SRC_CPU_XREG] = ratio(v[M_SRC_CPU_GIB_XREG], v[M_BASE_SRC_CPU_GIB_XREG]);
    v[M_RATIO_DST_CPU] = ratio(v[M_DST_CPU_GIB], v[M_BASE_DST_CPU_GIB_FRESH]);
    v[M_RATIO_DST_CPU_XREG] = ratio(v[M_DST_CPU_GIB_XREG], v[M_BASE_DST_CPU_GIB_FRESH_XREG]);
    v[M_RATIO_SRC_REG] = ratio(v[M_SRC_REG_MS_GIB], v[M_BASE_SRC_REG_MS_GIB]);
    v[M_RATIO_DST_REG] = ratio(v[M_DST_REG_MS_GIB], v[M_BASE_DST_REG_MS_GIB]);
    v[M_RATIO_SRC_REG_CPU] = ratio(v[M_SRC_REG_CPU_GIB], v[M_BASE_SRC_REG_CPU_GIB]);
    v[M_RATIO_DST_REG_CPU] = ratio(v[M_DST_REG_CPU_GIB], v[M_BASE_DST_REG_CPU_GIB]);
    v[M_RATIO_ZERO_SCAN] = ratio(v[M_GIBS_RAM] * GIB / 1e9 / c->channels, v[M_ZERO_SCAN_GBS]);
    if (record) {
        for (unsigned m = 0; m < M_COUNT; m++) {
            put(c, m, v[m]);
        }
    }
    fprintf(stderr, "    %s: %.2f GiB/s (%.2fx raw fresh, %.2fx warm), total %.0f ms, "
            "src %.2f / dst %.2f CPU s/GiB (raw %.2f / %.2f)\n", record ? "run" : "warm-up",
            v[M_GIBS_RAM], v[M_RATIO_GIBS], v[M_RATIO_GIBS_WARM], v[M_TOTAL_MS],
            v[M_SRC_CPU_GIB], v[M_DST_CPU_GIB], v[M_BASE_SRC_CPU_GIB],
            v[M_BASE_DST_CPU_GIB_FRESH]);
    if (c->zerocopy) {
        fprintf(stderr, "    zerocopy sends %.0f, copied by the kernel %.0f (raw %.0f, %.0f)\n",
                v[M_ZC_SENDS], v[M_ZC_COPIED], v[M_BASE_ZC_SENDS], v[M_BASE_ZC_COPIED]);
    }
    return true;
}

/* Each compressed case against its twin without compression (same spec but the last field)
 * of this run: ratios of the medians. */
static void compare_to_off(BenchCase *cases, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        BenchCase *c = &cases[i];
        if (c->comp == MFR_COMPRESSION_OFF || c->error[0]) {
            continue;
        }
        for (unsigned j = 0; j < n; j++) {
            BenchCase *o = &cases[j];
            if (o->comp != MFR_COMPRESSION_OFF || o->error[0] ||
                strcmp(o->transport, c->transport) || o->channels != c->channels ||
                o->size != c->size || strcmp(o->mix, c->mix) || o->dirty_mbps != c->dirty_mbps) {
                continue;
            }
            put(c, M_VS_OFF_TOTAL, ratio(case_median(c, M_TOTAL_MS), case_median(o, M_TOTAL_MS)));
            put(c, M_VS_OFF_GIBS, ratio(case_median(c, M_GIBS_RAM), case_median(o, M_GIBS_RAM)));
            double cw = case_median(c, M_GIBS_WIRE) * case_median(c, M_TRANSFER_MS);
            double ow = case_median(o, M_GIBS_WIRE) * case_median(o, M_TRANSFER_MS);
            put(c, M_VS_OFF_WIRE, ratio(cw, ow));
            break;
        }
    }
}

/* ---------- output ---------- */

static void json_num(GString *j, double v)
{
    if (isfinite(v)) {
        g_string_append_printf(j, "%.6g", v);
    } else {
        g_string_append(j, "null");
    }
}

static char *json_str(const char *s)
{
    GString *j = g_string_new("\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            g_string_append_c(j, '\\');
        }
        if ((unsigned char)*s < 0x20) {
            g_string_append_printf(j, "\\u%04x", *s);
            continue;
        }
        g_string_append_c(j, *s);
    }
    g_string_append_c(j, '"');
    return g_string_free(j, FALSE);
}

static bool write_results(const char *dir, const BenchArgs *a, BenchCase *cases, unsigned n,
                          const char *cmdline, GError **error)
{
    struct utsname u;
    uname(&u);
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *when = g_date_time_format_iso8601(now);
    g_autofree char *cmd = json_str(cmdline);
    GString *j = g_string_new("{\n");
    g_string_append_printf(j, "  \"bench_version\": 2,\n  \"date\": \"%s\",\n  \"command\": %s,\n",
                           when, cmd);
    g_string_append_printf(j, "  \"machine\": {\"kernel\": \"%s %s\", \"cpus\": %ld},\n",
                           u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN));
    g_string_append_printf(j, "  \"config\": {\"repeats\": %d, \"warmup\": %d, \"verify\": %s, "
                           "\"thp\": %s, \"pages_per_packet\": %d, \"two_hosts\": %s, "
                           "\"max_bandwidth\": %" G_GUINT64_FORMAT "},\n",
                           a->repeats, a->warmup, a->verify ? "true" : "false",
                           a->thp ? "true" : "false",
                           a->pages_per_packet > 0 ? a->pages_per_packet : 128,
                           a->peer ? "true" : "false", a->max_bandwidth);
    g_string_append(j, "  \"metrics\": {");
    for (unsigned m = 0; m < M_COUNT; m++) {
        g_autofree char *w = json_str(metrics[m].what);
        g_string_append_printf(j, "%s\n    \"%s\": %s", m ? "," : "", metrics[m].name, w);
    }
    g_string_append(j, "\n  },\n  \"cases\": [");
    GString *csv = g_string_new("case,transport,channels,size_bytes,mix,dirty_mbps,runs,error");
    for (unsigned m = 0; m < M_COUNT; m++) {
        g_string_append_printf(csv, ",%s_min,%s_median,%s_max", metrics[m].name,
                               metrics[m].name, metrics[m].name);
    }
    g_string_append_c(csv, '\n');
    for (unsigned i = 0; i < n; i++) {
        BenchCase *c = &cases[i];
        g_autofree char *err = json_str(c->error);
        g_string_append_printf(j, "%s\n    {\"case\": \"%s\", \"transport\": \"%s\", "
                               "\"channels\": %u, \"size_bytes\": %" G_GUINT64_FORMAT ", "
                               "\"zerocopy\": %s, \"mix\": \"%s\", \"mix_pct\": [%u, %u, %u], "
                               "\"dirty_mbps\": ", i ? "," : "", c->spec, c->transport,
                               c->channels, c->size, c->zerocopy ? "true" : "false", c->mix,
                               c->go.pct_random, c->go.pct_compressible, c->go.pct_zero);
        json_num(j, c->dirty_mbps);
        g_string_append_printf(j, ", \"runs\": %u, \"error\": %s,\n     \"figures\": {",
                               c->runs[0]->len, c->error[0] ? err : "null");
        g_string_append_printf(csv, "%s,%s,%u,%" G_GUINT64_FORMAT ",%s,%g,%u,\"%s\"", c->spec,
                               c->transport, c->channels, c->size, c->mix, c->dirty_mbps,
                               c->runs[0]->len, c->error);
        for (unsigned m = 0; m < M_COUNT; m++) {
            double mn = NAN, med = NAN, mx = NAN;
            case_summary(c, m, &mn, &med, &mx);
            g_string_append_printf(j, "%s\n       \"%s\": {\"min\": ", m ? "," : "",
                                   metrics[m].name);
            json_num(j, mn);
            g_string_append(j, ", \"median\": ");
            json_num(j, med);
            g_string_append(j, ", \"max\": ");
            json_num(j, mx);
            g_string_append(j, "}");
            double t[3] = { mn, med, mx };
            for (unsigned k = 0; k < 3; k++) {
                if (isfinite(t[k])) {
                    g_string_append_printf(csv, ",%.6g", t[k]);
                } else {
                    g_string_append(csv, ",");
                }
            }
        }
        g_string_append(j, "}}");
        g_string_append_c(csv, '\n');
    }
    g_string_append(j, "\n  ]\n}\n");
    g_autofree char *jp = g_build_filename(dir, "results.json", NULL);
    g_autofree char *cp = g_build_filename(dir, "results.csv", NULL);
    bool ok = g_file_set_contents(jp, j->str, -1, error) &&
              g_file_set_contents(cp, csv->str, -1, error);
    g_string_free(j, TRUE);
    g_string_free(csv, TRUE);
    return ok;
}

/* Appends one right-aligned cell: the median of v formatted with fmt, then "(ratio)" when r
 * names a ratio (r < 0: none); "-" for what was not measured. */
static void put_cell(GString *row, int width, const char *fmt, const BenchCase *c, Metric v,
                     int r)
{
    double x = case_median(c, v);
    g_autoptr(GString) t = g_string_new(NULL);
    if (!isfinite(x)) {
        g_string_append_c(t, '-');
    } else {
        g_string_append_printf(t, fmt, x);
        if (r >= 0) {
            double y = case_median(c, (Metric)r);
            if (isfinite(y)) {
                g_string_append_printf(t, "(%.2f)", y);
            } else {
                g_string_append(t, "(-)");
            }
        }
    }
    g_string_append_printf(row, " %*s", width, t->str);
}

static void print_row(FILE *out, GString *row)
{
    fprintf(out, "%s\n", row->str);
    g_string_truncate(row, 0);
}

static void print_compression(FILE *out, BenchCase *cases, unsigned n, GString *row)
{
    bool any = false;
    for (unsigned i = 0; i < n; i++) {
        any |= cases[i].comp != MFR_COMPRESSION_OFF && !cases[i].error[0];
    }
    if (!any) {
        return;
    }
    fprintf(out, "\ncompression: vs off = ratio to the same case without compression in this "
                 "run (total time,\nthroughput, wire bytes); ratio = raw/compressed of the "
                 "packets sent compressed; share = of the\ndata bytes; zstd CPU s per run, "
                 "source / destination; skipped = packets auto sent without trying\n");
    fprintf(out, "%-34s %8s %8s %8s %7s %6s %8s %8s %8s\n", "case", "totalVs", "GiB/sVs",
            "wireVs", "ratio", "share", "srcZstd", "dstZstd", "skipped");
    for (unsigned i = 0; i < n; i++) {
        BenchCase *c = &cases[i];
        if (c->comp == MFR_COMPRESSION_OFF || c->error[0]) {
            continue;
        }
        g_string_append_printf(row, "%-34s", c->spec);
        put_cell(row, 8, "%.2f", c, M_VS_OFF_TOTAL, -1);
        put_cell(row, 8, "%.2f", c, M_VS_OFF_GIBS, -1);
        put_cell(row, 8, "%.2f", c, M_VS_OFF_WIRE, -1);
        put_cell(row, 7, "%.2f", c, M_COMP_RATIO, -1);
        put_cell(row, 6, "%.2f", c, M_COMP_SHARE, -1);
        put_cell(row, 8, "%.2f", c, M_COMP_SRC_CPU, -1);
        put_cell(row, 8, "%.2f", c, M_COMP_DST_CPU, -1);
        put_cell(row, 8, "%.0f", c, M_COMP_SKIPPED, -1);
        print_row(out, row);
    }
}

static void print_table(FILE *out, BenchCase *cases, unsigned n)
{
    g_autoptr(GString) row = g_string_new(NULL);
    bool any_zc = false;
    fprintf(out, "\nmedians; (x) = ratio to the raw baseline of the same run (throughput: fresh "
                 "destination memory;\nwire: wire GiB/s / raw GiB/s; zscan: guest GB/s per "
                 "channel / one thread's zero-page scan)\n");
    fprintf(out, "%-28s %6s %8s %6s %6s %11s %7s %6s %6s %6s %12s\n", "case", "GiB/s",
            "rawGiB/s", "ratio", "warm", "wireGiB/s", "total", "setup", "down", "rounds",
            "zscanGB/s");
    for (unsigned i = 0; i < n; i++) {
        BenchCase *c = &cases[i];
        any_zc |= c->zerocopy;
        if (c->error[0]) {
            fprintf(out, "%-28s FAILED: %s\n", c->spec, c->error);
            continue;
        }
        g_string_append_printf(row, "%-28s", c->spec);
        put_cell(row, 6, "%.2f", c, M_GIBS_RAM, -1);
        put_cell(row, 8, "%.2f", c, M_BASE_GIBS_FRESH, -1);
        put_cell(row, 6, "%.2f", c, M_RATIO_GIBS, -1);
        put_cell(row, 6, "%.2f", c, M_RATIO_GIBS_WARM, -1);
        put_cell(row, 11, "%.2f", c, M_GIBS_WIRE, M_RATIO_WIRE);
        put_cell(row, 7, "%.0fms", c, M_TOTAL_MS, -1);
        put_cell(row, 6, "%.0fms", c, M_SETUP_MS, -1);
        put_cell(row, 6, "%.0fms", c, M_DOWNTIME_MS, -1);
        put_cell(row, 6, "%.0f", c, M_ROUNDS, -1);
        put_cell(row, 12, "%.1f", c, M_ZERO_SCAN_GBS, M_RATIO_ZERO_SCAN);
        print_row(out, row);
    }
    fprintf(out, "\nCPU s per GiB handled, (x) = ratio to the raw sender / fresh receiver; "
                 "dstCPU includes the\nregistering thread's registration CPU (so does the "
                 "raw one), dstCPU-reg leaves it out on both;\nregistration ms and CPU s "
                 "per GiB of guest RAM, source and destination apart (tcp: none)\n");
    fprintf(out, "%-28s %11s %11s %11s %13s %13s %12s\n", "case", "srcCPU", "dstCPU",
            "dstCPU-reg", "srcReg ms", "dstReg ms", "dstRegCPU");
    for (unsigned i = 0; i < n; i++) {
        BenchCase *c = &cases[i];
        if (c->error[0]) {
            continue;
        }
        g_string_append_printf(row, "%-28s", c->spec);
        put_cell(row, 11, "%.2f", c, M_SRC_CPU_GIB, M_RATIO_SRC_CPU);
        put_cell(row, 11, "%.2f", c, M_DST_CPU_GIB, M_RATIO_DST_CPU);
        put_cell(row, 11, "%.2f", c, M_DST_CPU_GIB_XREG, M_RATIO_DST_CPU_XREG);
        put_cell(row, 13, "%.1f", c, M_SRC_REG_MS_GIB, M_RATIO_SRC_REG);
        put_cell(row, 13, "%.1f", c, M_DST_REG_MS_GIB, M_RATIO_DST_REG);
        put_cell(row, 12, "%.2f", c, M_DST_REG_CPU_GIB, M_RATIO_DST_REG_CPU);
        print_row(out, row);
    }
    if (any_zc) {
        fprintf(out, "\nMSG_ZEROCOPY sends and how many of them the kernel copied anyway "
                     "(loopback always copies;\nengine and raw both stop asking after 256 "
                     "copied in a row)\n");
        fprintf(out, "%-28s %10s %10s %10s %10s\n", "case", "zcSends", "copied", "rawSends",
                "rawCopied");
        for (unsigned i = 0; i < n; i++) {
            BenchCase *c = &cases[i];
            if (c->error[0] || !c->zerocopy) {
                continue;
            }
            g_string_append_printf(row, "%-28s", c->spec);
            put_cell(row, 10, "%.0f", c, M_ZC_SENDS, -1);
            put_cell(row, 10, "%.0f", c, M_ZC_COPIED, -1);
            put_cell(row, 10, "%.0f", c, M_BASE_ZC_SENDS, -1);
            put_cell(row, 10, "%.0f", c, M_BASE_ZC_COPIED, -1);
            print_row(out, row);
        }
    }
    print_compression(out, cases, n, row);
    if (n) {
        fprintf(out, "memcpy (one thread): %.1f GB/s warm, %.1f GB/s into fresh memory\n",
                case_median(&cases[0], M_MEMCPY_WARM_GBS),
                case_median(&cases[0], M_MEMCPY_FRESH_GBS));
    }
}

/* ---------- agent hosting ---------- */

typedef struct {
    BenchAgentConfig cfg;
    int lfd;
} LocalAgent;

static gpointer local_agent_thread(gpointer opaque)
{
    LocalAgent *la = opaque;
    int fd = bench_tcp_accept(la->lfd, 60000, false, NULL);
    if (fd >= 0) {
        bench_agent_serve(&la->cfg, fd);
        close(fd);
    }
    return NULL;
}

static bool split_host_port(const char *text, char **host, char **port, GError **error)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || !colon[1]) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "'%s': want HOST:PORT", text);
        return false;
    }
    if (text[0] == '[' && colon[-1] == ']') {
        *host = g_strndup(text + 1, colon - text - 2);
    } else {
        *host = g_strndup(text, colon - text);
    }
    *port = g_strdup(colon + 1);
    return true;
}

static const char *rdma_address(const BenchArgs *a)
{
    if (a->address) {
        return a->address;
    }
    const char *e = g_getenv("MFR_TEST_RDMA_ADDR");
    if (!e || !*e) {
        e = g_getenv("MFR_RDMA_ADDR");
    }
    return e && *e ? e : NULL;
}

static int serve_forever(const BenchArgs *a)
{
    g_autofree char *host = NULL, *port = NULL;
    g_autoptr(GError) error = NULL;
    if (!split_host_port(a->listen, &host, &port, &error)) {
        fprintf(stderr, "mfrdma-bench: --listen %s\n", error->message);
        return 2;
    }
    BenchAgentConfig cfg = {
        .tcp_host = host,
        .rdma_host = (char *)(rdma_address(a) ? rdma_address(a) : host),
        .thp = a->thp,
        .timeout_ms = (unsigned)a->timeout_ms,
        .registration_threads = (unsigned)a->registration_threads,
    };
    int lfd = bench_tcp_listen(host, port, false, NULL, &error);
    if (lfd < 0) {
        fprintf(stderr, "mfrdma-bench: %s\n", error->message);
        return 1;
    }
    fprintf(stderr, "mfrdma-bench: agent listening on %s:%s (rdma data on %s)\n", host, port,
            cfg.rdma_host);
    for (;;) {
        g_clear_error(&error);
        int fd = bench_tcp_accept(lfd, -1, false, &error);
        if (fd < 0) {
            fprintf(stderr, "mfrdma-bench: %s\n", error->message);
            continue;
        }
        fprintf(stderr, "mfrdma-bench: serving a bench run\n");
        bench_agent_serve(&cfg, fd);
        close(fd);
    }
}

static void bench_args_clear(BenchArgs *a)
{
    g_strfreev(a->cases);
    g_free(a->listen);
    g_free(a->peer);
    g_free(a->address);
    g_free(a->out);
    g_free(a->max_bandwidth_arg);
    g_free(a->dump_guest);
}

/* --dump-guest FILE: the first case's guest, as the bench would migrate it, written to FILE
 * (a peer such as QEMU maps it as its RAM: same size, same pages). */
static int dump_guest(const BenchCase *c, const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MfrGuest) guest = mfr_guest_new(&c->go, &error);
    unsigned nb = 0;
    const MfrRamBlock *b = guest ? mfr_guest_blocks(guest, &nb) : NULL;
    if (!guest || nb != 1 || !g_file_set_contents(path, b[0].host, (gssize)b[0].length,
                                                   &error)) {
        fprintf(stderr, "mfrdma-bench: --dump-guest %s: %s\n", path,
                error ? error->message : "want one block");
        return 1;
    }
    fprintf(stderr, "mfrdma-bench: %s: %.0f MiB guest (%u:%u:%u)\n", path,
            b[0].length / 1048576.0, c->go.pct_random, c->go.pct_compressible, c->go.pct_zero);
    return 0;
}

/* case_clear() on an all-zero case is harmless, so a half-parsed array frees cleanly */
static void cases_free(BenchCase *cases, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        case_clear(&cases[i]);
    }
    g_free(cases);
}

int main(int argc, char **argv)
{
    BenchArgs a = { .repeats = 3, .warmup = 1, .timeout_ms = 10000 };
    GOptionEntry entries[] = {
        { "case", 'c', 0, G_OPTION_ARG_STRING_ARRAY, &a.cases,
          "a case TRANSPORT/CHANNELS/SIZE/MIX/DIRTY_MBPS (repeatable; TRANSPORT: tcp, tcpzc "
          "(MSG_ZEROCOPY) or rdma; MIX: random, compressible, zero, mixed or R:C:Z)", "SPEC" },
        { "repeats", 'r', 0, G_OPTION_ARG_INT, &a.repeats, "measured runs per case (3)", "N" },
        { "warmup", 0, 0, G_OPTION_ARG_INT, &a.warmup, "discarded runs per case (1)", "N" },
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &a.out,
          "directory for results.json and results.csv", "DIR" },
        { "listen", 0, 0, G_OPTION_ARG_STRING, &a.listen,
          "be the destination agent for a bench on another host", "HOST:PORT" },
        { "peer", 0, 0, G_OPTION_ARG_STRING, &a.peer,
          "run the cases against an agent (mfrdma-bench --listen) on another host",
          "HOST:PORT" },
        { "address", 0, 0, G_OPTION_ARG_STRING, &a.address,
          "rdma data address of the local/listening agent (default $MFR_TEST_RDMA_ADDR, "
          "$MFR_RDMA_ADDR, or the --listen host)", "ADDR" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &a.verify,
          "let the engine compare per-block digests (costs CPU; off by default)", NULL },
        { "no-thp", 0, 0, G_OPTION_ARG_NONE, &a.no_thp,
          "destination memory without MADV_HUGEPAGE (default: with, as the tool and QEMU)",
          NULL },
        { "thp", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &a.thp,
          "accepted for old scripts: the default", NULL },
        { "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &a.max_bandwidth_arg,
          "cap the engine at RATE bytes/s on the wire (K/M/G binary: 125M, 1G; default 0 = "
          "unlimited); the raw baselines stay uncapped", "RATE" },
        { "dump-guest", 0, 0, G_OPTION_ARG_FILENAME, &a.dump_guest,
          "write the first case's guest RAM to FILE and exit (bench/qemu-peer.py)", "FILE" },
        { "registration-threads", 0, 0, G_OPTION_ARG_INT, &a.registration_threads,
          "rdma: threads registering blocks on each side (0 = one per CPU)", "N" },
        { "pages-per-packet", 0, 0, G_OPTION_ARG_INT, &a.pages_per_packet,
          "engine packet size in pages (default: the engine's)", "N" },
        { "timeout", 0, 0, G_OPTION_ARG_INT, &a.timeout_ms, "engine/agent timeout (10000)", "MS" },
        { "no-baseline", 0, 0, G_OPTION_ARG_NONE, &a.no_baseline, "skip the raw baselines", NULL },
        { NULL },
    };
    g_autofree char *cmdline = g_strjoinv(" ", argv);
    g_autoptr(GOptionContext) oc = g_option_context_new("- mfrdma throughput and CPU benchmark");
    g_option_context_add_main_entries(oc, entries, NULL);
    g_option_context_set_description(oc,
        "Each case is migrated warmup + repeats times; every repetition also runs the raw\n"
        "baseline of the same transport and channel count (fresh and warm destination\n"
        "memory), memcpy and the zero-page scan. bench/run drives the usual matrices.\n"
        "Example: mfrdma-bench -c tcp/4/1G/random/0 -c tcpzc/4/1G/random/0 -o results/\n");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(oc, &argc, &argv, &error)) {
        fprintf(stderr, "mfrdma-bench: %s\n", error->message);
        bench_args_clear(&a);
        return 2;
    }
    if (a.repeats < 1 || a.warmup < 0 || a.timeout_ms < 100 ||
        (a.pages_per_packet < 0 || a.pages_per_packet > 512 || a.registration_threads < 0 ||
         a.registration_threads > 16)) {
        fprintf(stderr, "mfrdma-bench: --repeats >= 1, --warmup >= 0, --timeout >= 100, "
                        "--pages-per-packet 1..512, --registration-threads 0..16\n");
        bench_args_clear(&a);
        return 2;
    }
    a.thp = !a.no_thp;
    if (a.max_bandwidth_arg && strcmp(a.max_bandwidth_arg, "0") != 0 &&
        !parse_size(a.max_bandwidth_arg, &a.max_bandwidth)) {
        fprintf(stderr, "mfrdma-bench: --max-bandwidth: '%s' is not a rate (125M, 1G, 0)\n",
                a.max_bandwidth_arg);
        bench_args_clear(&a);
        return 2;
    }
    if (a.listen) {
        int src = serve_forever(&a);
        bench_args_clear(&a);
        return src;
    }
    const char *dflt[] = { "tcp/4/256M/random/0", NULL };
    const char *const *specs = a.cases ? (const char *const *)a.cases : dflt;
    unsigned ncases = g_strv_length((char **)specs);
    BenchCase *cases = g_new0(BenchCase, ncases);
    for (unsigned i = 0; i < ncases; i++) {
        if (!case_parse(specs[i], &cases[i], &error)) {
            fprintf(stderr, "mfrdma-bench: %s\n", error->message);
            cases_free(cases, ncases);
            bench_args_clear(&a);
            return 2;
        }
    }

    if (a.dump_guest) {
        int rc = dump_guest(&cases[0], a.dump_guest);
        cases_free(cases, ncases);
        bench_args_clear(&a);
        return rc;
    }

    /* control connection to the agent */
    int ctl = -1;
    GThread *agent = NULL;
    LocalAgent la = { 0 };
    if (a.peer) {
        g_autofree char *host = NULL, *port = NULL;
        if (!split_host_port(a.peer, &host, &port, &error) ||
            (ctl = bench_tcp_connect(host, port, false, &error)) < 0) {
            fprintf(stderr, "mfrdma-bench: --peer: %s\n", error->message);
            cases_free(cases, ncases);
            bench_args_clear(&a);
            return 1;
        }
    } else {
        uint16_t port = 0;
        la.cfg = (BenchAgentConfig){ .tcp_host = (char *)"127.0.0.1",
                                     .rdma_host = (char *)rdma_address(&a), .thp = a.thp,
                                     .timeout_ms = (unsigned)a.timeout_ms,
                                     .registration_threads =
                                         (unsigned)a.registration_threads };
        la.lfd = bench_tcp_listen("127.0.0.1", "0", false, &port, &error);
        if (la.lfd < 0) {
            fprintf(stderr, "mfrdma-bench: %s\n", error->message);
            cases_free(cases, ncases);
            bench_args_clear(&a);
            return 1;
        }
        agent = g_thread_new("bench-agent", local_agent_thread, &la);
        g_autofree char *ps = g_strdup_printf("%u", port);
        ctl = bench_tcp_connect("127.0.0.1", ps, false, &error);
        if (ctl < 0) {
            fprintf(stderr, "mfrdma-bench: agent: %s\n", error->message);
            cases_free(cases, ncases);
            bench_args_clear(&a);
            return 1;
        }
    }

    uint8_t *zero = bench_map_fresh(ZERO_SCAN_BYTES, false, &error);
    if (!zero) {
        fprintf(stderr, "mfrdma-bench: %s\n", error->message);
        cases_free(cases, ncases);
        bench_args_clear(&a);
        return 1;
    }
    memset(zero, 0, ZERO_SCAN_BYTES); /* fault it in: the scan is measured on warm memory */

    unsigned failed = 0;
    for (unsigned i = 0; i < ncases; i++) {
        BenchCase *c = &cases[i];
        fprintf(stderr, "[%u/%u] %s: filling %.0f MiB guest (%u:%u:%u), dirty %.0f MB/s\n", i + 1,
                ncases, c->spec, c->size / 1048576.0, c->go.pct_random, c->go.pct_compressible,
                c->go.pct_zero, c->dirty_mbps);
        g_autoptr(GError) cerr = NULL;
        g_autoptr(MfrGuest) guest = mfr_guest_new(&c->go, &cerr);
        for (int r = 0; guest && r < a.warmup + a.repeats; r++) {
            if (!run_once(ctl, &a, c, guest, zero, r >= a.warmup, &cerr)) {
                break;
            }
        }
        if (cerr) {
            g_strlcpy(c->error, cerr->message, sizeof(c->error));
            g_strdelimit(c->error, ",\"\n", ';'); /* keeps the CSV a plain table */
            fprintf(stderr, "[%u/%u] %s: FAILED: %s\n", i + 1, ncases, c->spec, cerr->message);
            failed++;
        } else {
            fprintf(stderr, "[%u/%u] %s: %.2f GiB/s, %.2fx raw (median of %d)\n", i + 1, ncases,
                    c->spec, case_median(c, M_GIBS_RAM), case_median(c, M_RATIO_GIBS),
                    a.repeats);
        }
    }
    close(ctl);
    if (agent) {
        g_thread_join(agent);
        close(la.lfd);
    }
    compare_to_off(cases, ncases);
    bench_unmap(zero, ZERO_SCAN_BYTES);
    print_table(stdout, cases, ncases);
    int rc = failed ? 1 : 0;
    if (a.out) {
        if (g_mkdir_with_parents(a.out, 0755) != 0 ||
            !write_results(a.out, &a, cases, ncases, cmdline, &error)) {
            fprintf(stderr, "mfrdma-bench: writing results to %s: %s\n", a.out,
                    error ? error->message : g_strerror(errno));
            rc = 1;
        } else {
            fprintf(stdout, "results: %s/results.json, %s/results.csv\n", a.out, a.out);
        }
    }
    cases_free(cases, ncases);
    bench_args_clear(&a);
    return rc;
}
