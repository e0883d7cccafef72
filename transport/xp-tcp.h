/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TCP backend's entry points beyond the generic XpOps: its ops table (for the registry
 * in xp.c) and the MSG_ZEROCOPY completion reader. Implemented in transport/tcp/.
 */
#pragma once

#include "xp.h"

#include <sys/socket.h>

G_BEGIN_DECLS

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

/* The zerocopy policy, shared with bench/'s raw baseline so both send alike. Completions
 * left pending before the sender reaps them: */
#define XP_TCP_ZC_REAP_BATCH 32u
/* After this many zerocopy sends in a row that the kernel copied anyway (loopback, a NIC
 * without scatter-gather), stop asking: pinning and notifications are then pure overhead. */
#define XP_TCP_ZC_GIVE_UP 256u

extern const XpOps xp_tcp_ops;

/* Takes the next MSG_ZEROCOPY completion off socket fd's error queue without blocking. True
 * with the inclusive range [*lo, *hi] of completed zerocopy sendmsg() calls and whether the
 * kernel copied them after all; false when the queue holds none. */
bool xp_tcp_zerocopy_next(int fd, uint32_t *lo, uint32_t *hi, bool *copied);

G_END_DECLS
