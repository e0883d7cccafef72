/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Every byte the RDMA backend itself puts on the wire, beside the engine's messages: the
 * hello framing in the CM connect private data, the reject private data, the immediate data
 * of a SEND (credits) and the region descriptor. Packed and validated only in wire.c, with
 * explicit little-endian fields at named offsets; byte layouts in docs/protocol.md section 14.
 * Pure functions: no verbs, no I/O.
 */
#pragma once

#include "xp.h"

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

/* RC connect private data: always sent whole (protocol.md 14.2). */
#define RDMA_WIRE_PDATA_SIZE XP_HELLO_MAX
/* Hello framing marks, carried in initiator_depth = responder_resources of the connect. */
#define RDMA_WIRE_MARK_TRAILER 1u /* hello_len < 56, stored in the last byte */
#define RDMA_WIRE_MARK_FULL 2u    /* all 56 bytes are hello */

/* Reject private data: u32 status, then up to XP_REASON_MAX bytes of reason. */
#define RDMA_WIRE_REJECT_HDR 4u
#define RDMA_WIRE_REJECT_MAX (RDMA_WIRE_REJECT_HDR + XP_REASON_MAX)

/* Region descriptor: u64 addr, u32 rkey, u32 reserved. */
#define RDMA_WIRE_DESC_SIZE 16u
G_STATIC_ASSERT(RDMA_WIRE_DESC_SIZE == XP_REGION_DESC_SIZE);

/* imm_data of a SEND: credits returned; the flag marks a credit-only (unreported) message. */
#define RDMA_WIRE_IMM_CREDIT_ONLY 0x80000000u
#define RDMA_WIRE_IMM_CREDITS_MASK 0x0000ffffu
#define RDMA_WIRE_IMM_RESERVED (~(RDMA_WIRE_IMM_CREDIT_ONLY | RDMA_WIRE_IMM_CREDITS_MASK))

/* The hello (len <= RDMA_WIRE_PDATA_SIZE) framed into the whole private data, and the mark
 * that must travel with it. */
void xp_rdma_wire_pack_hello(const void *hello, size_t len, uint8_t pdata[RDMA_WIRE_PDATA_SIZE],
                             uint8_t *mark);
/* The hello out of a CONNECT_REQUEST's private data (pdata_len bytes) and mark, into hello
 * (RDMA_WIRE_PDATA_SIZE bytes). Fails with "malformed hello (N bytes of private data, mark
 * M)" when there are fewer than 56 bytes, the mark is unknown, or a trailer length is >= 56. */
bool xp_rdma_wire_unpack_hello(const uint8_t *pdata, size_t pdata_len, unsigned mark, void *hello,
                               size_t *len, GError **error);

/* Reject private data for status and reason (cut at XP_REASON_MAX bytes, no NUL; NULL: none):
 * returns its length. */
size_t xp_rdma_wire_pack_reject(uint32_t status, const char *reason,
                                uint8_t out[RDMA_WIRE_REJECT_MAX]);
/* Status and NUL-terminated reason of a peer's reject. Never fails: a reject is a refusal
 * whatever its data says; with fewer than 4 bytes the status is 0 and the reason empty. */
void xp_rdma_wire_unpack_reject(const uint8_t *pdata, size_t len, uint32_t *status,
                                char reason[XP_REASON_MAX + 1]);

/* Immediate data of a SEND returning `credits` (<= the credits mask), credit-only or not. */
uint32_t xp_rdma_wire_pack_imm(unsigned credits, bool credit_only);
/* Credits and kind of a received SEND's immediate data; false when any of the reserved bits
 * 16-30 (RDMA_WIRE_IMM_RESERVED) is set. Data path: no allocation, no GError. */
bool xp_rdma_wire_unpack_imm(uint32_t imm, unsigned *credits, bool *credit_only);

void xp_rdma_wire_pack_desc(uint64_t addr, uint32_t rkey, uint8_t desc[RDMA_WIRE_DESC_SIZE]);
/* addr and rkey of a descriptor for a region of len bytes: reserved must be 0 and
 * addr + len must not wrap. */
bool xp_rdma_wire_unpack_desc(const uint8_t desc[RDMA_WIRE_DESC_SIZE], uint64_t len,
                              uint64_t *addr, uint32_t *rkey, GError **error);

G_END_DECLS
