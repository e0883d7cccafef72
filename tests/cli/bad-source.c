/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A faulty source for cli-test.sh (case listen_bad_verify): migrates one block to `mfrdma
 * listen` through the public API only, but its client changes a byte at stop() without
 * marking the page (a lost dirty bit), so the digests at COMPLETE differ. The tool has no
 * option to break a migration on purpose; this is how its verification exit code is reached.
 * Usage: cli-bad-source URI TOKEN. Exit 3 when the source failed with MFR_ERROR_VERIFY.
 */
#include "mfrdma.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define BLOCK_SIZE (4u << 20)

typedef struct {
    uint8_t *host;
    bool stopped;
} Client;

static void client_harvest(void *opaque, unsigned block, uint64_t *bitmap, uint64_t npages)
{
    /* nothing is written before stop(): round 1 (all pages) is all there is to send */
}

static void client_stop(void *opaque)
{
    Client *c = opaque;
    /* the last byte of the block, its page never marked: sent once, before this write */
    c->host[BLOCK_SIZE - 1] ^= 0x5a;
    c->stopped = true;
}

static void client_resume(void *opaque)
{
    Client *c = opaque;
    c->stopped = false;
}

static const MfrDirtyOps client_ops = {
    .harvest = client_harvest,
    .stop = client_stop,
    .resume = client_resume,
};

int main(int argc, char **argv)
{
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    if (argc != 3 || !mfr_token_parse(argv[2], cfg.token, NULL)) {
        fprintf(stderr, "usage: cli-bad-source URI TOKEN(32 hex digits)\n");
        return 2;
    }
    cfg.uri = argv[1];
    cfg.channels = 2;
    Client c = { 0 };
    c.host = mmap(NULL, BLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c.host == MAP_FAILED) {
        perror("cli-bad-source: mmap");
        return 1;
    }
    for (uint32_t i = 0; i < BLOCK_SIZE; i++) {
        c.host[i] = (uint8_t)(i * 2654435761u >> 24);
    }
    MfrRamBlock block = { .name = "ram0", .host = c.host, .length = BLOCK_SIZE,
                          .page_size = 4096 };
    g_autoptr(GError) err = NULL;
    g_autoptr(MfrSource) src = mfr_source_new(&cfg, &block, 1, &client_ops, &c, &err);
    if (!src) {
        fprintf(stderr, "cli-bad-source: %s\n", err->message);
        return 1;
    }
    if (mfr_source_run(src, &err)) {
        fprintf(stderr, "cli-bad-source: the migration verified although a byte changed\n");
        return 0;
    }
    fprintf(stderr, "cli-bad-source: %s\n", err->message);
    if (c.stopped) {
        fprintf(stderr, "cli-bad-source: resume() was not called after the failure\n");
        return 1;
    }
    return g_error_matches(err, MFR_ERROR, MFR_ERROR_VERIFY) ? 3 : 1;
}
