/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer harness: the compressed payload of a packet (docs/protocol.md 5.3). The input is
 *   [u8 layout][u8 pages][frame bytes...]
 * pages (1..8) target pages are chosen from a fenced 16-page area by the layout bits (runs
 * contiguous or scattered), and the frame is decompressed into exactly them. It must either
 * fail with MFR_ERROR_PROTOCOL, or produce what zstd's reference decoder makes of the frame,
 * which must be exactly pages * 4096 bytes. Pages not chosen keep their fill: any write
 * outside the announced pages is caught by the check or by the PROT_NONE fences around the
 * area.
 */
#include "compress.h"
#include "fuzz.h"
#include "mfrdma.h"

#include <assert.h>
#include <string.h>
#include <sys/mman.h>
#include <zstd.h>

#define PS 4096u
#define AREA 16u
#define FILL 0xa5

static uint8_t *area;
static uint8_t *reference;
static uint8_t fill_page[PS];
static MfrDecompressor *dz;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    uint8_t *m = mmap(NULL, (AREA + 2) * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert(m != MAP_FAILED);
    area = m + PS;
    assert(mprotect(area, AREA * PS, PROT_READ | PROT_WRITE) == 0);
    reference = malloc(AREA * PS + 1);
    memset(fill_page, FILL, sizeof(fill_page));
    dz = mfr_decompressor_new(NULL);
    assert(reference && dz);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    uint8_t layout = data[0];
    unsigned pages = 1 + data[1] % 8;
    /* page k of the packet goes to area page (k * stride + shift), runs merged as recv.c does */
    unsigned stride = 1 + (layout & 1), shift = (layout >> 1) % (AREA - 15);
    struct iovec iov[8];
    unsigned n = 0;
    memset(area, FILL, AREA * PS);
    for (unsigned k = 0; k < pages; k++) {
        uint8_t *p = area + (k * stride + shift) * PS;
        if (n && (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == p) {
            iov[n - 1].iov_len += PS;
        } else {
            iov[n++] = (struct iovec){ p, PS };
        }
    }
    const uint8_t *frame = data + 2;
    size_t len = size - 2;
    uint64_t raw = (uint64_t)pages * PS;
    GError *err = NULL;
    bool ok = mfr_decompress_iov(dz, frame, len, iov, n, raw, &err);
    if (!ok) {
        assert(err && err->domain == MFR_ERROR && err->code == MFR_ERROR_PROTOCOL);
        g_error_free(err);
    } else {
        /* the reference decoder agrees: the frame is exactly the pages' bytes */
        size_t got = ZSTD_decompress(reference, AREA * PS + 1, frame, len);
        assert(!ZSTD_isError(got) && got == raw);
        for (unsigned k = 0; k < pages; k++) {
            assert(memcmp(area + (k * stride + shift) * PS, reference + k * PS, PS) == 0);
        }
    }
    /* whatever happened, pages not announced keep their fill (memcmp, not a byte loop: the
     * loop's coverage callbacks were 80% of the harness's time) */
    for (unsigned pg = 0; pg < AREA; pg++) {
        bool announced = pg >= shift && (pg - shift) % stride == 0 && (pg - shift) / stride < pages;
        assert(announced || memcmp(area + pg * PS, fill_page, PS) == 0);
    }
    return 0;
}
