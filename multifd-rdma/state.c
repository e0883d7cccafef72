/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transition and message tables of the session state machine (docs/protocol.md, "State
 * machines"). Both sides move through the same states; the tables say what each may receive.
 */
#include "state.h"

#include "mfrdma.h"

const char *mfr_state_str(MfrState s)
{
    static const char *const names[MFR_STATE_COUNT] = {
        [MFR_STATE_SETUP] = "SETUP",
        [MFR_STATE_CONNECTED] = "CONNECTED",
        [MFR_STATE_NEGOTIATED] = "NEGOTIATED",
        [MFR_STATE_BLOCKS_AGREED] = "BLOCKS_AGREED",
        [MFR_STATE_CHANNELS_UP] = "CHANNELS_UP",
        [MFR_STATE_PRECOPY] = "PRECOPY",
        [MFR_STATE_SWITCHOVER] = "SWITCHOVER",
        [MFR_STATE_COMPLETING] = "COMPLETING",
        [MFR_STATE_DONE] = "DONE",
        [MFR_STATE_FAILED] = "FAILED",
    };
    return (unsigned)s < MFR_STATE_COUNT ? names[s] : "INVALID";
}

bool mfr_state_allowed(MfrState from, MfrState to)
{
    if ((unsigned)from >= MFR_STATE_COUNT || (unsigned)to >= MFR_STATE_COUNT) {
        return false;
    }
    if (from == MFR_STATE_DONE || from == MFR_STATE_FAILED) {
        return false; /* terminal */
    }
    if (to == MFR_STATE_FAILED) {
        return true;
    }
    switch (from) {
    case MFR_STATE_SETUP: return to == MFR_STATE_CONNECTED;
    case MFR_STATE_CONNECTED: return to == MFR_STATE_NEGOTIATED;
    case MFR_STATE_NEGOTIATED: return to == MFR_STATE_BLOCKS_AGREED;
    case MFR_STATE_BLOCKS_AGREED: return to == MFR_STATE_CHANNELS_UP;
    case MFR_STATE_CHANNELS_UP: return to == MFR_STATE_PRECOPY;
    /* the destination cannot tell the last round from the others: it may go straight on */
    case MFR_STATE_PRECOPY: return to == MFR_STATE_SWITCHOVER || to == MFR_STATE_COMPLETING;
    case MFR_STATE_SWITCHOVER: return to == MFR_STATE_COMPLETING;
    case MFR_STATE_COMPLETING: return to == MFR_STATE_DONE;
    default: return false;
    }
}

bool mfr_state_move(MfrState *s, MfrState to, GError **error)
{
    if (!mfr_state_allowed(*s, to)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_PROTOCOL, "illegal state transition %s -> %s",
                    mfr_state_str(*s), mfr_state_str(to));
        return false;
    }
    *s = to;
    return true;
}

MfrPhase mfr_state_phase(MfrState s, bool verify)
{
    switch (s) {
    case MFR_STATE_PRECOPY: return MFR_PHASE_PRECOPY;
    case MFR_STATE_SWITCHOVER: return MFR_PHASE_SWITCHOVER;
    case MFR_STATE_COMPLETING: return verify ? MFR_PHASE_VERIFY : MFR_PHASE_SWITCHOVER;
    case MFR_STATE_DONE: return MFR_PHASE_DONE;
    case MFR_STATE_FAILED: return MFR_PHASE_FAILED;
    default: return MFR_PHASE_SETUP;
    }
}

bool mfr_state_accepts(MfrState s, MfrSide side, MfrCtrlType type)
{
    /* liveness and aborts are valid whenever a control connection exists */
    if (type == MFR_CTRL_KEEPALIVE || type == MFR_CTRL_ERROR ||
        (type == MFR_CTRL_CANCEL && side == MFR_SIDE_DEST)) {
        return s != MFR_STATE_SETUP && s != MFR_STATE_DONE && s != MFR_STATE_FAILED;
    }
    if (side == MFR_SIDE_DEST) {
        switch (type) {
        case MFR_CTRL_CAPS: return s == MFR_STATE_CONNECTED;
        case MFR_CTRL_BLOCKS: return s == MFR_STATE_NEGOTIATED;
        case MFR_CTRL_COMPLETE: return s == MFR_STATE_PRECOPY;
        default: return false;
        }
    }
    switch (type) {
    case MFR_CTRL_CAPS: return s == MFR_STATE_CONNECTED;
    case MFR_CTRL_BLOCKS_REPLY: return s == MFR_STATE_NEGOTIATED;
    case MFR_CTRL_SYNC_ACK: return s == MFR_STATE_PRECOPY || s == MFR_STATE_SWITCHOVER;
    /* Pipelined registration: on the wire from BLOCKS_REPLY on, until SYNC(1); the source
     * takes them off its queue before it hands out a batch that needs them and before it
     * sends SYNC(1), in round 1 (PRECOPY, or SWITCHOVER for a stepwise caller that stopped
     * its workload in round 1); earlier states only admit them for a source that would. */
    case MFR_CTRL_REGION:
        return s == MFR_STATE_BLOCKS_AGREED || s == MFR_STATE_CHANNELS_UP ||
               s == MFR_STATE_PRECOPY || s == MFR_STATE_SWITCHOVER;
    case MFR_CTRL_COMPLETE_REPLY: return s == MFR_STATE_COMPLETING;
    default: return false;
    }
}
