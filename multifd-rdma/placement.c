/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where a session's memory and threads are (MfrPlacement): how much of its blocks huge
 * pages back, read from /proc/self/smaps when the session ends, and the placement JSON.
 * Destination memory's first touch is the bottleneck of a migration on many hosts, so
 * whether huge pages took it is measured, never assumed from a setting.
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>

G_STATIC_ASSERT(sizeof(MfrThreadPlacement) == 12);
G_STATIC_ASSERT(sizeof(MfrPlacement) == 832);

void mfr_placement_init(MfrPlacement *p)
{
    memset(p, 0, sizeof(*p));
    p->numa_node = -1;
    g_strlcpy(p->numa_source, "off", sizeof(p->numa_source));
    for (unsigned i = 0; i < G_N_ELEMENTS(p->channel); i++) {
        p->channel[i] = (MfrThreadPlacement){ .node = -1, .cpu = -1 };
    }
}

/* One mapping of smaps, as its lines go by. */
typedef struct {
    uint64_t start, end;
    uint64_t huge;   /* AnonHugePages + *_Hugetlb, bytes */
    bool eligible;   /* THPeligible: 1 */
} SmapsMap;

/* What smaps says about a set of blocks, summed over the mappings they overlap. */
typedef struct {
    uint64_t huge;      /* bytes on huge pages */
    uint64_t covered;   /* bytes in some mapping */
    uint64_t advised;   /* bytes in mappings madvised MADV_HUGEPAGE or hugetlbfs */
    uint64_t eligible;  /* bytes the kernel may back with huge pages (THP or hugetlbfs) */
} SmapsSum;

/* Adds the mapping's share to the blocks it overlaps (huge pages are assumed spread evenly
 * over a mapping larger than the block: blocks are usually whole mappings). */
static void smaps_account(const SmapsMap *m, bool advised, bool hugetlb,
                          const MfrRamBlock *blocks, unsigned n, SmapsSum *sum)
{
    for (unsigned i = 0; i < n; i++) {
        uint64_t bs = (uint64_t)(uintptr_t)blocks[i].host, be = bs + blocks[i].length;
        uint64_t s = MAX(bs, m->start), e = MIN(be, m->end);
        if (s >= e) {
            continue;
        }
        uint64_t len = m->end - m->start;
        sum->huge += (uint64_t)((double)m->huge * (double)(e - s) / (double)len);
        sum->covered += e - s;
        if (advised) {
            sum->advised += e - s;
        }
        if (m->eligible || hugetlb) {
            sum->eligible += e - s;
        }
    }
}

static uint64_t smaps_kb(const char *line, const char *key)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0) {
        return 0;
    }
    return g_ascii_strtoull(line + k, NULL, 10) * 1024;
}

/* Reads /proc/self/smaps for the blocks; false (sum all zero) when it cannot be read. */
static bool smaps_scan(const MfrRamBlock *blocks, unsigned n, SmapsSum *sum)
{
    *sum = (SmapsSum){ 0 };
    FILE *f = n ? fopen("/proc/self/smaps", "re") : NULL;
    if (!f) {
        return false;
    }
    char line[512];
    SmapsMap m = { 0 };
    bool in_map = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long s, e;
        if (sscanf(line, "%llx-%llx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            m = (SmapsMap){ .start = s, .end = e };
            in_map = true;
            continue;
        }
        if (!in_map) {
            continue;
        }
        m.huge += smaps_kb(line, "AnonHugePages:") + smaps_kb(line, "Private_Hugetlb:") +
                  smaps_kb(line, "Shared_Hugetlb:");
        if (strncmp(line, "THPeligible:", 12) == 0) {
            m.eligible = g_ascii_strtoull(line + 12, NULL, 10) == 1;
        }
        if (strncmp(line, "VmFlags:", 8) == 0) {
            /* the last line of a mapping */
            bool hugetlb = strstr(line, " ht") != NULL;
            smaps_account(&m, strstr(line, " hg") || hugetlb, hugetlb, blocks, n, sum);
            in_map = false;
        }
    }
    fclose(f);
    return true;
}

void mfr_placement_memory(MfrPlacement *p, const MfrRamBlock *blocks, unsigned n)
{
    p->ram_bytes = p->huge_bytes = 0;
    p->thp_advised = false;
    for (unsigned i = 0; i < n; i++) {
        p->ram_bytes += blocks[i].length;
    }
    SmapsSum sum;
    if (!smaps_scan(blocks, n, &sum)) {
        return;
    }
    p->huge_bytes = MIN(sum.huge, p->ram_bytes);
    p->thp_advised = sum.covered == p->ram_bytes && sum.advised == sum.covered;
}

bool mfr_blocks_huge_eligible(const MfrRamBlock *blocks, unsigned n)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += blocks[i].length;
    }
    SmapsSum sum;
    return smaps_scan(blocks, n, &sum) && total && sum.covered == total &&
           sum.eligible == total;
}

char *mfr_placement_to_json(const MfrPlacement *p)
{
    GString *j = g_string_new("{");
    g_string_append_printf(j, "\"ram_bytes\":%" G_GUINT64_FORMAT ",\"huge_bytes\":%"
                           G_GUINT64_FORMAT ",\"thp_advised\":%s,\"numa_node\":%d,"
                           "\"numa_source\":\"", p->ram_bytes, p->huge_bytes,
                           p->thp_advised ? "true" : "false", p->numa_node);
    for (const char *c = p->numa_source; *c && c < p->numa_source + sizeof(p->numa_source);
         c++) {
        /* written by the engine only, but keep the JSON valid whatever it holds */
        g_string_append_c(j, (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) ? '?' : *c);
    }
    g_string_append_printf(j, "\",\"channels\":%u,\"channel\":[", p->channels);
    for (unsigned i = 0; i < p->channels && i < G_N_ELEMENTS(p->channel); i++) {
        const MfrThreadPlacement *t = &p->channel[i];
        g_string_append_printf(j, "%s{\"node\":%d,\"cpu\":%d,\"bound\":%s}", i ? "," : "",
                               t->node, t->cpu, t->bound ? "true" : "false");
    }
    g_string_append(j, "]}");
    return g_string_free(j, FALSE);
}
