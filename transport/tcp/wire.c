/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TCP backend's framing (wire.h): the only code that writes and reads the length word of
 * a frame and the answer's status and reason. Offsets match docs/protocol.md 2 and 3.2.
 */
#include "wire.h"

#include "xp-wire.h"

#include <errno.h>
#include <string.h>

enum {
    ANSWER_STATUS = 0,
    ANSWER_REASON = 4,
};
G_STATIC_ASSERT(ANSWER_REASON + XP_REASON_MAX == TCP_WIRE_ANSWER_SIZE);

void tcp_wire_pack_hdr(uint32_t len, uint8_t hdr[TCP_WIRE_HDR_SIZE])
{
    xp_put_le32(hdr, len);
}

int tcp_wire_unpack_hdr(const uint8_t hdr[TCP_WIRE_HDR_SIZE], size_t cap, uint32_t *len)
{
    uint32_t n = xp_get_le32(hdr);
    if (n > XP_MSG_MAX || n > cap) {
        return -EMSGSIZE;
    }
    *len = n;
    return 0;
}

void tcp_wire_pack_answer(uint32_t status, const char *reason,
                          uint8_t out[TCP_WIRE_ANSWER_SIZE])
{
    memset(out, 0, TCP_WIRE_ANSWER_SIZE);
    xp_put_le32(out + ANSWER_STATUS, status);
    if (reason) {
        memcpy(out + ANSWER_REASON, reason, strnlen(reason, XP_REASON_MAX));
    }
}

bool tcp_wire_unpack_answer(const uint8_t *buf, size_t len, uint32_t *status,
                            char reason[XP_REASON_MAX + 1], GError **error)
{
    if (len != TCP_WIRE_ANSWER_SIZE) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "answer of %zu bytes, expected %u", len,
                    TCP_WIRE_ANSWER_SIZE);
        return false;
    }
    *status = xp_get_le32(buf + ANSWER_STATUS);
    size_t rl = strnlen((const char *)buf + ANSWER_REASON, XP_REASON_MAX);
    memcpy(reason, buf + ANSWER_REASON, rl);
    reason[rl] = '\0';
    return true;
}
