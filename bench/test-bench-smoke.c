/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-smoke: runs mfrdma-bench once on tiny TCP cases (one with MSG_ZEROCOPY) and checks
 * that results.json is well-formed JSON and results.csv a consistent table, both with every
 * expected figure and ratios > 0. Not a timed assertion: it proves the harness measures, not
 * how fast.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* ---------- a small JSON reader: validates and flattens numbers to "a.b.0.c" paths ---------- */

typedef struct {
    const char *p;
    GHashTable *nums;    /* path -> double* */
    GHashTable *strs;    /* path -> string */
    GHashTable *lens;    /* path of an array -> element count (as double*) */
} Json;

static bool json_value(Json *j, const char *path);

static void json_ws(Json *j)
{
    while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r') {
        j->p++;
    }
}

static char *json_string(Json *j)
{
    if (*j->p != '"') {
        return NULL;
    }
    GString *s = g_string_new(NULL);
    for (j->p++; *j->p && *j->p != '"'; j->p++) {
        if ((unsigned char)*j->p < 0x20) {
            g_string_free(s, TRUE);
            return NULL;
        }
        if (*j->p == '\\') {
            j->p++;
            if (*j->p == 'u') {
                for (int k = 0; k < 4; k++) {
                    if (!g_ascii_isxdigit(*++j->p)) {
                        g_string_free(s, TRUE);
                        return NULL;
                    }
                }
                g_string_append_c(s, '?');
                continue;
            }
            if (!strchr("\"\\/bfnrt", *j->p)) {
                g_string_free(s, TRUE);
                return NULL;
            }
        }
        g_string_append_c(s, *j->p);
    }
    if (*j->p != '"') {
        g_string_free(s, TRUE);
        return NULL;
    }
    j->p++;
    return g_string_free(s, FALSE);
}

static char *json_join(const char *path, const char *key)
{
    return *path ? g_strdup_printf("%s.%s", path, key) : g_strdup(key);
}

static bool json_value(Json *j, const char *path)
{
    json_ws(j);
    if (*j->p == '{') {
        j->p++;
        json_ws(j);
        if (*j->p == '}') {
            j->p++;
            return true;
        }
        for (;;) {
            json_ws(j);
            g_autofree char *key = json_string(j);
            json_ws(j);
            if (!key || *j->p++ != ':') {
                return false;
            }
            g_autofree char *sub = json_join(path, key);
            if (!json_value(j, sub)) {
                return false;
            }
            json_ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            return *j->p++ == '}';
        }
    }
    if (*j->p == '[') {
        j->p++;
        json_ws(j);
        double *n = g_new0(double, 1);
        g_hash_table_insert(j->lens, g_strdup(path), n);
        if (*j->p == ']') {
            j->p++;
            return true;
        }
        for (;;) {
            g_autofree char *idx = g_strdup_printf("%u", (unsigned)*n);
            g_autofree char *sub = json_join(path, idx);
            if (!json_value(j, sub)) {
                return false;
            }
            (*n)++;
            json_ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            return *j->p++ == ']';
        }
    }
    if (*j->p == '"') {
        char *s = json_string(j);
        if (!s) {
            return false;
        }
        g_hash_table_insert(j->strs, g_strdup(path), s);
        return true;
    }
    static const char *const lits[] = { "true", "false", "null" };
    for (unsigned i = 0; i < G_N_ELEMENTS(lits); i++) {
        if (strncmp(j->p, lits[i], strlen(lits[i])) == 0) {
            j->p += strlen(lits[i]);
            if (i < 2) { /* booleans read back as strings; null is simply absent */
                g_hash_table_insert(j->strs, g_strdup(path), g_strdup(lits[i]));
            }
            return true;
        }
    }
    char *end = NULL;
    if (*j->p != '-' && !g_ascii_isdigit(*j->p)) {
        return false;
    }
    double v = g_ascii_strtod(j->p, &end);
    if (end == j->p) {
        return false;
    }
    j->p = end;
    double *d = g_new(double, 1);
    *d = v;
    g_hash_table_insert(j->nums, g_strdup(path), d);
    return true;
}

static void json_init(Json *j)
{
    j->nums = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    j->strs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    j->lens = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

static void json_clear(Json *j)
{
    g_hash_table_unref(j->nums);
    g_hash_table_unref(j->strs);
    g_hash_table_unref(j->lens);
}

static bool json_parse(Json *j, const char *text)
{
    j->p = text;
    if (!json_value(j, "")) {
        return false;
    }
    json_ws(j);
    return *j->p == '\0';
}

static double json_num(Json *j, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static double json_num(Json *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *path = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const double *d = g_hash_table_lookup(j->nums, path);
    if (!d) {
        g_test_message("missing number %s", path);
    }
    g_assert_nonnull(d);
    return *d;
}

static bool json_has_num(Json *j, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool json_has_num(Json *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *path = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return g_hash_table_contains(j->nums, path);
}

/* ---------- the run ---------- */

static const char *const figures[] = {
    "total_ms", "setup_ms", "downtime_ms", "transfer_ms", "rounds", "gib_s_ram", "gib_s_wire",
    "gib_s_total", "src_cpu_s_per_gib", "src_cpu_s_per_gib_excl_reg", "dst_cpu_s_per_gib",
    "dst_cpu_s_per_gib_excl_reg", "src_reg_ms_per_gib", "dst_reg_ms_per_gib",
    "src_reg_cpu_s_per_gib", "dst_reg_cpu_s_per_gib", "base_gib_s_fresh", "base_gib_s_warm",
    "base_src_cpu_s_per_gib", "base_src_cpu_s_per_gib_excl_reg", "base_dst_cpu_s_per_gib_fresh",
    "base_dst_cpu_s_per_gib_fresh_excl_reg", "base_dst_cpu_s_per_gib_warm", "memcpy_warm_gb_s",
    "memcpy_fresh_gb_s", "zero_scan_gb_s", "digest_gb_s", "ratio_gib_s", "ratio_gib_s_warm",
    "ratio_gib_s_wire", "ratio_zero_scan",
};
/* Figures that must be > 0 in every case (setup/downtime can round to 0 on tiny guests). */
static const char *const positive[] = {
    "total_ms", "transfer_ms", "rounds", "gib_s_ram", "gib_s_wire", "base_gib_s_fresh",
    "base_gib_s_warm", "memcpy_warm_gb_s", "memcpy_fresh_gb_s", "zero_scan_gb_s", "digest_gb_s",
    "ratio_gib_s", "ratio_gib_s_warm", "ratio_gib_s_wire", "ratio_zero_scan",
};
/* Registration exists only on rdma: on tcp the raw side has none (null) and the ratios too. */
static const char *const rdma_only[] = {
    "base_src_reg_ms_per_gib", "base_dst_reg_ms_per_gib", "base_src_reg_cpu_s_per_gib",
    "base_dst_reg_cpu_s_per_gib", "ratio_src_reg", "ratio_dst_reg", "ratio_src_reg_cpu",
    "ratio_dst_reg_cpu",
};
/* MSG_ZEROCOPY counters: numbers in tcpzc cases, null elsewhere. */
static const char *const zerocopy_figures[] = {
    "zerocopy_sends", "zerocopy_copied", "base_zerocopy_sends", "base_zerocopy_copied",
};
static const char *const cases[] = { "tcp/2/32M/random/0", "tcp/1/32M/zero/0",
                                     "tcpzc/2/32M/random/0" };
static const bool case_zerocopy[] = { false, false, true };
/* CPU ratios need measurable work on both sides: checked on the random cases. */
static const char *const positive_random[] = { "ratio_src_cpu", "ratio_dst_cpu",
                                               "ratio_src_cpu_excl_reg",
                                               "ratio_dst_cpu_excl_reg" };

static char *bench_exe(void)
{
    const char *e = g_getenv("MFR_BENCH_EXE");
    g_assert_nonnull(e);
    return g_strdup(e);
}

static void run_bench(char **argv_extra, int *status, char **out, char **err)
{
    g_autoptr(GPtrArray) av = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(av, bench_exe());
    for (char **a = argv_extra; *a; a++) {
        g_ptr_array_add(av, g_strdup(*a));
    }
    g_ptr_array_add(av, NULL);
    g_autoptr(GError) error = NULL;
    gboolean ok = g_spawn_sync(NULL, (char **)av->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, out,
                               err, status, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

/* Index of FIGURE's median column in the CSV header. */
static int csv_column(char **head, const char *figure)
{
    g_autofree char *col = g_strdup_printf("%s_median", figure);
    for (unsigned i = 0; head[i]; i++) {
        if (strcmp(head[i], col) == 0) {
            return (int)i;
        }
    }
    g_test_message("no CSV column %s", col);
    g_assert_not_reached();
}

static void test_smoke_tcp(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mfr-bench-XXXXXX", &error);
    g_assert_no_error(error);
    char *args[] = { "-c", (char *)cases[0], "-c", (char *)cases[1], "-c", (char *)cases[2],
                     "--repeats", "1", "--warmup", "0", "--verify", "-o", dir, NULL };
    int status = -1;
    g_autofree char *out = NULL, *err = NULL;
    run_bench(args, &status, &out, &err);
    g_test_message("stdout:\n%s\nstderr:\n%s", out, err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_nonnull(strstr(out, "ratio to the raw baseline"));
    g_assert_nonnull(strstr(out, "dstCPU-reg"));
    g_assert_nonnull(strstr(out, "MSG_ZEROCOPY sends"));
    g_assert_nonnull(strstr(err, "[1/3] tcp/2/32M/random/0"));
    g_assert_nonnull(strstr(err, "[3/3] tcpzc/2/32M/random/0"));

    /* JSON */
    g_autofree char *jpath = g_build_filename(dir, "results.json", NULL);
    g_autofree char *jtext = NULL;
    g_file_get_contents(jpath, &jtext, NULL, &error);
    g_assert_no_error(error);
    Json j;
    json_init(&j);
    g_assert_true(json_parse(&j, jtext));
    g_assert_cmpfloat(json_num(&j, "bench_version"), ==, 2);
    g_assert_cmpfloat(json_num(&j, "config.repeats"), ==, 1);
    g_assert_cmpfloat(*(double *)g_hash_table_lookup(j.lens, "cases"), ==, G_N_ELEMENTS(cases));
    for (unsigned c = 0; c < G_N_ELEMENTS(cases); c++) {
        g_autofree char *sp = g_strdup_printf("cases.%u.case", c);
        g_assert_cmpstr(g_hash_table_lookup(j.strs, sp), ==, cases[c]);
        g_assert_cmpfloat(json_num(&j, "cases.%u.runs", c), ==, 1);
        g_autofree char *zp = g_strdup_printf("cases.%u.zerocopy", c);
        g_assert_cmpstr(g_hash_table_lookup(j.strs, zp), ==,
                        case_zerocopy[c] ? "true" : "false");
        for (unsigned f = 0; f < G_N_ELEMENTS(figures); f++) {
            double mn = json_num(&j, "cases.%u.figures.%s.min", c, figures[f]);
            double md = json_num(&j, "cases.%u.figures.%s.median", c, figures[f]);
            double mx = json_num(&j, "cases.%u.figures.%s.max", c, figures[f]);
            g_assert_cmpfloat(mn, <=, md);
            g_assert_cmpfloat(md, <=, mx);
            g_assert_cmpfloat(mn, >=, 0);
        }
        for (unsigned f = 0; f < G_N_ELEMENTS(positive); f++) {
            double md = json_num(&j, "cases.%u.figures.%s.median", c, positive[f]);
            if (md <= 0) {
                g_test_message("case %s: %s = %g", cases[c], positive[f], md);
            }
            g_assert_cmpfloat(md, >, 0);
        }
        for (unsigned f = 0; c != 1 && f < G_N_ELEMENTS(positive_random); f++) {
            g_assert_cmpfloat(json_num(&j, "cases.%u.figures.%s.median", c, positive_random[f]),
                              >, 0);
        }
        /* tcp: nothing registered, so excluding registration changes nothing */
        g_assert_cmpfloat(json_num(&j, "cases.%u.figures.dst_reg_cpu_s_per_gib.median", c), ==,
                          0);
        g_assert_cmpfloat(json_num(&j, "cases.%u.figures.dst_cpu_s_per_gib_excl_reg.median", c),
                          ==, json_num(&j, "cases.%u.figures.dst_cpu_s_per_gib.median", c));
        g_assert_cmpfloat(json_num(&j, "cases.%u.figures.base_dst_cpu_s_per_gib_fresh_excl_reg."
                                   "median", c), ==,
                          json_num(&j, "cases.%u.figures.base_dst_cpu_s_per_gib_fresh.median", c));
        for (unsigned f = 0; f < G_N_ELEMENTS(rdma_only); f++) {
            g_assert_false(json_has_num(&j, "cases.%u.figures.%s.median", c, rdma_only[f]));
        }
        for (unsigned f = 0; f < G_N_ELEMENTS(zerocopy_figures); f++) {
            if (!case_zerocopy[c]) {
                g_assert_false(json_has_num(&j, "cases.%u.figures.%s.median", c,
                                            zerocopy_figures[f]));
                continue;
            }
            double mn = json_num(&j, "cases.%u.figures.%s.min", c, zerocopy_figures[f]);
            double mx = json_num(&j, "cases.%u.figures.%s.max", c, zerocopy_figures[f]);
            g_assert_cmpfloat(mn, <=, mx);
            /* loopback delivery always copies: both senders used MSG_ZEROCOPY, and the
             * completions they reaped say the kernel copied */
            g_assert_cmpfloat(mn, >, 0);
        }
        /* the mostly-zero guest sends far fewer wire bytes than guest bytes */
        if (c == 1) {
            g_assert_cmpfloat(json_num(&j, "cases.1.figures.gib_s_wire.median"), <,
                              json_num(&j, "cases.1.figures.gib_s_ram.median") / 2);
        }
    }
    json_clear(&j);

    /* CSV: header with every figure's min/median/max, one row per case, same width */
    g_autofree char *cpath = g_build_filename(dir, "results.csv", NULL);
    g_autofree char *ctext = NULL;
    g_file_get_contents(cpath, &ctext, NULL, &error);
    g_assert_no_error(error);
    g_auto(GStrv) lines = g_strsplit(g_strchomp(ctext), "\n", 0);
    g_assert_cmpuint(g_strv_length(lines), ==, 1 + G_N_ELEMENTS(cases));
    g_auto(GStrv) head = g_strsplit(lines[0], ",", 0);
    for (unsigned c = 0; c < G_N_ELEMENTS(cases); c++) {
        g_auto(GStrv) row = g_strsplit(lines[1 + c], ",", 0);
        g_assert_cmpuint(g_strv_length(row), ==, g_strv_length(head));
        g_assert_cmpstr(row[0], ==, cases[c]);
        for (unsigned f = 0; f < G_N_ELEMENTS(positive); f++) {
            int k = csv_column(head, positive[f]);
            g_assert_cmpfloat(g_ascii_strtod(row[k], NULL), >, 0);
        }
        for (unsigned f = 0; f < G_N_ELEMENTS(figures); f++) {
            g_assert_cmpstr(row[csv_column(head, figures[f])], !=, "");
        }
        for (unsigned f = 0; f < G_N_ELEMENTS(zerocopy_figures); f++) {
            const char *cell = row[csv_column(head, zerocopy_figures[f])];
            if (case_zerocopy[c]) {
                g_assert_cmpfloat(g_ascii_strtod(cell, NULL), >, 0);
            } else {
                g_assert_cmpstr(cell, ==, "");
            }
        }
    }
    g_unlink(jpath);
    g_unlink(cpath);
    g_rmdir(dir);
}

/* A compressed case next to its uncompressed twin: the compression table, and figures that
 * say what happened (compressible pages shrink by an order of magnitude on the wire). */
static void test_smoke_compress(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mfr-bench-XXXXXX", &error);
    g_assert_no_error(error);
    char *args[] = { "-c", "tcp/2/32M/compressible/0", "-c", "tcp/2/32M/compressible/0/zstd",
                     "--repeats", "1", "--warmup", "0", "--no-baseline", "-o", dir, NULL };
    int status = -1;
    g_autofree char *out = NULL, *err = NULL;
    run_bench(args, &status, &out, &err);
    g_test_message("stdout:\n%s\nstderr:\n%s", out, err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_nonnull(strstr(out, "compression: vs off = ratio to the same case without"));
    g_assert_nonnull(strstr(out, "\ntcp/2/32M/compressible/0/zstd "));
    g_autofree char *jpath = g_build_filename(dir, "results.json", NULL);
    g_autofree char *cpath = g_build_filename(dir, "results.csv", NULL);
    g_autofree char *jtext = NULL;
    g_file_get_contents(jpath, &jtext, NULL, &error);
    g_assert_no_error(error);
    Json j;
    json_init(&j);
    g_assert_true(json_parse(&j, jtext));
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.comp_ratio.median"), >, 8);
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.comp_share.median"), ==, 1);
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.comp_src_cpu_s.median"), >, 0);
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.comp_dst_cpu_s.median"), >, 0);
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.ratio_wire_vs_off.median"), <, 0.2);
    g_assert_cmpfloat(json_num(&j, "cases.1.figures.ratio_total_vs_off.median"), >, 0);
    json_clear(&j);
    g_unlink(jpath);
    g_unlink(cpath);
    g_rmdir(dir);
}

/* --max-bandwidth caps the engine (not the baselines) and is recorded in results.json */
static void test_smoke_max_bandwidth(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mfr-bench-XXXXXX", &error);
    g_assert_no_error(error);
    char *args[] = { "-c", "tcp/2/16M/mixed/0", "--repeats", "1", "--warmup", "0",
                     "--no-baseline", "--max-bandwidth", "8M", "-o", dir, NULL };
    int status = -1;
    g_autofree char *out = NULL, *err = NULL, *text = NULL;
    run_bench(args, &status, &out, &err);
    g_test_message("stderr:\n%s", err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_autofree char *jp = g_build_filename(dir, "results.json", NULL);
    g_assert_true(g_file_get_contents(jp, &text, NULL, NULL));
    Json j;
    json_init(&j);
    g_assert_true(json_parse(&j, text));
    g_assert_cmpfloat(json_num(&j, "config.max_bandwidth"), ==, 8 << 20);
    /* wire bytes per second of transfer stay under the cap (10 ms of burst allowance) */
    double wire = json_num(&j, "cases.0.figures.gib_s_wire.median") * 1024 * 1024 * 1024;
    g_assert_cmpfloat(wire, <=, 1.1 * (8 << 20));
    g_assert_cmpfloat(json_num(&j, "cases.0.figures.transfer_ms.median"), >=, 1000);
    json_clear(&j);
    g_autofree char *cp = g_build_filename(dir, "results.csv", NULL);
    g_unlink(jp);
    g_unlink(cp);
    g_rmdir(dir);
}

/* --dump-guest writes the case's guest RAM, the QEMU peer's RAM in bench/qemu-peer.py */
static void test_smoke_dump_guest(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mfr-bench-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *path = g_build_filename(dir, "guest.ram", NULL);
    char *args[] = { "-c", "tcp/1/8M/mixed/0", "--dump-guest", path, NULL };
    int status = -1;
    g_autofree char *out = NULL, *err = NULL, *data = NULL;
    run_bench(args, &status, &out, &err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(len, ==, 8 << 20);
    unsigned zero = 0, pages = (unsigned)(len / 4096);
    for (unsigned p = 0; p < pages; p++) {
        bool z = true;
        for (unsigned k = 0; k < 4096 && z; k++) {
            z = data[(gsize)p * 4096 + k] == 0;
        }
        zero += z;
    }
    /* the mixed guest: about 20% zero pages */
    g_assert_cmpuint(zero, >=, pages / 10);
    g_assert_cmpuint(zero, <=, pages * 3 / 10);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_smoke_bad_case(void)
{
    char *args[] = { "-c", "udp/4/1G/random/0", NULL };
    int status = -1;
    g_autofree char *out = NULL, *err = NULL;
    run_bench(args, &status, &out, &err);
    g_test_message("status 0x%x, stderr:\n%s", (unsigned)status, err);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 2);
    g_assert_cmpstr(err, ==,
                    "mfrdma-bench: case 'udp/4/1G/random/0': transport 'udp' is not tcp, tcpzc "
                    "or rdma\n");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/bench/smoke/tcp", test_smoke_tcp);
    g_test_add_func("/bench/smoke/bad_case", test_smoke_bad_case);
    g_test_add_func("/bench/smoke/compress", test_smoke_compress);
    g_test_add_func("/bench/smoke/max_bandwidth", test_smoke_max_bandwidth);
    g_test_add_func("/bench/smoke/dump_guest", test_smoke_dump_guest);
    return g_test_run();
}
