/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The session's failure latch (multifd-rdma/error.c): the first root cause wins; an echo
 * (a symptom of the peer's failure) is quiet and yields to a root cause that comes later;
 * a step's copy of the session's error or a late cancel changes nothing; on_fail runs loud
 * exactly once.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>

typedef struct {
    unsigned quiet, loud;
    char last[128];
} Calls;

static void on_fail(void *opaque, const GError *err, bool quiet)
{
    Calls *c = opaque;
    if (quiet) {
        c->quiet++;
    } else {
        c->loud++;
    }
    g_strlcpy(c->last, err->message, sizeof(c->last));
}

static GError *err_new(MfrErrorCode code, const char *msg)
{
    return g_error_new_literal(MFR_ERROR, code, msg);
}

static void assert_first(MfrFail *f, int code, const char *msg)
{
    GError *e = NULL;
    mfr_fail_propagate(f, &e);
    g_assert_error(e, MFR_ERROR, code);
    g_assert_cmpstr(e->message, ==, msg);
    g_error_free(e);
}

/* An echo, then the peer's account: the account is the verdict, reported loud once. */
static void test_echo_replaced(void)
{
    Calls c = { 0 };
    MfrFail f;
    mfr_fail_init(&f, on_fail, &c);
    mfr_fail_transport(&f, "channel 1", -EPIPE, NULL);
    g_assert_true(mfr_failed(&f));
    g_assert_false(mfr_fail_settled(&f));
    g_assert_cmpuint(c.quiet, ==, 1);
    g_assert_cmpuint(c.loud, ==, 0);
    g_assert_true(mfr_fail_set(&f, err_new(MFR_ERROR_PEER, "peer reported: verify")));
    g_assert_true(mfr_fail_settled(&f));
    g_assert_cmpuint(c.loud, ==, 1);
    g_assert_cmpstr(c.last, ==, "peer reported: verify");
    /* later causes lose; finalize has nothing left to say */
    g_assert_false(mfr_fail_set(&f, err_new(MFR_ERROR_TIMEOUT, "silent")));
    mfr_fail_finalize(&f);
    g_assert_cmpuint(c.loud, ==, 1);
    assert_first(&f, MFR_ERROR_PEER, "peer reported: verify");
    mfr_fail_clear(&f);
}

/* An echo nobody explains stays the verdict; finalize makes it loud, once. */
static void test_echo_finalized(void)
{
    Calls c = { 0 };
    MfrFail f;
    mfr_fail_init(&f, on_fail, &c);
    g_assert_true(mfr_fail_echo(&f, err_new(MFR_ERROR_TRANSPORT, "control lost")));
    g_assert_false(mfr_fail_echo(&f, err_new(MFR_ERROR_TRANSPORT, "channel 0 closed")));
    mfr_fail_finalize(&f);
    mfr_fail_finalize(&f);
    g_assert_cmpuint(c.quiet, ==, 1);
    g_assert_cmpuint(c.loud, ==, 1);
    assert_first(&f, MFR_ERROR_TRANSPORT, "control lost");
    mfr_fail_clear(&f);
}

/* A root cause is final: echoes, copies, cancels and other causes after it change nothing;
 * a transport error with a detail or another errno is a root cause. */
static void test_root_wins(void)
{
    Calls c = { 0 };
    MfrFail f;
    mfr_fail_init(&f, on_fail, &c);
    mfr_fail_transport(&f, "channel 2", -EIO, NULL);
    g_assert_true(mfr_fail_settled(&f));
    g_assert_cmpuint(c.loud, ==, 1);
    g_assert_false(mfr_fail_echo(&f, err_new(MFR_ERROR_TRANSPORT, "closed")));
    g_assert_false(mfr_fail_set(&f, err_new(MFR_ERROR_PEER, "peer reported: x")));
    g_assert_false(mfr_fail_set_first(&f, err_new(MFR_ERROR_CANCELLED, "cancelled")));
    g_assert_false(mfr_fail_set_result(&f, err_new(MFR_ERROR_PROTOCOL, "later")));
    g_assert_cmpuint(c.loud, ==, 1);
    assert_first(&f, MFR_ERROR_TRANSPORT, "channel 2: Input/output error");
    mfr_fail_clear(&f);

    mfr_fail_init(&f, on_fail, &c);
    mfr_fail_transport(&f, "channel 3", -EPIPE, "RDMA WRITE failed: remote access error");
    g_assert_true(mfr_fail_settled(&f));
    assert_first(&f, MFR_ERROR_TRANSPORT, "channel 3: RDMA WRITE failed: remote access error");
    mfr_fail_clear(&f);
}

/* What a step returns after an echo: its copy of the echo is dropped (the echo stays open
 * to the peer's account), a cause it found itself replaces the echo; a cancel does not. */
static void test_step_results(void)
{
    Calls c = { 0 };
    MfrFail f;
    mfr_fail_init(&f, on_fail, &c);
    mfr_fail_transport(&f, "channel 1", -EPIPE, NULL);
    GError *copy = NULL;
    mfr_fail_propagate(&f, &copy);
    g_assert_false(mfr_fail_set_result(&f, copy));
    g_assert_false(mfr_fail_settled(&f));
    g_assert_false(mfr_fail_set_first(&f, err_new(MFR_ERROR_CANCELLED, "aborted")));
    g_assert_false(mfr_fail_settled(&f));
    g_assert_true(mfr_fail_set_result(&f, err_new(MFR_ERROR_VERIFY, "block 'ram0' differs")));
    g_assert_true(mfr_fail_settled(&f));
    assert_first(&f, MFR_ERROR_VERIFY, "block 'ram0' differs");
    mfr_fail_clear(&f);

    /* with nothing failed yet, a cancel is the verdict */
    mfr_fail_init(&f, on_fail, &c);
    g_assert_true(mfr_fail_set_first(&f, err_new(MFR_ERROR_CANCELLED, "aborted")));
    g_assert_true(mfr_fail_settled(&f));
    mfr_fail_clear(&f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fail/echo_replaced", test_echo_replaced);
    g_test_add_func("/fail/echo_finalized", test_echo_finalized);
    g_test_add_func("/fail/root_wins", test_root_wins);
    g_test_add_func("/fail/step_results", test_step_results);
    return g_test_run();
}
