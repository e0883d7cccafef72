/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Plumbing for mfrdma-bench: clocks, fresh mappings, TCP sockets configured like the engine's
 * data channels (so the raw baseline gets the same buffers and Nagle setting), and the text
 * control protocol between the bench's source side and its destination agent.
 */
#include "bench.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Same socket buffers as transport/tcp/ asks for on data channels, when the sysctls allow. */
#define BENCH_SOCKBUF (4 * 1024 * 1024)

G_DEFINE_QUARK(mfr-bench-error-quark, bench_error)

/* CLOCK_THREAD_CPUTIME_ID rather than getrusage(RUSAGE_THREAD): the latter omits the running
 * thread's time since its last tick (up to 4 ms here), which is all of it on tiny runs. */
double bench_thread_cpu_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void *bench_map_fresh(uint64_t len, bool thp, GError **error)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED,
                    "mmap of %" G_GUINT64_FORMAT " bytes: %s", len, g_strerror(errno));
        return NULL;
    }
    if (thp) {
        madvise(p, len, MADV_HUGEPAGE);
    }
    return p;
}

void bench_unmap(void *p, uint64_t len)
{
    if (p) {
        munmap(p, len);
    }
}

/* ---------- control lines ---------- */

bool bench_ctl_send(int fd, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *body = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *line = g_strconcat(body, "\n", NULL);
    size_t len = strlen(line), off = 0;
    while (off < len) {
        ssize_t r = send(fd, line + off, len - off, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED,
                        "bench control: send: %s", g_strerror(errno));
            return false;
        }
        off += (size_t)r;
    }
    return true;
}

/* Byte at a time: lines are few and short, and nothing else may be read past the newline. */
bool bench_ctl_recv(int fd, char *line, size_t cap, int timeout_ms, GError **error)
{
    size_t n = 0;
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr == 0) {
            g_set_error(error, BENCH_ERROR, BENCH_ERROR_TIMEOUT,
                        "bench control: no answer within %d ms", timeout_ms);
            return false;
        }
        char c;
        ssize_t r = recv(fd, &c, 1, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            g_set_error(error, BENCH_ERROR, r == 0 ? BENCH_ERROR_CLOSED : BENCH_ERROR_FAILED,
                        "bench control: %s", r == 0 ? "peer closed the connection"
                                                    : g_strerror(errno));
            return false;
        }
        if (c == '\n') {
            line[n] = '\0';
            return true;
        }
        if (n + 1 >= cap) {
            g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED,
                        "bench control: line longer than %zu bytes", cap);
            return false;
        }
        line[n++] = c;
    }
}

/* ---------- sockets ---------- */

static void bench_sockopt(int fd, int level, int name, int val)
{
    (void)setsockopt(fd, level, name, &val, sizeof(val));
}

static int bench_sysctl_int(const char *path)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    return (int)g_ascii_strtoll(text, NULL, 10);
}

/* Buffers before connect/listen (window scaling is fixed at SYN), as transport/tcp/ does. */
static void bench_data_bufs(int fd)
{
    if (bench_sysctl_int("/proc/sys/net/core/wmem_max") >= BENCH_SOCKBUF) {
        bench_sockopt(fd, SOL_SOCKET, SO_SNDBUF, BENCH_SOCKBUF);
    }
    if (bench_sysctl_int("/proc/sys/net/core/rmem_max") >= BENCH_SOCKBUF) {
        bench_sockopt(fd, SOL_SOCKET, SO_RCVBUF, BENCH_SOCKBUF);
    }
}

static struct addrinfo *bench_resolve(const char *host, const char *port, bool passive,
                                      GError **error)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = passive ? AI_PASSIVE : 0,
    };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "resolving %s:%s: %s",
                    host ? host : "*", port, gai_strerror(rc));
        return NULL;
    }
    return res;
}

int bench_tcp_listen(const char *host, const char *port, bool data, uint16_t *bound,
                     GError **error)
{
    struct addrinfo *res = bench_resolve(host, port, true, error);
    if (!res) {
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "socket: %s",
                    g_strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    bench_sockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (data) {
        bench_data_bufs(fd);
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "listening on %s:%s: %s",
                    host ? host : "*", port, g_strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (bound) {
        *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

int bench_tcp_connect(const char *host, const char *port, bool data, GError **error)
{
    struct addrinfo *res = bench_resolve(host, port, false, error);
    if (!res) {
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (data) {
            bench_data_bufs(fd);
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "connecting to %s:%s: %s",
                    host, port, g_strerror(err));
        return -1;
    }
    bench_sockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    return fd;
}

int bench_tcp_accept(int lfd, int timeout_ms, bool data, GError **error)
{
    struct pollfd pfd = { .fd = lfd, .events = POLLIN };
    int pr;
    while ((pr = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    if (pr == 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_TIMEOUT,
                    "no connection within %d ms", timeout_ms);
        return -1;
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, BENCH_ERROR, BENCH_ERROR_FAILED, "accept: %s",
                    g_strerror(errno));
        return -1;
    }
    (void)data; /* accepted sockets inherit the listener's buffers */
    bench_sockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    return fd;
}
