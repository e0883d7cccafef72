/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP send side: the length word, the message and its segments as one iovec list,
 * sendmsg() until every byte is out, with MSG_ZEROCOPY for the segments when enabled.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <poll.h>

/* Element e of a send: 0 the length header, 1 the message, 2.. the segments. */
static inline void tcp_send_elem(TcpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                                 unsigned e, const uint8_t **p, size_t *l)
{
    if (e == 0) {
        *p = ch->sendhdr;
        *l = TCP_WIRE_HDR_SIZE;
    } else if (e == 1) {
        *p = msg;
        *l = len;
    } else {
        *p = segs[e - 2].addr;
        *l = segs[e - 2].len;
    }
}

/* sendmsg() of elements [first, last) from byte off of the first one, until all are gone.
 * sendmsg rather than writev: MSG_NOSIGNAL turns a dead peer into EPIPE instead of SIGPIPE. */
static int tcp_send_elems(TcpChannel *ch, const void *msg, size_t len, const XpSeg *segs,
                          unsigned first, unsigned last, int flags, int64_t deadline)
{
    unsigned i = first;
    size_t off = 0;
    for (;;) {
        unsigned k = 0;
        size_t o = off;
        for (unsigned j = i; j < last && k < IOV_MAX; j++, o = 0) {
            const uint8_t *p;
            size_t l;
            tcp_send_elem(ch, msg, len, segs, j, &p, &l);
            if (l > o) {
                ch->siov[k].iov_base = (void *)(p + o);
                ch->siov[k].iov_len = l - o;
                k++;
            }
        }
        if (k == 0) {
            return 0;
        }
        if (atomic_load_explicit(&ch->down, memory_order_acquire)) {
            return -EPIPE;
        }
        struct msghdr mh = { .msg_iov = ch->siov, .msg_iovlen = k };
        ssize_t r = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | flags);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int rc = tcp_wait(ch, POLLOUT, deadline, -1);
                if (rc < 0) {
                    return rc;
                }
                continue;
            }
            if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
                /* Over the optmem limit for pinned pages: this piece goes with a copy. */
                flags &= ~MSG_ZEROCOPY;
                g_mutex_lock(&ch->zc_lock); /* tcp_zc_reap() counts copies too */
                ch->ctr.zerocopy_copied++;
                g_mutex_unlock(&ch->zc_lock);
                continue;
            }
            return tcp_map_errno(errno);
        }
        if (flags & MSG_ZEROCOPY) {
            ch->zc_sent++;
            ch->ctr.zerocopy_sends++;
        }
        size_t left = (size_t)r;
        while (left > 0) {
            const uint8_t *p;
            size_t l;
            tcp_send_elem(ch, msg, len, segs, i, &p, &l);
            size_t rem = l - off;
            if (left < rem) {
                off += left;
                left = 0;
            } else {
                left -= rem;
                i++;
                off = 0;
            }
        }
    }
}

int tcp_send_msg(XpChannel *c, const void *msg, size_t len, const XpSeg *segs,
                 unsigned nsegs)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    if (len > XP_MSG_MAX) {
        return -EMSGSIZE;
    }
    if (ch->send_broken) {
        return -ETIMEDOUT;
    }
    tcp_wire_pack_hdr((uint32_t)len, ch->sendhdr);
    int64_t deadline = tcp_deadline(ch->send_timeout_ms);
    if (ch->zerocopy && nsegs > 0 &&
        atomic_load_explicit(&ch->zc_copied_run, memory_order_relaxed) < XP_TCP_ZC_GIVE_UP) {
        /* The message must be free for reuse on return, so only the segments (stable until
         * close by contract) go zero copy; MSG_MORE keeps the two parts in one segment. */
        rc = tcp_send_elems(ch, msg, len, segs, 0, 2, MSG_MORE, deadline);
        if (rc == 0) {
            rc = tcp_send_elems(ch, msg, len, segs, 2, nsegs + 2, MSG_ZEROCOPY, deadline);
        }
        /* Each pending completion holds socket option memory: do not let them pile up. */
        if (ch->zc_sent - atomic_load_explicit(&ch->zc_done, memory_order_relaxed) >=
            XP_TCP_ZC_REAP_BATCH) {
            tcp_zc_reap(ch);
        }
    } else {
        rc = tcp_send_elems(ch, msg, len, segs, 0, nsegs + 2, 0, deadline);
    }
    if (rc == -ETIMEDOUT) {
        /* Part of the frame may be in the stream, so nothing may follow it; receiving goes
         * on, since the peer may still say why it stopped reading (its ERROR). */
        ch->send_broken = true;
    }
    if (rc == 0) {
        /* Message and payload bytes, not our framing, so backends compare. */
        uint64_t bytes = len;
        for (unsigned i = 0; i < nsegs; i++) {
            bytes += segs[i].len;
        }
        ch->ctr.msgs_sent++;
        ch->ctr.bytes_sent += bytes;
    }
    return rc;
}
