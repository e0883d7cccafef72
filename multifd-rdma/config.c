/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a session is configured with, checked in one place for both sides: config defaults,
 * the shared transport knobs and the XpOptions they become, and the session token's text
 * form. (The rule every RAM block obeys lives with the wire limits: wire.c.)
 */
#include "compress.h"
#include "engine.h"

#include <stddef.h>
#include <string.h>

/* ---------- config ABI (mfrdma.h: struct_size) ----------
 * The layouts this library knows. A config is read only as far as its struct_size goes; the
 * smallest accepted layout ends where the MFRDMA_0.2 fields end (compat.c converts configs
 * of programs built before struct_size existed). The sizes are pinned: growing a config
 * means appending fields (each read below only when the caller's struct_size covers it),
 * and the struct must grow by them, since a caller's old tail padding is not initialised. */
#define SOURCE_CONFIG_MIN offsetof(MfrSourceConfig, max_bandwidth)
#define DEST_CONFIG_MIN offsetof(MfrDestConfig, numa_node)
G_STATIC_ASSERT(sizeof(MfrSourceConfig) == 120);
G_STATIC_ASSERT(SOURCE_CONFIG_MIN == 104);
G_STATIC_ASSERT(sizeof(MfrDestConfig) == 128);
G_STATIC_ASSERT(DEST_CONFIG_MIN == 120);

/* Whether the caller's struct holds all of field. */
#define CONFIG_HAS(size, type, field) \
    ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

static void source_config_defaults(MfrSourceConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->struct_size = sizeof(*cfg);
    cfg->channels = 4;
    cfg->downtime_ms = 300;
    cfg->max_rounds = 30;
    cfg->verify = true;
    cfg->zero_detect = true;
    cfg->timeout_ms = 5000;
    cfg->pages_per_packet = 128;
    cfg->transport.gid_index = -1;
    cfg->numa_node = MFR_NUMA_AUTO;
}

static void dest_config_defaults(MfrDestConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->struct_size = sizeof(*cfg);
    cfg->timeout_ms = 5000;
    cfg->max_channels = MFR_MAX_CHANNELS;
    cfg->transport.gid_index = -1;
    cfg->numa_node = MFR_NUMA_AUTO;
}

/* The defaults, cut to size bytes; struct_size = size (a size that cannot hold struct_size
 * gets nothing: there is nowhere to say it). */
static void config_init_sized(void *cfg, size_t size, const void *defaults, size_t full)
{
    if (size < sizeof(size_t)) {
        return;
    }
    memset(cfg, 0, size);
    memcpy(cfg, defaults, MIN(size, full));
    *(size_t *)cfg = size;
}

void mfr_source_config_init_sized(MfrSourceConfig *cfg, size_t size)
{
    MfrSourceConfig d;
    source_config_defaults(&d);
    config_init_sized(cfg, size, &d, sizeof(d));
}

void mfr_dest_config_init_sized(MfrDestConfig *cfg, size_t size)
{
    MfrDestConfig d;
    dest_config_defaults(&d);
    config_init_sized(cfg, size, &d, sizeof(d));
}

static bool config_size_check(const char *side, const char *type, const void *cfg, size_t min,
                              size_t full, GError **error)
{
    if (!cfg) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "%s: no %s", side, type);
        return false;
    }
    size_t size = *(const size_t *)cfg;
    if (size == 0) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "%s: %s.struct_size is 0: initialise "
                    "the config with %s_config_init()", side, type,
                    g_str_equal(side, "source") ? "mfr_source" : "mfr_dest");
        return false;
    }
    if (size > full) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "%s: %s of %zu bytes: this library "
                    "knows %zu (built against a newer mfrdma.h?)", side, type, size, full);
        return false;
    }
    if (size < min) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "%s: %s of %zu bytes, the smallest "
                    "layout is %zu", side, type, size, min);
        return false;
    }
    return true;
}

bool mfr_source_config_take(const MfrSourceConfig *cfg, MfrSourceConfig *out, GError **error)
{
    if (!config_size_check("source", "MfrSourceConfig", cfg, SOURCE_CONFIG_MIN,
                           sizeof(*out), error)) {
        return false;
    }
    size_t size = cfg->struct_size;
    source_config_defaults(out);
    memcpy(out, cfg, SOURCE_CONFIG_MIN);
    out->struct_size = sizeof(*out);
    if (CONFIG_HAS(size, MfrSourceConfig, max_bandwidth)) {
        out->max_bandwidth = cfg->max_bandwidth;
    }
    if (CONFIG_HAS(size, MfrSourceConfig, numa_node)) {
        out->numa_node = cfg->numa_node;
    }
    return true;
}

bool mfr_dest_config_take(const MfrDestConfig *cfg, MfrDestConfig *out, GError **error)
{
    if (!config_size_check("destination", "MfrDestConfig", cfg, DEST_CONFIG_MIN,
                           sizeof(*out), error)) {
        return false;
    }
    size_t size = cfg->struct_size;
    dest_config_defaults(out);
    memcpy(out, cfg, DEST_CONFIG_MIN);
    out->struct_size = sizeof(*out);
    if (CONFIG_HAS(size, MfrDestConfig, numa_node)) {
        out->numa_node = cfg->numa_node;
    }
    return true;
}

bool mfr_transport_check(const char *side, const MfrTransportConfig *t, GError **error)
{
    if (t->registration_threads > MFR_REGISTER_MAX_THREADS) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: %u registration threads, allowed 0 (one per CPU)..%u", side,
                    t->registration_threads, MFR_REGISTER_MAX_THREADS);
        return false;
    }
    if (t->rc_retry > 7) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: RC retry count %u, allowed 0 (default 7)..7", side, t->rc_retry);
        return false;
    }
    if (t->rc_timeout > 31) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "%s: RC ACK timeout exponent %u, allowed 0 (rdma_cm's default)..31", side,
                    t->rc_timeout);
        return false;
    }
    return true;
}

void mfr_transport_xp_options(const MfrTransportConfig *t, unsigned timeout_ms, bool control,
                              XpOptions *o)
{
    xp_options_init(o);
    o->timeout_ms = (int)timeout_ms;
    o->rdma_dev = t->rdma_dev;
    o->rdma_port = t->rdma_port;
    o->gid_index = t->gid_index;
    o->odp = t->odp;
    o->rc_retry = t->rc_retry;
    o->rc_timeout = t->rc_timeout;
    /* latency matters on the control connection, and it carries no pages */
    o->zerocopy = t->zerocopy && !control;
    o->control = control;
}

/* ---------- compression ---------- */

static const char *const compression_name[] = {
    [MFR_COMPRESSION_OFF] = "off",
    [MFR_COMPRESSION_ZSTD] = "zstd",
    [MFR_COMPRESSION_AUTO] = "auto",
};

const char *mfr_compression_str(MfrCompression c)
{
    return (unsigned)c < G_N_ELEMENTS(compression_name) ? compression_name[c] : "?";
}

bool mfr_compression_parse(const char *text, MfrCompression *out, GError **error)
{
    for (unsigned i = 0; text && i < G_N_ELEMENTS(compression_name); i++) {
        if (g_ascii_strcasecmp(text, compression_name[i]) == 0) {
            *out = (MfrCompression)i;
            return true;
        }
    }
    g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                "'%s' is not a compression mode (off, zstd or auto)", text ? text : "(null)");
    return false;
}

bool mfr_compression_check(MfrCompression mode, int level, GError **error)
{
    int min, max;
    if ((unsigned)mode > MFR_COMPRESSION_AUTO) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "compression mode %d, allowed 0 (off), 1 (zstd), 2 (auto)", (int)mode);
        return false;
    }
    if (!mfr_comp_level_ok(level ? level : MFR_COMP_DEFAULT_LEVEL, &min, &max)) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE,
                    "zstd compression level %d, allowed %d..%d (0: the default, %d)", level,
                    min, max, MFR_COMP_DEFAULT_LEVEL);
        return false;
    }
    return true;
}

/* ---------- token ---------- */

bool mfr_token_parse(const char *hex, uint8_t token[16], GError **error)
{
    uint8_t out[MFR_TOKEN_LEN];
    bool ok = hex && strlen(hex) == 2 * MFR_TOKEN_LEN;
    for (unsigned i = 0; ok && i < MFR_TOKEN_LEN; i++) {
        int hi = g_ascii_xdigit_value(hex[2 * i]);
        int lo = g_ascii_xdigit_value(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!ok) {
        g_set_error(error, MFR_ERROR, MFR_ERROR_USAGE, "'%s' is not %u hex digits",
                    hex ? hex : "(null)", 2 * MFR_TOKEN_LEN);
        return false;
    }
    memcpy(token, out, sizeof(out));
    return true;
}

void mfr_token_format(const uint8_t token[16], char hex[33])
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < MFR_TOKEN_LEN; i++) {
        hex[2 * i] = digits[token[i] >> 4];
        hex[2 * i + 1] = digits[token[i] & 0xf];
    }
    hex[2 * MFR_TOKEN_LEN] = '\0';
}
