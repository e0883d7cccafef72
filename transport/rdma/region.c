/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA regions: local memory registered with the domain's PD (one MR each), the memlock
 * budget checked before any registration, and the peer's regions imported from their
 * descriptors.
 */
#define G_LOG_DOMAIN "mfrdma-rdma"

#include "rdma-priv.h"

#include <string.h>

/* ------------------------------------------------------------------ regions */

bool xp_rdma_region_register(XpDomain *xd, void *addr, size_t len, uint32_t access,
                             XpRegion **out, GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (len == 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot register an empty region at %p",
                    addr);
        return false;
    }
    VbPd *pd = xp_rdma_domain_pd(d, error);
    if (!pd) {
        return false;
    }
    uint32_t va = 0;
    if (access & XP_REGION_REMOTE_WRITE) {
        va |= VB_ACCESS_REMOTE_WRITE | VB_ACCESS_LOCAL_WRITE;
    }
    if (d->opts.odp) {
        va |= VB_ACCESS_ON_DEMAND;
    }
    GError *local = NULL;
    VbMr *mr = vb_mr_reg(pd, addr, len, va, &local);
    if (!mr) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    RdmaRegion *r = g_new0(RdmaRegion, 1);
    r->dom = d;
    r->mr = mr;
    *out = (XpRegion *)r;
    return true;
}

bool xp_rdma_region_budget(XpDomain *xd, uint64_t bytes, unsigned channels, GError **error)
{
    RdmaDomain *d = (RdmaDomain *)xd;
    if (d->opts.odp) {
        return true; /* on-demand paging pins nothing up front */
    }
    /* every channel (and the control channel) registers its receive ring and send buffers */
    uint64_t per_channel = (uint64_t)(RDMA_RECV_RING + RDMA_SEND_BUFS) * XP_MSG_MAX;
    GError *local = NULL;
    if (!vb_memlock_check(bytes + (uint64_t)(channels + 1) * per_channel, &local)) {
        xp_rdma_propagate(error, local, NULL);
        return false;
    }
    return true;
}

void xp_rdma_region_deregister(XpRegion *xr)
{
    RdmaRegion *r = (RdmaRegion *)xr;
    if (!r) {
        return;
    }
    vb_mr_free(r->mr);
    g_free(r);
}

void xp_rdma_region_export(XpRegion *xr, uint8_t desc[XP_REGION_DESC_SIZE])
{
    RdmaRegion *r = (RdmaRegion *)xr;
    xp_rdma_wire_pack_desc((uint64_t)(uintptr_t)vb_mr_addr(r->mr), vb_mr_rkey(r->mr), desc);
}

bool xp_rdma_remote_import(XpDomain *xd, const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len,
                           XpRemote **out, GError **error)
{
    uint64_t addr;
    uint32_t rkey;
    if (!xp_rdma_wire_unpack_desc(desc, len, &addr, &rkey, error)) {
        return false;
    }
    RdmaRemote *r = g_new0(RdmaRemote, 1);
    r->addr = addr;
    r->rkey = rkey;
    r->len = len;
    *out = (XpRemote *)r;
    return true;
}

void xp_rdma_remote_free(XpRemote *r)
{
    g_free(r);
}
