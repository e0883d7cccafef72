/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A source driven by hand over raw loopback sockets (see peer.h).
 */
#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int peer_connect(uint16_t port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* closed with a reset, not into TIME_WAIT: long fuzzing campaigns would use up the ports */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    int rc;
    do { /* a test's timer signals (libFuzzer's) may interrupt it: it goes on in the kernel */
        rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    } while (rc != 0 && (errno == EINTR || errno == EALREADY));
    if (rc != 0 && errno != EISCONN) {
        close(fd);
        return -1;
    }
    return fd;
}

bool peer_write(int fd, const void *p, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, (const uint8_t *)p + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        off += (size_t)w;
    }
    return true;
}

/* One send: a length word sent alone would meet Nagle and a delayed ACK (40 ms). */
bool peer_frame(int fd, const void *p, size_t len)
{
    uint8_t buf[4 + 0xffff];
    if (len > sizeof(buf) - 4) {
        return false;
    }
    buf[0] = (uint8_t)len;
    buf[1] = (uint8_t)(len >> 8);
    buf[2] = buf[3] = 0;
    memcpy(buf + 4, p, len);
    return peer_write(fd, buf, 4 + len);
}

int64_t peer_read_frame(int fd)
{
    uint8_t buf[4 + 8192];
    size_t need = 4, have = 0;
    while (have < need) {
        ssize_t r = recv(fd, buf + have, need - have, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        have += (size_t)r;
        if (have == 4 && need == 4) {
            need = 4 + (buf[0] | buf[1] << 8 | (size_t)buf[2] << 16);
            if (need > sizeof(buf) || need < 8) {
                return -1;
            }
        }
    }
    return buf[4] | buf[5] << 8 | buf[6] << 16 | (uint32_t)buf[7] << 24;
}

bool peer_hello(int fd, const MfrHello *h)
{
    uint8_t buf[MFR_HELLO_SIZE];
    mfr_wire_pack_hello(h, buf);
    return peer_frame(fd, buf, sizeof(buf)) && peer_read_frame(fd) == 0;
}

size_t peer_ctrl_msg(uint32_t seq, uint16_t type, const void *body, size_t len, uint8_t *buf)
{
    MfrCtrlHdr h = { .magic = MFR_CTRL_MAGIC, .version = MFR_WIRE_VERSION, .type = type,
                     .length = (uint32_t)len, .seq = seq };
    mfr_wire_pack_ctrl_hdr(&h, buf);
    memcpy(buf + MFR_CTRL_HDR_SIZE, body, len);
    return MFR_CTRL_HDR_SIZE + len;
}
