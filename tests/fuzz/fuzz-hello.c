/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the hello, the first message of every connection (TCP frame body, and
 * the same bytes as RDMA CM private data). Asserts what a successful unpack promises.
 */
#include "fuzz.h"
#include "mfrdma.h"
#include "wire.h"

#include <assert.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MfrHello h;
    GError *err = NULL;
    if (!mfr_wire_unpack_hello(data, size, &h, &err)) {
        assert(err && err->domain == MFR_ERROR && err->code == MFR_ERROR_PROTOCOL);
        g_error_free(err);
        return 0;
    }
    assert(size == MFR_HELLO_SIZE && h.magic == MFR_HELLO_MAGIC && h.flags == 0);
    assert(h.channel_count <= MFR_MAX_CHANNELS);
    assert(h.role == MFR_ROLE_CONTROL ? h.channel_index == 0
           : h.role == MFR_ROLE_CHANNEL && h.channel_index < h.channel_count);
    /* what was accepted must pack back to the same bytes */
    uint8_t again[MFR_HELLO_SIZE];
    mfr_wire_pack_hello(&h, again);
    assert(memcmp(again, data, MFR_HELLO_SIZE) == 0);
    return 0;
}
