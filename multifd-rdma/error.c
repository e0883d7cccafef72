/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine's error domain, the first-error-wins latch every session thread reports into,
 * and small shared helpers (thread CPU time, transport error mapping, config defaults).
 */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <time.h>

G_DEFINE_QUARK(mfr-error-quark, mfr_error)

void mfr_fail_init(MfrFail *f, void (*on_fail)(void *, const GError *), void *opaque)
{
    g_mutex_init(&f->lock);
    f->first = NULL;
    atomic_init(&f->failed, false);
    f->on_fail = on_fail;
    f->opaque = opaque;
    g_cond_init(&f->handled_cond);
    f->handled = false;
}

void mfr_fail_clear(MfrFail *f)
{
    g_clear_error(&f->first);
    g_cond_clear(&f->handled_cond);
    g_mutex_clear(&f->lock);
}

bool mfr_fail_set(MfrFail *f, GError *err)
{
    g_mutex_lock(&f->lock);
    if (f->first) {
        g_mutex_unlock(&f->lock);
        g_debug("later error ignored: %s", err->message);
        g_error_free(err);
        return false;
    }
    f->first = err;
    /* pairs with the acquire in mfr_failed() */
    atomic_store_explicit(&f->failed, true, memory_order_release);
    g_mutex_unlock(&f->lock);
    /* first is never freed before mfr_fail_clear(), so reading it unlocked is safe */
    if (f->on_fail) {
        f->on_fail(f->opaque, err);
    }
    g_mutex_lock(&f->lock);
    f->handled = true;
    g_cond_broadcast(&f->handled_cond); /* pairs with the wait in mfr_fail_settle() */
    g_mutex_unlock(&f->lock);
    return true;
}

void mfr_fail_settle(MfrFail *f)
{
    g_mutex_lock(&f->lock);
    while (f->first && !f->handled) {
        g_cond_wait(&f->handled_cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
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

/* Gives the peer's report of the same failure up to 500 ms to arrive first. */
static void fail_grace(MfrFail *f)
{
    for (int i = 0; i < 50 && !mfr_failed(f); i++) {
        g_usleep(10 * 1000);
    }
}

bool mfr_fail_echo(MfrFail *f, GError *err)
{
    fail_grace(f);
    return mfr_fail_set(f, err);
}

void mfr_fail_transport(MfrFail *f, const char *what, int err, const char *detail)
{
    /* a detail (e.g. an error completion) is a cause found here, never an echo: no wait */
    if (!detail) {
        fail_grace(f);
    }
    mfr_fail(f, MFR_ERROR_TRANSPORT, "%s: %s", what,
             detail ? detail : err == -EPIPE ? "connection closed by peer" : g_strerror(-err));
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

bool mfr_block_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= MFR_BLOCK_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!g_ascii_isprint(name[i])) {
            return false;
        }
    }
    return true;
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

bool mfr_rdma_knobs_check(const char *side, unsigned registration_threads, unsigned rc_retry,
                          unsigned rc_timeout, GError **error)
{
    if (registration_threads > MFR_REGISTER_MAX_THREADS) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: %u registration threads, allowed 0 (one per CPU)..%u", side,
                    registration_threads, MFR_REGISTER_MAX_THREADS);
        return false;
    }
    if (rc_retry > 7) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: RC retry count %u, allowed 0 (default 7)..7", side, rc_retry);
        return false;
    }
    if (rc_timeout > 31) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: RC ACK timeout exponent %u, allowed 0 (rdma_cm's default)..31", side,
                    rc_timeout);
        return false;
    }
    return true;
}

void mfr_source_config_init(MfrSourceConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->channels = 4;
    cfg->downtime_ms = 300;
    cfg->max_rounds = 30;
    cfg->verify = true;
    cfg->zero_detect = true;
    cfg->timeout_ms = 5000;
    cfg->pages_per_packet = 128;
    cfg->gid_index = -1;
}

void mfr_dest_config_init(MfrDestConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->timeout_ms = 5000;
    cfg->max_channels = MFR_MAX_CHANNELS;
    cfg->gid_index = -1;
}
