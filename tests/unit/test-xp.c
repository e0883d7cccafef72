/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transport layer pieces that need no connection: xp_ops_check() against broken copies of
 * the real tables (each required op removed in turn, a wrong version, an op a capability
 * promises), and the RDMA channel lifecycle's transition table, pair by pair.
 */
#include <string.h>

#include <glib.h>

#include "rdma/state.h"
#include "xp-rdma.h"
#include "xp-tcp.h"
#include "xp.h"

static void test_ops_real_tables_pass(void)
{
    for (const XpOps *const *o = xp_ops_all(); *o; o++) {
        g_autoptr(GError) err = NULL;
        g_assert_true(xp_ops_check(*o, &err));
        g_assert_no_error(err);
        g_assert_true(xp_ops_lookup(xp_ops_name(*o)) == *o);
    }
    g_assert_true(xp_ops_lookup("tcp") == &xp_tcp_ops);
    g_assert_true(xp_ops_lookup("rdma") == &xp_rdma_ops);
    g_assert_null(xp_ops_lookup("udp"));
    g_assert_true(xp_has_cap(&xp_rdma_ops, XP_CAP_PLACED_PAYLOAD | XP_CAP_REGIONS));
    g_assert_false(xp_has_cap(&xp_tcp_ops, XP_CAP_REGIONS));
}

static void expect_check_fails(const XpOps *o, const char *message)
{
    g_autoptr(GError) err = NULL;
    g_assert_false(xp_ops_check(o, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_UNSUPPORTED);
    g_assert_cmpstr(err->message, ==, message);
}

/* Each required op, by the name the error must give and where it sits in a table. */
#define REQ(field) { #field, offsetof(XpOps, field) }
static const struct {
    const char *name;
    size_t offset;
} required_ops[] = {
    REQ(domain_new), REQ(domain_free), REQ(listen), REQ(listener_uri), REQ(accept),
    REQ(answer), REQ(listener_shutdown), REQ(listener_close), REQ(connect), REQ(send_msg),
    REQ(recv_msg), REQ(shutdown), REQ(close), REQ(peer),
};
#undef REQ

static void test_ops_bad_missing_required(void)
{
    for (const XpOps *const *o = xp_ops_all(); *o; o++) {
        for (size_t i = 0; i < G_N_ELEMENTS(required_ops); i++) {
            XpOps broken = **o;
            /* every op is a function pointer: clear the one at this offset */
            memset((char *)&broken + required_ops[i].offset, 0, sizeof(void (*)(void)));
            g_autofree char *want = g_strdup_printf("transport '%s': op %s is missing",
                                                    broken.name, required_ops[i].name);
            expect_check_fails(&broken, want);
        }
    }
}

static void test_ops_bad_listener_shutdown(void)
{
    /* once "required" in the comment only: the engine calls it unconditionally now */
    XpOps broken = xp_tcp_ops;
    broken.listener_shutdown = NULL;
    expect_check_fails(&broken, "transport 'tcp': op listener_shutdown is missing");
}

static void test_ops_bad_version(void)
{
    XpOps broken = xp_rdma_ops;
    broken.version = XP_OPS_VERSION + 1;
    g_autofree char *want = g_strdup_printf("transport 'rdma': ops version %u, this build "
                                            "needs %u", XP_OPS_VERSION + 1, XP_OPS_VERSION);
    expect_check_fails(&broken, want);
    broken.version = 0;
    g_autofree char *want0 = g_strdup_printf("transport 'rdma': ops version 0, this build "
                                             "needs %u", XP_OPS_VERSION);
    expect_check_fails(&broken, want0);
}

static void test_ops_bad_no_name(void)
{
    XpOps broken = xp_tcp_ops;
    broken.name = "";
    expect_check_fails(&broken, "transport ops without a name");
}

static void test_ops_bad_caps_promise(void)
{
    XpOps stream = xp_tcp_ops;
    stream.recv_payload = NULL;
    expect_check_fails(&stream, "transport 'tcp': op recv_payload is missing (required without "
                                "PLACED_PAYLOAD)");
    /* a placed transport needs no recv_payload */
    XpOps placed = xp_rdma_ops;
    g_assert_null(placed.recv_payload);
    g_assert_true(xp_ops_check(&placed, NULL));
    placed.remote_free = NULL;
    expect_check_fails(&placed, "transport 'rdma': op remote_free is missing (required with "
                                "REGIONS)");
    placed = xp_rdma_ops;
    placed.region_export = NULL;
    expect_check_fails(&placed, "transport 'rdma': op region_export is missing (required with "
                                "REGIONS)");
    /* optional ops stay optional */
    XpOps lean = xp_tcp_ops;
    lean.counters = NULL;
    lean.inject_fault = NULL;
    lean.drain = NULL;
    lean.region_budget = NULL;
    g_assert_true(xp_ops_check(&lean, NULL));
}

/* ---------- rdma channel lifecycle (transport/rdma/state.c) ---------- */

static void test_rdma_state_table(void)
{
    enum { C = RDMA_CH_CONNECTING, E = RDMA_CH_ESTABLISHED, G = RDMA_CH_PEER_GONE,
           F = RDMA_CH_FLUSHED, S = RDMA_CH_SHUT, X = RDMA_CH_FAILED };
    /* allowed[from][to], written out rather than derived: the table is the spec */
    static const bool allowed[RDMA_CH_COUNT][RDMA_CH_COUNT] = {
        /*           C      E      G      F      S      X */
        [C] = { false, true,  false, false, true,  true },
        [E] = { false, false, true,  true,  true,  true },
        [G] = { false, false, false, true,  true,  true },
        [F] = { false, false, false, false, true,  true },
        [S] = { false, false, false, false, false, true },
        [X] = { false, false, false, false, false, false },
    };
    for (int from = 0; from < RDMA_CH_COUNT; from++) {
        for (int to = 0; to < RDMA_CH_COUNT; to++) {
            if (xp_rdma_ch_state_allowed(from, to) != allowed[from][to]) {
                g_error("%s -> %s: table says %d", xp_rdma_ch_state_str(from),
                        xp_rdma_ch_state_str(to), allowed[from][to]);
            }
        }
    }
    g_assert_false(xp_rdma_ch_state_allowed(RDMA_CH_COUNT, RDMA_CH_ESTABLISHED));
    g_assert_false(xp_rdma_ch_state_allowed(RDMA_CH_ESTABLISHED, RDMA_CH_COUNT));
    g_assert_false(xp_rdma_ch_state_allowed((RdmaChState)-1, RDMA_CH_ESTABLISHED));
}

static void test_rdma_state_names(void)
{
    static const char *const names[] = { "CONNECTING", "ESTABLISHED", "PEER_GONE", "FLUSHED",
                                         "SHUT", "FAILED" };
    G_STATIC_ASSERT(G_N_ELEMENTS(names) == RDMA_CH_COUNT);
    for (int s = 0; s < RDMA_CH_COUNT; s++) {
        g_assert_cmpstr(xp_rdma_ch_state_str(s), ==, names[s]);
    }
    g_assert_cmpstr(xp_rdma_ch_state_str(RDMA_CH_COUNT), ==, "INVALID");
    g_assert_cmpstr(xp_rdma_ch_state_str(-1), ==, "INVALID");
}

static void test_rdma_state_disconnects(void)
{
    g_assert_false(xp_rdma_ch_state_disconnects(RDMA_CH_CONNECTING));
    for (int s = RDMA_CH_ESTABLISHED; s < RDMA_CH_COUNT; s++) {
        g_assert_true(xp_rdma_ch_state_disconnects(s));
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/xp/ops/real_tables_pass", test_ops_real_tables_pass);
    g_test_add_func("/xp/ops/bad_missing_required", test_ops_bad_missing_required);
    g_test_add_func("/xp/ops/bad_listener_shutdown", test_ops_bad_listener_shutdown);
    g_test_add_func("/xp/ops/bad_version", test_ops_bad_version);
    g_test_add_func("/xp/ops/bad_no_name", test_ops_bad_no_name);
    g_test_add_func("/xp/ops/bad_caps_promise", test_ops_bad_caps_promise);
    g_test_add_func("/xp/rdma_state/table", test_rdma_state_table);
    g_test_add_func("/xp/rdma_state/names", test_rdma_state_names);
    g_test_add_func("/xp/rdma_state/disconnects", test_rdma_state_disconnects);
    return g_test_run();
}
