/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transition table of the RDMA channel lifecycle (state.h; docs/architecture.md, "RDMA
 * backend"). Kept apart from channel.c so a unit test can walk every pair of states.
 */
#include "state.h"

const char *xp_rdma_ch_state_str(RdmaChState s)
{
    static const char *const names[RDMA_CH_COUNT] = {
        [RDMA_CH_CONNECTING] = "CONNECTING",
        [RDMA_CH_ESTABLISHED] = "ESTABLISHED",
        [RDMA_CH_PEER_GONE] = "PEER_GONE",
        [RDMA_CH_FLUSHED] = "FLUSHED",
        [RDMA_CH_SHUT] = "SHUT",
        [RDMA_CH_FAILED] = "FAILED",
    };
    return (unsigned)s < RDMA_CH_COUNT ? names[s] : "INVALID";
}

bool xp_rdma_ch_state_allowed(RdmaChState from, RdmaChState to)
{
    if ((unsigned)from >= RDMA_CH_COUNT || (unsigned)to >= RDMA_CH_COUNT ||
        from == RDMA_CH_FAILED) {
        return false;
    }
    if (to == RDMA_CH_FAILED) {
        return true;
    }
    switch (from) {
    case RDMA_CH_CONNECTING: return to == RDMA_CH_ESTABLISHED || to == RDMA_CH_SHUT;
    case RDMA_CH_ESTABLISHED:
        return to == RDMA_CH_PEER_GONE || to == RDMA_CH_FLUSHED || to == RDMA_CH_SHUT;
    case RDMA_CH_PEER_GONE: return to == RDMA_CH_FLUSHED || to == RDMA_CH_SHUT;
    case RDMA_CH_FLUSHED: return to == RDMA_CH_SHUT;
    default: return false; /* SHUT: only FAILED, above */
    }
}

bool xp_rdma_ch_state_disconnects(RdmaChState s)
{
    return s != RDMA_CH_CONNECTING;
}
