/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TCP backend's framing on the stream, packed and validated only in wire.c (layouts in
 * docs/protocol.md section 2 and 3.2; all integers little endian):
 *   message  [u32 length][length bytes]        length <= XP_MSG_MAX; the payload segments of
 *                                               the same send_msg() follow without framing
 *                                               (the receiver knows their size from the message)
 *   hello    the connector's first message      length <= XP_HELLO_MAX
 *   answer   the acceptor's reply, one message of exactly 124 bytes:
 *            [u32 status][120 bytes reason]     status 0 accepts; reason is NUL-padded and is
 *                                               not NUL-terminated when it is 120 bytes long
 * Pure functions: no sockets, no I/O.
 */
#pragma once

#include "xp.h"

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

#define TCP_WIRE_HDR_SIZE 4u
#define TCP_WIRE_ANSWER_SIZE (4u + XP_REASON_MAX)

void tcp_wire_pack_hdr(uint32_t len, uint8_t hdr[TCP_WIRE_HDR_SIZE]);
/* The length of the frame that starts with hdr: -EMSGSIZE when it exceeds XP_MSG_MAX or cap
 * (the stream position is then lost), else 0. Data path: an errno, no GError. */
int tcp_wire_unpack_hdr(const uint8_t hdr[TCP_WIRE_HDR_SIZE], size_t cap, uint32_t *len);

/* Answer frame body for status and reason (cut at XP_REASON_MAX bytes; NULL: none). */
void tcp_wire_pack_answer(uint32_t status, const char *reason,
                          uint8_t out[TCP_WIRE_ANSWER_SIZE]);
/* Status and NUL-terminated reason of an answer of len bytes; fails unless len is exactly
 * TCP_WIRE_ANSWER_SIZE. */
bool tcp_wire_unpack_answer(const uint8_t *buf, size_t len, uint32_t *status,
                            char reason[XP_REASON_MAX + 1], GError **error);

G_END_DECLS
