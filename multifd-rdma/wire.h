/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Wire protocol v1: host-side structs and the only functions that turn them into bytes and
 * back (wire.c). Every multi-byte field is little-endian on the wire; wire bytes and host
 * structs are different types and nothing is swapped in place. Layouts: docs/protocol.md.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mfrdma.h"

G_BEGIN_DECLS

#define MFR_WIRE_VERSION 1u

#define MFR_HELLO_MAGIC 0x4846524du  /* "MRFH" as LE bytes 4d 52 46 48 */
#define MFR_CTRL_MAGIC 0x4346524du   /* "MRFC" */
#define MFR_PACKET_MAGIC 0x5046524du /* "MRFP" */
#define MFR_RING_MAGIC 0x5246524du   /* "MRFR" */

#define MFR_SESSION_ID_LEN 16u
#define MFR_TOKEN_LEN 16u
#define MFR_BLOCK_NAME_MAX 64u   /* bytes on the wire, NUL-padded, at least one NUL */
#define MFR_ERROR_TEXT_MAX 200u  /* bytes on the wire, NUL-padded */
#define MFR_MAX_BLOCKS 64u
#define MFR_MAX_CHANNELS 64u
#define MFR_MAX_PAGES_PER_PACKET 512u

#define MFR_HELLO_SIZE 48u
#define MFR_CTRL_HDR_SIZE 16u
#define MFR_PACKET_HDR_SIZE 48u
#define MFR_CAPS_SIZE 32u
#define MFR_BLOCK_ANNOUNCE_SIZE 80u  /* per block */
#define MFR_BLOCK_REPLY_SIZE 16u     /* per block: chunk layout (or zeros) */
#define MFR_REGION_SIZE 40u          /* REGION body */
#define MFR_REGION_DESC_SIZE 16u     /* transport region descriptor (XP_REGION_DESC_SIZE) */
#define MFR_SYNC_ACK_SIZE 8u         /* SYNC_ACK body: u64 round */
#define MFR_COMPLETE_HDR_SIZE 16u    /* COMPLETE body without digests (verification off) */
#define MFR_COMPLETE_REPLY_SIZE 8u
#define MFR_RING_MSG_SIZE 40u        /* staging ring messages, destination -> source */
/* At most 16 slots: every slot's CREDIT may sit unread at the source, and 16 stay well below
 * the RDMA receive ring's 31 messages, so a CREDIT never waits for the source to read
 * (docs/protocol.md 14.11: no deadlock). */
#define MFR_RING_MAX_SLOTS 16u
#define MFR_RING_SLOTS 4u      /* what this destination offers */
/* Registration chunks one block may be split into (REGION messages per block). */
#define MFR_MAX_CHUNKS_PER_BLOCK 65536u

/* ---------- hello: first message of every connection ---------- */

typedef enum {
    MFR_ROLE_CONTROL = 1,
    MFR_ROLE_CHANNEL = 2,
} MfrRole;

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint8_t role;  /* MfrRole */
    uint8_t flags; /* none defined in v1: must be 0 */
    uint8_t session_id[MFR_SESSION_ID_LEN];
    uint16_t channel_index; /* 0 for control */
    uint16_t channel_count;
    uint32_t reserved;      /* must be 0 */
    uint8_t token[MFR_TOKEN_LEN];
} MfrHello;

/* ---------- control messages ---------- */

typedef enum {
    MFR_CTRL_CAPS = 1,           /* src->dst: what it supports; dst->src: what was chosen */
    MFR_CTRL_BLOCKS = 2,         /* src->dst: RAM block announce */
    MFR_CTRL_BLOCKS_REPLY = 3,   /* dst->src: accept, with the chunk layout of each block */
    MFR_CTRL_SYNC_ACK = 4,       /* dst->src: every channel reached SYNC of a round */
    MFR_CTRL_COMPLETE = 5,       /* src->dst: migration done, per-block digests */
    MFR_CTRL_COMPLETE_REPLY = 6, /* dst->src: verification outcome */
    MFR_CTRL_ERROR = 7,          /* either: fatal error, code + text */
    MFR_CTRL_CANCEL = 8,         /* src->dst: user cancelled */
    MFR_CTRL_KEEPALIVE = 9,      /* either: liveness, empty body */
    MFR_CTRL_REGION = 10,        /* dst->src: one registered chunk of a block (pipelined) */
    MFR_CTRL_TYPE_MAX = MFR_CTRL_REGION,
} MfrCtrlType;

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t type;    /* MfrCtrlType */
    uint32_t length;  /* body bytes after this 16-byte header */
    uint32_t seq;     /* per direction, starts at 1, +1 per message */
} MfrCtrlHdr;

enum {
    MFR_ZERO_NONE = 1u << 0,   /* every page sent as data */
    MFR_ZERO_DETECT = 1u << 1, /* zero pages sent as offsets only */
};
enum {
    MFR_COMP_NONE = 1u << 0,
    MFR_COMP_ZSTD = 1u << 1,
};

typedef struct {
    uint32_t page_size;          /* bytes, power of two, 4096..1 GiB */
    uint32_t zero_modes;         /* MFR_ZERO_* set (offer) or single bit (choice) */
    uint32_t compression;        /* MFR_COMP_* set (offer) or single bit (choice) */
    uint16_t channels;           /* requested (offer) or granted (choice), 1..MFR_MAX_CHANNELS */
    uint16_t max_channels;       /* sender's own limit */
    uint32_t max_pages_per_packet;
    uint64_t flags;              /* none defined in v1: must be 0 */
    uint32_t reserved;           /* must be 0 */
} MfrCaps;

typedef struct {
    char name[MFR_BLOCK_NAME_MAX]; /* NUL-terminated */
    uint64_t length;               /* bytes, multiple of page_size */
    uint32_t page_size;
    uint32_t flags;                /* none defined in v1: must be 0 */
} MfrBlockInfo;

typedef struct {
    uint32_t code;                     /* MfrErrorCode of the sender (see mfrdma.h) */
    char text[MFR_ERROR_TEXT_MAX];     /* NUL-terminated */
} MfrCtrlError;

enum {
    /* BLOCKS_REPLY: the entries are chunk layouts, not region descriptors; the destination
     * registers the chunks after the reply and sends one REGION per chunk. */
    MFR_REPLY_REGIONS = 1u << 0,
    MFR_REPLY_FLAGS_ALL = MFR_REPLY_REGIONS,
};

/* How a block is cut into registration chunks: chunk c covers [c * chunk_size, (c + 1) *
 * chunk_size) clipped to the block. */
typedef struct {
    uint64_t chunk_size; /* non-zero multiple of the block's page size */
    uint32_t chunks;     /* ceil(block length / chunk_size), 1..MFR_MAX_CHUNKS_PER_BLOCK */
} MfrChunkLayout;

typedef struct {
    uint32_t flags;  /* MFR_REPLY_*: REGIONS from a destination with regions (rdma), 0 else */
    uint32_t count;  /* blocks */
    /* MFR_REPLY_REGIONS: per block, its chunks (without the flag the entries are zero) */
    MfrChunkLayout layout[MFR_MAX_BLOCKS];
} MfrBlocksReply;

/* REGION: chunk `chunk` of block `block` is registered; desc is its transport descriptor. */
typedef struct {
    uint32_t block;
    uint32_t chunk;
    uint64_t offset;  /* chunk * chunk_size */
    uint64_t length;  /* chunk_size, or what is left of the block for the last chunk */
    uint8_t desc[MFR_REGION_DESC_SIZE];
} MfrRegionMsg;

/* What a REGION is validated against: the announced layout and the chunks received so far
 * (they must arrive in order within a block, so a count per block says which). */
typedef struct {
    uint32_t nblocks;
    const uint64_t *block_len;     /* nblocks entries */
    const MfrChunkLayout *layout;  /* nblocks entries */
    const uint32_t *received;      /* nblocks entries: chunks of the block received so far */
} MfrRegionLimits;

typedef struct {
    uint32_t status; /* 0 = every digest matched, 1 = mismatch */
    uint32_t block;  /* first mismatching block (status 1) */
} MfrCompleteReply;

/* ---------- channel packets ---------- */

enum {
    MFR_PACKET_SYNC = 1u << 0,       /* end of round: no pages; round says which */
    MFR_PACKET_COMPRESSED = 1u << 1, /* payload is one zstd frame of the normal pages */
    MFR_PACKET_FLAGS_ALL = MFR_PACKET_SYNC | MFR_PACKET_COMPRESSED,
};

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t flags;         /* MFR_PACKET_* */
    uint64_t packet_num;    /* per channel, starts at 1, +1 per packet */
    uint64_t round;         /* precopy round this packet belongs to (starts at 1) */
    uint32_t block;         /* index in the announced block list */
    uint32_t normal_pages;  /* pages with data */
    uint32_t zero_pages;    /* pages the destination must see as zero */
    uint32_t slot;          /* COMPRESSED on a placed transport: the staging slot the
                             * payload was written to; else 0 */
    uint64_t payload_len;   /* normal_pages * page_size; COMPRESSED: the frame's length */
} MfrPacketHdr;
/* On the wire the header is followed by normal_pages + zero_pages u64 block offsets
 * (normal first), then (stream transports) payload_len bytes of page data, or of the zstd
 * frame that decompresses to them (COMPRESSED). */

/* ---------- staging ring (compressed packets over a placed transport) ----------
 * The only messages a destination sends on a data channel: RING once, first, describing the
 * channel's staging slots; then a CREDIT after each compressed packet it took out of a slot. */
typedef enum {
    MFR_RING_DESC = 1,   /* the ring: slots, slot_size, desc */
    MFR_RING_CREDIT = 2, /* freed: slots taken out so far on this channel, cumulative */
} MfrRingType;

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t type;        /* MfrRingType */
    uint32_t slots;       /* DESC: 1..MFR_RING_MAX_SLOTS; CREDIT: 0 */
    uint32_t slot_size;   /* DESC: bytes per slot; CREDIT: 0 */
    uint64_t freed;       /* CREDIT: slots freed since the channel began; DESC: 0 */
    uint8_t desc[MFR_REGION_DESC_SIZE]; /* DESC: the ring's region; CREDIT: zeros */
} MfrRingMsg;

/* What the receiver validates a packet against. */
typedef struct {
    uint32_t nblocks;
    const uint64_t *block_len; /* nblocks entries */
    uint32_t page_size;
    uint32_t max_pages;        /* negotiated max_pages_per_packet */
    uint64_t expect_packet_num;
    uint64_t expect_round;     /* a page packet's round must equal it; SYNC too */
    bool compressed;           /* zstd negotiated: COMPRESSED packets are allowed */
    uint32_t slots;            /* staging slots of a placed transport; 0: stream */
} MfrPacketLimits;

/* ---------- pack / unpack ----------
 * pack_*() write exactly *_SIZE bytes (or the returned size) into buf and cannot fail for a
 * well-formed host struct. unpack_*() validate every field and fail with MFR_ERROR /
 * MFR_ERROR_PROTOCOL and a message naming the field, its value and the limit. */

void mfr_wire_pack_hello(const MfrHello *h, uint8_t buf[MFR_HELLO_SIZE]);
bool mfr_wire_unpack_hello(const uint8_t *buf, size_t len, MfrHello *h, GError **error);

void mfr_wire_pack_ctrl_hdr(const MfrCtrlHdr *h, uint8_t buf[MFR_CTRL_HDR_SIZE]);
/* Checks magic, version, known type and that length == len - MFR_CTRL_HDR_SIZE. */
bool mfr_wire_unpack_ctrl_hdr(const uint8_t *buf, size_t len, MfrCtrlHdr *h, GError **error);

void mfr_wire_pack_caps(const MfrCaps *c, uint8_t buf[MFR_CAPS_SIZE]);
bool mfr_wire_unpack_caps(const uint8_t *buf, size_t len, MfrCaps *c, GError **error);

/* Body: u32 count, u32 reserved, then count * 80-byte entries. Returns bytes written or 0 if
 * cap is too small. */
size_t mfr_wire_pack_blocks(const MfrBlockInfo *b, uint32_t count, uint8_t *buf, size_t cap);
/* out must hold MFR_MAX_BLOCKS entries. Validates names (non-empty, NUL-terminated, printable),
 * page size (power of two) and length (non-zero multiple of page size). */
bool mfr_wire_unpack_blocks(const uint8_t *buf, size_t len, MfrBlockInfo *out,
                            uint32_t *count, GError **error);

/* The one rule for a RAM block (mfrdma.h, MfrRamBlock), for mfr_source_new(),
 * mfr_dest_add_block(), alloc_block() and the wire's BLOCKS: name 1..63 printable ASCII
 * bytes, page size a power of two in 4096..2^30, length a non-zero multiple of the page size
 * and, with_host (memory of this process, not an announce), host non-NULL and 4096-byte
 * aligned. MFR_ERROR_USAGE; the message starts with "name ..." or "'NAME' ..." for the
 * caller to prefix with the side and the block's index. */
bool mfr_ram_block_check(const MfrRamBlock *b, bool with_host, GError **error);

/* Body: u32 count, u32 flags, then count * 16-byte entries: chunk layouts (u64 chunk_size,
 * u32 chunks, u32 reserved; MFR_REPLY_REGIONS) or 16 zero bytes (flags 0). */
size_t mfr_wire_pack_blocks_reply(const MfrBlocksReply *r, uint8_t *buf, size_t cap);
/* blocks: the announced list (count entries), which every chunk layout must fit. */
bool mfr_wire_unpack_blocks_reply(const uint8_t *buf, size_t len, const MfrBlockInfo *blocks,
                                  uint32_t count, MfrBlocksReply *r, GError **error);
/* Chunk count of a block of len bytes cut into chunk_size pieces (chunk_size != 0). */
uint64_t mfr_chunk_count(uint64_t len, uint64_t chunk_size);

/* Body: u32 block, u32 chunk, u64 offset, u64 length, 16-byte descriptor = 40 bytes. */
void mfr_wire_pack_region(const MfrRegionMsg *m, uint8_t buf[MFR_REGION_SIZE]);
/* Checks block index, chunk index, order (the next chunk of its block: a duplicate or a
 * skipped chunk is refused) and that offset and length are the layout's. */
bool mfr_wire_unpack_region(const uint8_t *buf, size_t len, const MfrRegionLimits *lim,
                            MfrRegionMsg *m, GError **error);

/* Body: u64 round. */
void mfr_wire_pack_u64(uint64_t v, uint8_t buf[MFR_SYNC_ACK_SIZE]);
bool mfr_wire_unpack_u64(const uint8_t *buf, size_t len, uint64_t *v, GError **error);

/* Body: u32 count, u32 reserved, u64 final round, count * u64 digests. */
size_t mfr_wire_pack_complete(uint64_t round, const uint64_t *digest, uint32_t count,
                              uint8_t *buf, size_t cap);
bool mfr_wire_unpack_complete(const uint8_t *buf, size_t len, uint32_t expect_count,
                              uint64_t *round, uint64_t *digest, GError **error);

void mfr_wire_pack_complete_reply(const MfrCompleteReply *r,
                                  uint8_t buf[MFR_COMPLETE_REPLY_SIZE]);
bool mfr_wire_unpack_complete_reply(const uint8_t *buf, size_t len, uint32_t nblocks,
                                    MfrCompleteReply *r, GError **error);

/* Body: u32 code, then 200 bytes of NUL-padded text = 204 bytes. */
#define MFR_CTRL_ERROR_SIZE (4u + MFR_ERROR_TEXT_MAX)
void mfr_wire_pack_error(const MfrCtrlError *e, uint8_t buf[MFR_CTRL_ERROR_SIZE]);
bool mfr_wire_unpack_error(const uint8_t *buf, size_t len, MfrCtrlError *e, GError **error);

void mfr_wire_pack_ring(const MfrRingMsg *m, uint8_t buf[MFR_RING_MSG_SIZE]);
/* Checks magic, version, that the type is expect, and its fields: DESC: slots 1..
 * MFR_RING_MAX_SLOTS, min_slot <= slot_size <= max_slot; CREDIT: min_freed <= freed <= max_freed
 * (cumulative: never backwards, never more than were used). */
bool mfr_wire_unpack_ring(const uint8_t *buf, size_t len, MfrRingType expect, uint64_t min_a,
                          uint64_t max_a, MfrRingMsg *m, GError **error);

/* Header + offsets as one message. Returns bytes written, 0 if cap is too small. */
size_t mfr_wire_pack_packet(const MfrPacketHdr *h, const uint64_t *offsets, uint8_t *buf,
                            size_t cap);
/* Validates the header and every offset against lim (known flags, packet number and round as
 * expected, block index, counts <= max_pages, message length, payload_len, alignment and
 * offset + page_size <= block length; COMPRESSED: negotiated, raw size <= MFR_COMP_MAX_RAW,
 * 1 <= payload_len <= mfr_comp_bound(raw), slot < lim->slots). offsets must hold
 * lim->max_pages entries. */
bool mfr_wire_unpack_packet(const uint8_t *buf, size_t len, const MfrPacketLimits *lim,
                            MfrPacketHdr *h, uint64_t *offsets, GError **error);

G_END_DECLS
