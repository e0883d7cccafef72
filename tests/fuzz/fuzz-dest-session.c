/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: a whole destination session fed a fuzzed message sequence. For each
 * input an MfrDest listens on loopback tcp with two RAM blocks fenced by PROT_NONE pages;
 * this harness plays the source: a valid hello, CAPS and BLOCKS, two channels, and then the
 * input's records, each sent on the control connection or a channel:
 *   input   = [u8 mode] record*        mode bit 0: stop the set-up after the control hello,
 *                                      so the records drive negotiation as well
 *   record  = [u8 target][u16 len][len bytes]   target % 3: control, channel 0, channel 1;
 *                                      bit 7: bytes go raw (payload), else as one frame;
 *                                      bit 6: first wait, as a source awaits SYNC_ACK,
 *                                      for the next control message or until the
 *                                      destination is idle (20 ms at most, 4 times per
 *                                      input)
 * Then every connection is closed. The destination must end (success or a named error) within
 * its timeout, and any write outside the blocks hits a fence. The session runs on the
 * library's own thread (mfr_dest_start(); its eventfd tells the end). MFR_FUZZ_DEST_SEED=FILE
 * writes a valid migration in this format, and FILE.negotiate a negotiation driven by the
 * records (the seeds of tests/fuzz/corpus/dest-session), and exits.
 */
#include "fuzz.h"
#include "mfrdma.h"
#include "peer.h"
#include "wire.h"
#include "xp.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PS 4096u
#define TIMEOUT_MS 1000u
#define NCHAN 2u

static const uint8_t token[16] = "fuzz-dest-token";
static const struct { const char *name; unsigned pages; } layout[] = { { "ram0", 16 }, { "ram1", 3 } };
#define NBLOCKS G_N_ELEMENTS(layout)
static MfrRamBlock blocks[NBLOCKS];

/* [fence][block 0][fence][block 1][fence] */
static void blocks_map(void)
{
    size_t pages = NBLOCKS + 1;
    for (unsigned i = 0; i < NBLOCKS; i++) {
        pages += layout[i].pages;
    }
    uint8_t *p = mmap(NULL, pages * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert(p != MAP_FAILED);
    p += PS;
    for (unsigned i = 0; i < NBLOCKS; i++) {
        size_t len = (size_t)layout[i].pages * PS;
        assert(mprotect(p, len, PROT_READ | PROT_WRITE) == 0);
        blocks[i] = (MfrRamBlock){ .name = layout[i].name, .host = p, .length = len,
                                   .page_size = PS };
        p += len + PS;
    }
}

/* ---------- the messages of a valid source ---------- */

typedef struct {
    GByteArray *out;
    uint32_t ctl_seq;
    uint64_t pkt_num[NCHAN];
} Script;

static void script_record(Script *s, uint8_t target, const void *bytes, size_t len)
{
    uint8_t head[3] = { target, (uint8_t)len, (uint8_t)(len >> 8) };
    g_byte_array_append(s->out, head, 3);
    g_byte_array_append(s->out, bytes, (guint)len);
}

static size_t caps_msg(uint32_t seq, uint8_t *buf)
{
    MfrCaps c = { .page_size = PS, .zero_modes = MFR_ZERO_DETECT | MFR_ZERO_NONE,
                  .compression = MFR_COMP_NONE, .channels = NCHAN, .max_channels = NCHAN,
                  .max_pages_per_packet = 8 };
    uint8_t body[MFR_CAPS_SIZE];
    mfr_wire_pack_caps(&c, body);
    return peer_ctrl_msg(seq, MFR_CTRL_CAPS, body, sizeof(body), buf);
}

static size_t blocks_msg(uint32_t seq, uint8_t *buf)
{
    MfrBlockInfo info[NBLOCKS] = { 0 };
    for (unsigned i = 0; i < NBLOCKS; i++) {
        g_strlcpy(info[i].name, layout[i].name, sizeof(info[i].name));
        info[i].length = (uint64_t)layout[i].pages * PS;
        info[i].page_size = PS;
    }
    uint8_t body[8 + NBLOCKS * MFR_BLOCK_ANNOUNCE_SIZE];
    size_t n = mfr_wire_pack_blocks(info, NBLOCKS, body, sizeof(body));
    return peer_ctrl_msg(seq, MFR_CTRL_BLOCKS, body, n, buf);
}

static void script_packet(Script *s, unsigned chan, uint64_t round, uint32_t block,
                          const uint64_t *offs, uint32_t normal, uint32_t zero)
{
    MfrPacketHdr h = { .magic = MFR_PACKET_MAGIC, .version = MFR_WIRE_VERSION,
                       .packet_num = ++s->pkt_num[chan], .round = round, .block = block,
                       .normal_pages = normal, .zero_pages = zero,
                       .payload_len = (uint64_t)normal * PS,
                       .flags = normal + zero ? 0 : MFR_PACKET_SYNC };
    uint8_t buf[MFR_PACKET_HDR_SIZE + 8 * 8];
    size_t n = mfr_wire_pack_packet(&h, offs, buf, sizeof(buf));
    script_record(s, (uint8_t)(1 + chan), buf, n);
    for (uint32_t i = 0; i < normal; i++) {
        uint8_t page[PS];
        memset(page, 0x41 + (int)i, sizeof(page));
        script_record(s, (uint8_t)(0x80 | (1 + chan)), page, sizeof(page));
    }
}

static void seed_save(const char *path, GByteArray *out)
{
    GError *err = NULL;
    if (!g_file_set_contents(path, (const char *)out->data, out->len, &err)) {
        g_printerr("%s\n", err->message);
        exit(1);
    }
    g_byte_array_free(out, TRUE);
}

/* One round: data on both channels, a SYNC on each, then COMPLETE without digests. And at
 * PATH.negotiate the negotiation driven by the records (mode 1: CAPS and BLOCKS, each
 * awaiting its answer), after which the destination waits for channels that never come. */
static void write_seed(const char *path)
{
    Script s = { .out = g_byte_array_new(), .ctl_seq = 2 };
    uint8_t mode = 0;
    g_byte_array_append(s.out, &mode, 1);
    static const uint64_t offs0[] = { 0, 3 * PS, 5 * PS }, offs1[] = { 2 * PS, 0 };
    script_packet(&s, 0, 1, 0, offs0, 2, 1);
    script_packet(&s, 1, 1, 1, offs1, 1, 1);
    script_packet(&s, 0, 1, 0, NULL, 0, 0);
    script_packet(&s, 1, 1, 0, NULL, 0, 0);
    uint8_t body[16], msg[512];
    size_t n = mfr_wire_pack_complete(1, NULL, 0, body, sizeof(body));
    /* after the round's SYNC_ACK, as a source does; then await the COMPLETE_REPLY */
    script_record(&s, 0x40, msg, peer_ctrl_msg(++s.ctl_seq, MFR_CTRL_COMPLETE, body, n, msg));
    script_record(&s, 0x40 | 0x80, NULL, 0);
    seed_save(path, s.out);

    Script neg = { .out = g_byte_array_new() };
    mode = 1;
    g_byte_array_append(neg.out, &mode, 1);
    script_record(&neg, 0x40, msg, caps_msg(1, msg));
    script_record(&neg, 0x40, msg, blocks_msg(2, msg));
    script_record(&neg, 0x40 | 0x80, NULL, 0);
    char *neg_path = g_strconcat(path, ".negotiate", NULL);
    seed_save(neg_path, neg.out);
    g_free(neg_path);
    exit(0);
}

/* ---------- the source's side of the sockets ---------- */

static int must_connect(uint16_t port)
{
    int fd = peer_connect(port);
    if (fd < 0) {
        g_printerr("fuzz-dest-session: connect: %s\n", g_strerror(errno));
        abort();
    }
    return fd;
}

static bool hello(int fd, uint8_t role, uint16_t index, const uint8_t *session)
{
    MfrHello h = { .magic = MFR_HELLO_MAGIC, .version = MFR_WIRE_VERSION, .role = role,
                   .channel_index = index, .channel_count = NCHAN };
    memcpy(h.session_id, session, MFR_SESSION_ID_LEN);
    memcpy(h.token, token, sizeof(token));
    return peer_hello(fd, &h);
}

/* Control hello, CAPS, BLOCKS and the channels; false if the destination refused any. */
static bool peer_setup(uint16_t port, bool full, int fds[1 + NCHAN])
{
    static const uint8_t session[MFR_SESSION_ID_LEN] = "fuzz-session-id";
    uint8_t msg[512];
    fds[0] = must_connect(port);
    if (!hello(fds[0], MFR_ROLE_CONTROL, 0, session)) {
        return false;
    }
    if (!full) {
        return true;
    }
    if (!peer_frame(fds[0], msg, caps_msg(1, msg)) || peer_read_frame(fds[0]) < 0 ||
        !peer_frame(fds[0], msg, blocks_msg(2, msg)) || peer_read_frame(fds[0]) < 0) {
        return false;
    }
    for (unsigned i = 0; i < NCHAN; i++) {
        fds[1 + i] = must_connect(port);
        if (!hello(fds[1 + i], MFR_ROLE_CHANNEL, (uint16_t)i, session)) {
            return false;
        }
    }
    return true;
}

/* Whether the destination has nothing left to do until one of its timers fires: none of its
 * threads (every thread of this process but ours) is running. On loopback a send() delivers
 * into the receiving socket before it returns (the softirq runs as the sender leaves it),
 * data delivered to a socket makes its reader runnable at once, and so does a futex wake
 * before the waker goes on: a destination seen like this sends nothing more before a tick
 * or a timeout (keepalive, silence), which an await does not wait for anyway. (Our sockets'
 * unacknowledged bytes cannot tell: delayed ACKs keep delivered bytes unacknowledged.) */
static bool dest_quiescent(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir) {
        return false;
    }
    pid_t self = (pid_t)syscall(SYS_gettid);
    bool idle = true;
    struct dirent *e;
    while (idle && (e = readdir(dir))) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == self) {
            continue;
        }
        char path[64], buf[256];
        snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue; /* the thread is gone */
        }
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        /* "tid (comm) S ...": the state follows the last ')' */
        buf[n > 0 ? n : 0] = 0;
        const char *st = strrchr(buf, ')');
        idle = !st || st[1] != ' ' || st[2] == 'S';
    }
    closedir(dir);
    return idle;
}

/* Waits for one control message from the destination, as a source awaits SYNC_ACK: until it
 * arrives, or the destination is quiescent (it will not send one), or 20 ms pass (the bound
 * when the machine is too busy to tell). */
static void peer_await(const int fds[1 + NCHAN], unsigned *budget)
{
    struct pollfd p = { .fd = fds[0], .events = POLLIN };
    if (*budget == 0) {
        return;
    }
    --*budget;
    gint64 end = g_get_monotonic_time() + 20 * 1000;
    for (int ms = 0; g_get_monotonic_time() < end; ms = 1) {
        if (poll(&p, 1, ms) == 1) {
            peer_read_frame(fds[0]);
            return;
        }
        if (dest_quiescent()) {
            /* a message sent just before the threads settled is in our socket now */
            if (poll(&p, 1, 0) == 1) {
                peer_read_frame(fds[0]);
            }
            return;
        }
    }
}

static void peer_play(const uint8_t *data, size_t size, const int fds[1 + NCHAN])
{
    unsigned awaits = 4;
    while (size >= 3) {
        uint8_t target = data[0];
        if (target & 0x40) {
            peer_await(fds, &awaits);
        }
        size_t len = MIN((size_t)(data[1] | data[2] << 8), size - 3);
        int fd = fds[(target & 0x3f) % (1 + NCHAN)];
        const uint8_t *p = data + 3;
        data += 3 + len;
        size -= 3 + len;
        if (fd < 0) {
            continue;
        }
        if (!((target & 0x80) ? peer_write(fd, p, len) : peer_frame(fd, p, len))) {
            return;
        }
    }
}

/* ---------- one session ---------- */

/* The destination's end, as mfr_dest_wait() gives it: a named error, never the catch-all. */
static void dest_check_end(MfrDest *d)
{
    GError *err = NULL;
    bool ok = mfr_dest_wait(d, &err);
    assert(ok == (err == NULL));
    if (g_getenv("MFR_FUZZ_VERBOSE")) {
        g_printerr("fuzz-dest-session: %s\n", ok ? "migration complete" : err->message);
    }
    if (err) {
        assert(err->domain == MFR_ERROR && err->code != MFR_ERROR_FAILED);
        g_error_free(err);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    const char *seed = g_getenv("MFR_FUZZ_DEST_SEED");
    if (seed) {
        write_seed(seed);
    }
    blocks_map();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    cfg.uri = "tcp:127.0.0.1:0";
    memcpy(cfg.token, token, sizeof(token));
    cfg.timeout_ms = TIMEOUT_MS;
    cfg.max_channels = NCHAN;
    GError *err = NULL;
    MfrDest *d = mfr_dest_new(&cfg, &err);
    assert(d);
    for (unsigned i = 0; i < NBLOCKS; i++) {
        memset(blocks[i].host, 0, blocks[i].length);
        assert(mfr_dest_add_block(d, &blocks[i], NULL));
    }
    uint16_t port = (uint16_t)atoi(strrchr(mfr_dest_uri(d), ':') + 1);
    gint64 t0 = g_get_monotonic_time();
    /* the library's own session thread serves; its eventfd says when the session is over */
    bool started = mfr_dest_start(d, NULL);
    assert(started);

    int fds[1 + NCHAN] = { -1, -1, -1 };
    if (peer_setup(port, !(data[0] & 1), fds)) {
        peer_play(data + 1, size - 1, fds);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(fds); i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    /* The closed connections end the session at once; a destination that still has not
     * noticed within the grace time is cancelled, and must then end within its bound. */
    struct pollfd ev = { .fd = mfr_dest_event_fd(d), .events = POLLIN };
    gint64 grace = g_get_monotonic_time() + 300 * 1000;
    int r;
    while ((r = poll(&ev, 1, (int)MAX(0, (grace - g_get_monotonic_time()) / 1000))) < 0 &&
           errno == EINTR) {
    }
    if (r != 1) {
        mfr_dest_cancel(d);
    }
    dest_check_end(d);
    /* the bound every caller relies on: the timeout, plus a second of slack */
    assert(g_get_monotonic_time() - t0 < (TIMEOUT_MS + 1000) * 1000LL);
    mfr_dest_free(d);
    return 0;
}
