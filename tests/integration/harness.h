/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test harness for end-to-end migrations: a small deterministic guest (blocks, writer
 * thread, dirty bitmap), a destination running in a thread, and helpers to compare RAM.
 * Shared by the TCP integration tests and the RDMA tests run under soft-RoCE.
 */
#pragma once

#include "mfrdma.h"

#include <stdatomic.h>

#include <stdint.h>

typedef struct {
    unsigned nblocks;
    MfrRamBlock block[4];
    uint64_t *dirty[4];       /* shared bitmaps the writer marks */
    GThread *writer;
    atomic_bool writer_stop;
    double rate_mbps;         /* 0: idle */
    uint64_t seed;
    atomic_ulong writes;
    /* ordering test: re-dirty these pages at every harvest of block 0 */
    unsigned redirty_pages;
    uint64_t redirty_round;
    bool stopped;
    /* verification test: at stop(), flip this byte of block 1 without marking its page (a
     * client that loses a dirty bit); cleared once done */
    bool unmarked_write;
    uint64_t unmarked_offset;
} TGuest;

/* Blocks of size bytes each, filled: 1/4 zero pages, the rest pseudo-random by seed. */
TGuest *tguest_new(unsigned nblocks, uint64_t size, uint64_t seed);
/* Same, block i of sizes[i] bytes (multiples of 4096). */
TGuest *tguest_new_sizes(unsigned nblocks, const uint64_t *sizes, uint64_t seed);
void tguest_start_writer(TGuest *g, double rate_mbps);
void tguest_free(TGuest *g);
extern const MfrDirtyOps tguest_dirty_ops;

typedef struct {
    MfrDest *dst;
    GThread *thread;
    bool ok;
    GError *error;
    double t_end;             /* monotonic seconds when run() returned */
    void *maps[4];            /* blocks allocated on announce */
    uint64_t map_len[4];
    unsigned nmaps;
    unsigned alloc_delay_ms;  /* each block allocation takes this long (a slow hypervisor) */
} TDest;

/* Destination on uri (port 0), allocating blocks on announce (fresh zeroed mmap). */
TDest *tdest_start(const char *uri, const uint8_t token[16], unsigned timeout_ms);
/* Destination knobs beyond tdest_start()'s. */
typedef struct {
    unsigned timeout_ms;
    uint64_t registration_chunk;   /* 0: default */
    unsigned registration_threads; /* 0: default */
    unsigned register_delay_ms;    /* every chunk registers this much slower */
    unsigned alloc_delay_ms;       /* every block allocation takes this long */
    bool inject_register_failure;  /* chunk inject_chunk of block inject_block fails */
    unsigned inject_block;
    uint32_t inject_chunk;
    MfrProgressFn progress;        /* the destination's progress callback, or NULL */
    void *progress_opaque;
    bool refuse_compression;       /* mfr_dest_set_compression(OFF) */
} TDestOpts;

TDest *tdest_start_opts(const char *uri, const uint8_t token[16], const TDestOpts *o);
/* Same, but with blocks given up front instead of allocation. */
TDest *tdest_start_with(const char *uri, const uint8_t token[16], const MfrRamBlock *blocks,
                        unsigned n);
void tdest_join(TDest *t);
void tdest_free(TDest *t);

/* Byte-for-byte comparison of source guest and destination blocks (by name). */
void tcompare_ram(TGuest *g, MfrDest *dst);

void ttoken(uint8_t token[16], uint8_t fill);
/* Threads of this process, leaving out those already joined that the kernel still lists. */
unsigned tthread_count(void);
/* The count once it equals expect (a joined thread can be listed for a few instructions
 * more), or after 10 s whatever it is then: for g_assert_cmpuint(..., ==, expect). */
unsigned tthread_wait_count(unsigned expect);
/* Bytes this process has pinned (VmPin: ibv_reg_mr's pages); 0 over tcp. */
uint64_t tpinned_bytes(void);
/* One transport a program's tests are registered for. */
typedef struct {
    const char *transport;  /* "tcp" or "rdma" */
    const char *listen_uri; /* with port 0 */
    uint64_t size;          /* bytes per block: small on rxe */
} TCase;

/* main() of a program whose tests run per transport: consumes a trailing --rdma-only (the
 * soft-RoCE run) and runs g_test_init(). cases[0]: tcp on loopback with tcp_size (NULL
 * with --rdma-only); cases[1]: rdma at MFR_TEST_RDMA_ADDR with rdma_size, NULL without
 * one. False when the --rdma-only run finds no RDMA to test: the TAP skip plan is printed
 * and main() returns 0. */
bool ttest_init(int *argc, char ***argv, uint64_t tcp_size, uint64_t rdma_size,
                TCase *cases[2]);
/* Registers fn(tc) as /prefix/<transport>/name. */
void ttest_add(const char *prefix, const TCase *tc, const char *name, GTestDataFunc fn);
/* Address for RDMA tests, or NULL (then the test is skipped). */
const char *trdma_addr(void);
