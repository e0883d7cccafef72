/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the RDMA backend's own wire bytes (transport/rdma/wire.c): the hello
 * framed in CM private data with its mark, a peer's reject data, the immediate data of a
 * SEND and the region descriptor. The first input byte picks the parser; what one accepts
 * must pack back to what it read.
 */
#include "fuzz.h"
#include "rdma/wire.h"

#include <assert.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

static void fuzz_hello(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return;
    }
    uint8_t hello[RDMA_WIRE_PDATA_SIZE];
    size_t len = 0;
    GError *err = NULL;
    if (!xp_rdma_wire_unpack_hello(data + 1, size - 1, data[0], hello, &len, &err)) {
        assert(err && err->domain == XP_ERROR);
        g_error_free(err);
        return;
    }
    assert(len <= RDMA_WIRE_PDATA_SIZE);
    /* the same hello framed again reads back the same */
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE], again[RDMA_WIRE_PDATA_SIZE], mark = 0;
    size_t len2 = 0;
    xp_rdma_wire_pack_hello(hello, len, pdata, &mark);
    assert(xp_rdma_wire_unpack_hello(pdata, sizeof(pdata), mark, again, &len2, NULL));
    assert(len2 == len && memcmp(again, hello, len) == 0);
}

static void fuzz_reject(const uint8_t *data, size_t size)
{
    uint32_t status = 0;
    char reason[XP_REASON_MAX + 1];
    memset(reason, 'x', sizeof(reason));
    xp_rdma_wire_unpack_reject(data, size, &status, reason);
    assert(memchr(reason, 0, sizeof(reason)) != NULL);
}

static void fuzz_imm(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return;
    }
    uint32_t imm;
    memcpy(&imm, data, 4);
    unsigned credits;
    bool credit_only;
    if (xp_rdma_wire_unpack_imm(imm, &credits, &credit_only)) {
        assert((imm & RDMA_WIRE_IMM_RESERVED) == 0);
        assert(xp_rdma_wire_pack_imm(credits, credit_only) == imm);
    } else {
        assert((imm & RDMA_WIRE_IMM_RESERVED) != 0);
    }
}

static void fuzz_desc(const uint8_t *data, size_t size)
{
    if (size < RDMA_WIRE_DESC_SIZE + 8) {
        return;
    }
    uint64_t len, addr;
    uint32_t rkey;
    memcpy(&len, data + RDMA_WIRE_DESC_SIZE, 8);
    GError *err = NULL;
    if (!xp_rdma_wire_unpack_desc(data, len, &addr, &rkey, &err)) {
        assert(err);
        g_error_free(err);
        return;
    }
    assert(addr + len >= addr); /* the region does not wrap */
    uint8_t again[RDMA_WIRE_DESC_SIZE];
    xp_rdma_wire_pack_desc(addr, rkey, again);
    assert(memcmp(again, data, RDMA_WIRE_DESC_SIZE) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] % 4) {
    case 0: fuzz_hello(data + 1, size - 1); break;
    case 1: fuzz_reject(data + 1, size - 1); break;
    case 2: fuzz_imm(data + 1, size - 1); break;
    default: fuzz_desc(data + 1, size - 1); break;
    }
    return 0;
}
