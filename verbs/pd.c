/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbPd: a protection domain. One per session (shared by all its channels and regions), so
 * rkeys handed to the peer are valid on every channel's QP.
 */
#include "vb-priv.h"

#include <errno.h>

VbPd *vb_pd_new(VbDevice *dev, GError **error)
{
    struct ibv_pd *pd = ibv_alloc_pd(dev->ctx);
    if (!pd) {
        vb_set_error_errno(error, errno, "%s: allocate protection domain", dev->attr.name);
        return NULL;
    }
    VbPd *p = g_new0(VbPd, 1);
    p->pd = pd;
    p->dev = dev;
    return p;
}

void vb_pd_free(VbPd *pd)
{
    if (!pd) {
        return;
    }
    if (pd->pd) {
        int ret = ibv_dealloc_pd(pd->pd);
        if (ret != 0) {
            /* EBUSY: a QP or MR still uses it; a leak the caller must fix, not fatal here. */
            g_log(VB_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "%s: dealloc PD: %s",
                  pd->dev->attr.name, g_strerror(ret));
        }
    }
    g_free(pd);
}

VbDevice *vb_pd_device(VbPd *pd)
{
    return pd->dev;
}
