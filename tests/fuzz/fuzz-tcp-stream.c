/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the TCP framing, through the real listener. Each input is the byte stream
 * a peer sends on one connection: it is written to a loopback socket connected to an xp tcp
 * listener, which accepts it (reading the hello frame), answers, and then receives messages
 * until the stream ends. After each message, payload follows as the engine reads it (the
 * message's last byte, times 64, split over two buffers) so recv_payload's bookkeeping is
 * fuzzed too. The stream must end in a clean error, never a crash, an overlong message or a
 * hang (libFuzzer's -timeout catches that).
 */
#include "fuzz.h"
#include "xp.h"
#include "xp-tcp.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static XpDomain *dom;
static XpListener *listener;
static struct sockaddr_in addr;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    XpOptions o;
    xp_options_init(&o);
    o.timeout_ms = 2000;
    GError *err = NULL;
    dom = xp_tcp_ops.domain_new(&o, &err);
    listener = dom ? xp_tcp_ops.listen(dom, "127.0.0.1", "0", &err) : NULL;
    if (!listener) {
        g_printerr("fuzz-tcp-stream: %s\n", err->message);
        abort();
    }
    const char *uri = xp_tcp_ops.listener_uri(listener); /* tcp:127.0.0.1:PORT */
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(strrchr(uri, ':') + 1));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return 0;
}

static void drain(XpChannel *ch)
{
    static uint8_t msg[XP_MSG_MAX], payload[2][255 * 64];
    for (;;) {
        size_t len = 0;
        if (xp_recv_msg(ch, msg, sizeof(msg), &len, 2000) < 0) {
            return;
        }
        assert(len <= XP_MSG_MAX);
        size_t n = len ? msg[len - 1] * 64u : 0;
        if (!n) {
            continue;
        }
        struct iovec iov[2] = { { payload[0], n / 3 }, { payload[1], n - n / 3 } };
        if (xp_recv_payload(ch, iov, 2) < 0) {
            return;
        }
    }
}

/* Whether the listener closed its end of our connection (a FIN or a reset arrived). */
static bool closed_by_peer(int fd)
{
    struct pollfd pf = { .fd = fd, .events = POLLRDHUP };
    return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert(fd >= 0);
    /* closed with a reset, not into TIME_WAIT: millions of runs would use up the ports */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (!fuzz_connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
        g_printerr("fuzz-tcp-stream: connect: %s\n", g_strerror(errno));
        abort();
    }
    /* the stream fits loopback's socket buffers (-max_len in fuzz-test.sh) */
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        assert(w > 0 || errno == EINTR);
        off += w > 0 ? (size_t)w : 0;
    }
    shutdown(fd, SHUT_WR);
    uint8_t hello[XP_HELLO_MAX];
    size_t hlen = 0;
    GError *err = NULL;
    /* The listener drops a connection whose framing is bad, or that closed before a whole
     * hello, and waits on (docs/protocol.md 3.3): so a refusal shows as our socket closed by
     * the listener while accept() times out. The whole stream is queued on loopback before
     * the first accept(), so the listener can decide without waiting: accept() is asked not
     * to wait (one call takes the connection in, the next reads its hello), which keeps an
     * input well under a millisecond. Only when that does not settle it (a scheduler hiccup)
     * does it wait in 10 ms steps; 2 s with neither a channel nor our socket closed is a
     * listener that lost the connection. */
    XpChannel *ch = NULL;
    for (int i = 0; i < 204 && !ch; i++) {
        ch = xp_tcp_ops.accept(listener, i < 4 ? 0 : 10, hello, &hlen, &err);
        if (ch) {
            break;
        }
        assert(err && err->domain == XP_ERROR);
        bool timeout = err->code == XP_ERROR_TIMEOUT;
        g_clear_error(&err);
        if (!timeout || closed_by_peer(fd)) {
            break;
        }
        assert(i < 203);
    }
    if (ch) {
        assert(hlen <= XP_HELLO_MAX);
        if (xp_tcp_ops.answer(ch, 0, NULL, NULL)) {
            drain(ch);
        }
        xp_channel_close(ch);
    }
    close(fd);
    return 0;
}
