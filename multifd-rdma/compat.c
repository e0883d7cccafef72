/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The MFRDMA_0 entry points of the config functions, for programs built against an mfrdma.h
 * before MFRDMA_0.4: their configs have no struct_size and the MFRDMA_0.2 layout (shorter
 * than today's). Each converts to today's struct, every later field at its default. Only in
 * the shared library (symbol versions mean nothing in the static one).
 */
#include "mfrdma.h"

#include <stddef.h>
#include <string.h>

/* The configs as mfrdma.h declared them at MFRDMA_0.2 (and 0.3's headers up to the
 * fields appended then): today's structs without struct_size and what followed
 * progress_opaque (source) or registration_chunk (destination). */
typedef struct {
    const char *uri;
    unsigned channels;
    uint8_t token[16];
    unsigned downtime_ms;
    unsigned max_rounds;
    bool force_switchover;
    bool verify;
    bool zero_detect;
    unsigned timeout_ms;
    unsigned pages_per_packet;
    MfrTransportConfig transport; /* the same bytes as the flat fields of 0.2 */
    MfrProgressFn progress;
    void *progress_opaque;
} MfrSourceConfig02;

typedef struct {
    const char *uri;
    uint8_t token[16];
    unsigned timeout_ms;
    unsigned max_channels;
    bool (*alloc_block)(void *opaque, const char *name, uint64_t length, uint32_t page_size,
                        void **host, GError **error);
    void *alloc_opaque;
    bool memory_zeroed;
    MfrTransportConfig transport;
    MfrProgressFn progress;
    void *progress_opaque;
    uint64_t registration_chunk;
} MfrDestConfig02;

/* The old layout is today's, shifted by struct_size: the conversion is one copy. */
#define SHIFTED(type, old, field) \
    (offsetof(type, field) - offsetof(type, uri) == offsetof(old, field))
G_STATIC_ASSERT(SHIFTED(MfrSourceConfig, MfrSourceConfig02, pages_per_packet));
G_STATIC_ASSERT(SHIFTED(MfrSourceConfig, MfrSourceConfig02, transport));
G_STATIC_ASSERT(SHIFTED(MfrSourceConfig, MfrSourceConfig02, progress_opaque));
G_STATIC_ASSERT(offsetof(MfrSourceConfig, uri) + sizeof(MfrSourceConfig02) ==
                offsetof(MfrSourceConfig, max_bandwidth));
G_STATIC_ASSERT(SHIFTED(MfrDestConfig, MfrDestConfig02, memory_zeroed));
G_STATIC_ASSERT(SHIFTED(MfrDestConfig, MfrDestConfig02, transport));
G_STATIC_ASSERT(SHIFTED(MfrDestConfig, MfrDestConfig02, registration_chunk));
G_STATIC_ASSERT(offsetof(MfrDestConfig, uri) + sizeof(MfrDestConfig02) ==
                offsetof(MfrDestConfig, numa_node));

/* Exported as mfr_source_config_init@MFRDMA_0 etc. (libmfrdma.map lists the names under no
 * node: the .symver directives give them their version). */
void mfr_source_config_init_0(MfrSourceConfig02 *old);
void mfr_dest_config_init_0(MfrDestConfig02 *old);
MfrSource *mfr_source_new_0(const MfrSourceConfig02 *old, const MfrRamBlock *blocks,
                            unsigned nblocks, const MfrDirtyOps *dirty, void *dirty_opaque,
                            GError **error);
MfrDest *mfr_dest_new_0(const MfrDestConfig02 *old, GError **error);
__asm__(".symver mfr_source_config_init_0, mfr_source_config_init@MFRDMA_0");
__asm__(".symver mfr_dest_config_init_0, mfr_dest_config_init@MFRDMA_0");
__asm__(".symver mfr_source_new_0, mfr_source_new@MFRDMA_0");
__asm__(".symver mfr_dest_new_0, mfr_dest_new@MFRDMA_0");

void mfr_source_config_init_0(MfrSourceConfig02 *old)
{
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    memcpy(old, &cfg.uri, sizeof(*old));
}

void mfr_dest_config_init_0(MfrDestConfig02 *old)
{
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    memcpy(old, &cfg.uri, sizeof(*old));
}

MfrSource *mfr_source_new_0(const MfrSourceConfig02 *old, const MfrRamBlock *blocks,
                            unsigned nblocks, const MfrDirtyOps *dirty, void *dirty_opaque,
                            GError **error)
{
    if (!old) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "source: no MfrSourceConfig");
        return NULL;
    }
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    memcpy(&cfg.uri, old, sizeof(*old));
    return mfr_source_new(&cfg, blocks, nblocks, dirty, dirty_opaque, error);
}

MfrDest *mfr_dest_new_0(const MfrDestConfig02 *old, GError **error)
{
    if (!old) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "destination: no MfrDestConfig");
        return NULL;
    }
    MfrDestConfig cfg;
    mfr_dest_config_init(&cfg);
    memcpy(&cfg.uri, old, sizeof(*old));
    return mfr_dest_new(&cfg, error);
}
