/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ThreadSanitizer build only (b_sanitize=thread): LD_PRELOADed into every test, it tells TSan
 * what GLib's locks do. GLib's GMutex and GCond are futexes in an uninstrumented library, so
 * TSan sees neither the lock nor the happens-before it gives, and reports every access made
 * under a GMutex as a race. Each wrapper calls GLib's own function and adds the matching
 * annotation; GAsyncQueue hand-offs become a release/acquire pair on the queue.
 */
#include <dlfcn.h>
#include <glib.h>
#include <sanitizer/tsan_interface.h>
#include <stdatomic.h>
#include <stdlib.h>

/* GLib's own function, looked up on first use; threads that race to it store the same value */
#define REAL(name)                                                                  \
    static _Atomic(__typeof__(name) *) real_ptr_##name;                             \
    __typeof__(name) *real_##name = atomic_load_explicit(&real_ptr_##name,          \
                                                         memory_order_relaxed);     \
    if (!real_##name) {                                                             \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name);                  \
        if (!real_##name) {                                                         \
            abort(); /* a GLib without the symbol cannot run these tests */         \
        }                                                                           \
        atomic_store_explicit(&real_ptr_##name, real_##name, memory_order_relaxed); \
    }

void g_mutex_lock(GMutex *m)
{
    REAL(g_mutex_lock);
    __tsan_mutex_pre_lock(m, 0);
    real_g_mutex_lock(m);
    __tsan_mutex_post_lock(m, 0, 0);
}

gboolean g_mutex_trylock(GMutex *m)
{
    REAL(g_mutex_trylock);
    __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
    gboolean ok = real_g_mutex_trylock(m);
    __tsan_mutex_post_lock(m, __tsan_mutex_try_lock | (ok ? 0 : __tsan_mutex_try_lock_failed),
                           0);
    return ok;
}

void g_mutex_unlock(GMutex *m)
{
    REAL(g_mutex_unlock);
    __tsan_mutex_pre_unlock(m, 0);
    real_g_mutex_unlock(m);
    __tsan_mutex_post_unlock(m, 0);
}

/* A wait gives the mutex up and takes it back inside GLib, where TSan cannot see it. */
static void cond_unlocked(GMutex *m)
{
    __tsan_mutex_pre_unlock(m, 0);
    __tsan_mutex_post_unlock(m, 0);
}

static void cond_relocked(GMutex *m)
{
    __tsan_mutex_pre_lock(m, 0);
    __tsan_mutex_post_lock(m, 0, 0);
}

void g_cond_wait(GCond *c, GMutex *m)
{
    REAL(g_cond_wait);
    cond_unlocked(m);
    real_g_cond_wait(c, m);
    cond_relocked(m);
}

gboolean g_cond_wait_until(GCond *c, GMutex *m, gint64 end_time)
{
    REAL(g_cond_wait_until);
    cond_unlocked(m);
    gboolean ok = real_g_cond_wait_until(c, m, end_time);
    cond_relocked(m);
    return ok;
}

void g_async_queue_push(GAsyncQueue *q, gpointer data)
{
    REAL(g_async_queue_push);
    __tsan_release(q);
    real_g_async_queue_push(q, data);
}

gpointer g_async_queue_try_pop(GAsyncQueue *q)
{
    REAL(g_async_queue_try_pop);
    gpointer p = real_g_async_queue_try_pop(q);
    if (p) {
        __tsan_acquire(q);
    }
    return p;
}

gpointer g_async_queue_timeout_pop(GAsyncQueue *q, guint64 timeout)
{
    REAL(g_async_queue_timeout_pop);
    gpointer p = real_g_async_queue_timeout_pop(q, timeout);
    if (p) {
        __tsan_acquire(q);
    }
    return p;
}

gpointer g_async_queue_pop(GAsyncQueue *q)
{
    REAL(g_async_queue_pop);
    gpointer p = real_g_async_queue_pop(q);
    __tsan_acquire(q);
    return p;
}
