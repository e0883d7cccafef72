/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Wire protocol v1 (multifd-rdma/wire.c): byte-exact layouts, round trips of every message,
 * one negative test per validation rule (exact domain, code and message), and random-byte /
 * mutation loops asserting unpack never crashes and accepts only canonical messages.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "mfrdma.h"
#include "test-le.h"
#include "wire.h"

/* ---------- valid sample messages ---------- */

static const uint64_t sample_block_len[2] = { 0x10000, 0x4000 };

static MfrHello sample_hello(MfrRole role)
{
    MfrHello h = {
        .magic = MFR_HELLO_MAGIC,
        .version = MFR_WIRE_VERSION,
        .role = role,
        .channel_index = role == MFR_ROLE_CHANNEL ? 3 : 0,
        .channel_count = 4,
    };

    for (unsigned i = 0; i < MFR_SESSION_ID_LEN; i++) {
        h.session_id[i] = (uint8_t)(0x10 + i);
    }
    for (unsigned i = 0; i < MFR_TOKEN_LEN; i++) {
        h.token[i] = (uint8_t)(0xa0 + i);
    }
    return h;
}

static MfrCaps sample_caps(void)
{
    return (MfrCaps){
        .page_size = 4096,
        .zero_modes = MFR_ZERO_NONE | MFR_ZERO_DETECT,
        .compression = MFR_COMP_NONE | MFR_COMP_ZSTD,
        .channels = 4,
        .max_channels = 8,
        .max_pages_per_packet = 128,
    };
}

static void sample_blocks(MfrBlockInfo b[2])
{
    memset(b, 0, 2 * sizeof(*b));
    g_strlcpy(b[0].name, "pc.ram", sizeof(b[0].name));
    b[0].length = 1u << 20;
    b[0].page_size = 4096;
    g_strlcpy(b[1].name, "vga.vram", sizeof(b[1].name));
    b[1].length = 4u << 20;
    b[1].page_size = 2u << 20;
}

static MfrPacketLimits sample_limits(void)
{
    return (MfrPacketLimits){
        .nblocks = 2,
        .block_len = sample_block_len,
        .page_size = 4096,
        .max_pages = 16,
        .expect_packet_num = 3,
        .expect_round = 2,
    };
}

static MfrPacketHdr sample_packet(bool sync)
{
    MfrPacketHdr h = {
        .magic = MFR_PACKET_MAGIC,
        .version = MFR_WIRE_VERSION,
        .packet_num = 3,
        .round = 2,
    };

    if (sync) {
        h.flags = MFR_PACKET_SYNC;
    } else {
        h.block = 1;
        h.normal_pages = 2;
        h.zero_pages = 1;
        h.payload_len = 2 * 4096;
    }
    return h;
}

static const uint64_t sample_offsets[3] = { 0x0, 0x3000, 0x1000 };

/* Chunk layout of the sample blocks: 1 MiB in 384 KiB chunks (the last one 256 KiB), 4 MiB
 * of 2 MiB pages in 2 MiB chunks. */
static const MfrChunkLayout sample_layout[2] = { { 0x60000, 3 }, { 0x200000, 2 } };
static const uint64_t sample_blocks_len[2] = { 1u << 20, 4u << 20 };
/* REGION sample: the last chunk of block 0, after its first two arrived */
static const uint32_t sample_received[2] = { 2, 0 };

static MfrRegionMsg sample_region(void)
{
    MfrRegionMsg m = { .block = 0, .chunk = 2, .offset = 0xc0000, .length = 0x40000 };

    for (unsigned i = 0; i < 16; i++) {
        m.desc[i] = (uint8_t)(0xd0 + i);
    }
    return m;
}

static MfrRegionLimits sample_region_limits(void)
{
    return (MfrRegionLimits){
        .nblocks = 2,
        .block_len = sample_blocks_len,
        .layout = sample_layout,
        .received = sample_received,
    };
}

typedef enum {
    MSG_HELLO_CONTROL,
    MSG_HELLO_CHANNEL,
    MSG_CTRL,
    MSG_CAPS,
    MSG_BLOCKS,
    MSG_BLOCKS_REPLY,
    MSG_BLOCKS_REPLY_REGIONS,
    MSG_REGION,
    MSG_U64,
    MSG_COMPLETE,
    MSG_COMPLETE_REPLY,
    MSG_ERROR,
    MSG_PACKET,
    MSG_SYNC,
    MSG_COUNT,
} MsgKind;

#define BUF_CAP 8192

/* Packs a valid sample of kind into buf; returns its length. */
static size_t build(MsgKind kind, uint8_t *buf)
{
    switch (kind) {
    case MSG_HELLO_CONTROL:
    case MSG_HELLO_CHANNEL: {
        MfrHello h = sample_hello(kind == MSG_HELLO_CONTROL ? MFR_ROLE_CONTROL
                                                            : MFR_ROLE_CHANNEL);
        mfr_wire_pack_hello(&h, buf);
        return MFR_HELLO_SIZE;
    }
    case MSG_CTRL: {
        MfrCtrlHdr h = { MFR_CTRL_MAGIC, MFR_WIRE_VERSION, MFR_CTRL_CAPS, MFR_CAPS_SIZE, 7 };
        MfrCaps c = sample_caps();
        mfr_wire_pack_ctrl_hdr(&h, buf);
        mfr_wire_pack_caps(&c, buf + MFR_CTRL_HDR_SIZE);
        return MFR_CTRL_HDR_SIZE + MFR_CAPS_SIZE;
    }
    case MSG_CAPS: {
        MfrCaps c = sample_caps();
        mfr_wire_pack_caps(&c, buf);
        return MFR_CAPS_SIZE;
    }
    case MSG_BLOCKS: {
        MfrBlockInfo b[2];
        sample_blocks(b);
        return mfr_wire_pack_blocks(b, 2, buf, BUF_CAP);
    }
    case MSG_BLOCKS_REPLY: {
        MfrBlocksReply r = { .count = 2 };
        return mfr_wire_pack_blocks_reply(&r, buf, BUF_CAP);
    }
    case MSG_BLOCKS_REPLY_REGIONS: {
        MfrBlocksReply r = { .count = 2, .flags = MFR_REPLY_REGIONS };
        memcpy(r.layout, sample_layout, sizeof(sample_layout));
        return mfr_wire_pack_blocks_reply(&r, buf, BUF_CAP);
    }
    case MSG_REGION: {
        MfrRegionMsg m = sample_region();
        mfr_wire_pack_region(&m, buf);
        return MFR_REGION_SIZE;
    }
    case MSG_U64:
        mfr_wire_pack_u64(0x0102030405060708ull, buf);
        return 8;
    case MSG_COMPLETE: {
        uint64_t d[2] = { 0x1111222233334444ull, 0xfedcba9876543210ull };
        return mfr_wire_pack_complete(5, d, 2, buf, BUF_CAP);
    }
    case MSG_COMPLETE_REPLY: {
        MfrCompleteReply r = { 1, 1 };
        mfr_wire_pack_complete_reply(&r, buf);
        return 8;
    }
    case MSG_ERROR: {
        MfrCtrlError e = { .code = MFR_ERROR_MISMATCH };
        g_strlcpy(e.text, "block 'pc.ram' length differs", sizeof(e.text));
        mfr_wire_pack_error(&e, buf);
        return MFR_CTRL_ERROR_SIZE;
    }
    case MSG_PACKET:
    case MSG_SYNC: {
        MfrPacketHdr h = sample_packet(kind == MSG_SYNC);
        return mfr_wire_pack_packet(&h, sample_offsets, buf, BUF_CAP);
    }
    default:
        g_assert_not_reached();
    }
}

/* Unpacks buf as kind, with the sample context (2 blocks, packet limits). When repack is
 * given, the accepted message is packed again into it; returns the repacked length. */
static bool unpack(MsgKind kind, const uint8_t *buf, size_t len, uint8_t *repack,
                   size_t *repack_len, GError **error)
{
    size_t n = 0;
    bool ok;

    switch (kind) {
    case MSG_HELLO_CONTROL:
    case MSG_HELLO_CHANNEL: {
        MfrHello h;
        ok = mfr_wire_unpack_hello(buf, len, &h, error);
        if (ok && repack) {
            mfr_wire_pack_hello(&h, repack);
            n = MFR_HELLO_SIZE;
        }
        break;
    }
    case MSG_CTRL: {
        MfrCtrlHdr h;
        ok = mfr_wire_unpack_ctrl_hdr(buf, len, &h, error);
        if (ok && repack) {
            mfr_wire_pack_ctrl_hdr(&h, repack);
            memcpy(repack + MFR_CTRL_HDR_SIZE, buf + MFR_CTRL_HDR_SIZE, h.length);
            n = MFR_CTRL_HDR_SIZE + h.length;
        }
        break;
    }
    case MSG_CAPS: {
        MfrCaps c;
        ok = mfr_wire_unpack_caps(buf, len, &c, error);
        if (ok && repack) {
            mfr_wire_pack_caps(&c, repack);
            n = MFR_CAPS_SIZE;
        }
        break;
    }
    case MSG_BLOCKS: {
        MfrBlockInfo b[MFR_MAX_BLOCKS];
        uint32_t count = 0;
        ok = mfr_wire_unpack_blocks(buf, len, b, &count, error);
        if (ok && repack) {
            n = mfr_wire_pack_blocks(b, count, repack, BUF_CAP);
        }
        break;
    }
    case MSG_BLOCKS_REPLY:
    case MSG_BLOCKS_REPLY_REGIONS: {
        MfrBlockInfo b[2];
        MfrBlocksReply r;
        sample_blocks(b);
        ok = mfr_wire_unpack_blocks_reply(buf, len, b, 2, &r, error);
        if (ok && repack) {
            n = mfr_wire_pack_blocks_reply(&r, repack, BUF_CAP);
        }
        break;
    }
    case MSG_REGION: {
        MfrRegionLimits lim = sample_region_limits();
        MfrRegionMsg m;
        ok = mfr_wire_unpack_region(buf, len, &lim, &m, error);
        if (ok && repack) {
            mfr_wire_pack_region(&m, repack);
            n = MFR_REGION_SIZE;
        }
        break;
    }
    case MSG_U64: {
        uint64_t v;
        ok = mfr_wire_unpack_u64(buf, len, &v, error);
        if (ok && repack) {
            mfr_wire_pack_u64(v, repack);
            n = 8;
        }
        break;
    }
    case MSG_COMPLETE: {
        uint64_t round, d[MFR_MAX_BLOCKS];
        ok = mfr_wire_unpack_complete(buf, len, 2, &round, d, error);
        if (ok && repack) {
            n = mfr_wire_pack_complete(round, d, 2, repack, BUF_CAP);
        }
        break;
    }
    case MSG_COMPLETE_REPLY: {
        MfrCompleteReply r;
        ok = mfr_wire_unpack_complete_reply(buf, len, 2, &r, error);
        if (ok && repack) {
            mfr_wire_pack_complete_reply(&r, repack);
            n = 8;
        }
        break;
    }
    case MSG_ERROR: {
        MfrCtrlError e;
        ok = mfr_wire_unpack_error(buf, len, &e, error);
        if (ok && repack) {
            mfr_wire_pack_error(&e, repack);
            n = MFR_CTRL_ERROR_SIZE;
        }
        break;
    }
    case MSG_PACKET:
    case MSG_SYNC: {
        MfrPacketLimits lim = sample_limits();
        MfrPacketHdr h;
        uint64_t off[16];
        ok = mfr_wire_unpack_packet(buf, len, &lim, &h, off, error);
        if (ok && repack) {
            n = mfr_wire_pack_packet(&h, off, repack, BUF_CAP);
        }
        break;
    }
    default:
        g_assert_not_reached();
    }
    if (repack_len) {
        *repack_len = n;
    }
    return ok;
}

/* ---------- byte-exact layouts ---------- */

static void test_hello_layout(void)
{
    MfrHello h = sample_hello(MFR_ROLE_CHANNEL);
    uint8_t buf[MFR_HELLO_SIZE];
    static const uint8_t head[8] = { 0x4d, 0x52, 0x46, 0x48, 0x01, 0x00, 0x02, 0x00 };

    mfr_wire_pack_hello(&h, buf);
    g_assert_cmpmem(buf, 8, head, 8);
    g_assert_cmpmem(buf + 8, 16, h.session_id, 16);
    g_assert_cmpuint(le_get(buf + 24, 2), ==, 3);
    g_assert_cmpuint(le_get(buf + 26, 2), ==, 4);
    g_assert_cmpuint(le_get(buf + 28, 4), ==, 0);
    g_assert_cmpmem(buf + 32, 16, h.token, 16);
}

static void test_ctrl_layout(void)
{
    MfrCtrlHdr h = { MFR_CTRL_MAGIC, MFR_WIRE_VERSION, MFR_CTRL_SYNC_ACK, 8, 0x01020304 };
    uint8_t buf[MFR_CTRL_HDR_SIZE];
    static const uint8_t want[16] = { 0x4d, 0x52, 0x46, 0x43, 0x01, 0x00, 0x04, 0x00,
                                      0x08, 0x00, 0x00, 0x00, 0x04, 0x03, 0x02, 0x01 };

    mfr_wire_pack_ctrl_hdr(&h, buf);
    g_assert_cmpmem(buf, 16, want, 16);
}

static void test_caps_layout(void)
{
    MfrCaps c = sample_caps();
    uint8_t buf[MFR_CAPS_SIZE];

    c.flags = 0x0807060504030201ull; /* not valid on the wire, but shows the position */
    mfr_wire_pack_caps(&c, buf);
    g_assert_cmpuint(le_get(buf + 0, 4), ==, 4096);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 3);
    g_assert_cmpuint(le_get(buf + 8, 4), ==, 3);
    g_assert_cmpuint(le_get(buf + 12, 2), ==, 4);
    g_assert_cmpuint(le_get(buf + 14, 2), ==, 8);
    g_assert_cmpuint(le_get(buf + 16, 4), ==, 128);
    g_assert_cmpuint(buf[20], ==, 0x01);
    g_assert_cmpuint(buf[27], ==, 0x08);
    g_assert_cmpuint(le_get(buf + 28, 4), ==, 0);
}

static void test_blocks_layout(void)
{
    MfrBlockInfo b[2];
    uint8_t buf[BUF_CAP];
    uint8_t zeros[64] = { 0 };

    sample_blocks(b);
    g_assert_cmpuint(mfr_wire_pack_blocks(b, 2, buf, sizeof(buf)), ==, 8 + 2 * 80);
    g_assert_cmpuint(le_get(buf, 4), ==, 2);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 0);
    g_assert_cmpmem(buf + 8, 6, "pc.ram", 6);
    g_assert_cmpmem(buf + 8 + 6, 58, zeros, 58);
    g_assert_cmpuint(le_get(buf + 8 + 64, 8), ==, 1u << 20);
    g_assert_cmpuint(le_get(buf + 8 + 72, 4), ==, 4096);
    g_assert_cmpuint(le_get(buf + 8 + 76, 4), ==, 0);
    g_assert_cmpmem(buf + 88, 8, "vga.vram", 8);
    g_assert_cmpuint(le_get(buf + 88 + 64, 8), ==, 4u << 20);
    g_assert_cmpuint(le_get(buf + 88 + 72, 4), ==, 2u << 20);
}

static void test_packet_layout(void)
{
    MfrPacketHdr h = sample_packet(false);
    uint8_t buf[BUF_CAP];
    static const uint8_t head[8] = { 0x4d, 0x52, 0x46, 0x50, 0x01, 0x00, 0x00, 0x00 };

    h.packet_num = 0x1122334455667788ull;
    g_assert_cmpuint(mfr_wire_pack_packet(&h, sample_offsets, buf, sizeof(buf)), ==,
                     48 + 3 * 8);
    g_assert_cmpmem(buf, 8, head, 8);
    g_assert_cmpuint(buf[8], ==, 0x88);
    g_assert_cmpuint(buf[15], ==, 0x11);
    g_assert_cmpuint(le_get(buf + 16, 8), ==, 2);
    g_assert_cmpuint(le_get(buf + 24, 4), ==, 1);
    g_assert_cmpuint(le_get(buf + 28, 4), ==, 2);
    g_assert_cmpuint(le_get(buf + 32, 4), ==, 1);
    g_assert_cmpuint(le_get(buf + 36, 4), ==, 0);
    g_assert_cmpuint(le_get(buf + 40, 8), ==, 8192);
    g_assert_cmpuint(le_get(buf + 48, 8), ==, 0x0);
    g_assert_cmpuint(le_get(buf + 56, 8), ==, 0x3000);
    g_assert_cmpuint(le_get(buf + 64, 8), ==, 0x1000);
}

static void test_complete_layout(void)
{
    uint8_t buf[BUF_CAP];
    size_t n = build(MSG_COMPLETE, buf);

    g_assert_cmpuint(n, ==, 16 + 2 * 8);
    g_assert_cmpuint(le_get(buf, 4), ==, 2);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 0);
    g_assert_cmpuint(le_get(buf + 8, 8), ==, 5);
    g_assert_cmpuint(le_get(buf + 16, 8), ==, 0x1111222233334444ull);
    g_assert_cmpuint(le_get(buf + 24, 8), ==, 0xfedcba9876543210ull);
}

/* ---------- round trips ---------- */

static void test_hello_roundtrip(void)
{
    for (MfrRole role = MFR_ROLE_CONTROL; role <= MFR_ROLE_CHANNEL; role++) {
        MfrHello h = sample_hello(role), out;
        uint8_t buf[MFR_HELLO_SIZE];
        g_autoptr(GError) err = NULL;

        mfr_wire_pack_hello(&h, buf);
        g_assert_true(mfr_wire_unpack_hello(buf, sizeof(buf), &out, &err));
        g_assert_no_error(err);
        g_assert_cmpuint(out.magic, ==, h.magic);
        g_assert_cmpuint(out.version, ==, h.version);
        g_assert_cmpuint(out.role, ==, role);
        g_assert_cmpuint(out.flags, ==, 0);
        g_assert_cmpmem(out.session_id, 16, h.session_id, 16);
        g_assert_cmpuint(out.channel_index, ==, h.channel_index);
        g_assert_cmpuint(out.channel_count, ==, 4);
        g_assert_cmpuint(out.reserved, ==, 0);
        g_assert_cmpmem(out.token, 16, h.token, 16);
    }
}

static void test_hello_roundtrip_limits(void)
{
    MfrHello h = sample_hello(MFR_ROLE_CHANNEL), out;
    uint8_t buf[MFR_HELLO_SIZE];

    h.channel_count = MFR_MAX_CHANNELS;
    h.channel_index = MFR_MAX_CHANNELS - 1;
    mfr_wire_pack_hello(&h, buf);
    g_assert_true(mfr_wire_unpack_hello(buf, sizeof(buf), &out, NULL));
    g_assert_cmpuint(out.channel_index, ==, MFR_MAX_CHANNELS - 1);

    h = sample_hello(MFR_ROLE_CONTROL);
    h.channel_count = 0;
    mfr_wire_pack_hello(&h, buf);
    g_assert_true(mfr_wire_unpack_hello(buf, sizeof(buf), &out, NULL));
    g_assert_cmpuint(out.channel_count, ==, 0);
}

static void test_ctrl_roundtrip(void)
{
    static const uint32_t body[MFR_CTRL_TYPE_MAX + 1] = {
        [MFR_CTRL_CAPS] = MFR_CAPS_SIZE,
        [MFR_CTRL_BLOCKS] = 8 + 3 * 80,
        [MFR_CTRL_BLOCKS_REPLY] = 8 + 3 * 16,
        [MFR_CTRL_SYNC_ACK] = 8,
        [MFR_CTRL_COMPLETE] = 16,
        [MFR_CTRL_COMPLETE_REPLY] = 8,
        [MFR_CTRL_ERROR] = MFR_CTRL_ERROR_SIZE,
        [MFR_CTRL_CANCEL] = 0,
        [MFR_CTRL_KEEPALIVE] = 0,
        [MFR_CTRL_REGION] = MFR_REGION_SIZE,
    };

    for (uint16_t t = MFR_CTRL_CAPS; t <= MFR_CTRL_TYPE_MAX; t++) {
        MfrCtrlHdr h = { MFR_CTRL_MAGIC, MFR_WIRE_VERSION, t, body[t], 0xfffffff0u + t }, out;
        uint8_t buf[BUF_CAP] = { 0 };
        g_autoptr(GError) err = NULL;

        mfr_wire_pack_ctrl_hdr(&h, buf);
        g_assert_true(mfr_wire_unpack_ctrl_hdr(buf, MFR_CTRL_HDR_SIZE + body[t], &out, &err));
        g_assert_no_error(err);
        g_assert_cmpuint(out.magic, ==, MFR_CTRL_MAGIC);
        g_assert_cmpuint(out.version, ==, MFR_WIRE_VERSION);
        g_assert_cmpuint(out.type, ==, t);
        g_assert_cmpuint(out.length, ==, body[t]);
        g_assert_cmpuint(out.seq, ==, 0xfffffff0u + t);
    }
}

static void test_caps_roundtrip(void)
{
    MfrCaps c = sample_caps(), out;
    uint8_t buf[MFR_CAPS_SIZE];
    static const uint32_t sizes[] = { 4096, 2u << 20, 1u << 30 };

    for (unsigned i = 0; i < G_N_ELEMENTS(sizes); i++) {
        c.page_size = sizes[i];
        c.zero_modes = MFR_ZERO_DETECT;
        c.compression = MFR_COMP_ZSTD;
        c.channels = c.max_channels = MFR_MAX_CHANNELS;
        c.max_pages_per_packet = MFR_MAX_PAGES_PER_PACKET;
        mfr_wire_pack_caps(&c, buf);
        g_assert_true(mfr_wire_unpack_caps(buf, sizeof(buf), &out, NULL));
        g_assert_cmpuint(out.page_size, ==, sizes[i]);
        g_assert_cmpuint(out.zero_modes, ==, MFR_ZERO_DETECT);
        g_assert_cmpuint(out.compression, ==, MFR_COMP_ZSTD);
        g_assert_cmpuint(out.channels, ==, MFR_MAX_CHANNELS);
        g_assert_cmpuint(out.max_channels, ==, MFR_MAX_CHANNELS);
        g_assert_cmpuint(out.max_pages_per_packet, ==, MFR_MAX_PAGES_PER_PACKET);
        g_assert_cmpuint(out.flags, ==, 0);
        g_assert_cmpuint(out.reserved, ==, 0);
    }
}

static void test_blocks_roundtrip(void)
{
    MfrBlockInfo in[MFR_MAX_BLOCKS], out[MFR_MAX_BLOCKS];
    uint8_t buf[BUF_CAP];
    uint32_t count = 0;
    size_t n;

    memset(in, 0, sizeof(in));
    for (unsigned i = 0; i < MFR_MAX_BLOCKS; i++) {
        /* 63-character names exercise the longest legal name. */
        g_snprintf(in[i].name, sizeof(in[i].name), "%02u-%s", i,
                   "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        in[i].page_size = 4096u << (i % 3);
        in[i].length = (uint64_t)in[i].page_size * (i + 1);
    }
    in[5].length = UINT64_MAX - 4095; /* largest multiple of 4096 */
    in[5].page_size = 4096;
    n = mfr_wire_pack_blocks(in, MFR_MAX_BLOCKS, buf, sizeof(buf));
    g_assert_cmpuint(n, ==, 8 + MFR_MAX_BLOCKS * 80);
    g_assert_true(mfr_wire_unpack_blocks(buf, n, out, &count, NULL));
    g_assert_cmpuint(count, ==, MFR_MAX_BLOCKS);
    for (unsigned i = 0; i < MFR_MAX_BLOCKS; i++) {
        g_assert_cmpuint(strlen(out[i].name), ==, 63);
        g_assert_cmpstr(out[i].name, ==, in[i].name);
        g_assert_cmpuint(out[i].length, ==, in[i].length);
        g_assert_cmpuint(out[i].page_size, ==, in[i].page_size);
        g_assert_cmpuint(out[i].flags, ==, 0);
    }
}

static void test_blocks_reply_roundtrip(void)
{
    MfrBlocksReply in = { .count = 3 }, out;
    MfrBlockInfo b[3];
    uint8_t buf[BUF_CAP];
    size_t n;

    memset(b, 0, sizeof(b));
    for (unsigned i = 0; i < 3; i++) {
        b[i].length = 1u << 20;
        b[i].page_size = 4096;
    }
    /* without flag REGIONS (a destination without regions: tcp) the entries are zeros */
    memset(buf, 0xee, sizeof(buf));
    n = mfr_wire_pack_blocks_reply(&in, buf, sizeof(buf));
    g_assert_cmpuint(n, ==, 8 + 3 * 16);
    g_assert_cmpuint(le_get(buf, 4), ==, 3);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 0);
    for (unsigned i = 8; i < n; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    g_assert_true(mfr_wire_unpack_blocks_reply(buf, n, b, 3, &out, NULL));
    g_assert_cmpuint(out.flags, ==, 0);
    g_assert_cmpuint(out.count, ==, 3);
}

/* With MFR_REPLY_REGIONS the entries are chunk layouts: u64 chunk size, u32 chunks, u32 0. */
static void test_blocks_reply_regions_layout(void)
{
    uint8_t buf[BUF_CAP];
    size_t n = build(MSG_BLOCKS_REPLY_REGIONS, buf);
    MfrBlockInfo b[2];
    MfrBlocksReply out;

    g_assert_cmpuint(n, ==, 8 + 2 * 16);
    g_assert_cmpuint(le_get(buf, 4), ==, 2);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, MFR_REPLY_REGIONS);
    g_assert_cmpuint(le_get(buf + 8, 8), ==, 0x60000);
    g_assert_cmpuint(le_get(buf + 16, 4), ==, 3);
    g_assert_cmpuint(le_get(buf + 20, 4), ==, 0);
    g_assert_cmpuint(le_get(buf + 24, 8), ==, 0x200000);
    g_assert_cmpuint(le_get(buf + 32, 4), ==, 2);
    sample_blocks(b);
    g_assert_true(mfr_wire_unpack_blocks_reply(buf, n, b, 2, &out, NULL));
    g_assert_cmpuint(out.flags, ==, MFR_REPLY_REGIONS);
    g_assert_cmpuint(out.layout[0].chunk_size, ==, 0x60000);
    g_assert_cmpuint(out.layout[0].chunks, ==, 3);
    g_assert_cmpuint(out.layout[1].chunk_size, ==, 0x200000);
    g_assert_cmpuint(out.layout[1].chunks, ==, 2);
}

/* A layout that would need more REGION messages than one block may have. */
static void test_blocks_reply_bad_too_many_chunks(void)
{
    MfrBlockInfo b = { .name = "big", .length = 1ull << 30, .page_size = 4096 };
    MfrBlocksReply r = { .count = 1, .flags = MFR_REPLY_REGIONS };
    MfrBlocksReply out;
    uint8_t buf[BUF_CAP];
    g_autoptr(GError) err = NULL;

    r.layout[0] = (MfrChunkLayout){ .chunk_size = 4096, .chunks = 262144 };
    size_t n = mfr_wire_pack_blocks_reply(&r, buf, sizeof(buf));
    g_assert_false(mfr_wire_unpack_blocks_reply(buf, n, &b, 1, &out, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    g_assert_cmpstr(err->message, ==, "blocks reply: block 0 chunk size 0x1000 makes 262144 "
                    "chunks, above the limit 65536");
}

static void test_region_layout(void)
{
    uint8_t buf[MFR_REGION_SIZE];
    MfrRegionMsg m = sample_region(), out;
    MfrRegionLimits lim = sample_region_limits();

    g_assert_cmpuint(build(MSG_REGION, buf), ==, 40);
    g_assert_cmpuint(le_get(buf, 4), ==, 0);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 2);
    g_assert_cmpuint(le_get(buf + 8, 8), ==, 0xc0000);
    g_assert_cmpuint(le_get(buf + 16, 8), ==, 0x40000);
    g_assert_cmpmem(buf + 24, 16, m.desc, 16);
    g_assert_true(mfr_wire_unpack_region(buf, sizeof(buf), &lim, &out, NULL));
    g_assert_cmpuint(out.block, ==, 0);
    g_assert_cmpuint(out.chunk, ==, 2);
    g_assert_cmpuint(out.offset, ==, 0xc0000);
    g_assert_cmpuint(out.length, ==, 0x40000);
    g_assert_cmpmem(out.desc, 16, m.desc, 16);
    /* the first chunk of block 1 is a whole chunk */
    uint32_t received[2] = { 0, 0 };
    lim.received = received;
    m = (MfrRegionMsg){ .block = 1, .chunk = 0, .offset = 0, .length = 0x200000 };
    mfr_wire_pack_region(&m, buf);
    g_assert_true(mfr_wire_unpack_region(buf, sizeof(buf), &lim, &out, NULL));
    g_assert_cmpuint(out.length, ==, 0x200000);
}

static void test_u64_roundtrip(void)
{
    uint8_t buf[8];
    uint64_t v = 0;
    static const uint64_t vals[] = { 0, 1, 0x8000000000000000ull, UINT64_MAX };

    for (unsigned i = 0; i < G_N_ELEMENTS(vals); i++) {
        mfr_wire_pack_u64(vals[i], buf);
        g_assert_cmpuint(le_get(buf, 8), ==, vals[i]);
        g_assert_true(mfr_wire_unpack_u64(buf, 8, &v, NULL));
        g_assert_cmpuint(v, ==, vals[i]);
    }
}

static void test_complete_roundtrip(void)
{
    uint64_t d[MFR_MAX_BLOCKS], out[MFR_MAX_BLOCKS], round = 0;
    uint8_t buf[BUF_CAP];
    size_t n;

    for (unsigned i = 0; i < MFR_MAX_BLOCKS; i++) {
        d[i] = 0x9e3779b97f4a7c15ull * (i + 1);
    }
    n = mfr_wire_pack_complete(UINT64_MAX, d, MFR_MAX_BLOCKS, buf, sizeof(buf));
    g_assert_cmpuint(n, ==, 16 + MFR_MAX_BLOCKS * 8);
    g_assert_true(mfr_wire_unpack_complete(buf, n, MFR_MAX_BLOCKS, &round, out, NULL));
    g_assert_cmpuint(round, ==, UINT64_MAX);
    g_assert_cmpmem(out, sizeof(d), d, sizeof(d));
}

/* Verification off: COMPLETE carries the round and no digests (count 0, 16 bytes). */
static void test_complete_roundtrip_no_digests(void)
{
    uint8_t buf[BUF_CAP];
    uint64_t round = 0, out[1] = { 0x77 };
    MfrCtrlHdr h = { MFR_CTRL_MAGIC, MFR_WIRE_VERSION, MFR_CTRL_COMPLETE, 16, 9 }, hout;
    size_t n = mfr_wire_pack_complete(12, NULL, 0, buf + MFR_CTRL_HDR_SIZE,
                                      sizeof(buf) - MFR_CTRL_HDR_SIZE);

    g_assert_cmpuint(n, ==, 16);
    mfr_wire_pack_ctrl_hdr(&h, buf);
    g_assert_true(mfr_wire_unpack_ctrl_hdr(buf, MFR_CTRL_HDR_SIZE + n, &hout, NULL));
    g_assert_true(mfr_wire_unpack_complete(buf + MFR_CTRL_HDR_SIZE, n, 0, &round, out, NULL));
    g_assert_cmpuint(round, ==, 12);
    g_assert_cmpuint(out[0], ==, 0x77);
}

static void test_complete_reply_roundtrip(void)
{
    MfrCompleteReply ok = { 0, 0 }, bad = { 1, 63 }, out;
    uint8_t buf[8];

    mfr_wire_pack_complete_reply(&ok, buf);
    g_assert_true(mfr_wire_unpack_complete_reply(buf, 8, 64, &out, NULL));
    g_assert_cmpuint(out.status, ==, 0);
    g_assert_cmpuint(out.block, ==, 0);
    mfr_wire_pack_complete_reply(&bad, buf);
    g_assert_cmpuint(le_get(buf, 4), ==, 1);
    g_assert_cmpuint(le_get(buf + 4, 4), ==, 63);
    g_assert_true(mfr_wire_unpack_complete_reply(buf, 8, 64, &out, NULL));
    g_assert_cmpuint(out.status, ==, 1);
    g_assert_cmpuint(out.block, ==, 63);
}

static void test_error_roundtrip(void)
{
    MfrCtrlError e = { .code = MFR_ERROR_USAGE }, out;
    uint8_t buf[MFR_CTRL_ERROR_SIZE];

    g_strlcpy(e.text, "channel 3: token mismatch", sizeof(e.text));
    mfr_wire_pack_error(&e, buf);
    g_assert_cmpuint(le_get(buf, 4), ==, MFR_ERROR_USAGE);
    g_assert_true(mfr_wire_unpack_error(buf, sizeof(buf), &out, NULL));
    g_assert_cmpuint(out.code, ==, MFR_ERROR_USAGE);
    g_assert_cmpstr(out.text, ==, "channel 3: token mismatch");
}

/* Over-long text is truncated to 199 bytes plus the NUL, never overflows the field. */
static void test_error_truncate(void)
{
    MfrCtrlError e = { .code = MFR_ERROR_FAILED }, out;
    uint8_t buf[MFR_CTRL_ERROR_SIZE + 8];

    memset(e.text, 'x', sizeof(e.text)); /* not NUL-terminated at all */
    memset(buf, 0xee, sizeof(buf));
    mfr_wire_pack_error(&e, buf);
    g_assert_cmpuint(buf[MFR_CTRL_ERROR_SIZE - 1], ==, 0);
    g_assert_cmpuint(buf[MFR_CTRL_ERROR_SIZE], ==, 0xee);
    g_assert_true(mfr_wire_unpack_error(buf, MFR_CTRL_ERROR_SIZE, &out, NULL));
    g_assert_cmpuint(strlen(out.text), ==, MFR_ERROR_TEXT_MAX - 1);
}

/* Non-printable bytes in a peer's text are replaced, not trusted and not rejected. */
static void test_error_sanitize(void)
{
    uint8_t buf[MFR_CTRL_ERROR_SIZE] = { 0 };
    MfrCtrlError out;

    le_set(buf, 4, MFR_ERROR_PEER);
    memcpy(buf + 4, "bad\x1b[31m\xff!", 10);
    g_assert_true(mfr_wire_unpack_error(buf, sizeof(buf), &out, NULL));
    g_assert_cmpstr(out.text, ==, "bad?[31m?!");
}

static void test_packet_roundtrip(void)
{
    MfrPacketLimits lim = sample_limits();
    MfrPacketHdr h = sample_packet(false), out;
    uint64_t off[16];
    uint8_t buf[BUF_CAP];
    size_t n = mfr_wire_pack_packet(&h, sample_offsets, buf, sizeof(buf));
    g_autoptr(GError) err = NULL;

    g_assert_true(mfr_wire_unpack_packet(buf, n, &lim, &out, off, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(out.magic, ==, MFR_PACKET_MAGIC);
    g_assert_cmpuint(out.version, ==, MFR_WIRE_VERSION);
    g_assert_cmpuint(out.flags, ==, 0);
    g_assert_cmpuint(out.packet_num, ==, 3);
    g_assert_cmpuint(out.round, ==, 2);
    g_assert_cmpuint(out.block, ==, 1);
    g_assert_cmpuint(out.normal_pages, ==, 2);
    g_assert_cmpuint(out.zero_pages, ==, 1);
    g_assert_cmpuint(out.slot, ==, 0);
    g_assert_cmpuint(out.payload_len, ==, 8192);
    g_assert_cmpmem(off, sizeof(sample_offsets), sample_offsets, sizeof(sample_offsets));
}

/* Last page of a block, all-zero packet, max_pages pages: all legal. */
static void test_packet_roundtrip_limits(void)
{
    MfrPacketLimits lim = sample_limits();
    MfrPacketHdr h = sample_packet(false), out;
    uint64_t in[MFR_MAX_PAGES_PER_PACKET], off[MFR_MAX_PAGES_PER_PACKET];
    uint64_t big_len[2] = { 0x10000, UINT64_MAX - 4095 };
    uint8_t buf[48 + 8 * MFR_MAX_PAGES_PER_PACKET];
    size_t n;

    lim.block_len = big_len;
    lim.max_pages = MFR_MAX_PAGES_PER_PACKET;
    for (unsigned i = 0; i < MFR_MAX_PAGES_PER_PACKET; i++) {
        in[i] = big_len[1] - 4096 - 4096ull * i; /* down from the very last page */
    }
    h.normal_pages = 0;
    h.zero_pages = MFR_MAX_PAGES_PER_PACKET;
    h.payload_len = 0;
    n = mfr_wire_pack_packet(&h, in, buf, sizeof(buf));
    g_assert_cmpuint(n, ==, sizeof(buf));
    g_assert_true(mfr_wire_unpack_packet(buf, n, &lim, &out, off, NULL));
    g_assert_cmpuint(out.zero_pages, ==, MFR_MAX_PAGES_PER_PACKET);
    g_assert_cmpmem(off, sizeof(in), in, sizeof(in));

    h.normal_pages = 1;
    h.zero_pages = 0;
    h.payload_len = 4096;
    h.block = 0;
    in[0] = 0x10000 - 4096;
    n = mfr_wire_pack_packet(&h, in, buf, sizeof(buf));
    g_assert_cmpuint(n, ==, 56);
    g_assert_true(mfr_wire_unpack_packet(buf, n, &lim, &out, off, NULL));
    g_assert_cmpuint(off[0], ==, 0xf000);
}

static void test_packet_roundtrip_sync(void)
{
    MfrPacketLimits lim = sample_limits();
    MfrPacketHdr h = sample_packet(true), out;
    uint64_t off[16];
    uint8_t buf[BUF_CAP];
    size_t n = mfr_wire_pack_packet(&h, NULL, buf, sizeof(buf));

    g_assert_cmpuint(n, ==, MFR_PACKET_HDR_SIZE);
    g_assert_cmpuint(le_get(buf + 6, 2), ==, MFR_PACKET_SYNC);
    g_assert_true(mfr_wire_unpack_packet(buf, n, &lim, &out, off, NULL));
    g_assert_cmpuint(out.flags, ==, MFR_PACKET_SYNC);
    g_assert_cmpuint(out.round, ==, 2);
}

/* pack_*() with a list that does not fit returns 0 and writes nothing past cap. */
static void test_pack_short_cap(void)
{
    MfrBlockInfo b[2];
    MfrPacketHdr h = sample_packet(false);
    MfrBlocksReply reply = { .count = 2 };
    uint64_t d[2] = { 0 };
    uint8_t buf[256];

    sample_blocks(b);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpuint(mfr_wire_pack_blocks(b, 2, buf, 8 + 2 * 80 - 1), ==, 0);
    g_assert_cmpuint(mfr_wire_pack_blocks(b, MFR_MAX_BLOCKS + 1, buf, SIZE_MAX), ==, 0);
    g_assert_cmpuint(mfr_wire_pack_blocks_reply(&reply, buf, 39), ==, 0);
    g_assert_cmpuint(mfr_wire_pack_complete(1, d, 2, buf, 31), ==, 0);
    g_assert_cmpuint(mfr_wire_pack_packet(&h, sample_offsets, buf, 48 + 3 * 8 - 1), ==, 0);
    h.normal_pages = UINT32_MAX;
    h.zero_pages = UINT32_MAX;
    g_assert_cmpuint(mfr_wire_pack_packet(&h, sample_offsets, buf, sizeof(buf)), ==, 0);
    for (unsigned i = 0; i < sizeof(buf); i++) {
        g_assert_cmpuint(buf[i], ==, 0x5a);
    }
}

/* ---------- negative tests: one per validation rule ---------- */

typedef struct {
    const char *name;
    MsgKind kind;
    unsigned off, size; /* field to overwrite (size 0: none) */
    uint64_t val;
    int len_delta;      /* added to the message length passed to unpack */
    void (*mutate)(uint8_t *buf, size_t *len);
    const char *msg;    /* exact expected error message */
} BadCase;

static void dup_block_name(uint8_t *buf, size_t *len)
{
    memcpy(buf + 8 + 80, buf + 8, 64);
}

static void name_unterminated(uint8_t *buf, size_t *len)
{
    memset(buf + 8 + 80, 'n', 64);
}

static void error_unterminated(uint8_t *buf, size_t *len)
{
    memset(buf + 4, 'e', MFR_ERROR_TEXT_MAX);
}

static void packet_huge_counts(uint8_t *buf, size_t *len)
{
    le_set(buf + 28, 4, UINT32_MAX);
    le_set(buf + 32, 4, UINT32_MAX);
}

static void ctrl_as_keepalive_with_body(uint8_t *buf, size_t *len)
{
    le_set(buf + 6, 2, MFR_CTRL_KEEPALIVE);
}

static void ctrl_huge_blocks(uint8_t *buf, size_t *len)
{
    uint32_t body = 8 + 65 * 80;

    le_set(buf + 6, 2, MFR_CTRL_BLOCKS);
    le_set(buf + 8, 4, body);
    *len = MFR_CTRL_HDR_SIZE + body;
}

static void blocks_add_third(uint8_t *buf, size_t *len)
{
    le_set(buf, 4, 3);
}

static void region_skip_chunk(uint8_t *buf, size_t *len)
{
    le_set(buf, 4, 1);
    le_set(buf + 4, 4, 1);
    le_set(buf + 8, 8, 0x200000);
    le_set(buf + 16, 8, 0x200000);
}

static void sync_with_offset(uint8_t *buf, size_t *len)
{
    le_set(buf + 48, 8, 0);
    *len += 8;
}

/* Packet offsets are page 0: 0x0, page 1: 0x3000 (normal), page 2: 0x1000 (zero) in block 1
 * (length 0x4000); the limits expect packet 3 of round 2, 16 pages max, page size 4096. */
static const BadCase bad_cases[] = {
    /* hello */
    { "hello/bad_len_short", MSG_HELLO_CHANNEL, 0, 0, 0, -1, NULL,
      "hello: message length 47, expected 48" },
    { "hello/bad_len_long", MSG_HELLO_CHANNEL, 0, 0, 0, 1, NULL,
      "hello: message length 49, expected 48" },
    { "hello/bad_magic", MSG_HELLO_CHANNEL, 0, 4, MFR_CTRL_MAGIC, 0, NULL,
      "hello: magic 0x4346524d, expected 0x4846524d" },
    { "hello/bad_version", MSG_HELLO_CHANNEL, 4, 2, 2, 0, NULL,
      "hello: version 2, only version 1 is supported" },
    { "hello/bad_role", MSG_HELLO_CHANNEL, 6, 1, 3, 0, NULL,
      "hello: role 3, expected 1 (control) or 2 (channel)" },
    { "hello/bad_role_zero", MSG_HELLO_CHANNEL, 6, 1, 0, 0, NULL,
      "hello: role 0, expected 1 (control) or 2 (channel)" },
    { "hello/bad_flags", MSG_HELLO_CHANNEL, 7, 1, 0x80, 0, NULL,
      "hello: flags 0x80, must be 0 in version 1" },
    { "hello/bad_reserved", MSG_HELLO_CHANNEL, 28, 4, 0x100, 0, NULL,
      "hello: reserved 0x00000100, must be 0" },
    { "hello/bad_control_index", MSG_HELLO_CONTROL, 24, 2, 1, 0, NULL,
      "hello: channel index 1 on a control connection, must be 0" },
    { "hello/bad_control_count", MSG_HELLO_CONTROL, 26, 2, 65, 0, NULL,
      "hello: channel count 65 above the limit 64" },
    { "hello/bad_channel_count_zero", MSG_HELLO_CHANNEL, 26, 2, 0, 0, NULL,
      "hello: channel count 0 outside 1..64" },
    { "hello/bad_channel_count_high", MSG_HELLO_CHANNEL, 26, 2, 0xffff, 0, NULL,
      "hello: channel count 65535 outside 1..64" },
    { "hello/bad_channel_index", MSG_HELLO_CHANNEL, 24, 2, 4, 0, NULL,
      "hello: channel index 4 not below channel count 4" },

    /* control header (the sample is CAPS, length 32, seq 7) */
    { "ctrl/bad_short", MSG_CTRL, 0, 0, 0, -33, NULL,
      "control header: message length 15 below header size 16" },
    { "ctrl/bad_magic", MSG_CTRL, 0, 4, MFR_PACKET_MAGIC, 0, NULL,
      "control header: magic 0x5046524d, expected 0x4346524d" },
    { "ctrl/bad_version", MSG_CTRL, 4, 2, 0, 0, NULL,
      "control header: version 0, only version 1 is supported" },
    { "ctrl/bad_type_zero", MSG_CTRL, 6, 2, 0, 0, NULL,
      "control header: type 0 outside 1..10" },
    { "ctrl/bad_type_high", MSG_CTRL, 6, 2, 11, 0, NULL,
      "control header: type 11 outside 1..10" },
    { "ctrl/bad_length_for_region", MSG_CTRL, 6, 2, MFR_CTRL_REGION, 0, NULL,
      "control header: REGION length 32 outside 40..40" },
    { "ctrl/bad_length_mismatch", MSG_CTRL, 8, 4, 0xffffffffu, 0, NULL,
      "control header: CAPS length 4294967295, but 32 body bytes follow" },
    { "ctrl/bad_length_short_body", MSG_CTRL, 0, 0, 0, -1, NULL,
      "control header: CAPS length 32, but 31 body bytes follow" },
    { "ctrl/bad_length_for_type", MSG_CTRL, 0, 0, 0, 0, ctrl_as_keepalive_with_body,
      "control header: KEEPALIVE length 32 outside 0..0" },
    { "ctrl/bad_length_too_many_blocks", MSG_CTRL, 0, 0, 0, 0, ctrl_huge_blocks,
      "control header: BLOCKS length 5208 outside 88..5128" },
    { "ctrl/bad_seq", MSG_CTRL, 12, 4, 0, 0, NULL,
      "control header: CAPS seq 0, sequence numbers start at 1" },

    /* caps (sample: 4096, modes 3, comp 3, channels 4, max 8, 128 pages) */
    { "caps/bad_len", MSG_CAPS, 0, 0, 0, 1, NULL, "caps: message length 33, expected 32" },
    { "caps/bad_page_size_small", MSG_CAPS, 0, 4, 2048, 0, NULL,
      "caps: page size 2048 is not a power of two in 4096..1073741824" },
    { "caps/bad_page_size_not_pow2", MSG_CAPS, 0, 4, 12288, 0, NULL,
      "caps: page size 12288 is not a power of two in 4096..1073741824" },
    { "caps/bad_page_size_big", MSG_CAPS, 0, 4, 0x80000000u, 0, NULL,
      "caps: page size 2147483648 is not a power of two in 4096..1073741824" },
    { "caps/bad_page_size_zero", MSG_CAPS, 0, 4, 0, 0, NULL,
      "caps: page size 0 is not a power of two in 4096..1073741824" },
    { "caps/bad_zero_modes_empty", MSG_CAPS, 4, 4, 0, 0, NULL,
      "caps: zero modes 0x0, must be a non-empty subset of 0x3" },
    { "caps/bad_zero_modes_unknown", MSG_CAPS, 4, 4, 0x6, 0, NULL,
      "caps: zero modes 0x6, must be a non-empty subset of 0x3" },
    { "caps/bad_compression_empty", MSG_CAPS, 8, 4, 0, 0, NULL,
      "caps: compression 0x0, must be a non-empty subset of 0x3" },
    { "caps/bad_compression_unknown", MSG_CAPS, 8, 4, 0x80000001u, 0, NULL,
      "caps: compression 0x80000001, must be a non-empty subset of 0x3" },
    { "caps/bad_max_channels_zero", MSG_CAPS, 14, 2, 0, 0, NULL,
      "caps: max channels 0 outside 1..64" },
    { "caps/bad_max_channels_high", MSG_CAPS, 14, 2, 65, 0, NULL,
      "caps: max channels 65 outside 1..64" },
    { "caps/bad_channels_zero", MSG_CAPS, 12, 2, 0, 0, NULL,
      "caps: channels 0 outside 1..8 (max channels)" },
    { "caps/bad_channels_above_max", MSG_CAPS, 12, 2, 9, 0, NULL,
      "caps: channels 9 outside 1..8 (max channels)" },
    { "caps/bad_max_pages_zero", MSG_CAPS, 16, 4, 0, 0, NULL,
      "caps: max pages per packet 0 outside 1..512" },
    { "caps/bad_max_pages_high", MSG_CAPS, 16, 4, 513, 0, NULL,
      "caps: max pages per packet 513 outside 1..512" },
    { "caps/bad_flags", MSG_CAPS, 20, 8, 1ull << 63, 0, NULL,
      "caps: flags 0x8000000000000000, must be 0 in version 1" },
    { "caps/bad_reserved", MSG_CAPS, 28, 4, 1, 0, NULL,
      "caps: reserved 0x00000001, must be 0" },

    /* blocks (sample: "pc.ram" 1 MiB/4 KiB, "vga.vram" 4 MiB/2 MiB) */
    { "blocks/bad_short", MSG_BLOCKS, 0, 0, 0, -(8 + 2 * 80 - 7), NULL,
      "blocks: message length 7 below the 8-byte list header" },
    { "blocks/bad_count_zero", MSG_BLOCKS, 0, 4, 0, 0, NULL,
      "blocks: block count 0 outside 1..64" },
    { "blocks/bad_count_high", MSG_BLOCKS, 0, 4, 0xffffffffu, 0, NULL,
      "blocks: block count 4294967295 outside 1..64" },
    { "blocks/bad_reserved", MSG_BLOCKS, 4, 4, 0xdead, 0, NULL,
      "blocks: reserved 0x0000dead, must be 0" },
    { "blocks/bad_len_count", MSG_BLOCKS, 0, 0, 0, 0, blocks_add_third,
      "blocks: message length 168, expected 248 for 3 blocks" },
    { "blocks/bad_len_trailing", MSG_BLOCKS, 0, 0, 0, 1, NULL,
      "blocks: message length 169, expected 168 for 2 blocks" },
    { "blocks/bad_name_unterminated", MSG_BLOCKS, 0, 0, 0, 0, name_unterminated,
      "blocks: block 1 name is not NUL-terminated within 64 bytes" },
    { "blocks/bad_name_empty", MSG_BLOCKS, 8, 1, 0, 0, NULL,
      "blocks: block 0 name is empty" },
    { "blocks/bad_name_unprintable", MSG_BLOCKS, 8 + 2, 1, 0x0a, 0, NULL,
      "blocks: block 0 name byte 2 is 0x0a, not printable ASCII" },
    { "blocks/bad_name_high_byte", MSG_BLOCKS, 8 + 80, 1, 0xc3, 0, NULL,
      "blocks: block 1 name byte 0 is 0xc3, not printable ASCII" },
    { "blocks/bad_name_padding", MSG_BLOCKS, 8 + 63, 1, 'x', 0, NULL,
      "blocks: block 0 name padding byte 63 is 0x78, must be 0" },
    { "blocks/bad_page_size", MSG_BLOCKS, 8 + 80 + 72, 4, 3 << 20, 0, NULL,
      "blocks: block 1 'vga.vram' page size 3145728 is not a power of two in "
      "4096..1073741824" },
    { "blocks/bad_page_size_small", MSG_BLOCKS, 8 + 72, 4, 512, 0, NULL,
      "blocks: block 0 'pc.ram' page size 512 is not a power of two in 4096..1073741824" },
    { "blocks/bad_length_zero", MSG_BLOCKS, 8 + 64, 8, 0, 0, NULL,
      "blocks: block 0 'pc.ram' length 0x0 is not a non-zero multiple of its page size "
      "0x1000" },
    { "blocks/bad_length_unaligned", MSG_BLOCKS, 8 + 80 + 64, 8, 0x300000, 0, NULL,
      "blocks: block 1 'vga.vram' length 0x300000 is not a non-zero multiple of its page "
      "size 0x200000" },
    { "blocks/bad_flags", MSG_BLOCKS, 8 + 80 + 76, 4, 2, 0, NULL,
      "blocks: block 1 'vga.vram' flags 0x2, must be 0 in version 1" },
    { "blocks/bad_duplicate_name", MSG_BLOCKS, 0, 0, 0, 0, dup_block_name,
      "blocks: block 1 name 'pc.ram' duplicates block 0" },

    /* blocks reply (expects 2) */
    { "blocks_reply/bad_count_mismatch", MSG_BLOCKS_REPLY, 0, 4, 1, -16, NULL,
      "blocks reply: block count 1, but 2 blocks were announced" },
    { "blocks_reply/bad_count_zero", MSG_BLOCKS_REPLY, 0, 4, 0, -32, NULL,
      "blocks reply: block count 0 outside 1..64" },
    { "blocks_reply/bad_len", MSG_BLOCKS_REPLY, 0, 0, 0, -1, NULL,
      "blocks reply: message length 39, expected 40 for 2 blocks" },
    { "blocks_reply/bad_flags", MSG_BLOCKS_REPLY, 4, 4, 0x80000000u, 0, NULL,
      "blocks reply: flags 0x80000000 has bits outside the known 0x00000001" },
    /* the never-sent form: whole-block descriptors without flag REGIONS */
    { "blocks_reply/bad_entry_nonzero", MSG_BLOCKS_REPLY, 8 + 16 + 5, 1, 0x5a, 0, NULL,
      "blocks reply: block 1 entry byte 5 is 0x5a, must be 0 without flag REGIONS" },
    { "blocks_reply/bad_flags_regions_extra", MSG_BLOCKS_REPLY_REGIONS, 4, 4, 3, 0, NULL,
      "blocks reply: flags 0x00000003 has bits outside the known 0x00000001" },

    /* blocks reply with chunk layouts (sample: 0x60000 x 3, 0x200000 x 2) */
    { "blocks_reply/bad_chunk_size_zero", MSG_BLOCKS_REPLY_REGIONS, 8, 8, 0, 0, NULL,
      "blocks reply: block 0 chunk size 0x0 is not a non-zero multiple of its page size "
      "0x1000" },
    { "blocks_reply/bad_chunk_size_unaligned", MSG_BLOCKS_REPLY_REGIONS, 8, 8, 0x60800, 0,
      NULL, "blocks reply: block 0 chunk size 0x60800 is not a non-zero multiple of its page "
      "size 0x1000" },
    { "blocks_reply/bad_chunk_size_below_page", MSG_BLOCKS_REPLY_REGIONS, 24, 8, 0x100000, 0,
      NULL, "blocks reply: block 1 chunk size 0x100000 is not a non-zero multiple of its page "
      "size 0x200000" },
    { "blocks_reply/bad_chunks_high", MSG_BLOCKS_REPLY_REGIONS, 16, 4, 4, 0, NULL,
      "blocks reply: block 0 has 4 chunks, expected 3 for length 0x100000 in chunks of "
      "0x60000" },
    { "blocks_reply/bad_chunks_zero", MSG_BLOCKS_REPLY_REGIONS, 32, 4, 0, 0, NULL,
      "blocks reply: block 1 has 0 chunks, expected 2 for length 0x400000 in chunks of "
      "0x200000" },
    { "blocks_reply/bad_layout_reserved", MSG_BLOCKS_REPLY_REGIONS, 36, 4, 1, 0, NULL,
      "blocks reply: block 1 layout reserved 0x00000001, must be 0" },

    /* region (sample: block 0 chunk 2 at 0xc0000, 0x40000 bytes; chunks 0-1 received) */
    { "region/bad_len_short", MSG_REGION, 0, 0, 0, -1, NULL,
      "region: message length 39, expected 40" },
    { "region/bad_len_long", MSG_REGION, 0, 0, 0, 1, NULL,
      "region: message length 41, expected 40" },
    { "region/bad_block", MSG_REGION, 0, 4, 2, 0, NULL,
      "region: block 2 not below block count 2" },
    { "region/bad_block_huge", MSG_REGION, 0, 4, UINT32_MAX, 0, NULL,
      "region: block 4294967295 not below block count 2" },
    { "region/bad_chunk_beyond", MSG_REGION, 4, 4, 3, 0, NULL,
      "region: chunk 3 of block 0 not below its 3 chunks" },
    { "region/bad_chunk_huge", MSG_REGION, 4, 4, UINT32_MAX, 0, NULL,
      "region: chunk 4294967295 of block 0 not below its 3 chunks" },
    { "region/bad_duplicate", MSG_REGION, 4, 4, 1, 0, NULL,
      "region: chunk 1 of block 0 received twice" },
    { "region/bad_out_of_order", MSG_REGION, 0, 0, 0, 0, region_skip_chunk,
      "region: chunk 1 of block 1 out of order, expected chunk 0" },
    { "region/bad_offset", MSG_REGION, 8, 8, 0xc1000, 0, NULL,
      "region: chunk 2 of block 0 at offset 0xc1000, expected 0xc0000" },
    { "region/bad_offset_huge", MSG_REGION, 8, 8, UINT64_MAX, 0, NULL,
      "region: chunk 2 of block 0 at offset 0xffffffffffffffff, expected 0xc0000" },
    { "region/bad_length_whole_chunk", MSG_REGION, 16, 8, 0x60000, 0, NULL,
      "region: chunk 2 of block 0 length 0x60000, expected 0x40000" },
    { "region/bad_length_zero", MSG_REGION, 16, 8, 0, 0, NULL,
      "region: chunk 2 of block 0 length 0x0, expected 0x40000" },

    /* u64 */
    { "u64/bad_len", MSG_U64, 0, 0, 0, -8, NULL, "u64 body: message length 0, expected 8" },

    /* complete (expects 2) */
    { "complete/bad_count_mismatch", MSG_COMPLETE, 0, 4, 1, -8, NULL,
      "complete: block count 1, but 2 blocks were announced" },
    { "complete/bad_short", MSG_COMPLETE, 0, 0, 0, -17, NULL,
      "complete: message length 15 below the 16-byte list header" },
    { "complete/bad_len", MSG_COMPLETE, 0, 0, 0, 8, NULL,
      "complete: message length 40, expected 32 for 2 blocks" },
    { "complete/bad_reserved", MSG_COMPLETE, 4, 4, 7, 0, NULL,
      "complete: reserved 0x00000007, must be 0" },
    { "complete/bad_count_high", MSG_COMPLETE, 0, 4, 65, 0, NULL,
      "complete: block count 65 outside 0..64" },
    { "complete/bad_count_zero_expected_two", MSG_COMPLETE, 0, 4, 0, -16, NULL,
      "complete: block count 0, but 2 blocks were announced" },

    /* complete reply (sample: status 1, block 1; 2 blocks) */
    { "complete_reply/bad_len", MSG_COMPLETE_REPLY, 0, 0, 0, 4, NULL,
      "complete reply: message length 12, expected 8" },
    { "complete_reply/bad_status", MSG_COMPLETE_REPLY, 0, 4, 2, 0, NULL,
      "complete reply: status 2, expected 0 (match) or 1 (mismatch)" },
    { "complete_reply/bad_block_with_match", MSG_COMPLETE_REPLY, 0, 4, 0, 0, NULL,
      "complete reply: block 1 with status 0 (match), must be 0" },
    { "complete_reply/bad_block", MSG_COMPLETE_REPLY, 4, 4, 2, 0, NULL,
      "complete reply: mismatching block 2 not below block count 2" },

    /* error */
    { "error/bad_len", MSG_ERROR, 0, 0, 0, -1, NULL, "error: message length 203, expected 204" },
    { "error/bad_code_zero", MSG_ERROR, 0, 4, 0, 0, NULL, "error: code 0 outside 1..12" },
    { "error/bad_code_high", MSG_ERROR, 0, 4, 13, 0, NULL, "error: code 13 outside 1..12" },
    { "error/bad_unterminated", MSG_ERROR, 0, 0, 0, 0, error_unterminated,
      "error: text is not NUL-terminated within 200 bytes" },

    /* packets (sample: packet 3, round 2, block 1, 2 normal + 1 zero, payload 8192) */
    { "packet/bad_short", MSG_PACKET, 0, 0, 0, -(48 + 24 - 47), NULL,
      "packet: message length 47 below header size 48" },
    { "packet/bad_magic", MSG_PACKET, 0, 4, MFR_HELLO_MAGIC, 0, NULL,
      "packet: magic 0x4846524d, expected 0x5046524d" },
    { "packet/bad_version", MSG_PACKET, 4, 2, 0xffff, 0, NULL,
      "packet: version 65535, only version 1 is supported" },
    { "packet/bad_flags", MSG_PACKET, 6, 2, 0x8001, 0, NULL,
      "packet: flags 0x8001 has bits outside the known 0x0003" },
    { "packet/bad_slot_uncompressed", MSG_PACKET, 36, 4, 1, 0, NULL,
      "packet: slot 1 in a packet without flag COMPRESSED, must be 0" },
    { "packet/bad_compressed_not_negotiated", MSG_PACKET, 6, 2, MFR_PACKET_COMPRESSED, 0, NULL,
      "packet: flag COMPRESSED, but compression was not negotiated" },
    { "packet/bad_packet_num_old", MSG_PACKET, 8, 8, 2, 0, NULL,
      "packet: number 2, expected 3" },
    { "packet/bad_packet_num_skip", MSG_PACKET, 8, 8, UINT64_MAX, 0, NULL,
      "packet: number 18446744073709551615, expected 3" },
    { "packet/bad_round", MSG_PACKET, 16, 8, 1, 0, NULL, "packet: round 1, expected 2" },
    { "packet/bad_block", MSG_PACKET, 24, 4, 2, 0, NULL,
      "packet: block 2 not below block count 2" },
    { "packet/bad_block_huge", MSG_PACKET, 24, 4, UINT32_MAX, 0, NULL,
      "packet: block 4294967295 not below block count 2" },
    { "packet/bad_no_pages", MSG_PACKET, 28, 8, 0, -24, NULL,
      "packet: no pages (0 normal, 0 zero) in a data packet" },
    { "packet/bad_too_many_pages", MSG_PACKET, 32, 4, 15, 0, NULL,
      "packet: 2 normal + 15 zero pages above the limit 16" },
    { "packet/bad_huge_counts", MSG_PACKET, 0, 0, 0, 0, packet_huge_counts,
      "packet: 4294967295 normal + 4294967295 zero pages above the limit 16" },
    { "packet/bad_len_short", MSG_PACKET, 0, 0, 0, -8, NULL,
      "packet: message length 64, expected 72 for 3 pages" },
    { "packet/bad_len_long", MSG_PACKET, 0, 0, 0, 1, NULL,
      "packet: message length 73, expected 72 for 3 pages" },
    { "packet/bad_payload_len", MSG_PACKET, 40, 8, 4096, 0, NULL,
      "packet: payload length 4096, expected 2 normal pages * page size 4096 = 8192" },
    { "packet/bad_payload_len_huge", MSG_PACKET, 40, 8, UINT64_MAX, 0, NULL,
      "packet: payload length 18446744073709551615, expected 2 normal pages * page size "
      "4096 = 8192" },
    { "packet/bad_offset_unaligned", MSG_PACKET, 48 + 8, 8, 0x3008, 0, NULL,
      "packet: offset 0x3008 of page 1 not aligned to page size 0x1000" },
    { "packet/bad_offset_beyond", MSG_PACKET, 48 + 16, 8, 0x4000, 0, NULL,
      "packet: offset 0x4000 of page 2 beyond block 1 length 0x4000" },
    { "packet/bad_offset_wrap", MSG_PACKET, 48, 8, UINT64_MAX - 4095, 0, NULL,
      "packet: offset 0xfffffffffffff000 of page 0 beyond block 1 length 0x4000" },

    /* SYNC packets */
    { "sync/bad_pages", MSG_SYNC, 28, 4, 1, 0, NULL,
      "packet: SYNC of round 2 carries block 0, 1 normal and 0 zero pages, payload 0, all "
      "must be 0" },
    { "sync/bad_zero_pages", MSG_SYNC, 32, 4, 1, 0, NULL,
      "packet: SYNC of round 2 carries block 0, 0 normal and 1 zero pages, payload 0, all "
      "must be 0" },
    { "sync/bad_payload", MSG_SYNC, 40, 8, 4096, 0, NULL,
      "packet: SYNC of round 2 carries block 0, 0 normal and 0 zero pages, payload 4096, all "
      "must be 0" },
    { "sync/bad_block", MSG_SYNC, 24, 4, 1, 0, NULL,
      "packet: SYNC of round 2 carries block 1, 0 normal and 0 zero pages, payload 0, all "
      "must be 0" },
    { "sync/bad_len", MSG_SYNC, 0, 0, 0, 0, sync_with_offset,
      "packet: SYNC message length 56, expected 48" },
    { "sync/bad_round", MSG_SYNC, 16, 8, 3, 0, NULL, "packet: round 3, expected 2" },
    { "sync/bad_packet_num", MSG_SYNC, 8, 8, 0, 0, NULL, "packet: number 0, expected 3" },
};

static void run_bad_case(gconstpointer data)
{
    const BadCase *c = data;
    uint8_t buf[BUF_CAP];
    size_t len = build(c->kind, buf);
    g_autoptr(GError) err = NULL;

    /* The unmodified sample is valid: the failure below comes from this one change. */
    g_assert_true(unpack(c->kind, buf, len, NULL, NULL, NULL));
    if (c->size) {
        le_set(buf + c->off, c->size, c->val);
    }
    if (c->mutate) {
        c->mutate(buf, &len);
    }
    len = (size_t)((ptrdiff_t)len + c->len_delta);
    g_assert_false(unpack(c->kind, buf, len, NULL, NULL, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    g_assert_cmpstr(err->message, ==, c->msg);
}

/* A failed unpack leaves the caller's struct untouched. */
static void test_bad_output_untouched(void)
{
    uint8_t buf[BUF_CAP];
    MfrHello h;
    MfrCaps c;
    MfrPacketHdr p;
    MfrPacketLimits lim = sample_limits();
    uint64_t off[16];
    uint8_t pattern[sizeof(MfrPacketHdr)];

    memset(pattern, 0xa5, sizeof(pattern));
    memset(&h, 0xa5, sizeof(h));
    memset(&c, 0xa5, sizeof(c));
    memset(&p, 0xa5, sizeof(p));
    build(MSG_HELLO_CHANNEL, buf);
    buf[7] = 1;
    g_assert_false(mfr_wire_unpack_hello(buf, MFR_HELLO_SIZE, &h, NULL));
    g_assert_cmpmem(&h, sizeof(h), pattern, sizeof(h));
    build(MSG_CAPS, buf);
    buf[31] = 1;
    g_assert_false(mfr_wire_unpack_caps(buf, MFR_CAPS_SIZE, &c, NULL));
    g_assert_cmpmem(&c, sizeof(c), pattern, sizeof(c));
    build(MSG_PACKET, buf);
    le_set(buf + 64, 8, 0x8000);
    g_assert_false(mfr_wire_unpack_packet(buf, 72, &lim, &p, off, NULL));
    g_assert_cmpmem(&p, sizeof(p), pattern, sizeof(p));
}

/* A block shorter than one page cannot hold any page (no underflow in the bound check). */
static void test_packet_bad_block_below_page(void)
{
    uint8_t buf[BUF_CAP];
    uint64_t tiny[2] = { 0x10000, 0x800 };
    MfrPacketLimits lim = sample_limits();
    MfrPacketHdr h;
    uint64_t off[16];
    g_autoptr(GError) err = NULL;
    size_t len = build(MSG_PACKET, buf);

    lim.block_len = tiny;
    g_assert_false(mfr_wire_unpack_packet(buf, len, &lim, &h, off, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    g_assert_cmpstr(err->message, ==, "packet: offset 0x0 of page 0 beyond block 1 length 0x800");
}

/* ---------- fuzz-ish loops ---------- */

/* Every accepted message is canonical: packing what was unpacked gives the same bytes
 * (error text excepted: it is sanitised on purpose). Every rejection is PROTOCOL with a
 * message. */
static void check_one(MsgKind kind, const uint8_t *buf, size_t len, unsigned *accepted)
{
    uint8_t re[BUF_CAP];
    size_t relen = 0;
    GError *err = NULL;

    if (unpack(kind, buf, len, re, &relen, &err)) {
        g_assert_no_error(err);
        (*accepted)++;
        if (kind != MSG_ERROR) {
            g_assert_cmpmem(re, relen, buf, len);
        }
    } else {
        g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
        g_assert_cmpuint(strlen(err->message), >, 10);
        g_error_free(err);
    }
}

static void test_fuzz_random_bytes(void)
{
    g_autoptr(GRand) rnd = g_rand_new_with_seed(0x6d667264);
    uint8_t buf[BUF_CAP];
    unsigned accepted = 0;

    for (unsigned iter = 0; iter < 20000; iter++) {
        MsgKind kind = (MsgKind)g_rand_int_range(rnd, 0, MSG_COUNT);
        size_t len = (size_t)g_rand_int_range(rnd, 0, 400);

        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)g_rand_int(rnd);
        }
        check_one(kind, buf, len, &accepted);
    }
    /* Only the u64 body has no redundancy: random 8-byte buffers may pass, nothing else. */
    g_test_message("random bytes: %u of 20000 accepted", accepted);
}

static void test_fuzz_mutations(void)
{
    g_autoptr(GRand) rnd = g_rand_new_with_seed(42);
    unsigned accepted = 0, rejected_total = 0;

    for (MsgKind kind = 0; kind < MSG_COUNT; kind++) {
        uint8_t orig[BUF_CAP] = { 0 }, buf[BUF_CAP] = { 0 };
        size_t olen = build(kind, orig);
        unsigned acc = 0;

        for (unsigned iter = 0; iter < 3000; iter++) {
            size_t len = olen;
            unsigned flips = (unsigned)g_rand_int_range(rnd, 1, 5);

            memcpy(buf, orig, olen);
            for (unsigned f = 0; f < flips; f++) {
                size_t pos = (size_t)g_rand_int_range(rnd, 0, (gint32)olen);
                buf[pos] ^= (uint8_t)(1u << g_rand_int_range(rnd, 0, 8));
            }
            if (g_rand_int_range(rnd, 0, 8) == 0) {
                len = (size_t)g_rand_int_range(rnd, 0, (gint32)olen + 16);
            }
            check_one(kind, buf, len, &acc);
        }
        accepted += acc;
        rejected_total += 3000 - acc;
    }
    g_assert_cmpuint(rejected_total, >, 0);
    g_test_message("mutations: %u accepted, %u rejected", accepted, rejected_total);
}

/* Boundary values in every 64-bit and 32-bit field of a packet never crash the checks. */
static void test_fuzz_packet_extremes(void)
{
    static const uint64_t vals[] = { 0, 1, 0xfff, 0x1000, 0x3fff, 0x4000, 0x7fffffff,
                                     0x80000000u, 0xffffffffu, 0x100000000ull,
                                     INT64_MAX, UINT64_MAX - 4095, UINT64_MAX };
    static const struct { unsigned off, size; } fields[] = {
        { 8, 8 }, { 16, 8 }, { 24, 4 }, { 28, 4 }, { 32, 4 }, { 40, 8 }, { 48, 8 }, { 64, 8 },
    };
    unsigned accepted = 0;

    for (unsigned f = 0; f < G_N_ELEMENTS(fields); f++) {
        for (unsigned v = 0; v < G_N_ELEMENTS(vals); v++) {
            uint8_t buf[BUF_CAP];
            size_t len = build(MSG_PACKET, buf);

            if (fields[f].size == 4 && vals[v] > UINT32_MAX) {
                continue; /* would be truncated into a value already in the list */
            }
            le_set(buf + fields[f].off, fields[f].size, vals[v]);
            check_one(MSG_PACKET, buf, len, &accepted);
        }
    }
    /* Only values that keep the sample valid pass: block 0 or 1, zero_pages 1 (the
     * sample's own) and 0x0 / 0x1000 in each of the two offset slots. */
    g_assert_cmpuint(accepted, ==, 7);
}

/* ---------- staging ring messages ---------- */

static void ring_expect_bad(const MfrRingMsg *m, MfrRingType t, uint64_t lo, uint64_t hi,
                            const char *msg)
{
    uint8_t buf[MFR_RING_MSG_SIZE];
    MfrRingMsg out;
    g_autoptr(GError) err = NULL;
    mfr_wire_pack_ring(m, buf);
    g_assert_false(mfr_wire_unpack_ring(buf, sizeof(buf), t, lo, hi, &out, &err));
    g_assert_error(err, MFR_ERROR, MFR_ERROR_PROTOCOL);
    g_assert_cmpstr(err->message, ==, msg);
}

static void test_ring(void)
{
    MfrRingMsg d = { .magic = MFR_RING_MAGIC, .version = MFR_WIRE_VERSION,
                     .type = MFR_RING_DESC, .slots = 4, .slot_size = 4160 };
    for (unsigned i = 0; i < MFR_REGION_DESC_SIZE; i++) {
        d.desc[i] = (uint8_t)(i + 1);
    }
    uint8_t buf[MFR_RING_MSG_SIZE];
    mfr_wire_pack_ring(&d, buf);
    /* little-endian at the documented offsets */
    g_assert_cmpmem(buf, 4, "MRFR", 4);
    g_assert_cmpuint(buf[6], ==, 1);
    g_assert_cmpuint(buf[8], ==, 4);
    g_assert_cmpuint(buf[12] | buf[13] << 8, ==, 4160);
    g_assert_cmpuint(buf[24], ==, 1);
    MfrRingMsg out;
    g_assert_true(mfr_wire_unpack_ring(buf, sizeof(buf), MFR_RING_DESC, 4160, 4160, &out, NULL));
    g_assert_cmpmem(out.desc, 16, d.desc, 16);
    g_assert_cmpuint(out.slots, ==, 4);
    MfrRingMsg c = { .magic = MFR_RING_MAGIC, .version = MFR_WIRE_VERSION,
                     .type = MFR_RING_CREDIT, .freed = 7 };
    mfr_wire_pack_ring(&c, buf);
    g_assert_true(mfr_wire_unpack_ring(buf, sizeof(buf), MFR_RING_CREDIT, 5, 9, &out, NULL));
    g_assert_cmpuint(out.freed, ==, 7);
    g_autoptr(GError) err = NULL;
    g_assert_false(mfr_wire_unpack_ring(buf, sizeof(buf) - 1, MFR_RING_CREDIT, 5, 9, &out, &err));
    g_assert_cmpstr(err->message, ==, "ring: message length 39, expected 40");

    ring_expect_bad(&c, MFR_RING_DESC, 1, 1, "ring: type 2, expected 1 (DESC)");
    ring_expect_bad(&c, MFR_RING_CREDIT, 8, 9, "ring: CREDIT frees 7 slots in all, expected "
                    "8..9 (never backwards, never more than were used)");
    ring_expect_bad(&c, MFR_RING_CREDIT, 1, 6, "ring: CREDIT frees 7 slots in all, expected "
                    "1..6 (never backwards, never more than were used)");
    c.slots = 1;
    ring_expect_bad(&c, MFR_RING_CREDIT, 1, 9, "ring: CREDIT with slots 1, slot size 0 or a "
                    "descriptor, all must be 0");
    MfrRingMsg b = d;
    b.slots = MFR_RING_MAX_SLOTS + 1;
    ring_expect_bad(&b, MFR_RING_DESC, 4160, 4160, "ring: 17 slots outside 1..16");
    b = d;
    b.slots = 0;
    ring_expect_bad(&b, MFR_RING_DESC, 4160, 4160, "ring: 0 slots outside 1..16");
    ring_expect_bad(&d, MFR_RING_DESC, 8192, 8192, "ring: slot size 4160 outside 8192..8192");
    b = d;
    b.freed = 1;
    ring_expect_bad(&b, MFR_RING_DESC, 4160, 4160, "ring: DESC with freed 1, must be 0");
    b = d;
    b.magic = MFR_PACKET_MAGIC;
    ring_expect_bad(&b, MFR_RING_DESC, 4160, 4160, "ring: magic 0x5046524d, expected 0x5246524d");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/wire/hello/layout", test_hello_layout);
    g_test_add_func("/wire/ctrl/layout", test_ctrl_layout);
    g_test_add_func("/wire/caps/layout", test_caps_layout);
    g_test_add_func("/wire/blocks/layout", test_blocks_layout);
    g_test_add_func("/wire/packet/layout", test_packet_layout);
    g_test_add_func("/wire/complete/layout", test_complete_layout);

    g_test_add_func("/wire/hello/roundtrip", test_hello_roundtrip);
    g_test_add_func("/wire/hello/roundtrip_limits", test_hello_roundtrip_limits);
    g_test_add_func("/wire/ctrl/roundtrip", test_ctrl_roundtrip);
    g_test_add_func("/wire/caps/roundtrip", test_caps_roundtrip);
    g_test_add_func("/wire/blocks/roundtrip", test_blocks_roundtrip);
    g_test_add_func("/wire/blocks_reply/roundtrip", test_blocks_reply_roundtrip);
    g_test_add_func("/wire/blocks_reply/regions_layout", test_blocks_reply_regions_layout);
    g_test_add_func("/wire/blocks_reply/bad_too_many_chunks",
                    test_blocks_reply_bad_too_many_chunks);
    g_test_add_func("/wire/region/layout", test_region_layout);
    g_test_add_func("/wire/u64/roundtrip", test_u64_roundtrip);
    g_test_add_func("/wire/complete/roundtrip", test_complete_roundtrip);
    g_test_add_func("/wire/complete/roundtrip_no_digests", test_complete_roundtrip_no_digests);
    g_test_add_func("/wire/complete_reply/roundtrip", test_complete_reply_roundtrip);
    g_test_add_func("/wire/error/roundtrip", test_error_roundtrip);
    g_test_add_func("/wire/error/truncate", test_error_truncate);
    g_test_add_func("/wire/error/sanitize", test_error_sanitize);
    g_test_add_func("/wire/packet/roundtrip", test_packet_roundtrip);
    g_test_add_func("/wire/packet/roundtrip_limits", test_packet_roundtrip_limits);
    g_test_add_func("/wire/sync/roundtrip", test_packet_roundtrip_sync);
    g_test_add_func("/wire/pack/short_cap", test_pack_short_cap);

    for (unsigned i = 0; i < G_N_ELEMENTS(bad_cases); i++) {
        g_autofree char *path = g_strdup_printf("/wire/%s", bad_cases[i].name);
        g_test_add_data_func(path, &bad_cases[i], run_bad_case);
    }
    g_test_add_func("/wire/bad_output_untouched", test_bad_output_untouched);
    g_test_add_func("/wire/packet/bad_block_below_page", test_packet_bad_block_below_page);

    g_test_add_func("/wire/fuzz/random_bytes", test_fuzz_random_bytes);
    g_test_add_func("/wire/fuzz/mutations", test_fuzz_mutations);
    g_test_add_func("/wire/fuzz/packet_extremes", test_fuzz_packet_extremes);
    g_test_add_func("/wire/ring", test_ring);
    return g_test_run();
}
