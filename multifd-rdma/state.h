/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Session state machine shared by source and destination: the legal transitions and which
 * control messages each state accepts from the peer. Illegal moves are errors, never asserts,
 * because a peer can try to cause them.
 */
#pragma once

#include "mfrdma.h"
#include "wire.h"

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

typedef enum {
    MFR_STATE_SETUP,          /* nothing connected */
    MFR_STATE_CONNECTED,      /* control connection up, hello accepted */
    MFR_STATE_NEGOTIATED,     /* CAPS agreed */
    MFR_STATE_BLOCKS_AGREED,  /* RAM blocks matched (and registered) */
    MFR_STATE_CHANNELS_UP,    /* every data channel connected */
    MFR_STATE_PRECOPY,        /* rounds running */
    MFR_STATE_SWITCHOVER,     /* workload stopped, last round */
    MFR_STATE_COMPLETING,     /* COMPLETE sent/received, verification */
    MFR_STATE_DONE,
    MFR_STATE_FAILED,
    MFR_STATE_COUNT,
} MfrState;

typedef enum {
    MFR_SIDE_SOURCE,
    MFR_SIDE_DEST,
} MfrSide;

const char *mfr_state_str(MfrState s);
bool mfr_state_allowed(MfrState from, MfrState to);
/* Moves *s to `to` or fails with MFR_ERROR_PROTOCOL naming both states. */
bool mfr_state_move(MfrState *s, MfrState to, GError **error);
/* The public phase (MfrProgress) of a session in state s: the state machine is the one
 * record of where a session is. verify: COMPLETING digests RAM (else it is the end of the
 * switchover). */
MfrPhase mfr_state_phase(MfrState s, bool verify);
/* Whether `side` may receive a control message of `type` while in state s. */
bool mfr_state_accepts(MfrState s, MfrSide side, MfrCtrlType type);

G_END_DECLS
