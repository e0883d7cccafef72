/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Wire protocol v1: the only code that turns host structs into wire bytes and back.
 * Every field is written and read with explicit little-endian byte helpers at a named
 * offset (the same offsets as the tables in docs/protocol.md), never by casting a buffer to
 * a struct, so alignment, padding and host byte order cannot leak onto the wire. Every
 * unpack validates every field before the caller can use it: this is the trust boundary.
 */
#include "wire.h"

#include "compress.h"

#include <stdarg.h>
#include <string.h>

#include "mfrdma.h"

/* ---------- byte helpers ---------- */

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32);
}

/* Formats the protocol error; always returns false so callers can `return fail(...)`.
 * Nothing is formatted for a caller that wants no message (a probe, or a fuzzer refusing
 * millions of inputs). */
G_GNUC_PRINTF(2, 3)
static bool fail(GError **error, const char *fmt, ...)
{
    va_list ap;

    if (!error) {
        return false;
    }
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, MFR_ERROR, MFR_ERROR_PROTOCOL, msg);
    return false;
}

static bool check_len(const char *what, size_t len, size_t want, GError **error)
{
    if (len != want) {
        return fail(error, "%s: message length %zu, expected %zu", what, len, want);
    }
    return true;
}

static bool check_magic_version(const char *what, uint32_t magic, uint32_t want_magic,
                                uint16_t version, GError **error)
{
    if (magic != want_magic) {
        return fail(error, "%s: magic 0x%08x, expected 0x%08x", what, magic, want_magic);
    }
    if (version != MFR_WIRE_VERSION) {
        return fail(error, "%s: version %u, only version %u is supported", what, version,
                    MFR_WIRE_VERSION);
    }
    return true;
}

#define PAGE_SIZE_MIN 4096u
#define PAGE_SIZE_MAX (1u << 30)

static bool page_size_ok(uint32_t ps)
{
    return ps >= PAGE_SIZE_MIN && ps <= PAGE_SIZE_MAX && (ps & (ps - 1)) == 0;
}

/* Copies a NUL-terminated string into a fixed, NUL-padded wire field (truncating so that
 * at least one NUL remains). */
static void put_text(uint8_t *p, size_t field, const char *s)
{
    size_t n = s ? strnlen(s, field - 1) : 0;

    memcpy(p, s, n);
    memset(p + n, 0, field - n);
}

/* ---------- hello ---------- */

enum {
    HELLO_MAGIC = 0,
    HELLO_VERSION = 4,
    HELLO_ROLE = 6,
    HELLO_FLAGS = 7,
    HELLO_SESSION = 8,
    HELLO_INDEX = 24,
    HELLO_COUNT = 26,
    HELLO_RESERVED = 28,
    HELLO_TOKEN = 32,
};
G_STATIC_ASSERT(HELLO_TOKEN + MFR_TOKEN_LEN == MFR_HELLO_SIZE);

void mfr_wire_pack_hello(const MfrHello *h, uint8_t buf[MFR_HELLO_SIZE])
{
    put_u32(buf + HELLO_MAGIC, h->magic);
    put_u16(buf + HELLO_VERSION, h->version);
    buf[HELLO_ROLE] = h->role;
    buf[HELLO_FLAGS] = h->flags;
    memcpy(buf + HELLO_SESSION, h->session_id, MFR_SESSION_ID_LEN);
    put_u16(buf + HELLO_INDEX, h->channel_index);
    put_u16(buf + HELLO_COUNT, h->channel_count);
    put_u32(buf + HELLO_RESERVED, h->reserved);
    memcpy(buf + HELLO_TOKEN, h->token, MFR_TOKEN_LEN);
}

bool mfr_wire_unpack_hello(const uint8_t *buf, size_t len, MfrHello *h, GError **error)
{
    MfrHello v;

    if (!check_len("hello", len, MFR_HELLO_SIZE, error)) {
        return false;
    }
    v.magic = get_u32(buf + HELLO_MAGIC);
    v.version = get_u16(buf + HELLO_VERSION);
    v.role = buf[HELLO_ROLE];
    v.flags = buf[HELLO_FLAGS];
    memcpy(v.session_id, buf + HELLO_SESSION, MFR_SESSION_ID_LEN);
    v.channel_index = get_u16(buf + HELLO_INDEX);
    v.channel_count = get_u16(buf + HELLO_COUNT);
    v.reserved = get_u32(buf + HELLO_RESERVED);
    memcpy(v.token, buf + HELLO_TOKEN, MFR_TOKEN_LEN);

    if (!check_magic_version("hello", v.magic, MFR_HELLO_MAGIC, v.version, error)) {
        return false;
    }
    if (v.flags != 0) {
        return fail(error, "hello: flags 0x%02x, must be 0 in version 1", v.flags);
    }
    if (v.reserved != 0) {
        return fail(error, "hello: reserved 0x%08x, must be 0", v.reserved);
    }
    switch (v.role) {
    case MFR_ROLE_CONTROL:
        if (v.channel_index != 0) {
            return fail(error, "hello: channel index %u on a control connection, must be 0",
                        v.channel_index);
        }
        if (v.channel_count > MFR_MAX_CHANNELS) {
            return fail(error, "hello: channel count %u above the limit %u", v.channel_count,
                        MFR_MAX_CHANNELS);
        }
        break;
    case MFR_ROLE_CHANNEL:
        if (v.channel_count < 1 || v.channel_count > MFR_MAX_CHANNELS) {
            return fail(error, "hello: channel count %u outside 1..%u", v.channel_count,
                        MFR_MAX_CHANNELS);
        }
        if (v.channel_index >= v.channel_count) {
            return fail(error, "hello: channel index %u not below channel count %u",
                        v.channel_index, v.channel_count);
        }
        break;
    default:
        return fail(error, "hello: role %u, expected %u (control) or %u (channel)", v.role,
                    MFR_ROLE_CONTROL, MFR_ROLE_CHANNEL);
    }
    *h = v;
    return true;
}

/* ---------- control header ---------- */

enum {
    CTRL_MAGIC = 0,
    CTRL_VERSION = 4,
    CTRL_TYPE = 6,
    CTRL_LENGTH = 8,
    CTRL_SEQ = 12,
};
G_STATIC_ASSERT(CTRL_SEQ + 4 == MFR_CTRL_HDR_SIZE);

static const char *const ctrl_type_name[] = {
    [MFR_CTRL_CAPS] = "CAPS",
    [MFR_CTRL_BLOCKS] = "BLOCKS",
    [MFR_CTRL_BLOCKS_REPLY] = "BLOCKS_REPLY",
    [MFR_CTRL_SYNC_ACK] = "SYNC_ACK",
    [MFR_CTRL_COMPLETE] = "COMPLETE",
    [MFR_CTRL_COMPLETE_REPLY] = "COMPLETE_REPLY",
    [MFR_CTRL_ERROR] = "ERROR",
    [MFR_CTRL_CANCEL] = "CANCEL",
    [MFR_CTRL_KEEPALIVE] = "KEEPALIVE",
    [MFR_CTRL_REGION] = "REGION",
};

/* Smallest and largest legal body of each type, so a peer cannot announce a body the
 * type could never have (the body's own unpack checks the exact size). */
static void ctrl_body_range(uint16_t type, uint32_t *min, uint32_t *max)
{
    switch (type) {
    case MFR_CTRL_CAPS:
        *min = *max = MFR_CAPS_SIZE;
        break;
    case MFR_CTRL_BLOCKS:
        *min = 8 + MFR_BLOCK_ANNOUNCE_SIZE;
        *max = 8 + MFR_MAX_BLOCKS * MFR_BLOCK_ANNOUNCE_SIZE;
        break;
    case MFR_CTRL_BLOCKS_REPLY:
        *min = 8 + MFR_BLOCK_REPLY_SIZE;
        *max = 8 + MFR_MAX_BLOCKS * MFR_BLOCK_REPLY_SIZE;
        break;
    case MFR_CTRL_SYNC_ACK:
    case MFR_CTRL_COMPLETE_REPLY:
        *min = *max = 8;
        break;
    case MFR_CTRL_COMPLETE:
        *min = 16; /* count 0: verification off, no digests */
        *max = 16 + MFR_MAX_BLOCKS * 8;
        break;
    case MFR_CTRL_ERROR:
        *min = *max = MFR_CTRL_ERROR_SIZE;
        break;
    case MFR_CTRL_REGION:
        *min = *max = MFR_REGION_SIZE;
        break;
    default: /* CANCEL, KEEPALIVE */
        *min = *max = 0;
        break;
    }
}

void mfr_wire_pack_ctrl_hdr(const MfrCtrlHdr *h, uint8_t buf[MFR_CTRL_HDR_SIZE])
{
    put_u32(buf + CTRL_MAGIC, h->magic);
    put_u16(buf + CTRL_VERSION, h->version);
    put_u16(buf + CTRL_TYPE, h->type);
    put_u32(buf + CTRL_LENGTH, h->length);
    put_u32(buf + CTRL_SEQ, h->seq);
}

bool mfr_wire_unpack_ctrl_hdr(const uint8_t *buf, size_t len, MfrCtrlHdr *h, GError **error)
{
    MfrCtrlHdr v;
    uint32_t min, max;

    if (len < MFR_CTRL_HDR_SIZE) {
        return fail(error, "control header: message length %zu below header size %u", len,
                    MFR_CTRL_HDR_SIZE);
    }
    v.magic = get_u32(buf + CTRL_MAGIC);
    v.version = get_u16(buf + CTRL_VERSION);
    v.type = get_u16(buf + CTRL_TYPE);
    v.length = get_u32(buf + CTRL_LENGTH);
    v.seq = get_u32(buf + CTRL_SEQ);

    if (!check_magic_version("control header", v.magic, MFR_CTRL_MAGIC, v.version, error)) {
        return false;
    }
    if (v.type < MFR_CTRL_CAPS || v.type > MFR_CTRL_TYPE_MAX) {
        return fail(error, "control header: type %u outside 1..%u", v.type,
                    MFR_CTRL_TYPE_MAX);
    }
    if (v.length != len - MFR_CTRL_HDR_SIZE) {
        return fail(error, "control header: %s length %u, but %zu body bytes follow",
                    ctrl_type_name[v.type], v.length, len - MFR_CTRL_HDR_SIZE);
    }
    ctrl_body_range(v.type, &min, &max);
    if (v.length < min || v.length > max) {
        return fail(error, "control header: %s length %u outside %u..%u",
                    ctrl_type_name[v.type], v.length, min, max);
    }
    if (v.seq == 0) {
        return fail(error, "control header: %s seq 0, sequence numbers start at 1",
                    ctrl_type_name[v.type]);
    }
    *h = v;
    return true;
}

/* ---------- caps ---------- */

enum {
    CAPS_PAGE_SIZE = 0,
    CAPS_ZERO_MODES = 4,
    CAPS_COMPRESSION = 8,
    CAPS_CHANNELS = 12,
    CAPS_MAX_CHANNELS = 14,
    CAPS_MAX_PAGES = 16,
    CAPS_FLAGS = 20,
    CAPS_RESERVED = 28,
};
G_STATIC_ASSERT(CAPS_RESERVED + 4 == MFR_CAPS_SIZE);

#define ZERO_MODES_ALL (MFR_ZERO_NONE | MFR_ZERO_DETECT)
#define COMP_ALL (MFR_COMP_NONE | MFR_COMP_ZSTD)

void mfr_wire_pack_caps(const MfrCaps *c, uint8_t buf[MFR_CAPS_SIZE])
{
    put_u32(buf + CAPS_PAGE_SIZE, c->page_size);
    put_u32(buf + CAPS_ZERO_MODES, c->zero_modes);
    put_u32(buf + CAPS_COMPRESSION, c->compression);
    put_u16(buf + CAPS_CHANNELS, c->channels);
    put_u16(buf + CAPS_MAX_CHANNELS, c->max_channels);
    put_u32(buf + CAPS_MAX_PAGES, c->max_pages_per_packet);
    put_u64(buf + CAPS_FLAGS, c->flags);
    put_u32(buf + CAPS_RESERVED, c->reserved);
}

bool mfr_wire_unpack_caps(const uint8_t *buf, size_t len, MfrCaps *c, GError **error)
{
    MfrCaps v;

    if (!check_len("caps", len, MFR_CAPS_SIZE, error)) {
        return false;
    }
    v.page_size = get_u32(buf + CAPS_PAGE_SIZE);
    v.zero_modes = get_u32(buf + CAPS_ZERO_MODES);
    v.compression = get_u32(buf + CAPS_COMPRESSION);
    v.channels = get_u16(buf + CAPS_CHANNELS);
    v.max_channels = get_u16(buf + CAPS_MAX_CHANNELS);
    v.max_pages_per_packet = get_u32(buf + CAPS_MAX_PAGES);
    v.flags = get_u64(buf + CAPS_FLAGS);
    v.reserved = get_u32(buf + CAPS_RESERVED);

    if (!page_size_ok(v.page_size)) {
        return fail(error, "caps: page size %u is not a power of two in %u..%u", v.page_size,
                    PAGE_SIZE_MIN, PAGE_SIZE_MAX);
    }
    if (v.zero_modes == 0 || (v.zero_modes & ~ZERO_MODES_ALL)) {
        return fail(error, "caps: zero modes 0x%x, must be a non-empty subset of 0x%x",
                    v.zero_modes, ZERO_MODES_ALL);
    }
    if (v.compression == 0 || (v.compression & ~COMP_ALL)) {
        return fail(error, "caps: compression 0x%x, must be a non-empty subset of 0x%x",
                    v.compression, COMP_ALL);
    }
    if (v.max_channels < 1 || v.max_channels > MFR_MAX_CHANNELS) {
        return fail(error, "caps: max channels %u outside 1..%u", v.max_channels,
                    MFR_MAX_CHANNELS);
    }
    if (v.channels < 1 || v.channels > v.max_channels) {
        return fail(error, "caps: channels %u outside 1..%u (max channels)", v.channels,
                    v.max_channels);
    }
    if (v.max_pages_per_packet < 1 || v.max_pages_per_packet > MFR_MAX_PAGES_PER_PACKET) {
        return fail(error, "caps: max pages per packet %u outside 1..%u",
                    v.max_pages_per_packet, MFR_MAX_PAGES_PER_PACKET);
    }
    if (v.flags != 0) {
        return fail(error, "caps: flags 0x%" G_GINT64_MODIFIER "x, must be 0 in version 1",
                    v.flags);
    }
    if (v.reserved != 0) {
        return fail(error, "caps: reserved 0x%08x, must be 0", v.reserved);
    }
    *c = v;
    return true;
}

/* ---------- blocks ---------- */

enum {
    LIST_COUNT = 0,
    LIST_RESERVED = 4,
    LIST_ENTRIES = 8,
};
enum {
    BLOCK_NAME = 0,
    BLOCK_LENGTH = 64,
    BLOCK_PAGE_SIZE = 72,
    BLOCK_FLAGS = 76,
};
G_STATIC_ASSERT(BLOCK_NAME + MFR_BLOCK_NAME_MAX == BLOCK_LENGTH);
G_STATIC_ASSERT(BLOCK_FLAGS + 4 == MFR_BLOCK_ANNOUNCE_SIZE);

/* Common prefix of the three list bodies (BLOCKS, BLOCKS_REPLY, COMPLETE): the count must be
 * in min_count..MFR_MAX_BLOCKS and the length must be exactly header + count entries.
 * Checked in this order so the multiplication cannot overflow. The word after the count is
 * reserved (must be 0), or with flags_known != 0 a flags word with those bits defined. */
static bool unpack_list_head(const char *what, const uint8_t *buf, size_t len, size_t head,
                             size_t entry, uint32_t min_count, uint32_t *count,
                             uint32_t flags_known, uint32_t *flags, GError **error)
{
    uint32_t n, reserved;

    if (len < head) {
        return fail(error, "%s: message length %zu below the %zu-byte list header", what, len,
                    head);
    }
    n = get_u32(buf + LIST_COUNT);
    reserved = get_u32(buf + LIST_RESERVED);
    if (n < min_count || n > MFR_MAX_BLOCKS) {
        return fail(error, "%s: block count %u outside %u..%u", what, n, min_count,
                    MFR_MAX_BLOCKS);
    }
    if (flags_known && (reserved & ~flags_known)) {
        return fail(error, "%s: flags 0x%08x has bits outside the known 0x%08x", what,
                    reserved, flags_known);
    }
    if (!flags_known && reserved != 0) {
        return fail(error, "%s: reserved 0x%08x, must be 0", what, reserved);
    }
    if (len != head + (size_t)n * entry) {
        return fail(error, "%s: message length %zu, expected %zu for %u blocks", what, len,
                    head + (size_t)n * entry, n);
    }
    *count = n;
    if (flags) {
        *flags = reserved;
    }
    return true;
}

size_t mfr_wire_pack_blocks(const MfrBlockInfo *b, uint32_t count, uint8_t *buf, size_t cap)
{
    size_t need = LIST_ENTRIES + (size_t)count * MFR_BLOCK_ANNOUNCE_SIZE;

    if (count > MFR_MAX_BLOCKS || cap < need) {
        return 0;
    }
    put_u32(buf + LIST_COUNT, count);
    put_u32(buf + LIST_RESERVED, 0);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *e = buf + LIST_ENTRIES + (size_t)i * MFR_BLOCK_ANNOUNCE_SIZE;

        put_text(e + BLOCK_NAME, MFR_BLOCK_NAME_MAX, b[i].name);
        put_u64(e + BLOCK_LENGTH, b[i].length);
        put_u32(e + BLOCK_PAGE_SIZE, b[i].page_size);
        put_u32(e + BLOCK_FLAGS, b[i].flags);
    }
    return need;
}

/* ---------- RAM blocks: one rule for the client's and the announced ---------- */

static bool block_name_check(const char *name, GError **error)
{
    if (!name) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "name is missing");
        return false;
    }
    size_t n = strnlen(name, MFR_BLOCK_NAME_MAX);
    if (n == 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "name is empty");
        return false;
    }
    if (n == MFR_BLOCK_NAME_MAX) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "name is longer than %u bytes",
                    MFR_BLOCK_NAME_MAX - 1);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!g_ascii_isprint(name[i])) {
            g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                        "name byte %zu is 0x%02x, not printable ASCII", i, (uint8_t)name[i]);
            return false;
        }
    }
    return true;
}

bool mfr_ram_block_check(const MfrRamBlock *b, bool with_host, GError **error)
{
    if (!block_name_check(b->name, error)) {
        return false;
    }
    uint32_t ps = b->page_size;
    if (!page_size_ok(ps)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "'%s' page size %u is not a power of two in %u..%u", b->name, ps,
                    PAGE_SIZE_MIN, PAGE_SIZE_MAX);
        return false;
    }
    if (b->length == 0 || (b->length & (ps - 1)) != 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "'%s' length 0x%" G_GINT64_MODIFIER "x is not a non-zero multiple of its "
                    "page size 0x%x", b->name, b->length, ps);
        return false;
    }
    if (with_host && !b->host) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "'%s' has no memory (host is NULL)",
                    b->name);
        return false;
    }
    /* The smallest page, not page_size: what registration and zero pages need, and what
     * any mmap() returns; a huge-page block's own alignment is the client's business. */
    if (with_host && (uintptr_t)b->host % PAGE_SIZE_MIN != 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "'%s' host address %p is not %u-byte aligned", b->name, b->host,
                    PAGE_SIZE_MIN);
        return false;
    }
    return true;
}

/* A name field: NUL-terminated within the field (what the name itself may hold is
 * mfr_ram_block_check()'s). */
static bool unpack_name(const uint8_t *p, uint32_t idx, char *out, GError **error)
{
    if (strnlen((const char *)p, MFR_BLOCK_NAME_MAX) == MFR_BLOCK_NAME_MAX) {
        return fail(error, "blocks: block %u name is not NUL-terminated within %u bytes", idx,
                    MFR_BLOCK_NAME_MAX);
    }
    memcpy(out, p, MFR_BLOCK_NAME_MAX);
    return true;
}

/* ... then NUL padding to the field's end: no bytes hide behind the name. */
static bool check_name_padding(const uint8_t *p, uint32_t idx, GError **error)
{
    for (size_t i = strlen((const char *)p); i < MFR_BLOCK_NAME_MAX; i++) {
        if (p[i] != 0) {
            return fail(error, "blocks: block %u name padding byte %zu is 0x%02x, must be 0",
                        idx, i, p[i]);
        }
    }
    return true;
}

bool mfr_wire_unpack_blocks(const uint8_t *buf, size_t len, MfrBlockInfo *out,
                            uint32_t *count, GError **error)
{
    uint32_t n;

    if (!unpack_list_head("blocks", buf, len, LIST_ENTRIES, MFR_BLOCK_ANNOUNCE_SIZE, 1, &n,
                          0, NULL, error)) {
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = buf + LIST_ENTRIES + (size_t)i * MFR_BLOCK_ANNOUNCE_SIZE;
        MfrBlockInfo *b = &out[i];

        if (!unpack_name(e + BLOCK_NAME, i, b->name, error)) {
            return false;
        }
        b->length = get_u64(e + BLOCK_LENGTH);
        b->page_size = get_u32(e + BLOCK_PAGE_SIZE);
        b->flags = get_u32(e + BLOCK_FLAGS);
        MfrRamBlock rb = { .name = b->name, .length = b->length, .page_size = b->page_size };
        g_autoptr(GError) berr = NULL;
        if (!mfr_ram_block_check(&rb, false, &berr)) {
            return fail(error, "blocks: block %u %s", i, berr->message);
        }
        if (!check_name_padding(e + BLOCK_NAME, i, error)) {
            return false;
        }
        if (b->flags != 0) {
            return fail(error, "blocks: block %u '%s' flags 0x%x, must be 0 in version 1", i,
                        b->name, b->flags);
        }
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(out[j].name, b->name) == 0) {
                return fail(error, "blocks: block %u name '%s' duplicates block %u", i,
                            b->name, j);
            }
        }
    }
    *count = n;
    return true;
}

/* chunk layout entry of BLOCKS_REPLY with MFR_REPLY_REGIONS */
enum {
    LAYOUT_CHUNK_SIZE = 0,
    LAYOUT_CHUNKS = 8,
    LAYOUT_RESERVED = 12,
};
G_STATIC_ASSERT(LAYOUT_RESERVED + 4 == MFR_BLOCK_REPLY_SIZE);

uint64_t mfr_chunk_count(uint64_t len, uint64_t chunk_size)
{
    /* not (len + chunk_size - 1) / chunk_size: that could wrap */
    return len / chunk_size + (len % chunk_size != 0);
}

size_t mfr_wire_pack_blocks_reply(const MfrBlocksReply *r, uint8_t *buf, size_t cap)
{
    size_t need = LIST_ENTRIES + (size_t)r->count * MFR_BLOCK_REPLY_SIZE;

    if (r->count > MFR_MAX_BLOCKS || cap < need) {
        return 0;
    }
    put_u32(buf + LIST_COUNT, r->count);
    put_u32(buf + LIST_RESERVED, r->flags);
    for (uint32_t i = 0; i < r->count; i++) {
        uint8_t *e = buf + LIST_ENTRIES + (size_t)i * MFR_BLOCK_REPLY_SIZE;

        if (r->flags & MFR_REPLY_REGIONS) {
            put_u64(e + LAYOUT_CHUNK_SIZE, r->layout[i].chunk_size);
            put_u32(e + LAYOUT_CHUNKS, r->layout[i].chunks);
            put_u32(e + LAYOUT_RESERVED, 0);
        } else {
            memset(e, 0, MFR_BLOCK_REPLY_SIZE);
        }
    }
    return need;
}

bool mfr_wire_unpack_blocks_reply(const uint8_t *buf, size_t len, const MfrBlockInfo *blocks,
                                  uint32_t count, MfrBlocksReply *r, GError **error)
{
    uint32_t n, flags;
    MfrChunkLayout layout[MFR_MAX_BLOCKS];

    if (!unpack_list_head("blocks reply", buf, len, LIST_ENTRIES, MFR_BLOCK_REPLY_SIZE, 1,
                          &n, MFR_REPLY_FLAGS_ALL, &flags, error)) {
        return false;
    }
    if (n != count) {
        return fail(error, "blocks reply: block count %u, but %u blocks were announced", n,
                    count);
    }
    for (uint32_t i = 0; !(flags & MFR_REPLY_REGIONS) && i < n; i++) {
        const uint8_t *e = buf + LIST_ENTRIES + (size_t)i * MFR_BLOCK_REPLY_SIZE;

        /* whole-block region descriptors were never sent since pipelined registration */
        for (unsigned k = 0; k < MFR_BLOCK_REPLY_SIZE; k++) {
            if (e[k] != 0) {
                return fail(error, "blocks reply: block %u entry byte %u is 0x%02x, must be 0 "
                            "without flag REGIONS", i, k, e[k]);
            }
        }
    }
    for (uint32_t i = 0; (flags & MFR_REPLY_REGIONS) && i < n; i++) {
        const uint8_t *e = buf + LIST_ENTRIES + (size_t)i * MFR_BLOCK_REPLY_SIZE;
        uint64_t cs = get_u64(e + LAYOUT_CHUNK_SIZE);
        uint32_t chunks = get_u32(e + LAYOUT_CHUNKS);
        uint32_t reserved = get_u32(e + LAYOUT_RESERVED);
        uint64_t want;

        if (cs == 0 || (cs & (blocks[i].page_size - 1)) != 0) {
            return fail(error, "blocks reply: block %u chunk size 0x%" G_GINT64_MODIFIER "x is "
                        "not a non-zero multiple of its page size 0x%x", i, cs,
                        blocks[i].page_size);
        }
        want = mfr_chunk_count(blocks[i].length, cs);
        if (want > MFR_MAX_CHUNKS_PER_BLOCK) {
            return fail(error, "blocks reply: block %u chunk size 0x%" G_GINT64_MODIFIER "x "
                        "makes %" G_GUINT64_FORMAT " chunks, above the limit %u", i, cs, want,
                        MFR_MAX_CHUNKS_PER_BLOCK);
        }
        if (chunks != want) {
            return fail(error, "blocks reply: block %u has %u chunks, expected %"
                        G_GUINT64_FORMAT " for length 0x%" G_GINT64_MODIFIER "x in chunks of "
                        "0x%" G_GINT64_MODIFIER "x", i, chunks, want, blocks[i].length, cs);
        }
        if (reserved != 0) {
            return fail(error, "blocks reply: block %u layout reserved 0x%08x, must be 0", i,
                        reserved);
        }
        layout[i] = (MfrChunkLayout){ .chunk_size = cs, .chunks = chunks };
    }
    r->flags = flags;
    r->count = n;
    if (flags & MFR_REPLY_REGIONS) {
        memcpy(r->layout, layout, (size_t)n * sizeof(layout[0]));
    }
    return true;
}

/* ---------- region ---------- */

enum {
    REGION_BLOCK = 0,
    REGION_CHUNK = 4,
    REGION_OFFSET = 8,
    REGION_LENGTH = 16,
    REGION_DESC = 24,
};
G_STATIC_ASSERT(REGION_DESC + 16 == MFR_REGION_SIZE);

void mfr_wire_pack_region(const MfrRegionMsg *m, uint8_t buf[MFR_REGION_SIZE])
{
    put_u32(buf + REGION_BLOCK, m->block);
    put_u32(buf + REGION_CHUNK, m->chunk);
    put_u64(buf + REGION_OFFSET, m->offset);
    put_u64(buf + REGION_LENGTH, m->length);
    memcpy(buf + REGION_DESC, m->desc, 16);
}

bool mfr_wire_unpack_region(const uint8_t *buf, size_t len, const MfrRegionLimits *lim,
                            MfrRegionMsg *m, GError **error)
{
    MfrRegionMsg v;
    const MfrChunkLayout *l;
    uint64_t want_off, want_len;

    if (!check_len("region", len, MFR_REGION_SIZE, error)) {
        return false;
    }
    v.block = get_u32(buf + REGION_BLOCK);
    v.chunk = get_u32(buf + REGION_CHUNK);
    v.offset = get_u64(buf + REGION_OFFSET);
    v.length = get_u64(buf + REGION_LENGTH);
    memcpy(v.desc, buf + REGION_DESC, 16);

    if (v.block >= lim->nblocks) {
        return fail(error, "region: block %u not below block count %u", v.block, lim->nblocks);
    }
    l = &lim->layout[v.block];
    if (v.chunk >= l->chunks) {
        return fail(error, "region: chunk %u of block %u not below its %u chunks", v.chunk,
                    v.block, l->chunks);
    }
    if (v.chunk < lim->received[v.block]) {
        return fail(error, "region: chunk %u of block %u received twice", v.chunk, v.block);
    }
    if (v.chunk > lim->received[v.block]) {
        return fail(error, "region: chunk %u of block %u out of order, expected chunk %u",
                    v.chunk, v.block, lim->received[v.block]);
    }
    /* chunk < chunks = ceil(length / chunk_size): the product is below the block length */
    want_off = (uint64_t)v.chunk * l->chunk_size;
    want_len = MIN(l->chunk_size, lim->block_len[v.block] - want_off);
    if (v.offset != want_off) {
        return fail(error, "region: chunk %u of block %u at offset 0x%" G_GINT64_MODIFIER "x, "
                    "expected 0x%" G_GINT64_MODIFIER "x", v.chunk, v.block, v.offset, want_off);
    }
    if (v.length != want_len) {
        return fail(error, "region: chunk %u of block %u length 0x%" G_GINT64_MODIFIER "x, "
                    "expected 0x%" G_GINT64_MODIFIER "x", v.chunk, v.block, v.length, want_len);
    }
    *m = v;
    return true;
}

/* ---------- u64 body (SYNC_ACK) ---------- */

void mfr_wire_pack_u64(uint64_t v, uint8_t buf[MFR_SYNC_ACK_SIZE])
{
    put_u64(buf, v);
}

bool mfr_wire_unpack_u64(const uint8_t *buf, size_t len, uint64_t *v, GError **error)
{
    if (!check_len("u64 body", len, MFR_SYNC_ACK_SIZE, error)) {
        return false;
    }
    *v = get_u64(buf);
    return true;
}

/* ---------- complete ---------- */

enum {
    COMPLETE_ROUND = 8,
    COMPLETE_DIGESTS = 16,
};
G_STATIC_ASSERT(COMPLETE_DIGESTS == MFR_COMPLETE_HDR_SIZE);

size_t mfr_wire_pack_complete(uint64_t round, const uint64_t *digest, uint32_t count,
                              uint8_t *buf, size_t cap)
{
    size_t need = COMPLETE_DIGESTS + (size_t)count * 8;

    if (count > MFR_MAX_BLOCKS || cap < need) {
        return 0;
    }
    put_u32(buf + LIST_COUNT, count);
    put_u32(buf + LIST_RESERVED, 0);
    put_u64(buf + COMPLETE_ROUND, round);
    for (uint32_t i = 0; i < count; i++) {
        put_u64(buf + COMPLETE_DIGESTS + (size_t)i * 8, digest[i]);
    }
    return need;
}

bool mfr_wire_unpack_complete(const uint8_t *buf, size_t len, uint32_t expect_count,
                              uint64_t *round, uint64_t *digest, GError **error)
{
    uint32_t n;

    /* Count 0 is legal here: the source sends no digests when verification is off. */
    if (!unpack_list_head("complete", buf, len, COMPLETE_DIGESTS, 8, 0, &n, 0, NULL, error)) {
        return false;
    }
    if (n != expect_count) {
        return fail(error, "complete: block count %u, but %u blocks were announced", n,
                    expect_count);
    }
    for (uint32_t i = 0; i < n; i++) {
        digest[i] = get_u64(buf + COMPLETE_DIGESTS + (size_t)i * 8);
    }
    *round = get_u64(buf + COMPLETE_ROUND);
    return true;
}

/* ---------- complete reply ---------- */

void mfr_wire_pack_complete_reply(const MfrCompleteReply *r,
                                  uint8_t buf[MFR_COMPLETE_REPLY_SIZE])
{
    put_u32(buf, r->status);
    put_u32(buf + 4, r->block);
}

bool mfr_wire_unpack_complete_reply(const uint8_t *buf, size_t len, uint32_t nblocks,
                                    MfrCompleteReply *r, GError **error)
{
    MfrCompleteReply v;

    if (!check_len("complete reply", len, MFR_COMPLETE_REPLY_SIZE, error)) {
        return false;
    }
    v.status = get_u32(buf);
    v.block = get_u32(buf + 4);
    if (v.status == 0) {
        if (v.block != 0) {
            return fail(error, "complete reply: block %u with status 0 (match), must be 0",
                        v.block);
        }
    } else if (v.status == 1) {
        if (v.block >= nblocks) {
            return fail(error, "complete reply: mismatching block %u not below block count %u",
                        v.block, nblocks);
        }
    } else {
        return fail(error, "complete reply: status %u, expected 0 (match) or 1 (mismatch)",
                    v.status);
    }
    *r = v;
    return true;
}

/* ---------- error ---------- */

void mfr_wire_pack_error(const MfrCtrlError *e, uint8_t buf[MFR_CTRL_ERROR_SIZE])
{
    put_u32(buf, e->code);
    put_text(buf + 4, MFR_ERROR_TEXT_MAX, e->text);
}

bool mfr_wire_unpack_error(const uint8_t *buf, size_t len, MfrCtrlError *e, GError **error)
{
    uint32_t code;
    size_t n;

    if (!check_len("error", len, MFR_CTRL_ERROR_SIZE, error)) {
        return false;
    }
    code = get_u32(buf);
    if (code < MFR_ERROR_FAILED || code > MFR_ERROR_USAGE) {
        return fail(error, "error: code %u outside %u..%u", code, MFR_ERROR_FAILED,
                    MFR_ERROR_USAGE);
    }
    n = strnlen((const char *)buf + 4, MFR_ERROR_TEXT_MAX);
    if (n == MFR_ERROR_TEXT_MAX) {
        return fail(error, "error: text is not NUL-terminated within %u bytes",
                    MFR_ERROR_TEXT_MAX);
    }
    /* The text is the peer's reason for failing: rejecting it for odd bytes would lose the
     * reason, so non-printable bytes are replaced (the text ends up in logs and GErrors). */
    e->code = code;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = buf[4 + i];

        e->text[i] = g_ascii_isprint(ch) ? (char)ch : '?';
    }
    memset(e->text + n, 0, MFR_ERROR_TEXT_MAX - n);
    return true;
}

/* ---------- channel packets ---------- */

enum {
    PKT_MAGIC = 0,
    PKT_VERSION = 4,
    PKT_FLAGS = 6,
    PKT_NUM = 8,
    PKT_ROUND = 16,
    PKT_BLOCK = 24,
    PKT_NORMAL = 28,
    PKT_ZERO = 32,
    PKT_SLOT = 36,
    PKT_PAYLOAD_LEN = 40,
    PKT_OFFSETS = 48,
};
G_STATIC_ASSERT(PKT_OFFSETS == MFR_PACKET_HDR_SIZE);

size_t mfr_wire_pack_packet(const MfrPacketHdr *h, const uint64_t *offsets, uint8_t *buf,
                            size_t cap)
{
    /* u32 + u32 + 1 fits in u64, and 8 * that cannot overflow a 64-bit size_t. */
    uint64_t npages = (uint64_t)h->normal_pages + h->zero_pages;
    uint64_t need = MFR_PACKET_HDR_SIZE + 8 * npages;

    if (need > cap) {
        return 0;
    }
    put_u32(buf + PKT_MAGIC, h->magic);
    put_u16(buf + PKT_VERSION, h->version);
    put_u16(buf + PKT_FLAGS, h->flags);
    put_u64(buf + PKT_NUM, h->packet_num);
    put_u64(buf + PKT_ROUND, h->round);
    put_u32(buf + PKT_BLOCK, h->block);
    put_u32(buf + PKT_NORMAL, h->normal_pages);
    put_u32(buf + PKT_ZERO, h->zero_pages);
    put_u32(buf + PKT_SLOT, h->slot);
    put_u64(buf + PKT_PAYLOAD_LEN, h->payload_len);
    for (uint64_t i = 0; i < npages; i++) {
        put_u64(buf + PKT_OFFSETS + i * 8, offsets[i]);
    }
    return (size_t)need;
}

/* A SYNC is a pure barrier marker: anything else in it is a sender bug. */
static bool packet_check_sync(const MfrPacketHdr *v, size_t len, GError **error)
{
    if (v->flags != MFR_PACKET_SYNC) {
        return fail(error, "packet: SYNC of round %" G_GUINT64_FORMAT " with flags 0x%04x, "
                    "must be 0x%04x", v->round, v->flags, MFR_PACKET_SYNC);
    }
    if (v->block != 0 || v->normal_pages != 0 || v->zero_pages != 0 || v->payload_len != 0) {
        return fail(error, "packet: SYNC of round %" G_GUINT64_FORMAT " carries block %u, "
                    "%u normal and %u zero pages, payload %" G_GUINT64_FORMAT ", all must "
                    "be 0", v->round, v->block, v->normal_pages, v->zero_pages, v->payload_len);
    }
    if (len != MFR_PACKET_HDR_SIZE) {
        return fail(error, "packet: SYNC message length %zu, expected %u", len,
                    MFR_PACKET_HDR_SIZE);
    }
    return true;
}

/* payload_len against the pages: their bytes, or a zstd frame of them within its bounds. */
static bool packet_check_payload(const MfrPacketHdr *v, const MfrPacketLimits *lim,
                                 GError **error)
{
    /* u32 * u32 fits in u64. */
    uint64_t raw = (uint64_t)v->normal_pages * lim->page_size;
    if (!(v->flags & MFR_PACKET_COMPRESSED)) {
        if (v->payload_len != raw) {
            return fail(error, "packet: payload length %" G_GUINT64_FORMAT ", expected %u "
                        "normal pages * page size %u = %" G_GUINT64_FORMAT, v->payload_len,
                        v->normal_pages, lim->page_size, raw);
        }
        return true;
    }
    if (!lim->compressed) {
        return fail(error, "packet: flag COMPRESSED, but compression was not negotiated");
    }
    if (v->normal_pages == 0 || raw > MFR_COMP_MAX_RAW) {
        return fail(error, "packet: COMPRESSED with %u normal pages (%" G_GUINT64_FORMAT
                    " bytes), allowed 1..%u bytes", v->normal_pages, raw, MFR_COMP_MAX_RAW);
    }
    if (v->payload_len == 0 || v->payload_len > mfr_comp_bound(raw)) {
        return fail(error, "packet: compressed length %" G_GUINT64_FORMAT " outside 1..%zu "
                    "(the zstd bound of %" G_GUINT64_FORMAT " bytes)", v->payload_len,
                    mfr_comp_bound(raw), raw);
    }
    if (lim->slots ? v->slot >= lim->slots : v->slot != 0) {
        return fail(error, "packet: staging slot %u, %s %u", v->slot,
                    lim->slots ? "not below the slot count" : "must be", lim->slots);
    }
    return true;
}

/* The npages offsets after the header: each page-aligned and inside block `block`. */
static bool packet_unpack_offsets(const uint8_t *buf, uint64_t npages, uint32_t block,
                                  const MfrPacketLimits *lim, uint64_t *offsets, GError **error)
{
    uint64_t page_mask = (uint64_t)lim->page_size - 1;
    uint64_t block_len = lim->block_len[block];
    for (uint64_t i = 0; i < npages; i++) {
        uint64_t off = get_u64(buf + PKT_OFFSETS + i * 8);

        if (off & page_mask) {
            return fail(error, "packet: offset 0x%" G_GINT64_MODIFIER "x of page %"
                        G_GUINT64_FORMAT " not aligned to page size 0x%x", off, i,
                        lim->page_size);
        }
        /* Written as a subtraction so an offset near UINT64_MAX cannot wrap around. */
        if (block_len < lim->page_size || off > block_len - lim->page_size) {
            return fail(error, "packet: offset 0x%" G_GINT64_MODIFIER "x of page %"
                        G_GUINT64_FORMAT " beyond block %u length 0x%" G_GINT64_MODIFIER "x",
                        off, i, block, block_len);
        }
        offsets[i] = off;
    }
    return true;
}

bool mfr_wire_unpack_packet(const uint8_t *buf, size_t len, const MfrPacketLimits *lim,
                            MfrPacketHdr *h, uint64_t *offsets, GError **error)
{
    MfrPacketHdr v;
    uint64_t npages;

    if (len < MFR_PACKET_HDR_SIZE) {
        return fail(error, "packet: message length %zu below header size %u", len,
                    MFR_PACKET_HDR_SIZE);
    }
    v.magic = get_u32(buf + PKT_MAGIC);
    v.version = get_u16(buf + PKT_VERSION);
    v.flags = get_u16(buf + PKT_FLAGS);
    v.packet_num = get_u64(buf + PKT_NUM);
    v.round = get_u64(buf + PKT_ROUND);
    v.block = get_u32(buf + PKT_BLOCK);
    v.normal_pages = get_u32(buf + PKT_NORMAL);
    v.zero_pages = get_u32(buf + PKT_ZERO);
    v.slot = get_u32(buf + PKT_SLOT);
    v.payload_len = get_u64(buf + PKT_PAYLOAD_LEN);

    if (!check_magic_version("packet", v.magic, MFR_PACKET_MAGIC, v.version, error)) {
        return false;
    }
    if (v.flags & ~MFR_PACKET_FLAGS_ALL) {
        return fail(error, "packet: flags 0x%04x has bits outside the known 0x%04x", v.flags,
                    MFR_PACKET_FLAGS_ALL);
    }
    if (!(v.flags & MFR_PACKET_COMPRESSED) && v.slot != 0) {
        return fail(error, "packet: slot %u in a packet without flag COMPRESSED, must be 0",
                    v.slot);
    }
    if (v.packet_num != lim->expect_packet_num) {
        return fail(error, "packet: number %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT,
                    v.packet_num, lim->expect_packet_num);
    }
    if (v.round != lim->expect_round) {
        return fail(error, "packet: round %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT,
                    v.round, lim->expect_round);
    }

    if (v.flags & MFR_PACKET_SYNC) {
        if (!packet_check_sync(&v, len, error)) {
            return false;
        }
        *h = v;
        return true;
    }

    if (v.block >= lim->nblocks) {
        return fail(error, "packet: block %u not below block count %u", v.block, lim->nblocks);
    }
    /* Both counts are u32: their sum cannot overflow u64. */
    npages = (uint64_t)v.normal_pages + v.zero_pages;
    if (npages == 0) {
        return fail(error, "packet: no pages (0 normal, 0 zero) in a data packet");
    }
    if (npages > lim->max_pages) {
        return fail(error, "packet: %u normal + %u zero pages above the limit %u",
                    v.normal_pages, v.zero_pages, lim->max_pages);
    }
    /* npages <= max_pages (u32), so 8 * npages cannot overflow. */
    if (len != MFR_PACKET_HDR_SIZE + 8 * npages) {
        return fail(error, "packet: message length %zu, expected %" G_GUINT64_FORMAT
                    " for %" G_GUINT64_FORMAT " pages", len, MFR_PACKET_HDR_SIZE + 8 * npages,
                    npages);
    }
    if (!packet_check_payload(&v, lim, error)) {
        return false;
    }
    if (!packet_unpack_offsets(buf, npages, v.block, lim, offsets, error)) {
        return false;
    }
    *h = v;
    return true;
}

/* ---------- staging ring ---------- */

enum {
    RING_MAGIC = 0,
    RING_VERSION = 4,
    RING_TYPE = 6,
    RING_SLOTS = 8,
    RING_SLOT_SIZE = 12,
    RING_FREED = 16,
    RING_DESC = 24,
};
G_STATIC_ASSERT(RING_DESC + MFR_REGION_DESC_SIZE == MFR_RING_MSG_SIZE);

void mfr_wire_pack_ring(const MfrRingMsg *m, uint8_t buf[MFR_RING_MSG_SIZE])
{
    put_u32(buf + RING_MAGIC, m->magic);
    put_u16(buf + RING_VERSION, m->version);
    put_u16(buf + RING_TYPE, m->type);
    put_u32(buf + RING_SLOTS, m->slots);
    put_u32(buf + RING_SLOT_SIZE, m->slot_size);
    put_u64(buf + RING_FREED, m->freed);
    memcpy(buf + RING_DESC, m->desc, MFR_REGION_DESC_SIZE);
}

static bool ring_desc_zero(const uint8_t *desc)
{
    for (unsigned i = 0; i < MFR_REGION_DESC_SIZE; i++) {
        if (desc[i]) {
            return false;
        }
    }
    return true;
}

bool mfr_wire_unpack_ring(const uint8_t *buf, size_t len, MfrRingType expect, uint64_t min_a,
                          uint64_t max_a, MfrRingMsg *m, GError **error)
{
    MfrRingMsg v;
    if (!check_len("ring", len, MFR_RING_MSG_SIZE, error)) {
        return false;
    }
    v.magic = get_u32(buf + RING_MAGIC);
    v.version = get_u16(buf + RING_VERSION);
    v.type = get_u16(buf + RING_TYPE);
    v.slots = get_u32(buf + RING_SLOTS);
    v.slot_size = get_u32(buf + RING_SLOT_SIZE);
    v.freed = get_u64(buf + RING_FREED);
    memcpy(v.desc, buf + RING_DESC, MFR_REGION_DESC_SIZE);
    if (!check_magic_version("ring", v.magic, MFR_RING_MAGIC, v.version, error)) {
        return false;
    }
    if (v.type != expect) {
        return fail(error, "ring: type %u, expected %u (%s)", v.type, expect,
                    expect == MFR_RING_DESC ? "DESC" : "CREDIT");
    }
    if (expect == MFR_RING_DESC) {
        if (v.slots < 1 || v.slots > MFR_RING_MAX_SLOTS) {
            return fail(error, "ring: %u slots outside 1..%u", v.slots, MFR_RING_MAX_SLOTS);
        }
        if (v.slot_size < min_a || v.slot_size > max_a) {
            return fail(error, "ring: slot size %u outside %" G_GUINT64_FORMAT "..%"
                        G_GUINT64_FORMAT, v.slot_size, min_a, max_a);
        }
        if (v.freed != 0) {
            return fail(error, "ring: DESC with freed %" G_GUINT64_FORMAT ", must be 0",
                        v.freed);
        }
    } else {
        if (v.slots != 0 || v.slot_size != 0 || !ring_desc_zero(v.desc)) {
            return fail(error, "ring: CREDIT with slots %u, slot size %u or a descriptor, "
                        "all must be 0", v.slots, v.slot_size);
        }
        if (v.freed < min_a || v.freed > max_a) {
            return fail(error, "ring: CREDIT frees %" G_GUINT64_FORMAT " slots in all, expected "
                        "%" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT " (never backwards, never "
                        "more than were used)", v.freed, min_a, max_a);
        }
    }
    *m = v;
    return true;
}
