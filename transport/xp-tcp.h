/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TCP backend's entry points beyond the generic XpOps: its ops table (for the registry
 * in xp.c) and the MSG_ZEROCOPY completion reader. Implemented in transport/tcp/.
 */
#pragma once

#include "xp.h"

G_BEGIN_DECLS

extern const XpOps xp_tcp_ops;

/* Takes the next MSG_ZEROCOPY completion off socket fd's error queue without blocking. True
 * with the inclusive range [*lo, *hi] of completed zerocopy sendmsg() calls and whether the
 * kernel copied them after all; false when the queue holds none. */
bool xp_tcp_zerocopy_next(int fd, uint32_t *lo, uint32_t *hi, bool *copied);

G_END_DECLS
