/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Threads of the library: every thread libmfrdma creates (engine and transports) starts
 * with all signals blocked, so a host process such as QEMU keeps its signal handling: its
 * signals are delivered to its own threads, never to ours.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

/* g_thread_try_new() with every signal blocked in the new thread from its first instruction.
 * NULL with an error (XP_ERROR_FAILED naming the thread) when the thread cannot start. */
GThread *xp_thread_new(const char *name, GThreadFunc fn, gpointer data, GError **error);

/* Where a thread started: filled by the thread itself before fn runs (read it after a join,
 * or after anything else that orders it after the thread's start). */
typedef struct {
    int cpu;    /* the CPU it started on; -1 unknown */
    int node;   /* that CPU's NUMA node; -1 unknown */
    bool bound; /* it was bound to numa_node and its affinity is within that node's CPUs */
} XpThreadPlace;

/* xp_thread_new(), and the thread runs on the CPUs of NUMA node numa_node and allocates
 * from it by preference (numa_node < 0, or no NUMA support: anywhere, as xp_thread_new()).
 * The caller checked that the node exists. where may be NULL. */
GThread *xp_thread_new_on(const char *name, GThreadFunc fn, gpointer data, int numa_node,
                          XpThreadPlace *where, GError **error);

G_END_DECLS
