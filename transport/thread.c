/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one place the library creates threads (see thread.h): the signal mask is set around
 * the creation, so there is no moment in which the new thread could take a signal.
 */
#include "thread.h"

#include "xp.h"

#include <pthread.h>
#include <signal.h>

GThread *xp_thread_new(const char *name, GThreadFunc fn, gpointer data, GError **error)
{
    /* A new thread inherits its creator's mask. Blocking in the thread's start routine
     * instead would leave a window between clone() and the pthread_sigmask() call in which
     * a process-directed signal could pick the new thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    GError *gerr = NULL;
    GThread *t = g_thread_try_new(name, fn, data, &gerr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!t) {
        g_set_error(error, XP_ERROR, XP_ERROR_FAILED, "cannot start thread %s: %s", name,
                    gerr->message);
        g_error_free(gerr);
    }
    return t;
}
