/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * RDMA device discovery for the tool (implemented in devices.c, the only tool file that links
 * the verbs layer): `mfrdma devices` and the demo's automatic transport choice.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

/* `mfrdma devices [--help] ...`: argv[0] is "devices". Returns the process exit code
 * (0 success, 1 failure or no device, 2 usage error). */
int mfr_tool_devices(int argc, char **argv);

/* True when a usable RDMA device (active port) exists. On true, *device is its name and
 * *address the first IPv4 address of its network interface, or NULL if it has none; both
 * are g_free()d by the caller. Either pointer may be NULL if not wanted. */
bool mfr_tool_rdma_available(char **device, char **address);

G_END_DECLS
