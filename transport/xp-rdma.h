/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The RDMA backend's entry points beyond the generic XpOps: its ops table (for the registry
 * in xp.c) and a diagnostic helper tests use. Implemented in transport/rdma/.
 */
#pragma once

#include "xp.h"

G_BEGIN_DECLS

extern const XpOps xp_rdma_ops;

/* The RC parameters channel ch's QP runs with (ch must be an rdma channel). */
bool xp_rdma_channel_rc(XpChannel *ch, unsigned *retry, unsigned *rnr_retry,
                        unsigned *ack_timeout, GError **error);

G_END_DECLS
