/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * NUMA placement of a session (libnuma): which node its channel and registration threads
 * and the channels' buffers go on (configured, the node of the transport's device, or of
 * the blocks' pages), the memory policy of the thread that opens the channels, and where
 * each channel thread ended up, for MfrPlacement.
 */
#include "engine.h"

#include <numa.h>
#include <numaif.h>
#include <string.h>

bool mfr_numa_check(const char *side, int node, GError **error)
{
    if (node == MFR_NUMA_AUTO || node == MFR_NUMA_OFF) {
        return true;
    }
    if (node < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: numa_node %d is neither a node, MFR_NUMA_AUTO nor MFR_NUMA_OFF", side,
                    node);
        return false;
    }
    if (numa_available() < 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: NUMA node %d requested, but this host has no NUMA support", side, node);
        return false;
    }
    if (node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: NUMA node %d does not exist on this host (nodes 0..%d)", side, node,
                    numa_max_node());
        return false;
    }
    return true;
}

/* The node most of a sample of the blocks' pages are on; -1 when none is present yet
 * (fresh memory) or the kernel cannot say. */
static int numa_memory_node(const MfrRamBlock *blocks, unsigned n)
{
    enum { SAMPLES = 64 };
    void *pages[SAMPLES];
    int status[SAMPLES];
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += blocks[i].length;
    }
    unsigned count = 0;
    for (unsigned i = 0, s = 0; i < n && total; i++) {
        for (; s < SAMPLES; s++) {
            uint64_t at = total / SAMPLES * s, before = 0;
            for (unsigned j = 0; j < i; j++) {
                before += blocks[j].length;
            }
            if (at >= before + blocks[i].length) {
                break;
            }
            pages[count++] = (uint8_t *)blocks[i].host + ((at - before) & ~(uint64_t)4095);
        }
    }
    if (count == 0 || move_pages(0, count, pages, NULL, status, 0) != 0) {
        return -1;
    }
    unsigned votes[64] = { 0 }, best = 0;
    int node = -1;
    for (unsigned i = 0; i < count; i++) {
        if (status[i] >= 0 && status[i] < 64 && ++votes[status[i]] > best) {
            best = votes[status[i]];
            node = status[i];
        }
    }
    return node;
}

int mfr_numa_choose(int cfg_node, XpChannel *ch, const MfrRamBlock *blocks, unsigned n,
                    MfrPlacement *p)
{
    int node = -1;
    const char *why = "off";
    if (cfg_node >= 0) {
        node = cfg_node;
        why = "numa_node";
    } else if (cfg_node == MFR_NUMA_AUTO && numa_available() < 0) {
        why = "no NUMA support";
    } else if (cfg_node == MFR_NUMA_AUTO) {
        /* the device first: a channel's traffic crosses it whatever memory it touches */
        int dev = xp_channel_numa_node(ch);
        int mem = dev < 0 ? numa_memory_node(blocks, n) : -1;
        node = dev >= 0 ? dev : mem;
        why = dev >= 0 ? "device" : mem >= 0 ? "memory" : "unknown";
        if (node >= 0 && !mfr_numa_check("", node, NULL)) {
            node = -1; /* a device's sysfs node this kernel does not have online */
            why = "unknown";
        }
    }
    p->numa_node = node;
    g_strlcpy(p->numa_source, why, sizeof(p->numa_source));
    return node;
}

#define NUMA_MASK_BITS 1024

void mfr_numa_prefer(int node, MfrNumaPolicy *saved)
{
    memset(saved, 0, sizeof(*saved));
    if (node < 0 || numa_available() < 0 || node >= NUMA_MASK_BITS) {
        return;
    }
    if (get_mempolicy(&saved->mode, saved->mask, NUMA_MASK_BITS, NULL, 0) != 0) {
        return;
    }
    unsigned long want[NUMA_MASK_BITS / (8 * sizeof(unsigned long))] = { 0 };
    want[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
    saved->set = set_mempolicy(MPOL_PREFERRED, want, NUMA_MASK_BITS) == 0;
}

void mfr_numa_restore(MfrNumaPolicy *saved)
{
    if (saved->set) {
        /* MPOL_DEFAULT takes no mask; the others get back the one they had */
        set_mempolicy(saved->mode, saved->mode == MPOL_DEFAULT ? NULL : saved->mask,
                      saved->mode == MPOL_DEFAULT ? 0 : NUMA_MASK_BITS);
        saved->set = false;
    }
}

void mfr_placement_thread(MfrPlacement *p, unsigned index, const XpThreadPlace *t)
{
    if (index < G_N_ELEMENTS(p->channel)) {
        p->channel[index] = (MfrThreadPlacement){ .node = t->node, .cpu = t->cpu,
                                                  .bound = t->bound };
        p->channels = MAX(p->channels, index + 1);
    }
}
