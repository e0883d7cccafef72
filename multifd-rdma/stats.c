/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Migration statistics as JSON, the format `mfrdma --json` prints and bench/ parses.
 * Field names are stable: add new ones, never rename.
 */
#include "engine.h"

/* MfrStats' layout is ABI (see mfrdma.h): changing it means new symbol versions for
 * mfr_source_get_stats() and mfr_dest_get_stats() in libmfrdma.map first, then this size. */
G_STATIC_ASSERT(sizeof(MfrStats) == 3792);
G_STATIC_ASSERT(sizeof(MfrChannelStats) == 56);
/* Same rule for the compression stats (MFRDMA_0.3). */
G_STATIC_ASSERT(sizeof(MfrCompressionStats) == 4184);

char *mfr_stats_to_json(const MfrStats *s, const char *side)
{
    GString *j = g_string_new("{");
    g_string_append_printf(j, "\"side\":\"%s\",\"transport\":\"%s\",\"channels\":%u,",
                           side ? side : "", s->transport, s->channels);
    g_string_append_printf(j, "\"registration_threads\":%u,", s->registration_threads);
    g_string_append_printf(j, "\"total_ms\":%.3f,\"setup_ms\":%.3f,\"downtime_ms\":%.3f,"
                           "\"registration_ms\":%.3f,\"verify_ms\":%.3f,\"transfer_ms\":%.3f,",
                           s->total_ms, s->setup_ms, s->downtime_ms, s->registration_ms,
                           s->verify_ms, s->transfer_ms);
    g_string_append_printf(j, "\"ram_bytes\":%" G_GUINT64_FORMAT ",\"wire_bytes\":%"
                           G_GUINT64_FORMAT ",\"normal_pages\":%" G_GUINT64_FORMAT
                           ",\"zero_pages\":%" G_GUINT64_FORMAT ",\"packets\":%"
                           G_GUINT64_FORMAT ",\"rounds\":%" G_GUINT64_FORMAT ",",
                           s->ram_bytes, s->wire_bytes, s->normal_pages, s->zero_pages,
                           s->packets, s->rounds);
    g_string_append_printf(j, "\"dirty_rate_bps\":%.1f,\"throughput_bps\":%.1f,\"cpu_s\":%.4f,"
                           "\"converged\":%s,\"verified\":%s,\"channel\":[",
                           s->dirty_rate_bps, s->throughput_bps, s->cpu_s,
                           s->converged ? "true" : "false", s->verified ? "true" : "false");
    for (unsigned i = 0; i < s->channels && i < G_N_ELEMENTS(s->channel); i++) {
        const MfrChannelStats *c = &s->channel[i];
        g_string_append_printf(j, "%s{\"bytes\":%" G_GUINT64_FORMAT ",\"wire_bytes\":%"
                               G_GUINT64_FORMAT ",\"pages\":%" G_GUINT64_FORMAT
                               ",\"zero_pages\":%" G_GUINT64_FORMAT ",\"packets\":%"
                               G_GUINT64_FORMAT ",\"cpu_s\":%.4f,\"throughput_bps\":%.1f}",
                               i ? "," : "", c->bytes, c->wire_bytes, c->pages, c->zero_pages,
                               c->packets, c->busy_s, c->throughput_bps);
    }
    g_string_append_printf(j, "],\"registration_cpu_s\":%.4f,\"zerocopy_sends\":%"
                           G_GUINT64_FORMAT ",\"zerocopy_copied\":%" G_GUINT64_FORMAT ",",
                           s->registration_cpu_s, s->zerocopy_sends, s->zerocopy_copied);
    g_string_append_printf(j, "\"first_data_ms\":%.3f,\"bytes_before_last_region\":%"
                           G_GUINT64_FORMAT ",\"region_wait_ms\":%.3f,\"region_chunks\":%u}",
                           s->first_data_ms, s->bytes_before_last_region, s->region_wait_ms,
                           s->region_chunks);
    return g_string_free(j, FALSE);
}

void mfr_compression_stats_add(MfrCompressionStats *s, unsigned index,
                               const MfrCompressionChannelStats *c)
{
    if (index >= G_N_ELEMENTS(s->channel)) {
        return;
    }
    s->channel[index] = *c;
    s->channels = MAX(s->channels, index + 1);
    MfrCompressionChannelStats *t = &s->total;
    t->packets += c->packets;
    t->raw_bytes += c->raw_bytes;
    t->compressed_bytes += c->compressed_bytes;
    t->packets_not_shrunk += c->packets_not_shrunk;
    t->bytes_not_shrunk += c->bytes_not_shrunk;
    t->packets_skipped += c->packets_skipped;
    t->pauses += c->pauses;
    t->cpu_s += c->cpu_s;
    s->ratio = t->compressed_bytes ? (double)t->raw_bytes / (double)t->compressed_bytes : 0;
}

static void comp_channel_json(GString *j, const MfrCompressionChannelStats *c)
{
    g_string_append_printf(j, "{\"packets\":%" G_GUINT64_FORMAT ",\"raw_bytes\":%"
                           G_GUINT64_FORMAT ",\"compressed_bytes\":%" G_GUINT64_FORMAT
                           ",\"packets_not_shrunk\":%" G_GUINT64_FORMAT ",\"bytes_not_shrunk\":%"
                           G_GUINT64_FORMAT ",\"packets_skipped\":%" G_GUINT64_FORMAT
                           ",\"pauses\":%" G_GUINT64_FORMAT ",\"cpu_s\":%.4f}",
                           c->packets, c->raw_bytes, c->compressed_bytes, c->packets_not_shrunk,
                           c->bytes_not_shrunk, c->packets_skipped, c->pauses, c->cpu_s);
}

char *mfr_compression_stats_to_json(const MfrCompressionStats *s)
{
    GString *j = g_string_new("{");
    g_string_append_printf(j, "\"mode\":\"%s\",\"negotiated\":%s,\"level\":%d,"
                           "\"ratio\":%.3f,\"total\":", mfr_compression_str(s->mode),
                           s->negotiated ? "true" : "false", s->level, s->ratio);
    comp_channel_json(j, &s->total);
    g_string_append(j, ",\"channel\":[");
    for (unsigned i = 0; i < s->channels && i < G_N_ELEMENTS(s->channel); i++) {
        if (i) {
            g_string_append_c(j, ',');
        }
        comp_channel_json(j, &s->channel[i]);
    }
    g_string_append(j, "]}");
    return g_string_free(j, FALSE);
}
