/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a session is configured with, checked in one place for both sides: config defaults,
 * the shared transport knobs and the XpOptions they become, and the session token's text
 * form. (The rule every RAM block obeys lives with the wire limits: wire.c.)
 */
#include "compress.h"
#include "engine.h"

#include <string.h>

void mfr_source_config_init(MfrSourceConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
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

void mfr_dest_config_init(MfrDestConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->timeout_ms = 5000;
    cfg->max_channels = MFR_MAX_CHANNELS;
    cfg->transport.gid_index = -1;
    cfg->numa_node = MFR_NUMA_AUTO;
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
