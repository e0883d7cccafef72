/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit test of what the destination reads from smaps before its channels start: whether
 * huge pages may back every block (it then prefaults whole huge-page extents, recv.c).
 * Asserts against the kernel's own THPeligible of mappings madvised each way.
 */
#include "engine.h"

#include <string.h>
#include <sys/mman.h>

#define LEN (8u << 20)

static bool thp_mode(const char *mode)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/sys/kernel/mm/transparent_hugepage/enabled", &text, NULL,
                             NULL)) {
        return false;
    }
    g_autofree char *want = g_strdup_printf("[%s]", mode);
    return strstr(text, want) != NULL;
}

static void test_huge_eligible(void)
{
    uint8_t *m = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(m != MAP_FAILED);
    MfrRamBlock b[2] = { { .name = "a", .host = m, .length = LEN / 2, .page_size = 4096 },
                         { .name = "b", .host = m + LEN / 2, .length = LEN / 2,
                           .page_size = 4096 } };
    /* never huge: neither block, nor both */
    g_assert_cmpint(madvise(m, LEN, MADV_NOHUGEPAGE), ==, 0);
    g_assert_false(mfr_blocks_huge_eligible(b, 2));
    g_assert_false(mfr_blocks_huge_eligible(b, 1));
    if (thp_mode("never")) {
        munmap(m, LEN);
        g_test_skip("THP is off on this kernel: no mapping is eligible");
        return;
    }
    /* advised: both; then one block unadvised again: not every block, so no */
    g_assert_cmpint(madvise(m, LEN, MADV_HUGEPAGE), ==, 0);
    g_assert_true(mfr_blocks_huge_eligible(b, 2));
    g_assert_cmpint(madvise(m + LEN / 2, LEN / 2, MADV_NOHUGEPAGE), ==, 0);
    g_assert_true(mfr_blocks_huge_eligible(b, 1));
    g_assert_false(mfr_blocks_huge_eligible(b, 2));
    /* no blocks at all: nothing to say yes about */
    g_assert_false(mfr_blocks_huge_eligible(b, 0));
    munmap(m, LEN);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/placement/huge_eligible", test_huge_eligible);
    return g_test_run();
}
