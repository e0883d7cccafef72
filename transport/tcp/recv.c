/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP receive side: the next frame (never reading beyond it plus the next length word),
 * and the payload that followed it, read straight into the caller's iovecs.
 */
#define G_LOG_DOMAIN "mfrdma-xp-tcp"

#include "tcp-priv.h"

#include <errno.h>
#include <string.h>

/* Next frame into buf. Partial frames stay in rbuf, so a timeout loses nothing.
 *
 * Reads never go further into the stream than the end of the frame plus the next frame's
 * length word: a message may be followed by payload that recv_payload() reads straight into
 * its destination, and anything read here would have to be copied there again (and would
 * fault fresh destination pages in from user space). The length word of what follows comes
 * for free with the message; when payload follows, those few bytes are its first ones. */
int tcp_recv_frame(TcpChannel *ch, void *buf, size_t cap, size_t *len, int64_t deadline,
                   int wake_fd)
{
    for (;;) {
        size_t avail = ch->rlen - ch->rpos;
        /* bytes of this frame (and the next length word) needed */
        size_t want = TCP_WIRE_HDR_SIZE;
        if (avail >= TCP_WIRE_HDR_SIZE) {
            uint32_t n;
            int rc = tcp_wire_unpack_hdr(ch->rbuf + ch->rpos, cap, &n);
            if (rc < 0) {
                tcp_break(ch);
                return rc;
            }
            if (avail >= TCP_WIRE_HDR_SIZE + n) {
                memcpy(buf, ch->rbuf + ch->rpos + TCP_WIRE_HDR_SIZE, n);
#ifdef MFR_FUZZ_RECORDER
                xp_record_msg(buf, n);
#endif
                ch->rpos += TCP_WIRE_HDR_SIZE + n;
                if (ch->rpos == ch->rlen) {
                    ch->rpos = ch->rlen = 0;
                }
                *len = n;
                ch->ctr.msgs_received++;
                ch->ctr.bytes_received += n;
                return 0;
            }
            want = TCP_WIRE_HDR_SIZE + n + TCP_WIRE_HDR_SIZE;
        }
        if (ch->rpos > 0) {
            /* Less than one frame is left: moving it is cheaper than a second read. */
            memmove(ch->rbuf, ch->rbuf + ch->rpos, avail);
            ch->rpos = 0;
            ch->rlen = avail;
        }
        struct iovec v = { ch->rbuf + ch->rlen, want - avail };
        ssize_t r = tcp_read_some(ch, &v, 1, deadline, wake_fd);
        if (r < 0) {
            return (int)r;
        }
        ch->rlen += (size_t)r;
    }
}

int tcp_recv_msg(XpChannel *c, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    return tcp_recv_frame(ch, buf, cap, len, tcp_deadline(timeout_ms), -1);
}

int tcp_recv_payload(XpChannel *c, const struct iovec *iov, unsigned iovcnt)
{
    TcpChannel *ch = tcp_ch(c);
    int rc = tcp_check(ch);
    if (rc < 0) {
        return rc;
    }
    unsigned i = 0;  /* cursor: iov[i] from byte off */
    size_t off = 0;

    /* Payload bytes that came in with the last message's read. */
    while (i < iovcnt && ch->rpos < ch->rlen) {
        size_t n = MIN(iov[i].iov_len - off, ch->rlen - ch->rpos);
        memcpy((uint8_t *)iov[i].iov_base + off, ch->rbuf + ch->rpos, n);
        ch->rpos += n;
        off += n;
        ch->ctr.bytes_received += n;
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
        }
    }
    if (ch->rpos == ch->rlen) {
        ch->rpos = ch->rlen = 0;
    }

    /* rbuf is empty here unless the payload is already complete. */
    while (i < iovcnt) {
        unsigned k = 0;
        unsigned j = i;
        size_t o = off;
        size_t need = 0;
        for (; j < iovcnt && k < IOV_MAX; j++, o = 0) {
            if (iov[j].iov_len > o) {
                ch->riov[k].iov_base = (uint8_t *)iov[j].iov_base + o;
                ch->riov[k].iov_len = iov[j].iov_len - o;
                need += ch->riov[k].iov_len;
                k++;
            }
        }
        if (k == 0) {
            break; /* only empty iovecs left */
        }
        /* The last read of the payload also takes the next frame's length word if it is
         * there already, which saves recv_msg() a read of its own; it never waits for it. */
        bool ahead = j == iovcnt && k < IOV_MAX && ch->rlen == 0;
        if (ahead) {
            ch->riov[k].iov_base = ch->rbuf;
            ch->riov[k].iov_len = TCP_WIRE_HDR_SIZE;
            k++;
        }
        ssize_t r = tcp_read_some(ch, ch->riov, k, -1, -1);
        if (r < 0) {
            return (int)r;
        }
        if (ahead && (size_t)r > need) {
            ch->rlen = (size_t)r - need;
            r = (ssize_t)need;
        }
        ch->ctr.bytes_received += (size_t)r;
        size_t left = (size_t)r;
        while (left > 0) {
            size_t rem = iov[i].iov_len - off;
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
    return 0;
}
