/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the channel packet (header + page offsets). The expected packet number
 * and round are taken from the input itself half of the time, so inputs get past the
 * sequence checks to the offset checks; an accepted packet's every page must lie inside its
 * block, which is what keeps the receiver's writes inside guest RAM.
 */
#include "compress.h"
#include "fuzz.h"
#include "mfrdma.h"
#include "wire.h"

#include <assert.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

static void check_one(const uint8_t *data, size_t size, const MfrPacketLimits *lim)
{
    static uint64_t offsets[MFR_MAX_PAGES_PER_PACKET];
    MfrPacketHdr h;
    GError *err = NULL;
    if (!mfr_wire_unpack_packet(data, size, lim, &h, offsets, &err)) {
        assert(err && err->domain == MFR_ERROR && err->code == MFR_ERROR_PROTOCOL);
        g_error_free(err);
        return;
    }
    assert(h.packet_num == lim->expect_packet_num && h.round == lim->expect_round);
    if (h.flags & MFR_PACKET_SYNC) {
        assert(size == MFR_PACKET_HDR_SIZE && h.normal_pages == 0 && h.zero_pages == 0);
        assert(h.flags == MFR_PACKET_SYNC && h.slot == 0);
        return;
    }
    uint64_t n = (uint64_t)h.normal_pages + h.zero_pages;
    assert(h.block < lim->nblocks && n >= 1 && n <= lim->max_pages);
    assert(size == MFR_PACKET_HDR_SIZE + 8 * n);
    uint64_t raw = (uint64_t)h.normal_pages * lim->page_size;
    if (h.flags & MFR_PACKET_COMPRESSED) {
        /* what sizes the receiver's buffers: the raw size and the frame's bound */
        assert(lim->compressed && h.normal_pages >= 1 && raw <= MFR_COMP_MAX_RAW);
        assert(h.payload_len >= 1 && h.payload_len <= mfr_comp_bound(raw));
        assert(lim->slots ? h.slot < lim->slots : h.slot == 0);
    } else {
        assert(h.payload_len == raw && h.slot == 0);
    }
    for (uint64_t i = 0; i < n; i++) {
        assert(offsets[i] % lim->page_size == 0);
        assert(offsets[i] + lim->page_size <= lim->block_len[h.block]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a small block, a one-page block, a block shorter than a page and a huge one */
    static const uint64_t block_len[] = { 16 * 4096, 4096, 2048, UINT64_MAX & ~4095ull };
    MfrPacketLimits lim = {
        .nblocks = G_N_ELEMENTS(block_len), .block_len = block_len, .page_size = 4096,
        .max_pages = MFR_MAX_PAGES_PER_PACKET, .expect_packet_num = 1, .expect_round = 1,
    };
    check_one(data, size, &lim);
    if (size >= 24) {
        lim.expect_packet_num = fuzz_le64(data + 8);
        lim.expect_round = fuzz_le64(data + 16);
        lim.max_pages = 1 + data[size - 1] % MFR_MAX_PAGES_PER_PACKET;
        check_one(data, size, &lim);
        /* zstd negotiated, over a stream or a ring of a few staging slots */
        lim.compressed = true;
        lim.slots = data[size - 2] % 4;
        check_one(data, size, &lim);
    }
    return 0;
}
