/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NUMA node of an RDMA channel's device, so the engine can place the threads and
 * buffers that drive the channel next to it.
 */
#include "rdma-priv.h"

int xp_rdma_numa_node(XpChannel *xc)
{
    RdmaChannel *ch = (RdmaChannel *)xc;
    /* set by the channel's first cm_id and never changed: a channel exists, so it is */
    return ch->dom && ch->dom->dev ? vb_device_numa_node(ch->dom->dev) : -1;
}
