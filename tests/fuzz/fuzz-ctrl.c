/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: every control message. The header is unpacked first; the body is then
 * handed to the unpack function of its type (and, when the header is refused, to the one its
 * type field names anyway, so bodies are fuzzed even when the header mutates). Each accepted
 * message is checked against what its unpack promises.
 */
#include "fuzz.h"
#include "wire.h"
#include "mfrdma.h"
#include "xp.h"

#include <assert.h>

/* what the receiver of BLOCKS_REPLY, REGION, COMPLETE and COMPLETE_REPLY validates against */
static const MfrBlockInfo announced[] = {
    { .name = "pc.ram", .length = 64 * 4096, .page_size = 4096 },
    { .name = "huge", .length = 4u << 21, .page_size = 2u << 20 },
    { .name = "odd", .length = 3 * 4096, .page_size = 4096 },
};
#define NANNOUNCED G_N_ELEMENTS(announced)

static void body_caps(const uint8_t *b, size_t n)
{
    MfrCaps c;
    if (mfr_wire_unpack_caps(b, n, &c, NULL)) {
        assert(c.page_size >= 4096 && (c.page_size & (c.page_size - 1)) == 0);
        assert(c.channels >= 1 && c.channels <= MFR_MAX_CHANNELS);
        assert(c.max_pages_per_packet >= 1 && c.flags == 0 && c.reserved == 0);
    }
}

static void body_blocks(const uint8_t *b, size_t n)
{
    MfrBlockInfo info[MFR_MAX_BLOCKS];
    uint32_t count = 0;
    if (mfr_wire_unpack_blocks(b, n, info, &count, NULL)) {
        assert(count >= 1 && count <= MFR_MAX_BLOCKS);
        for (uint32_t i = 0; i < count; i++) {
            size_t len = strnlen(info[i].name, MFR_BLOCK_NAME_MAX);
            assert(len >= 1 && len < MFR_BLOCK_NAME_MAX);
            assert(info[i].length && info[i].length % info[i].page_size == 0);
        }
    }
}

static void body_blocks_reply(const uint8_t *b, size_t n)
{
    MfrBlocksReply r;
    if (mfr_wire_unpack_blocks_reply(b, n, announced, NANNOUNCED, &r, NULL)) {
        assert(r.count == NANNOUNCED);
        for (uint32_t i = 0; (r.flags & MFR_REPLY_REGIONS) && i < r.count; i++) {
            assert(r.layout[i].chunk_size % announced[i].page_size == 0);
            assert(r.layout[i].chunks == mfr_chunk_count(announced[i].length,
                                                         r.layout[i].chunk_size));
        }
    }
}

static void body_region(const uint8_t *b, size_t n)
{
    static const uint64_t block_len[] = { 64 * 4096, 4u << 21, 3 * 4096 };
    static const MfrChunkLayout layout[] = { { 16 * 4096, 4 }, { 2u << 20, 4 }, { 2 * 4096, 2 } };
    static const uint32_t received[] = { 0, 3, 1 };
    MfrRegionLimits lim = { .nblocks = NANNOUNCED, .block_len = block_len, .layout = layout,
                            .received = received };
    MfrRegionMsg m;
    if (mfr_wire_unpack_region(b, n, &lim, &m, NULL)) {
        assert(m.block < NANNOUNCED && m.chunk == received[m.block]);
        assert(m.length && m.offset + m.length <= block_len[m.block]);
    }
}

static void body_other(uint16_t type, const uint8_t *b, size_t n)
{
    uint64_t round, digest[MFR_MAX_BLOCKS];
    MfrCompleteReply cr;
    MfrCtrlError e;
    switch (type) {
    case MFR_CTRL_SYNC_ACK:
        mfr_wire_unpack_u64(b, n, &round, NULL);
        break;
    case MFR_CTRL_COMPLETE:
        mfr_wire_unpack_complete(b, n, n == 16 ? 0 : NANNOUNCED, &round, digest, NULL);
        break;
    case MFR_CTRL_COMPLETE_REPLY:
        if (mfr_wire_unpack_complete_reply(b, n, NANNOUNCED, &cr, NULL)) {
            assert(cr.status == 0 ? cr.block == 0 : cr.status == 1 && cr.block < NANNOUNCED);
        }
        break;
    case MFR_CTRL_ERROR:
        if (mfr_wire_unpack_error(b, n, &e, NULL)) {
            assert(strnlen(e.text, MFR_ERROR_TEXT_MAX) < MFR_ERROR_TEXT_MAX);
            assert(e.code >= MFR_ERROR_FAILED && e.code <= MFR_ERROR_USAGE);
        }
        break;
    default:
        break;
    }
}

static void body(uint16_t type, const uint8_t *b, size_t n)
{
    switch (type) {
    case MFR_CTRL_CAPS:
        body_caps(b, n);
        break;
    case MFR_CTRL_BLOCKS:
        body_blocks(b, n);
        break;
    case MFR_CTRL_BLOCKS_REPLY:
        body_blocks_reply(b, n);
        break;
    case MFR_CTRL_REGION:
        body_region(b, n);
        break;
    default:
        body_other(type, b, n);
        break;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MfrCtrlHdr h;
    GError *err = NULL;
    if (size > XP_MSG_MAX) {
        return 0; /* the transport refuses longer messages before any parser sees them */
    }
    if (mfr_wire_unpack_ctrl_hdr(data, size, &h, &err)) {
        assert(h.type >= MFR_CTRL_CAPS && h.type <= MFR_CTRL_TYPE_MAX && h.seq != 0);
        assert(h.length == size - MFR_CTRL_HDR_SIZE);
        body(h.type, data + MFR_CTRL_HDR_SIZE, h.length);
        return 0;
    }
    assert(err && err->code == MFR_ERROR_PROTOCOL);
    g_error_free(err);
    if (size >= MFR_CTRL_HDR_SIZE) {
        body((uint16_t)(data[6] | data[7] << 8), data + MFR_CTRL_HDR_SIZE,
             size - MFR_CTRL_HDR_SIZE);
    }
    return 0;
}
