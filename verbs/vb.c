/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Error domain of the verbs layer: every libibverbs/librdmacm failure becomes a GError here.
 */
#include "vb.h"

#include <infiniband/verbs.h>

G_DEFINE_QUARK(vb-error-quark, vb_error)
