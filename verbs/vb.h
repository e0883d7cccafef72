/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thin, safe layer over libibverbs and librdmacm. Nothing outside verbs/ includes their
 * headers; callers see opaque Vb* objects and GError messages.
 */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

#define VB_ERROR (vb_error_quark())
GQuark vb_error_quark(void);

G_END_DECLS
