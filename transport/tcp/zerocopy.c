/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP MSG_ZEROCOPY completions: reading them off the socket error queue, and the
 * channel's reaping (copied-anyway runs make the sender stop asking).
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <string.h>

bool xp_tcp_zerocopy_next(int fd, uint32_t *lo, uint32_t *hi, bool *copied)
{
    for (;;) {
        char control[CMSG_SPACE(sizeof(struct sock_extended_err)) + 64];
        struct msghdr mh = { .msg_control = control, .msg_controllen = sizeof(control) };
        if (recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            return false; /* EAGAIN: queue empty; anything else: nothing we can reap */
        }
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                  (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR))) {
                continue;
            }
            struct sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
            if (ee.ee_errno != 0 || ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY) {
                continue;
            }
            /* one notification per message: [ee_info, ee_data] is an inclusive range */
            *lo = ee.ee_info;
            *hi = ee.ee_data;
            *copied = (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0;
            return true;
        }
    }
}

/* Reap MSG_ZEROCOPY completions without blocking. Returns how many ranges were reaped. */
unsigned tcp_zc_reap(TcpChannel *ch)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ch->zc_lock);
    unsigned reaped = 0;
    uint32_t lo, hi;
    bool copied;
    while (xp_tcp_zerocopy_next(ch->fd, &lo, &hi, &copied)) {
        uint32_t n = hi - lo + 1;
        unsigned run = atomic_load_explicit(&ch->zc_copied_run, memory_order_relaxed);
        if (copied) {
            /* The kernel had to copy after all (loopback, or a NIC without SG). */
            ch->ctr.zerocopy_copied += n;
            if (run < XP_TCP_ZC_GIVE_UP && run + n >= XP_TCP_ZC_GIVE_UP) {
                g_debug("%s: the kernel copied the last %u zerocopy sends; sending with "
                        "copies from now on", ch->peer, run + n);
            }
            run = MIN(run + n, XP_TCP_ZC_GIVE_UP);
        } else {
            run = 0;
        }
        atomic_store_explicit(&ch->zc_copied_run, run, memory_order_relaxed);
        atomic_store_explicit(&ch->zc_done, hi + 1, memory_order_relaxed);
        reaped++;
    }
    return reaped;
}
