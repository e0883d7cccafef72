/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The session state machine: the one legal path, every illegal transition refused with the
 * exact error, and the per-state control message tables of both sides.
 */
#include "mfrdma.h"
#include "state.h"

static const MfrState path[] = {
    MFR_STATE_SETUP, MFR_STATE_CONNECTED, MFR_STATE_NEGOTIATED, MFR_STATE_BLOCKS_AGREED,
    MFR_STATE_CHANNELS_UP, MFR_STATE_PRECOPY, MFR_STATE_SWITCHOVER, MFR_STATE_COMPLETING,
    MFR_STATE_DONE,
};

static void test_legal_path(void)
{
    MfrState s = MFR_STATE_SETUP;
    for (unsigned i = 1; i < G_N_ELEMENTS(path); i++) {
        g_autoptr(GError) err = NULL;
        g_assert_true(mfr_state_move(&s, path[i], &err));
        g_assert_no_error(err);
        g_assert_cmpint(s, ==, path[i]);
    }
}

static void test_bad_transitions(void)
{
    unsigned allowed = 0;
    for (int from = 0; from < MFR_STATE_COUNT; from++) {
        for (int to = 0; to < MFR_STATE_COUNT; to++) {
            bool on_path = false;
            for (unsigned i = 1; i < G_N_ELEMENTS(path); i++) {
                on_path |= path[i - 1] == (MfrState)from && path[i] == (MfrState)to;
            }
            bool expect = on_path ||
                (to == MFR_STATE_FAILED && from != MFR_STATE_DONE && from != MFR_STATE_FAILED) ||
                (from == MFR_STATE_PRECOPY && to == MFR_STATE_COMPLETING);
            g_assert_cmpint(mfr_state_allowed(from, to), ==, expect);
            allowed += expect;
            if (!expect) {
                MfrState s = from;
                g_autoptr(GError) err = NULL;
                g_assert_false(mfr_state_move(&s, to, &err));
                g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
                g_autofree char *want = g_strdup_printf("illegal state transition %s -> %s",
                                                        mfr_state_str(from), mfr_state_str(to));
                g_assert_cmpstr(err->message, ==, want);
                g_assert_cmpint(s, ==, from); /* unchanged */
            }
        }
    }
    /* 8 path steps + 1 shortcut + FAILED from the 8 non-terminal states */
    g_assert_cmpuint(allowed, ==, 8 + 1 + 8);
    g_assert_false(mfr_state_allowed(MFR_STATE_COUNT, MFR_STATE_DONE));
    g_assert_cmpstr(mfr_state_str(MFR_STATE_COUNT), ==, "INVALID");
}

static void test_messages(void)
{
    /* destination */
    g_assert_true(mfr_state_accepts(MFR_STATE_CONNECTED, MFR_SIDE_DEST, MFR_CTRL_CAPS));
    g_assert_false(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_DEST, MFR_CTRL_CAPS));
    g_assert_true(mfr_state_accepts(MFR_STATE_NEGOTIATED, MFR_SIDE_DEST, MFR_CTRL_BLOCKS));
    g_assert_false(mfr_state_accepts(MFR_STATE_CONNECTED, MFR_SIDE_DEST, MFR_CTRL_BLOCKS));
    g_assert_true(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_DEST, MFR_CTRL_COMPLETE));
    g_assert_false(mfr_state_accepts(MFR_STATE_NEGOTIATED, MFR_SIDE_DEST, MFR_CTRL_COMPLETE));
    g_assert_false(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_DEST, MFR_CTRL_SYNC_ACK));
    g_assert_true(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_DEST, MFR_CTRL_CANCEL));
    /* source */
    g_assert_true(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_SOURCE, MFR_CTRL_SYNC_ACK));
    g_assert_true(mfr_state_accepts(MFR_STATE_SWITCHOVER, MFR_SIDE_SOURCE, MFR_CTRL_SYNC_ACK));
    g_assert_false(mfr_state_accepts(MFR_STATE_COMPLETING, MFR_SIDE_SOURCE, MFR_CTRL_SYNC_ACK));
    g_assert_false(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_SOURCE, MFR_CTRL_COMPLETE));
    g_assert_false(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_SOURCE, MFR_CTRL_CANCEL));
    g_assert_true(mfr_state_accepts(MFR_STATE_COMPLETING, MFR_SIDE_SOURCE,
                                    MFR_CTRL_COMPLETE_REPLY));
    /* no state accepts anything before a connection or after the end */
    for (int t = 1; t <= MFR_CTRL_TYPE_MAX; t++) {
        g_assert_false(mfr_state_accepts(MFR_STATE_SETUP, MFR_SIDE_DEST, t));
        g_assert_false(mfr_state_accepts(MFR_STATE_DONE, MFR_SIDE_SOURCE, t));
        g_assert_false(mfr_state_accepts(MFR_STATE_FAILED, MFR_SIDE_DEST, t));
    }
}

/* REGION (pipelined registration) flows from destination to source only, after
 * BLOCKS_REPLY and before round 1 ends: the source accepts it from BLOCKS_AGREED to PRECOPY. */
static void test_region(void)
{
    for (int st = 0; st < MFR_STATE_COUNT; st++) {
        bool want = st == MFR_STATE_BLOCKS_AGREED || st == MFR_STATE_CHANNELS_UP ||
                    st == MFR_STATE_PRECOPY || st == MFR_STATE_SWITCHOVER;
        g_test_message("state %s", mfr_state_str(st));
        g_assert_cmpint(mfr_state_accepts(st, MFR_SIDE_SOURCE, MFR_CTRL_REGION), ==, want);
        g_assert_false(mfr_state_accepts(st, MFR_SIDE_DEST, MFR_CTRL_REGION));
    }
}

/* Before BLOCKS_REPLY (a region ahead of the layout) and once COMPLETE is out a REGION is
 * refused (after SYNC(1) the source refuses it as unexpected: it waits for SYNC_ACK). */
static void test_bad_region_state(void)
{
    g_assert_false(mfr_state_accepts(MFR_STATE_NEGOTIATED, MFR_SIDE_SOURCE, MFR_CTRL_REGION));
    g_assert_false(mfr_state_accepts(MFR_STATE_CONNECTED, MFR_SIDE_SOURCE, MFR_CTRL_REGION));
    g_assert_false(mfr_state_accepts(MFR_STATE_COMPLETING, MFR_SIDE_SOURCE, MFR_CTRL_REGION));
    g_assert_false(mfr_state_accepts(MFR_STATE_PRECOPY, MFR_SIDE_DEST, MFR_CTRL_REGION));
    g_assert_false(mfr_state_accepts(MFR_STATE_NEGOTIATED, MFR_SIDE_DEST, MFR_CTRL_REGION));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/state/legal_path", test_legal_path);
    g_test_add_func("/state/bad_transitions", test_bad_transitions);
    g_test_add_func("/state/messages", test_messages);
    g_test_add_func("/state/region", test_region);
    g_test_add_func("/state/bad_region_state", test_bad_region_state);
    return g_test_run();
}
