/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lifecycle of one RDMA channel as a state machine: which states exist, which moves are
 * legal, and their names for logs. Pure (no verbs), so the table is unit-tested on its own;
 * channel.c applies it under the channel's lock.
 */
#pragma once

#include <stdbool.h>

typedef enum {
    /* Built around a resolved or requested cm_id, RECVs posted; not connected yet (a
     * connector before ESTABLISHED, an acceptor before answer(), or refused). */
    RDMA_CH_CONNECTING,
    /* Connected: messages flow both ways. */
    RDMA_CH_ESTABLISHED,
    /* DISCONNECTED (or DEVICE_REMOVAL) seen: nothing is sent any more; messages already
     * received are still delivered until the posted RECVs are gone. */
    RDMA_CH_PEER_GONE,
    /* A RECV completed with a flush: the QP is in error, nothing more arrives; messages
     * already received are still delivered. */
    RDMA_CH_FLUSHED,
    /* Local shutdown(): every call fails with -EPIPE. */
    RDMA_CH_SHUT,
    /* The first fatal error (err, err_detail) is recorded: every call returns it. */
    RDMA_CH_FAILED,
    RDMA_CH_COUNT,
} RdmaChState;

const char *xp_rdma_ch_state_str(RdmaChState s);
/* Whether a channel in `from` may move to `to`. Moves only go towards the end: a later event
 * that a state already implies (DISCONNECTED after a flush, a flush after shutdown) is not a
 * legal move, and the caller ignores it. FAILED is reachable from every other state (an
 * error completion can arrive after shutdown too) and is final. */
bool xp_rdma_ch_state_allowed(RdmaChState from, RdmaChState to);
/* Whether close() disconnects the cm_id: not for a channel still CONNECTING (it never
 * connected); a channel shut down while CONNECTING may be disconnected a second time, which
 * is harmless. */
bool xp_rdma_ch_state_disconnects(RdmaChState s);
