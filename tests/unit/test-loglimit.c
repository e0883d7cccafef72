/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * xp_log_limited() (transport/xp.c): the rate limit on log lines any peer can trigger at will
 * (refused and dropped connections). At most XP_LOG_BURST lines a second get through; the
 * first one after that says how many were left out.
 */
#include "xp.h"

#include <string.h>

#define T_DOMAIN "mfrdma-test-loglimit"

static void collect(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer lines)
{
    g_ptr_array_add(lines, g_strdup(msg));
}

static void test_burst_then_summary(void)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    guint hid = g_log_set_handler(T_DOMAIN, G_LOG_LEVEL_MESSAGE, collect, lines);
    XpLogLimit rl = { 0 };
    for (unsigned i = 0; i < 20; i++) {
        xp_log_limited(&rl, T_DOMAIN, "refused peer %u", i);
    }
    g_assert_cmpuint(lines->len, ==, XP_LOG_BURST);
    for (unsigned i = 0; i < XP_LOG_BURST; i++) {
        g_autofree char *want = g_strdup_printf("refused peer %u", i);
        g_assert_cmpstr(g_ptr_array_index(lines, i), ==, want);
    }
    /* a second later (the window moved back instead of waiting for it) */
    rl.window_us -= G_USEC_PER_SEC;
    xp_log_limited(&rl, T_DOMAIN, "refused peer %u", 20);
    g_assert_cmpuint(lines->len, ==, XP_LOG_BURST + 1);
    g_assert_cmpstr(g_ptr_array_index(lines, XP_LOG_BURST), ==,
                    "refused peer 20 (and 15 similar messages not shown)");
    /* the count starts again after it was reported */
    xp_log_limited(&rl, T_DOMAIN, "refused peer %u", 21);
    g_assert_cmpstr(g_ptr_array_index(lines, XP_LOG_BURST + 1), ==, "refused peer 21");
    g_log_remove_handler(T_DOMAIN, hid);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/loglimit/burst_then_summary", test_burst_then_summary);
    return g_test_run();
}
