/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control connection of a session, identical on both sides: a reader thread validates
 * every control message, keeps the peer alive (KEEPALIVE when idle, failure after silence),
 * turns the peer's ERROR/CANCEL into a session failure, hands the messages a session wants
 * handled at once to its handler (the source's REGIONs) and queues the rest.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>

struct MfrControl {
    XpChannel *ch;
    MfrFail *fail;
    const char *side;
    MfrSide side_id;
    const MfrState *state;
    unsigned timeout_ms;
    GThread *reader;
    GAsyncQueue *queue;  /* MfrCtrlMsg*, or &wake_marker */
    /* Messages of handler_type go to handler on the reader thread instead of the queue.
     * handler_lock orders the reader's dispatch against mfr_control_set_handler(). */
    GMutex handler_lock;
    MfrCtrlType handler_type;
    MfrCtrlHandler handler;
    void *handler_opaque;
    GMutex send_lock;    /* senders: session thread, channel threads (SYNC_ACK), reader */
    uint32_t tx_seq;     /* under send_lock */
    atomic_llong last_tx_us;
    atomic_bool done;    /* closing is expected from now on */
    atomic_bool stop;
    _Atomic double reader_cpu_s; /* set by the reader as it ends, read before the join */
};

static char wake_marker;

#define MFR_CONTROL_TICK_MS 50
#define MFR_CONTROL_KEEPALIVE_MAX_MS 250
/* How long reporting our failure waits for another sender to finish (see send_error). */
#define MFR_CONTROL_ERROR_WAIT_MS 100
/* How long a reader whose session failed with an echo reads on for the peer's account. It
 * ends as soon as that ERROR, or the peer's close, arrives: within a round trip after the
 * peer's own failure. A peer silent for this long (link down, hung) cannot explain, and the
 * echo stands. */
#define MFR_CONTROL_ECHO_WAIT_MS 500

const char *mfr_ctrl_type_str(MfrCtrlType t)
{
    switch (t) {
    case MFR_CTRL_CAPS: return "CAPS";
    case MFR_CTRL_BLOCKS: return "BLOCKS";
    case MFR_CTRL_BLOCKS_REPLY: return "BLOCKS_REPLY";
    case MFR_CTRL_SYNC_ACK: return "SYNC_ACK";
    case MFR_CTRL_COMPLETE: return "COMPLETE";
    case MFR_CTRL_COMPLETE_REPLY: return "COMPLETE_REPLY";
    case MFR_CTRL_ERROR: return "ERROR";
    case MFR_CTRL_CANCEL: return "CANCEL";
    case MFR_CTRL_KEEPALIVE: return "KEEPALIVE";
    case MFR_CTRL_REGION: return "REGION";
    }
    return "?";
}

static bool control_send_locked(MfrControl *c, MfrCtrlType type, const void *body, size_t len,
                                GError **error)
{
    uint8_t buf[XP_MSG_MAX];
    g_assert(len + MFR_CTRL_HDR_SIZE <= sizeof(buf));
    MfrCtrlHdr h = {
        .magic = MFR_CTRL_MAGIC,
        .version = MFR_WIRE_VERSION,
        .type = type,
        .length = (uint32_t)len,
        .seq = ++c->tx_seq,
    };
    mfr_wire_pack_ctrl_hdr(&h, buf);
    if (len) {
        memcpy(buf + MFR_CTRL_HDR_SIZE, body, len);
    }
    int r = xp_send_msg(c->ch, buf, MFR_CTRL_HDR_SIZE + len, NULL, 0);
    if (r == -ETIMEDOUT) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_TIMEOUT, "%s: control connection to %s: "
                    "sending %s failed: the peer read nothing for %u ms", c->side,
                    xp_channel_peer(c->ch), mfr_ctrl_type_str(type), c->timeout_ms);
        return false;
    }
    if (r < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_TRANSPORT, "%s: control connection to %s: "
                    "sending %s failed: %s", c->side, xp_channel_peer(c->ch),
                    mfr_ctrl_type_str(type),
                    r == -EPIPE ? "connection closed" : g_strerror(-r));
        return false;
    }
    atomic_store(&c->last_tx_us, g_get_monotonic_time());
    return true;
}

bool mfr_control_send(MfrControl *c, MfrCtrlType type, const void *body, size_t len,
                      GError **error)
{
    g_mutex_lock(&c->send_lock);
    bool ok = control_send_locked(c, type, body, len, error);
    g_mutex_unlock(&c->send_lock);
    return ok;
}

void mfr_control_send_error(MfrControl *c, const GError *err)
{
    if (!c) {
        return;
    }
    MfrCtrlError e = { .code = err->domain == MFR_ERROR ? (uint32_t)err->code : MFR_ERROR_FAILED };
    g_strlcpy(e.text, err->message, sizeof(e.text));
    uint8_t body[MFR_CTRL_ERROR_SIZE];
    mfr_wire_pack_error(&e, body);
    bool cancel = err->domain == MFR_ERROR && err->code == MFR_ERROR_CANCELLED;
    /* Waits a little for a sender in progress: skipping at once would lose the reason
     * whenever the failure comes right after one of our messages (the peer answers it at
     * once, while our sender still holds the lock). A sender held longer is blocked by a
     * peer that does not read or a dead link: then no ERROR would get through anyway, and
     * waiting for its send deadline would only delay the failure. */
    for (int i = 0; !g_mutex_trylock(&c->send_lock); i++) {
        if (i == MFR_CONTROL_ERROR_WAIT_MS) {
            return;
        }
        g_usleep(1000);
    }
    if (cancel) {
        control_send_locked(c, MFR_CTRL_CANCEL, NULL, 0, NULL);
    } else {
        control_send_locked(c, MFR_CTRL_ERROR, body, sizeof(body), NULL);
    }
    g_mutex_unlock(&c->send_lock);
}

static void control_fail_peer(MfrControl *c, MfrCtrlMsg *m)
{
    if (m->hdr.type == MFR_CTRL_CANCEL) {
        mfr_fail(c->fail, MFR_ERROR_CANCELLED, "%s: migration cancelled by peer %s", c->side,
                 xp_channel_peer(c->ch));
        return;
    }
    MfrCtrlError e;
    g_autoptr(GError) perr = NULL;
    if (!mfr_wire_unpack_error(m->body, m->len, &e, &perr)) {
        mfr_fail(c->fail, MFR_ERROR_PROTOCOL, "%s: malformed %s from %s: %s", c->side,
                 mfr_ctrl_type_str(m->hdr.type), xp_channel_peer(c->ch), perr->message);
        return;
    }
    MfrErrorCode code = e.code >= MFR_ERROR_FAILED && e.code <= MFR_ERROR_USAGE
                            ? (MfrErrorCode)e.code : MFR_ERROR_PEER;
    /* Peer-side protocol/timeout errors are about the peer's view; keep the code only where
     * it tells this side something actionable. */
    if (code != MFR_ERROR_MISMATCH && code != MFR_ERROR_CAPS && code != MFR_ERROR_VERIFY &&
        code != MFR_ERROR_REJECTED) {
        code = MFR_ERROR_PEER;
    }
    mfr_fail(c->fail, code, "%s: peer %s reported: %s", c->side, xp_channel_peer(c->ch),
             e.text);
}

/* Hands m to the handler of its type, or queues it. False when the handler failed (the
 * session's failure now). */
static bool control_dispatch(MfrControl *c, MfrCtrlMsg *m)
{
    g_mutex_lock(&c->handler_lock);
    if (!c->handler || m->hdr.type != c->handler_type) {
        g_async_queue_push(c->queue, m);
        g_mutex_unlock(&c->handler_lock);
        return true;
    }
    GError *err = NULL;
    bool ok = c->handler(c->handler_opaque, m, &err);
    g_mutex_unlock(&c->handler_lock);
    g_free(m);
    if (!ok) {
        mfr_fail_set(c->fail, err);
    }
    return ok;
}

/* One message the reader received: validated, then a keepalive is dropped, the peer's
 * ERROR/CANCEL fails the session and anything else goes to its handler or the queue.
 * False when the reader must stop. */
static bool control_take(MfrControl *c, const uint8_t *buf, size_t len, uint32_t *rx_seq)
{
    MfrCtrlHdr h;
    g_autoptr(GError) err = NULL;
    if (!mfr_wire_unpack_ctrl_hdr(buf, len, &h, &err)) {
        mfr_fail(c->fail, MFR_ERROR_PROTOCOL, "%s: control message from %s: %s", c->side,
                 xp_channel_peer(c->ch), err->message);
        return false;
    }
    if (h.seq != *rx_seq + 1) {
        mfr_fail(c->fail, MFR_ERROR_PROTOCOL,
                 "%s: control message from %s: sequence %u, expected %u", c->side,
                 xp_channel_peer(c->ch), h.seq, *rx_seq + 1);
        return false;
    }
    *rx_seq = h.seq;
    if (h.type == MFR_CTRL_KEEPALIVE) {
        return true;
    }
    MfrCtrlMsg *m = g_malloc(sizeof(*m) + h.length);
    m->hdr = h;
    m->len = h.length;
    memcpy(m->body, buf + MFR_CTRL_HDR_SIZE, h.length);
    if (h.type == MFR_CTRL_ERROR || h.type == MFR_CTRL_CANCEL) {
        control_fail_peer(c, m);
        g_free(m);
        return false;
    }
    if (h.type == MFR_CTRL_COMPLETE_REPLY) {
        /* the session is over for the peer, which may close before our main thread
         * dequeues this: its close must not read as a lost connection */
        atomic_store(&c->done, true);
        /* and the peer sends nothing after it: the reader stops now rather than at its next
         * receive tick, which closing the session would wait for (within a hypervisor's
         * downtime: up to MFR_CONTROL_TICK_MS) */
        control_dispatch(c, m);
        return false;
    }
    return control_dispatch(c, m);
}

/* A keepalive when we have sent nothing for keepalive_ms. trylock: a sender holding the lock
 * may be blocked by the peer (it gives up at the send deadline), and the reader's silence
 * check must run meanwhile; a keepalive then is pointless anyway. A keepalive that itself
 * meets a full send queue fails the session after the same deadline, with the reason (false:
 * the reader stops); other send errors are left to the reader's receive, which may still
 * read the peer's ERROR first. */
static bool control_keepalive(MfrControl *c, gint64 now, int keepalive_ms)
{
    if (now - atomic_load(&c->last_tx_us) < keepalive_ms * 1000LL || atomic_load(&c->done) ||
        mfr_failed(c->fail) || !g_mutex_trylock(&c->send_lock)) {
        return true;
    }
    GError *kerr = NULL;
    bool sent = control_send_locked(c, MFR_CTRL_KEEPALIVE, NULL, 0, &kerr);
    g_mutex_unlock(&c->send_lock);
    if (!sent && g_error_matches(kerr, MFR_ERROR, MFR_ERROR_TIMEOUT) && !atomic_load(&c->done)) {
        mfr_fail_set(c->fail, g_steal_pointer(&kerr));
        return false;
    }
    g_clear_error(&kerr);
    return true;
}

static gpointer control_reader(gpointer opaque)
{
    MfrControl *c = opaque;
    uint8_t *buf = g_malloc(XP_MSG_MAX);
    /* short receive ticks: failure and stop are noticed within one tick, so the session can
     * close this channel gracefully (our last ERROR or reply still gets delivered) instead
     * of shutting it down under an unacknowledged message */
    /* The peer judges our silence by its own timeout, which it never tells us: keepalives
     * at most MFR_CONTROL_KEEPALIVE_MAX_MS apart keep any peer timeout of 1 s or more happy,
     * whatever ours is (a 16-byte message every 250 ms costs nothing). */
    int keepalive_ms = MAX(50, MIN((int)c->timeout_ms / 4, MFR_CONTROL_KEEPALIVE_MAX_MS));
    int tick_ms = MIN(keepalive_ms, MFR_CONTROL_TICK_MS);
    gint64 last_rx = g_get_monotonic_time();
    gint64 echo_deadline = 0;
    uint32_t rx_seq = 0;

    /* After a root failure the reader stops at the next tick. After an echo it reads on,
     * for the peer's ERROR that will replace it, for a bounded time, and sends no more
     * keepalives (a send could wait for credits a dead link never gives). */
    while (!atomic_load(&c->stop) && !mfr_fail_settled(c->fail)) {
        gint64 now = g_get_monotonic_time();
        if (mfr_failed(c->fail)) {
            if (!echo_deadline) {
                echo_deadline = now + MIN(c->timeout_ms, MFR_CONTROL_ECHO_WAIT_MS) * 1000LL;
            } else if (now >= echo_deadline) {
                break;
            }
        }
        if (!control_keepalive(c, now, keepalive_ms)) {
            break;
        }
        size_t len = 0;
        int r = xp_recv_msg(c->ch, buf, XP_MSG_MAX, &len, tick_ms);
        if (atomic_load(&c->stop) || mfr_fail_settled(c->fail)) {
            break;
        }
        if (r == -ETIMEDOUT) {
            gint64 silent_ms = (g_get_monotonic_time() - last_rx) / 1000;
            if (silent_ms > (gint64)c->timeout_ms && !atomic_load(&c->done)) {
                mfr_fail(c->fail, MFR_ERROR_TIMEOUT,
                         "%s: peer %s silent for %" G_GINT64_FORMAT " ms (timeout %u ms)",
                         c->side, xp_channel_peer(c->ch), silent_ms, c->timeout_ms);
                break;
            }
            continue;
        }
        if (r < 0) {
            if (!atomic_load(&c->done)) {
                /* a peer that failed closes its end: its ERROR, if any, came before */
                mfr_fail_echo(c->fail, g_error_new(MFR_ERROR, MFR_ERROR_TRANSPORT,
                                                   "%s: control connection to %s lost: %s",
                                                   c->side, xp_channel_peer(c->ch),
                                                   r == -EPIPE ? "closed by peer"
                                                               : g_strerror(-r)));
            }
            break;
        }
        if (atomic_load(&c->done)) {
            /* The session is over (COMPLETE_REPLY sent or received): what the peer says now,
             * such as an ERROR repeating a failed verification, is not news, and taken as a
             * failure it would race the verdict to become the session's error. */
            break;
        }
        last_rx = g_get_monotonic_time();
        if (!control_take(c, buf, len, &rx_seq)) {
            break;
        }
    }
    g_free(buf);
    atomic_store(&c->reader_cpu_s, mfr_thread_cpu_s());
    return NULL;
}

MfrControl *mfr_control_new(XpChannel *ch, unsigned timeout_ms, MfrFail *f, MfrSide side,
                            GError **error)
{
    MfrControl *c = g_new0(MfrControl, 1);
    c->ch = ch;
    c->fail = f;
    c->side_id = side;
    c->side = side == MFR_SIDE_SOURCE ? "source" : "destination";
    c->timeout_ms = timeout_ms ? timeout_ms : 5000;
    c->queue = g_async_queue_new();
    g_mutex_init(&c->handler_lock);
    g_mutex_init(&c->send_lock);
    atomic_init(&c->last_tx_us, g_get_monotonic_time());
    /* every send has a deadline: a peer that stops reading fails the send, not the session's
     * threads forever (their sends hold send_lock) */
    xp_channel_set_send_timeout(ch, (int)c->timeout_ms);
    GError *terr = NULL;
    c->reader = xp_thread_new("mfr-control", control_reader, c, &terr);
    if (!c->reader) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_FAILED, "%s: %s", c->side, terr->message);
        g_error_free(terr);
        mfr_control_free(c);
        return NULL;
    }
    return c;
}

bool mfr_control_set_handler(MfrControl *c, MfrCtrlType type, MfrCtrlHandler handler,
                             void *opaque, GError **error)
{
    g_mutex_lock(&c->handler_lock);
    c->handler_type = type;
    c->handler = handler;
    c->handler_opaque = opaque;
    /* What the reader queued before is handled first, in arrival order; the rest goes back
     * to the queue's head in its order. The reader waits on handler_lock meanwhile. */
    GQueue keep = G_QUEUE_INIT;
    bool ok = true;
    gpointer p;
    while ((p = g_async_queue_try_pop(c->queue))) {
        MfrCtrlMsg *m = p;
        if (p == &wake_marker || m->hdr.type != type || !ok) {
            g_queue_push_tail(&keep, p);
            continue;
        }
        ok = handler(opaque, m, error);
        g_free(m);
    }
    while ((p = g_queue_pop_tail(&keep))) {
        g_async_queue_push_front(c->queue, p);
    }
    g_mutex_unlock(&c->handler_lock);
    return ok;
}

void mfr_control_track_state(MfrControl *c, const MfrState *state)
{
    c->state = state;
}

void mfr_control_done(MfrControl *c)
{
    if (c) {
        atomic_store(&c->done, true);
    }
}

XpChannel *mfr_control_channel(MfrControl *c)
{
    return c ? c->ch : NULL;
}

double mfr_control_cpu_s(MfrControl *c)
{
    return c ? atomic_load(&c->reader_cpu_s) : 0;
}

void mfr_control_wake(MfrControl *c)
{
    if (c) {
        g_async_queue_push(c->queue, &wake_marker);
    }
}

void mfr_control_settle(MfrControl *c)
{
    if (c && c->reader && mfr_failed(c->fail) && !mfr_fail_settled(c->fail)) {
        g_thread_join(g_steal_pointer(&c->reader));
    }
}

void mfr_control_free(MfrControl *c)
{
    if (!c) {
        return;
    }
    atomic_store(&c->done, true);
    atomic_store(&c->stop, true);
    /* no shutdown: the reader leaves within a tick, and close() lets what we sent last
     * (ERROR, COMPLETE_REPLY) reach the peer */
    if (c->reader) {
        g_thread_join(c->reader);
    }
    xp_channel_close(c->ch);
    gpointer m;
    while ((m = g_async_queue_try_pop(c->queue))) {
        if (m != &wake_marker) {
            g_free(m);
        }
    }
    g_async_queue_unref(c->queue);
    g_mutex_clear(&c->handler_lock);
    g_mutex_clear(&c->send_lock);
    g_free(c);
}

/* A dequeued message the owner's state does not allow fails the session's caller. */
static bool control_check_state(MfrControl *c, MfrCtrlMsg *m, GError **error)
{
    if (c->state && !mfr_state_accepts(*c->state, c->side_id, m->hdr.type)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "%s: %s from %s not allowed in state %s", c->side,
                    mfr_ctrl_type_str(m->hdr.type), xp_channel_peer(c->ch),
                    mfr_state_str(*c->state));
        return false;
    }
    return true;
}

MfrCtrlMsg *mfr_control_recv(MfrControl *c, int timeout_ms, GError **error)
{
    gint64 deadline = timeout_ms < 0 ? G_MAXINT64 : g_get_monotonic_time() + timeout_ms * 1000LL;
    for (;;) {
        if (mfr_failed(c->fail)) {
            mfr_fail_propagate(c->fail, error);
            return NULL;
        }
        gint64 now = g_get_monotonic_time();
        if (now >= deadline) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_TIMEOUT,
                        "%s: no answer from %s within %d ms", c->side, xp_channel_peer(c->ch),
                        timeout_ms);
            return NULL;
        }
        /* bounded wait so a failure is seen even if nobody pushed the wake marker */
        gint64 wait = MIN(deadline - now, 200 * 1000);
        MfrCtrlMsg *m = g_async_queue_timeout_pop(c->queue, wait);
        if (!m || m == (void *)&wake_marker) {
            continue;
        }
        if (!control_check_state(c, m, error)) {
            g_free(m);
            return NULL;
        }
        return m;
    }
}

MfrCtrlMsg *mfr_control_expect(MfrControl *c, MfrCtrlType type, int timeout_ms, GError **error)
{
    MfrCtrlMsg *m = mfr_control_recv(c, timeout_ms, error);
    if (m && m->hdr.type != type) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL,
                    "%s: expected %s from %s, got %s", c->side, mfr_ctrl_type_str(type),
                    xp_channel_peer(c->ch), mfr_ctrl_type_str(m->hdr.type));
        g_free(m);
        return NULL;
    }
    return m;
}
