/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Little-endian helpers for the wire tests, written independently of the code under test
 * (multifd-rdma/wire.c, transport/xp-wire.h), so a shared mistake cannot hide.
 */
#pragma once

#include <stdint.h>

static inline void le_set(uint8_t *p, unsigned size, uint64_t v)
{
    for (unsigned i = 0; i < size; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint64_t le_get(const uint8_t *p, unsigned size)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < size; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}
