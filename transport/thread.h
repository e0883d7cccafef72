/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Threads of the library: every thread libmfrdma creates (engine and transports) starts
 * with all signals blocked, so a host process such as QEMU keeps its signal handling: its
 * signals are delivered to its own threads, never to ours.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* g_thread_try_new() with every signal blocked in the new thread from its first instruction.
 * NULL with an error (XP_ERROR_FAILED naming the thread) when the thread cannot start. */
GThread *xp_thread_new(const char *name, GThreadFunc fn, gpointer data, GError **error);

G_END_DECLS
