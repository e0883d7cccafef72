/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Little-endian byte helpers for the transports' wire files (tcp/wire.c, rdma/wire.c): every
 * field is written and read at a named offset, never by casting a buffer to a struct, so
 * alignment, padding and host byte order cannot leak onto the wire.
 */
#pragma once

#include <stdint.h>

static inline void xp_put_le32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint32_t xp_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void xp_put_le64(uint8_t *p, uint64_t v)
{
    xp_put_le32(p, (uint32_t)v);
    xp_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t xp_get_le64(const uint8_t *p)
{
    return (uint64_t)xp_get_le32(p) | (uint64_t)xp_get_le32(p + 4) << 32;
}
