/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Message recorder of the fuzz build (-Dfuzz=true only): with MFR_RECORD_DIR set, every
 * message a TCP channel receives is written there, one file per distinct message, named by
 * its kind and content hash. A real migration run this way yields the seed corpus of
 * tests/fuzz (tests/fuzz/make-corpus.sh). Release builds do not contain this file.
 */
#define G_LOG_DOMAIN "mfrdma-xp-record"

#include "xp.h"

#include <string.h>

static const char *record_kind(const uint8_t *msg, size_t len)
{
    /* the engine's magics, as LE bytes (multifd-rdma/wire.h; the transport must not include
     * engine headers, and a recorder that guessed wrong only misfiles a seed) */
    static const struct { const char *magic, *kind; } kinds[] = {
        { "MRFH", "hello" }, { "MRFC", "ctrl" }, { "MRFP", "packet" },
    };
    for (size_t i = 0; len >= 4 && i < G_N_ELEMENTS(kinds); i++) {
        if (memcmp(msg, kinds[i].magic, 4) == 0) {
            return kinds[i].kind;
        }
    }
    return "other";
}

void xp_record_msg(const void *msg, size_t len)
{
    const char *dir = g_getenv("MFR_RECORD_DIR");
    if (!dir || !*dir) {
        return;
    }
    g_autofree char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA1, msg, len);
    g_autofree char *name = g_strdup_printf("%s-%.16s", record_kind(msg, len), sum);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) err = NULL;
    if (!g_file_test(path, G_FILE_TEST_EXISTS) &&
        !g_file_set_contents(path, msg, (gssize)len, &err)) {
        g_warning("recorder: %s", err->message);
    }
}
