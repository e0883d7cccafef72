/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one place the library creates threads (see thread.h): the signal mask is set around
 * the creation, so there is no moment in which the new thread could take a signal; and a
 * thread placed on a NUMA node binds itself there before it runs anything else.
 */
#include "thread.h"

#include "xp.h"

#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

GThread *xp_thread_new(const char *name, GThreadFunc fn, gpointer data, GError **error)
{
    return xp_thread_new_on(name, fn, data, -1, NULL, error);
}

typedef struct {
    GThreadFunc fn;
    gpointer data;
    int node;
    XpThreadPlace *where;
} XpThreadStart;

/* Whether the calling thread's CPU affinity lies within node's CPUs. */
static bool affinity_within(int node)
{
    struct bitmask *cpus = numa_allocate_cpumask();
    cpu_set_t set;
    bool ok = numa_node_to_cpus(node, cpus) == 0 &&
              sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0;
    for (int c = 0; ok && c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &set) && !numa_bitmask_isbitset(cpus, (unsigned)c)) {
            ok = false;
        }
    }
    numa_free_cpumask(cpus);
    return ok;
}

static gpointer thread_start(gpointer opaque)
{
    XpThreadStart st = *(XpThreadStart *)opaque;
    g_free(opaque);
    bool numa = numa_available() >= 0;
    bool bound = false;
    if (numa && st.node >= 0) {
        /* CPUs first, then memory: this thread's later allocations (buffers it touches
         * first, stacks of nothing else) come from the node */
        bound = numa_run_on_node(st.node) == 0;
        numa_set_preferred(st.node);
    }
    if (st.where) {
        int cpu = sched_getcpu();
        st.where->cpu = cpu;
        st.where->node = numa && cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
        st.where->bound = bound && affinity_within(st.node);
    }
    return st.fn(st.data);
}

GThread *xp_thread_new_on(const char *name, GThreadFunc fn, gpointer data, int numa_node,
                          XpThreadPlace *where, GError **error)
{
    XpThreadStart *st = g_new(XpThreadStart, 1);
    *st = (XpThreadStart){ .fn = fn, .data = data, .node = numa_node, .where = where };
    if (where) {
        *where = (XpThreadPlace){ .cpu = -1, .node = -1 };
    }
    /* A new thread inherits its creator's mask. Blocking in the thread's start routine
     * instead would leave a window between clone() and the pthread_sigmask() call in which
     * a process-directed signal could pick the new thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    GError *gerr = NULL;
    GThread *t = g_thread_try_new(name, thread_start, st, &gerr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!t) {
        g_free(st);
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot start thread %s: %s", name,
                    gerr->message);
        g_error_free(gerr);
    }
    return t;
}
