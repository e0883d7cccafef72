/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the region and chunk descriptors, as a source meets them. Input:
 *   [u16 a][a bytes: BLOCKS body][u16 b][b bytes: BLOCKS_REPLY body][40-byte REGION bodies]
 * The announce is unpacked, the reply against it, then each REGION against the reply's
 * layout and the chunks received so far, as the source's reader does. Every 16-byte transport
 * descriptor that passes goes through the RDMA backend's import (which reads no domain state).
 * Invariant: an accepted chunk lies inside its block, in order, never twice.
 */
#include "fuzz.h"
#include "wire.h"
#include "xp.h"
#include "xp-rdma.h"

#include <assert.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

static bool take(const uint8_t **p, size_t *left, const uint8_t **part, size_t *n)
{
    if (*left < 2) {
        return false;
    }
    *n = MIN((size_t)((*p)[0] | (*p)[1] << 8), *left - 2);
    *part = *p + 2;
    *p += 2 + *n;
    *left -= 2 + *n;
    return true;
}

static void import_desc(const uint8_t desc[XP_REGION_DESC_SIZE], uint64_t len)
{
    XpRemote *r = NULL;
    GError *err = NULL;
    if (xp_rdma_ops.remote_import(NULL, desc, len, &r, &err)) {
        xp_rdma_ops.remote_free(r);
    } else {
        g_error_free(err);
    }
}

static void regions(const MfrBlockInfo *info, uint32_t count, const MfrBlocksReply *r,
                    const uint8_t *p, size_t left)
{
    uint64_t block_len[MFR_MAX_BLOCKS];
    uint32_t received[MFR_MAX_BLOCKS] = { 0 };
    for (uint32_t i = 0; i < count; i++) {
        block_len[i] = info[i].length;
    }
    MfrRegionLimits lim = { .nblocks = count, .block_len = block_len, .layout = r->layout,
                            .received = received };
    for (; left >= MFR_REGION_SIZE; p += MFR_REGION_SIZE, left -= MFR_REGION_SIZE) {
        MfrRegionMsg m;
        if (!mfr_wire_unpack_region(p, MFR_REGION_SIZE, &lim, &m, NULL)) {
            continue;
        }
        assert(m.block < count && m.chunk == received[m.block]);
        assert(m.chunk < r->layout[m.block].chunks);
        assert(m.length > 0 && m.offset + m.length <= block_len[m.block]);
        received[m.block]++;
        import_desc(m.desc, m.length);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *a, *b;
    size_t na, nb;
    MfrBlockInfo info[MFR_MAX_BLOCKS];
    uint32_t count = 0;
    MfrBlocksReply reply;
    if (!take(&data, &size, &a, &na) || !take(&data, &size, &b, &nb) ||
        !mfr_wire_unpack_blocks(a, na, info, &count, NULL) ||
        !mfr_wire_unpack_blocks_reply(b, nb, info, count, &reply, NULL)) {
        return 0;
    }
    assert(reply.count == count);
    if (!(reply.flags & MFR_REPLY_REGIONS)) {
        return 0; /* a tcp reply: no regions follow (its entries were checked to be zero) */
    }
    regions(info, count, &reply, data, size);
    return 0;
}
