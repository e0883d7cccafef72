/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A hostile source for `mfrdma listen` (tests/faults/hostile.sh): it follows the protocol up
 * to STATE, then sends that state's message mutated (bytes flipped, cut short or extended,
 * chosen by SEED) and then nothing, and waits until the destination closes the control
 * connection. It prints how it ended and how long after the mutated message:
 *   refused MS      the mutated hello was answered with a refusal (the listener goes on;
 *                   a valid hello is then accepted and abandoned, which ends the session)
 *   closed MS       the destination closed the session
 *   open MS         the destination kept the connection past 10 s
 * Usage: hostile-peer PORT TOKEN(32 hex) STATE SEED
 *   STATE: hello caps blocks channel packet sync complete
 */
#include "peer.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PS 4096u

typedef enum { ST_HELLO, ST_CAPS, ST_BLOCKS, ST_CHANNEL, ST_PACKET, ST_SYNC, ST_COMPLETE } State;
static const char *const state_names[] = { "hello", "caps", "blocks", "channel", "packet",
                                           "sync", "complete" };

typedef struct {
    uint16_t port;
    MfrHello hello;
    GRand *rnd;
    int ctl, chan;
    uint32_t seq;
    uint64_t pkt;
} Peer;

/* Flip 1-4 bytes, cut the message short, or add bytes to it. */
static size_t mutate(Peer *p, uint8_t *m, size_t len, size_t cap)
{
    switch (g_rand_int_range(p->rnd, 0, 4)) {
    case 0:
        return (size_t)g_rand_int_range(p->rnd, 0, (gint32)len);
    case 1: {
        size_t n = MIN(cap, len + (size_t)g_rand_int_range(p->rnd, 1, 64));
        for (size_t i = len; i < n; i++) {
            m[i] = (uint8_t)g_rand_int(p->rnd);
        }
        return n;
    }
    default:
        for (int i = g_rand_int_range(p->rnd, 1, 5); i > 0; i--) {
            m[g_rand_int_range(p->rnd, 0, (gint32)len)] ^= (uint8_t)g_rand_int_range(p->rnd, 1, 256);
        }
        return len;
    }
}

static bool send_ctrl(Peer *p, uint16_t type, const void *body, size_t len, bool bad)
{
    uint8_t m[512 + 64];
    size_t n = peer_ctrl_msg(++p->seq, type, body, len, m);
    if (bad) {
        n = mutate(p, m, n, sizeof(m));
    }
    return peer_frame(p->ctl, m, n);
}

static bool send_hello(Peer *p, int fd, uint8_t role, bool bad, bool *refused)
{
    MfrHello h = p->hello;
    h.role = role;
    uint8_t m[MFR_HELLO_SIZE + 64];
    mfr_wire_pack_hello(&h, m);
    size_t n = bad ? mutate(p, m, MFR_HELLO_SIZE, sizeof(m)) : MFR_HELLO_SIZE;
    int64_t status = peer_frame(fd, m, n) ? peer_read_frame(fd) : -1;
    *refused = status != 0;
    return status == 0;
}

static bool send_packet(Peer *p, bool sync, bool bad)
{
    static const uint64_t zero_page[] = { 2 * PS };
    MfrPacketHdr h = { .magic = MFR_PACKET_MAGIC, .version = MFR_WIRE_VERSION,
                       .packet_num = ++p->pkt, .round = 1,
                       .flags = sync ? MFR_PACKET_SYNC : 0, .zero_pages = sync ? 0 : 1 };
    uint8_t m[MFR_PACKET_HDR_SIZE + 8 + 64];
    size_t n = mfr_wire_pack_packet(&h, zero_page, m, sizeof(m) - 64);
    if (bad) {
        n = mutate(p, m, n, sizeof(m));
    }
    return peer_frame(p->chan, m, n);
}

/* Valid messages up to `bad`, which is sent mutated; false if the destination gave up on a
 * valid one (a test failure). */
static bool play(Peer *p, State bad, bool *refused)
{
    uint8_t body[512];
    p->ctl = peer_connect(p->port);
    if (p->ctl < 0 || !send_hello(p, p->ctl, MFR_ROLE_CONTROL, bad == ST_HELLO, refused)) {
        return bad == ST_HELLO;
    }
    MfrCaps c = { .page_size = PS, .zero_modes = MFR_ZERO_DETECT, .compression = MFR_COMP_NONE,
                  .channels = 1, .max_channels = 1, .max_pages_per_packet = 8 };
    mfr_wire_pack_caps(&c, body);
    if (!send_ctrl(p, MFR_CTRL_CAPS, body, MFR_CAPS_SIZE, bad == ST_CAPS) || bad == ST_CAPS) {
        return bad == ST_CAPS;
    }
    peer_read_frame(p->ctl);
    MfrBlockInfo b = { .name = "ram0", .length = 256 * PS, .page_size = PS };
    size_t n = mfr_wire_pack_blocks(&b, 1, body, sizeof(body));
    if (!send_ctrl(p, MFR_CTRL_BLOCKS, body, n, bad == ST_BLOCKS) || bad == ST_BLOCKS) {
        return bad == ST_BLOCKS;
    }
    peer_read_frame(p->ctl);
    p->chan = peer_connect(p->port);
    bool chan_refused;
    if (p->chan < 0 || !send_hello(p, p->chan, MFR_ROLE_CHANNEL, bad == ST_CHANNEL, &chan_refused) ||
        bad == ST_CHANNEL) {
        return bad == ST_CHANNEL;
    }
    if (!send_packet(p, false, bad == ST_PACKET) || bad == ST_PACKET ||
        !send_packet(p, true, bad == ST_SYNC) || bad == ST_SYNC) {
        return true;
    }
    peer_read_frame(p->ctl); /* SYNC_ACK */
    n = mfr_wire_pack_complete(1, NULL, 0, body, sizeof(body));
    return send_ctrl(p, MFR_CTRL_COMPLETE, body, n, true);
}

/* Milliseconds until the destination closes fd (reading and dropping what it sends), or -1
 * after 10 s. */
static int64_t wait_close(int fd, gint64 t0)
{
    uint8_t buf[4096];
    while (g_get_monotonic_time() - t0 < 10 * G_USEC_PER_SEC) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) <= 0) {
            return (g_get_monotonic_time() - t0) / 1000;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    State st = ST_HELLO;
    while (argc == 5 && st <= ST_COMPLETE && strcmp(argv[3], state_names[st]) != 0) {
        st++;
    }
    Peer p = { .hello = { .magic = MFR_HELLO_MAGIC, .version = MFR_WIRE_VERSION,
                          .channel_count = 1, .session_id = "hostile-session" },
               .ctl = -1, .chan = -1 };
    if (argc != 5 || st > ST_COMPLETE || strlen(argv[2]) != 32) {
        fprintf(stderr, "usage: hostile-peer PORT TOKEN STATE SEED\n");
        return 2;
    }
    for (unsigned i = 0; i < MFR_TOKEN_LEN; i++) {
        char hex[3] = { argv[2][2 * i], argv[2][2 * i + 1], 0 };
        p.hello.token[i] = (uint8_t)strtoul(hex, NULL, 16);
    }
    p.port = (uint16_t)atoi(argv[1]);
    p.rnd = g_rand_new_with_seed((guint32)atoi(argv[4]));
    bool refused = false;
    if (!play(&p, st, &refused)) {
        fprintf(stderr, "hostile-peer: the destination gave up before the %s message\n",
                state_names[st]);
        return 1;
    }
    gint64 t0 = g_get_monotonic_time();
    if (st == ST_HELLO && refused) {
        /* the listener must go on: a valid session is accepted, then abandoned */
        close(p.ctl);
        p.ctl = peer_connect(p.port);
        bool again;
        if (p.ctl < 0 || !send_hello(&p, p.ctl, MFR_ROLE_CONTROL, false, &again)) {
            fprintf(stderr, "hostile-peer: the listener did not go on after a refusal\n");
            return 1;
        }
        printf("refused %" G_GINT64_FORMAT "\n", (g_get_monotonic_time() - t0) / 1000);
        return 0;
    }
    int64_t ms = wait_close(p.ctl, t0);
    printf("%s %" G_GINT64_FORMAT "\n", ms < 0 ? "open" : "closed", ms < 0 ? 10000 : ms);
    return 0;
}
