/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Placeholder: being written. */
#include "xp.h"
const XpOps xp_rdma_ops = { .version = XP_OPS_VERSION, .name = "rdma" };
