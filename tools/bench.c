/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mfrdma bench`: placeholder pointing at the benchmark scripts until the bench driver is
 * part of the tool.
 */
#include "tool.h"

#include <string.h>

int tool_bench(ToolCtx *ctx, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("Usage:\n  mfrdma bench\n\nBenchmarks are not part of the tool yet: "
                   "see bench/run.\n");
            return TOOL_EXIT_OK;
        }
    }
    printf("mfrdma bench: see bench/run\n");
    return TOOL_EXIT_OK;
}
