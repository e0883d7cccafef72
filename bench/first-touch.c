/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mfrdma-first-touch: what the first write to fresh anonymous memory costs on this host, with
 * and without transparent huge pages, as a function of how long ago the memory was freed
 * (docs/performance.md: a VM's free page reporting hands freed memory back to the hypervisor
 * after a few seconds, and touching it again costs far more). No library code: a baseline.
 * Usage: mfrdma-first-touch [SIZE_MIB] [DELAY_S...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char *map(size_t len, int thp)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    if (madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) {
        perror("madvise");
    }
    return p;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t len = mib << 20;
    int def[] = { 0, 1, 3, 6 };
    int n = argc > 2 ? argc - 2 : 4;
    printf("first touch of %zu MiB of anonymous memory, freed DELAY s before\n", mib);
    printf("%-8s %8s %10s %14s\n", "pages", "delay s", "wall s", "CPU s per GiB");
    for (int thp = 1; thp >= 0; thp--) {
        for (int i = 0; i < n; i++) {
            int delay = argc > 2 ? atoi(argv[i + 2]) : def[i];
            /* touched and freed: the kernel hands these pages out next */
            char *p = map(len, thp);
            memset(p, 1, len);
            munmap(p, len);
            sleep((unsigned)delay);
            p = map(len, thp);
            double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            for (size_t o = 0; o < len; o += 4096) {
                p[o] = 1;
            }
            double t = clock_s(CLOCK_MONOTONIC) - t0;
            double c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
            printf("%-8s %8d %10.2f %14.2f\n", thp ? "THP" : "4 KiB", delay, t,
                   c / ((double)len / (1 << 30)));
            fflush(stdout);
            munmap(p, len);
        }
    }
    return 0;
}
