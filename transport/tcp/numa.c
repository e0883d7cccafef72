/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NUMA node of the NIC a TCP connection leaves from: the interface that owns the
 * socket's local address, and its device's numa_node in sysfs. Loopback and virtual
 * interfaces have no device: -1.
 */
#include "tcp-priv.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static bool same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (!a || a->sa_family != b->ss_family) {
        return false;
    }
    if (a->sa_family == AF_INET) {
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    }
    return false;
}

int tcp_numa_node(XpChannel *c)
{
    TcpChannel *ch = (TcpChannel *)c;
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (getsockname(ch->fd, (struct sockaddr *)&local, &len) != 0) {
        return -1;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        return -1;
    }
    int node = -1;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!same_addr(i->ifa_addr, &local)) {
            continue;
        }
        g_autofree char *path = g_strdup_printf("/sys/class/net/%s/device/numa_node",
                                                i->ifa_name);
        g_autofree char *txt = NULL;
        if (g_file_get_contents(path, &txt, NULL, NULL)) {
            node = atoi(txt);
        }
        break;
    }
    freeifaddrs(ifs);
    return node;
}
