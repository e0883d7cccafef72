/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared bits of the libFuzzer harnesses: silence the library's logging (a refused input is
 * the common case, and printing each one would dominate the run; MFR_FUZZ_VERBOSE keeps it) and read little-endian
 * fields of an input.
 */
#pragma once

#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline GLogWriterOutput fuzz_log_drop(GLogLevelFlags level, const GLogField *fields,
                                             gsize n_fields, gpointer user_data)
{
    /* criticals and errors still abort: they are bugs the fuzzer must see */
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) {
        return g_log_writer_default(level, fields, n_fields, user_data);
    }
    return G_LOG_WRITER_HANDLED;
}

/* MFR_FUZZ_VERBOSE=1 keeps the logs, to see why an input ends where it does. */
static inline void fuzz_quiet(void)
{
    if (g_getenv("MFR_FUZZ_VERBOSE")) {
        return;
    }
    g_log_set_writer_func(fuzz_log_drop, NULL, NULL);
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
}

static inline uint64_t fuzz_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* connect() that survives libFuzzer's timer signals (-timeout, -max_total_time): an
 * interrupted connect goes on in the kernel, so wait for it instead of starting over. */
static inline bool fuzz_connect(int fd, const struct sockaddr *a, socklen_t len)
{
    if (connect(fd, a, len) == 0) {
        return true;
    }
    while (errno == EINTR || errno == EALREADY || errno == EINPROGRESS) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, 1000) == 1) {
            int err = 0;
            socklen_t n = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n);
            errno = err;
            return err == 0;
        }
    }
    return errno == EISCONN;
}
