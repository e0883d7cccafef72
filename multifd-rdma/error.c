/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine's error domain, the first-error-wins latch every session thread reports into,
 * and small shared helpers (thread CPU time, transport error mapping).
 */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <time.h>

G_DEFINE_QUARK(mfr-error-quark, mfr_error)

void mfr_fail_init(MfrFail *f, void (*on_fail)(void *, const GError *, bool), void *opaque)
{
    g_mutex_init(&f->lock);
    f->first = NULL;
    f->echo = false;
    f->loud = false;
    f->replaced = NULL;
    atomic_init(&f->failed, false);
    f->on_fail = on_fail;
    f->opaque = opaque;
}

void mfr_fail_clear(MfrFail *f)
{
    g_clear_error(&f->first);
    g_clear_error(&f->replaced);
    g_mutex_clear(&f->lock);
}

typedef enum {
    FAIL_ROOT,  /* a cause: replaces an echo */
    FAIL_ECHO,  /* a symptom of the peer's failure */
    FAIL_FIRST, /* only if nothing failed yet; a root cause then */
    FAIL_RESULT, /* a root cause, unless a copy of the first error */
} FailKind;

/* Records err as the first error (or, being a root cause, in place of an echo). */
static bool fail_record(MfrFail *f, GError *err, FailKind kind)
{
    bool echo = kind == FAIL_ECHO;
    g_mutex_lock(&f->lock);
    bool copy = kind == FAIL_RESULT && f->first && g_error_matches(err, f->first->domain,
                                                                   f->first->code) &&
                strcmp(err->message, f->first->message) == 0;
    bool replaces = kind == FAIL_ROOT || (kind == FAIL_RESULT && !copy);
    if (f->first && (!replaces || !f->echo)) {
        g_mutex_unlock(&f->lock);
        g_debug("later error ignored: %s", err->message);
        g_error_free(err);
        return false;
    }
    if (f->first) {
        /* the threads know already (quiet on_fail): now the peer and the channels do */
        g_debug("echo replaced by its cause: %s", f->first->message);
        f->replaced = f->first;
        f->first = err;
        f->echo = false;
        bool loud = !f->loud;
        f->loud = true;
        g_mutex_unlock(&f->lock);
        if (loud && f->on_fail) {
            f->on_fail(f->opaque, err, false);
        }
        return true;
    }
    f->first = err;
    f->echo = echo;
    f->loud = !echo;
    /* pairs with the acquire in mfr_failed() */
    atomic_store_explicit(&f->failed, true, memory_order_release);
    g_mutex_unlock(&f->lock);
    /* an error passed to on_fail is freed only by mfr_fail_clear(), so reading it unlocked
     * is safe */
    if (f->on_fail) {
        f->on_fail(f->opaque, err, echo);
    }
    return true;
}

bool mfr_fail_set(MfrFail *f, GError *err)
{
    return fail_record(f, err, FAIL_ROOT);
}

bool mfr_fail_echo(MfrFail *f, GError *err)
{
    return fail_record(f, err, FAIL_ECHO);
}

bool mfr_fail_set_first(MfrFail *f, GError *err)
{
    return fail_record(f, err, FAIL_FIRST);
}

bool mfr_fail_set_result(MfrFail *f, GError *err)
{
    return fail_record(f, err, FAIL_RESULT);
}

void mfr_fail_finalize(MfrFail *f)
{
    g_mutex_lock(&f->lock);
    GError *err = f->first && !f->loud ? f->first : NULL;
    f->loud = f->first != NULL;
    g_mutex_unlock(&f->lock);
    if (err && f->on_fail) {
        f->on_fail(f->opaque, err, false);
    }
}

bool mfr_fail_settled(MfrFail *f)
{
    if (!mfr_failed(f)) {
        return false;
    }
    g_mutex_lock(&f->lock);
    bool settled = !f->echo;
    g_mutex_unlock(&f->lock);
    return settled;
}

bool mfr_fail(MfrFail *f, MfrErrorCode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return mfr_fail_set(f, g_error_new_literal(MFR_ERROR, code, msg));
}

void mfr_fail_propagate(MfrFail *f, GError **error)
{
    g_mutex_lock(&f->lock);
    if (f->first) {
        g_propagate_error(error, g_error_copy(f->first));
    } else {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "migration failed");
    }
    g_mutex_unlock(&f->lock);
}

void mfr_fail_transport(MfrFail *f, const char *what, int err, const char *detail)
{
    GError *e = g_error_new(MFR_ERROR, MFR_ERROR_TRANSPORT, "%s: %s", what,
                            detail ? detail
                            : err == -EPIPE ? "connection closed by peer" : g_strerror(-err));
    fail_record(f, e, detail || err != -EPIPE ? FAIL_ROOT : FAIL_ECHO);
}

double mfr_thread_cpu_s(void)
{
    /* exact, unlike RUSAGE_THREAD which lags by up to a scheduler tick */
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

GError *mfr_error_from_xp(GError *xp_err, const char *prefix)
{
    MfrErrorCode code = MFR_ERROR_TRANSPORT;
    if (xp_err->domain == XP_ERROR && xp_err->code == XP_ERROR_REJECTED) {
        code = MFR_ERROR_REJECTED;
    } else if (xp_err->domain == XP_ERROR && xp_err->code == XP_ERROR_TIMEOUT) {
        code = MFR_ERROR_TIMEOUT;
    } else if (xp_err->domain == MFR_ERROR) {
        code = xp_err->code;
    }
    GError *e = g_error_new(MFR_ERROR, code, "%s%s%s", prefix ? prefix : "", prefix ? ": " : "",
                            xp_err->message);
    g_error_free(xp_err);
    return e;
}

const char *mfr_phase_str(MfrPhase p)
{
    switch (p) {
    case MFR_PHASE_SETUP: return "setup";
    case MFR_PHASE_PRECOPY: return "precopy";
    case MFR_PHASE_SWITCHOVER: return "switchover";
    case MFR_PHASE_VERIFY: return "verify";
    case MFR_PHASE_DONE: return "done";
    case MFR_PHASE_FAILED: return "failed";
    }
    return "?";
}
