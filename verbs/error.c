/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Error domain of the verbs layer. libibverbs returns positive errno, librdmacm -1 + errno,
 * constructors NULL + errno: the two helpers here are the only places that turn those into a
 * GError or a negative errno.
 */
#include "vb-priv.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

G_DEFINE_QUARK(vb-error-quark, vb_error)

void vb_set_error_errno(GError **error, int errnum, const char *fmt, ...)
{
    if (errnum < 0) {
        errnum = -errnum;
    }
    if (errnum == 0) {
        errnum = EIO; /* some providers fail without setting errno */
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    int code = VB_ERROR_FAILED;
    if (errnum == ENODEV) {
        code = VB_ERROR_NO_DEVICE;
    } else if (errnum == EOPNOTSUPP || errnum == ENOSYS) {
        code = VB_ERROR_UNSUPPORTED;
    } else if (errnum == ETIMEDOUT) {
        code = VB_ERROR_TIMEOUT;
    } else if (errnum == ECONNREFUSED || errnum == EHOSTUNREACH || errnum == ENETUNREACH ||
               errnum == EADDRNOTAVAIL) {
        code = VB_ERROR_UNREACHABLE;
    }
    g_set_error(error, VB_ERROR, code, "%s: %s", what, g_strerror(errnum));
}

int vb_errno_ret(int ret)
{
    if (ret > 0) {
        return -ret;
    }
    if (ret < 0) {
        return errno > 0 ? -errno : -EIO;
    }
    return 0;
}
