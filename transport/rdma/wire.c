/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The RDMA backend's own wire bytes (wire.h): the only code that frames the hello into the
 * connect private data, builds and reads reject data and immediate data, and packs and
 * validates region descriptors. Offsets match the tables of docs/protocol.md section 14.
 */
#include "wire.h"

#include "xp-wire.h"

#include <string.h>

enum {
    PDATA_HELLO_LEN = RDMA_WIRE_PDATA_SIZE - 1, /* mark TRAILER: the hello's length */
    REJECT_STATUS = 0,
    REJECT_REASON = RDMA_WIRE_REJECT_HDR,
    DESC_ADDR = 0,
    DESC_RKEY = 8,
    DESC_RESERVED = 12,
};
G_STATIC_ASSERT(DESC_RESERVED + 4 == RDMA_WIRE_DESC_SIZE);

void xp_rdma_wire_pack_hello(const void *hello, size_t len, uint8_t pdata[RDMA_WIRE_PDATA_SIZE],
                             uint8_t *mark)
{
    g_assert(len <= RDMA_WIRE_PDATA_SIZE);
    memset(pdata, 0, RDMA_WIRE_PDATA_SIZE);
    memcpy(pdata, hello, len);
    if (len < RDMA_WIRE_PDATA_SIZE) {
        pdata[PDATA_HELLO_LEN] = (uint8_t)len;
        *mark = RDMA_WIRE_MARK_TRAILER;
    } else {
        *mark = RDMA_WIRE_MARK_FULL;
    }
}

bool xp_rdma_wire_unpack_hello(const uint8_t *pdata, size_t pdata_len, unsigned mark, void *hello,
                               size_t *len, GError **error)
{
    /* The CM may present more bytes than were sent, never fewer: less is not our framing. */
    bool ok = pdata_len >= RDMA_WIRE_PDATA_SIZE;
    size_t n = RDMA_WIRE_PDATA_SIZE;
    if (ok && mark == RDMA_WIRE_MARK_TRAILER) {
        n = pdata[PDATA_HELLO_LEN];
        ok = n < RDMA_WIRE_PDATA_SIZE;
    } else {
        ok = ok && mark == RDMA_WIRE_MARK_FULL;
    }
    if (!ok) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "malformed hello (%zu bytes of private data, mark %u)", pdata_len, mark);
        return false;
    }
    memcpy(hello, pdata, n);
    *len = n;
    return true;
}

size_t xp_rdma_wire_pack_reject(uint32_t status, const char *reason,
                                uint8_t out[RDMA_WIRE_REJECT_MAX])
{
    size_t rl = reason ? strnlen(reason, XP_REASON_MAX) : 0;
    xp_put_le32(out + REJECT_STATUS, status);
    if (rl) {
        memcpy(out + REJECT_REASON, reason, rl); /* reason may be NULL: memcpy may not */
    }
    return RDMA_WIRE_REJECT_HDR + rl;
}

void xp_rdma_wire_unpack_reject(const uint8_t *pdata, size_t len, uint32_t *status,
                                char reason[XP_REASON_MAX + 1])
{
    *status = 0;
    reason[0] = '\0';
    if (len < RDMA_WIRE_REJECT_HDR) {
        return;
    }
    *status = xp_get_le32(pdata + REJECT_STATUS);
    size_t rl = MIN(len - RDMA_WIRE_REJECT_HDR, (size_t)XP_REASON_MAX);
    memcpy(reason, pdata + REJECT_REASON, rl);
    reason[rl] = '\0'; /* the CM pads with zeros: the text ends at the first NUL */
}

uint32_t xp_rdma_wire_pack_imm(unsigned credits, bool credit_only)
{
    g_assert(credits <= RDMA_WIRE_IMM_CREDITS_MASK);
    return (credit_only ? RDMA_WIRE_IMM_CREDIT_ONLY : 0) | credits;
}

bool xp_rdma_wire_unpack_imm(uint32_t imm, unsigned *credits, bool *credit_only)
{
    if (imm & RDMA_WIRE_IMM_RESERVED) {
        return false; /* always 0 from a v1 peer */
    }
    *credits = imm & RDMA_WIRE_IMM_CREDITS_MASK;
    *credit_only = (imm & RDMA_WIRE_IMM_CREDIT_ONLY) != 0;
    return true;
}

void xp_rdma_wire_pack_desc(uint64_t addr, uint32_t rkey, uint8_t desc[RDMA_WIRE_DESC_SIZE])
{
    xp_put_le64(desc + DESC_ADDR, addr);
    xp_put_le32(desc + DESC_RKEY, rkey);
    xp_put_le32(desc + DESC_RESERVED, 0);
}

bool xp_rdma_wire_unpack_desc(const uint8_t desc[RDMA_WIRE_DESC_SIZE], uint64_t len,
                              uint64_t *addr, uint32_t *rkey, GError **error)
{
    uint32_t reserved = xp_get_le32(desc + DESC_RESERVED);
    if (reserved != 0) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "bad rdma region descriptor: reserved field is 0x%08x, must be 0",
                    reserved);
        return false;
    }
    uint64_t a = xp_get_le64(desc + DESC_ADDR);
    if (len > UINT64_MAX - a) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED,
                    "bad rdma region descriptor: addr 0x%" G_GINT64_MODIFIER "x + length %"
                    G_GUINT64_FORMAT " wraps", a, len);
        return false;
    }
    *addr = a;
    *rkey = xp_get_le32(desc + DESC_RKEY);
    return true;
}
