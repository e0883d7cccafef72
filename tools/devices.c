/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mfrdma devices`: RDMA devices, ports, GIDs and the limits that matter for migration, as a
 * table or JSON; and the demo's check for a usable device. The only tool file that reads
 * below the public API: the rdma transport's device descriptions (xp-rdma.h), which
 * libmfrdma exports for it.
 */
#include "devices.h"

#include "xp-rdma.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static void json_str(GString *o, const char *s)
{
    g_string_append_c(o, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            g_string_append_printf(o, "\\%c", *p);
        } else if ((unsigned char)*p < 0x20) {
            g_string_append_printf(o, "\\u%04x", *p);
        } else {
            g_string_append_c(o, *p);
        }
    }
    g_string_append_c(o, '"');
}

static const char *yes_no(bool b)
{
    return b ? "yes" : "no";
}

/* First network interface named by a GID of the port, "" if none. */
static const char *port_netdev(const XpRdmaPort *pi)
{
    for (guint g = 0; g < pi->gids->len; g++) {
        const XpRdmaGid *gi = &g_array_index(pi->gids, XpRdmaGid, g);
        if (gi->netdev[0]) {
            return gi->netdev;
        }
    }
    return "";
}

static void print_table(FILE *out, GPtrArray *devs)
{
    for (guint i = 0; i < devs->len; i++) {
        const XpRdmaDevice *d = devs->pdata[i];
        fprintf(out, "%s  (%s, NUMA node %d, node GUID %016" PRIx64 ")\n", d->name,
                d->transport, d->numa_node, d->node_guid);
        fprintf(out, "  limits: max_qp %d, max_qp_wr %d, max_sge %d, max_cqe %d, max_mr %d, "
                     "max_mr_size %" PRIu64 "\n", d->max_qp, d->max_qp_wr, d->max_sge,
                d->max_cqe, d->max_mr, d->max_mr_size);
        fprintf(out, "  ODP: %s (RC send %s, recv %s, write %s, read %s, implicit %s)\n",
                yes_no(d->odp), yes_no(d->odp_rc_send), yes_no(d->odp_rc_recv),
                yes_no(d->odp_rc_write), yes_no(d->odp_rc_read), yes_no(d->odp_implicit));
        for (guint p = 0; p < d->ports->len; p++) {
            const XpRdmaPort *pi = &g_array_index(d->ports, XpRdmaPort, p);
            const char *nd = port_netdev(pi);
            fprintf(out, "  port %d: %-6s %-10s MTU %d (max %d)%s%s\n", pi->num,
                    pi->state, pi->link_layer, pi->active_mtu,
                    pi->max_mtu, nd[0] ? ", netdev " : "", nd);
            for (guint g = 0; g < pi->gids->len; g++) {
                const XpRdmaGid *gi = &g_array_index(pi->gids, XpRdmaGid, g);
                fprintf(out, "    GID %-3d %-8s %s%s%s\n", gi->index, gi->type, gi->addr,
                        gi->netdev[0] ? "  " : "", gi->netdev);
            }
        }
    }
}

static void print_json(FILE *out, GPtrArray *devs)
{
    g_autoptr(GString) o = g_string_new("{\"devices\":[");
    for (guint i = 0; i < devs->len; i++) {
        const XpRdmaDevice *d = devs->pdata[i];
        g_string_append(o, i ? ",{\"name\":" : "{\"name\":");
        json_str(o, d->name);
        g_string_append(o, ",\"transport\":");
        json_str(o, d->transport);
        g_string_append_printf(o, ",\"numa_node\":%d,\"node_guid\":\"%016" PRIx64 "\"",
                               d->numa_node, d->node_guid);
        g_string_append_printf(o, ",\"max_qp\":%d,\"max_qp_wr\":%d,\"max_sge\":%d,"
                                  "\"max_cqe\":%d,\"max_mr\":%d,\"max_mr_size\":%" PRIu64,
                               d->max_qp, d->max_qp_wr, d->max_sge, d->max_cqe, d->max_mr,
                               d->max_mr_size);
        g_string_append_printf(o, ",\"odp\":{\"supported\":%s,\"rc_send\":%s,\"rc_recv\":%s,"
                                  "\"rc_write\":%s,\"rc_read\":%s,\"implicit\":%s}",
                               d->odp ? "true" : "false", d->odp_rc_send ? "true" : "false",
                               d->odp_rc_recv ? "true" : "false",
                               d->odp_rc_write ? "true" : "false",
                               d->odp_rc_read ? "true" : "false",
                               d->odp_implicit ? "true" : "false");
        g_string_append(o, ",\"ports\":[");
        for (guint p = 0; p < d->ports->len; p++) {
            const XpRdmaPort *pi = &g_array_index(d->ports, XpRdmaPort, p);
            g_string_append_printf(o, "%s{\"port\":%d,\"state\":", p ? "," : "", pi->num);
            json_str(o, pi->state);
            g_string_append(o, ",\"link_layer\":");
            json_str(o, pi->link_layer);
            g_string_append_printf(o, ",\"active_mtu\":%d,\"max_mtu\":%d,\"netdev\":",
                                   pi->active_mtu, pi->max_mtu);
            json_str(o, port_netdev(pi));
            g_string_append(o, ",\"gids\":[");
            for (guint g = 0; g < pi->gids->len; g++) {
                const XpRdmaGid *gi = &g_array_index(pi->gids, XpRdmaGid, g);
                g_string_append_printf(o, "%s{\"index\":%d,\"type\":", g ? "," : "", gi->index);
                json_str(o, gi->type);
                g_string_append(o, ",\"gid\":");
                json_str(o, gi->addr);
                g_string_append(o, ",\"netdev\":");
                json_str(o, gi->netdev);
                g_string_append_c(o, '}');
            }
            g_string_append(o, "]}");
        }
        g_string_append(o, "]}");
    }
    g_string_append(o, "]}\n");
    fputs(o->str, out);
}

int mfr_tool_devices(int argc, char **argv)
{
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON instead of a table", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
    g_option_context_set_summary(ctx,
                                 "List RDMA devices: ports (state, link layer, MTU), GIDs with "
                                 "type, address and\nnetwork interface, NUMA node and the "
                                 "limits that matter for migration\n(max QPs, work requests, "
                                 "SGEs, MR size, on-demand paging).\n\n"
                                 "Exit status: 0 at least one device, 1 none or an error, "
                                 "2 usage error.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) err = NULL;
    g_autofree char *prg = g_strdup_printf("mfrdma %s", argc > 0 ? argv[0] : "devices");
    g_set_prgname(prg);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "mfrdma devices: %s\nTry 'mfrdma devices --help'.\n", err->message);
        return 2;
    }
    if (argc > 1) {
        fprintf(stderr, "mfrdma devices: unexpected argument '%s'\n"
                        "Try 'mfrdma devices --help'.\n", argv[1]);
        return 2;
    }
    g_autoptr(GPtrArray) devs = xp_rdma_devices(&err);
    if (!devs) {
        fprintf(stderr, "mfrdma devices: %s\n", err->message);
        return 1;
    }
    if (json) {
        print_json(stdout, devs);
    } else if (devs->len == 0) {
        printf("no RDMA devices (for soft-RoCE: modprobe rdma_rxe && "
               "rdma link add rxe0 type rxe netdev eth0)\n");
    } else {
        print_table(stdout, devs);
    }
    return devs->len > 0 ? 0 : 1;
}

static char *first_ipv4_of(const char *ifname)
{
    struct ifaddrs *all = NULL;
    if (!ifname[0] || getifaddrs(&all) != 0) {
        return NULL;
    }
    char *out = NULL;
    for (struct ifaddrs *i = all; i && !out; i = i->ifa_next) {
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp(i->ifa_name, ifname) == 0) {
            char buf[INET_ADDRSTRLEN];
            const struct sockaddr_in *sin = (const struct sockaddr_in *)i->ifa_addr;
            if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf))) {
                out = g_strdup(buf);
            }
        }
    }
    freeifaddrs(all);
    return out;
}

bool mfr_tool_rdma_available(char **device, char **address)
{
    if (device) {
        *device = NULL;
    }
    if (address) {
        *address = NULL;
    }
    g_autoptr(GPtrArray) devs = xp_rdma_devices(NULL);
    for (guint i = 0; devs && i < devs->len; i++) {
        const XpRdmaDevice *d = devs->pdata[i];
        for (guint p = 0; p < d->ports->len; p++) {
            const XpRdmaPort *pi = &g_array_index(d->ports, XpRdmaPort, p);
            if (!pi->active) {
                continue;
            }
            if (device) {
                *device = g_strdup(d->name);
            }
            if (address) {
                *address = first_ipv4_of(port_netdev(pi));
            }
            return true;
        }
    }
    return false;
}
