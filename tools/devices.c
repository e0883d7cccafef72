/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Placeholder for RDMA device discovery (see devices.h) until the verbs-based version lands:
 * reports that no RDMA support is built, so the demo falls back to TCP.
 */
#include "devices.h"

#include <stdio.h>
#include <string.h>

int mfr_tool_devices(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("Usage:\n  mfrdma devices\n\nList RDMA devices, ports, GIDs and addresses.\n");
            return 0;
        }
    }
    fprintf(stderr, "mfrdma devices: no RDMA support built yet\n");
    return 1;
}

bool mfr_tool_rdma_available(char **device, char **address)
{
    if (device) {
        *device = NULL;
    }
    if (address) {
        *address = NULL;
    }
    return false;
}
