/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VbMr: memory registrations, plus the up-front memlock check. Pinning is charged to the
 * process' RLIMIT_MEMLOCK by the kernel; checking first turns a bare ENOMEM/EPERM from
 * ibv_reg_mr into a message that says how much is needed and how to allow it.
 */
#include "vb-priv.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define VB_MIB (1024.0 * 1024.0)

static bool vb_has_cap_ipc_lock(void)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) != 0) {
        return false;
    }
    return (data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK)) != 0;
}

/* Bytes this process already has pinned (VmPin), 0 if unknown. */
static uint64_t vb_pinned_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f) {
        return 0;
    }
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmPin: %llu kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return (uint64_t)kb * 1024;
}

bool vb_memlock_check(uint64_t bytes, GError **error)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return true;
    }
    if (vb_has_cap_ipc_lock()) {
        return true; /* the kernel does not enforce the limit then */
    }
    uint64_t pinned = vb_pinned_bytes();
    uint64_t need = pinned + bytes;
    if (need <= (uint64_t)rl.rlim_cur) {
        return true;
    }
    g_set_error(error, VB_ERROR, VB_ERROR_MEMLOCK,
                "need %.1f MiB pinned (%" G_GUINT64_FORMAT " bytes, %.1f MiB already), "
                "RLIMIT_MEMLOCK is %.1f MiB: raise it with `ulimit -l %" G_GUINT64_FORMAT
                "` (KiB) or `ulimit -l unlimited`",
                need / VB_MIB, need, pinned / VB_MIB, (double)rl.rlim_cur / VB_MIB,
                (need + 1023) / 1024);
    return false;
}

VbMr *vb_mr_reg(VbPd *pd, void *addr, size_t len, uint32_t access, GError **error)
{
    int flags = 0;
    if (access & VB_ACCESS_LOCAL_WRITE) {
        flags |= IBV_ACCESS_LOCAL_WRITE;
    }
    if (access & VB_ACCESS_REMOTE_WRITE) {
        flags |= IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE; /* required together */
    }
    if (access & VB_ACCESS_REMOTE_READ) {
        flags |= IBV_ACCESS_REMOTE_READ;
    }
    const VbDeviceAttr *da = &pd->dev->attr;
    if (access & VB_ACCESS_ON_DEMAND) {
        bool ok = da->odp && ((access & VB_ACCESS_REMOTE_WRITE) ? da->odp_rc_write
                                                                 : da->odp_rc_send);
        if (!ok) {
            g_set_error(error, VB_ERROR, VB_ERROR_UNSUPPORTED,
                        "%s does not support on-demand paging for RC %s (ODP caps: general=%s "
                        "send=%s write=%s); register without ODP",
                        da->name, (access & VB_ACCESS_REMOTE_WRITE) ? "RDMA WRITE" : "SEND",
                        da->odp ? "yes" : "no", da->odp_rc_send ? "yes" : "no",
                        da->odp_rc_write ? "yes" : "no");
            return NULL;
        }
        flags |= IBV_ACCESS_ON_DEMAND;
    } else if (!vb_memlock_check(len, error)) {
        return NULL;
    }
    if (da->max_mr_size && len > da->max_mr_size) {
        g_set_error(error, VB_ERROR, VB_ERROR_UNSUPPORTED,
                    "%s: region of %zu bytes exceeds the device's max_mr_size %" G_GUINT64_FORMAT,
                    da->name, len, da->max_mr_size);
        return NULL;
    }
    struct ibv_mr *mr = ibv_reg_mr(pd->pd, addr, len, flags);
    if (!mr) {
        int e = errno;
        if (e == ENOMEM || e == EPERM) {
            /* The kernel refused to pin: say what the limit check could not foresee. */
            g_set_error(error, VB_ERROR, VB_ERROR_MEMLOCK,
                        "%s: register %.1f MiB at %p: %s (pinned memory limit? check "
                        "`ulimit -l`)", da->name, len / VB_MIB, addr, g_strerror(e));
        } else {
            vb_set_error_errno(error, e, "%s: register %zu bytes at %p", da->name, len, addr);
        }
        return NULL;
    }
    VbMr *m = g_new0(VbMr, 1);
    m->mr = mr;
    return m;
}

void vb_mr_free(VbMr *mr)
{
    if (!mr) {
        return;
    }
    if (mr->mr) {
        int ret = ibv_dereg_mr(mr->mr);
        if (ret != 0) {
            g_log(VB_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "deregister MR: %s", g_strerror(ret));
        }
    }
    g_free(mr);
}

uint32_t vb_mr_lkey(const VbMr *mr)
{
    return mr->mr->lkey;
}

uint32_t vb_mr_rkey(const VbMr *mr)
{
    return mr->mr->rkey;
}

void *vb_mr_addr(const VbMr *mr)
{
    return mr->mr->addr;
}

size_t vb_mr_length(const VbMr *mr)
{
    return mr->mr->length;
}
