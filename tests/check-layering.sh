#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Layering and licensing rules that a compiler cannot check:
#  - only verbs/ includes libibverbs/librdmacm headers;
#  - transport/ never includes engine headers, verbs/ never includes transport or engine ones;
#  - the engine calls transports only through the xp_*() wrappers of xp.h: no call through an
#    ops table (`ops->`, `->ops->`, `xp_tcp_ops.`) and no backend header in multifd-rdma/;
#  - inside verbs/, device.c and devinfo.c know nothing of cm_ids (cm.c and cm-route.c use
#    them, never the other way round);
#  - tools/ and bench/ link libmfrdma alone, never a layer below it a second time;
#  - the library creates threads only through xp_thread_new() (transport/thread.c), which
#    blocks every signal in them;
#  - every source file carries the SPDX line.
set -u
top=${1:-$(dirname "$0")/..}
cd "$top" || exit 1
rc=0
bad=$(grep -rlE '#include *<(infiniband|rdma)/' --include='*.[ch]' . | grep -v '^\./verbs/' | grep -v '^\./build' || true)
if [ -n "$bad" ]; then echo "layering: ibverbs/rdmacm headers included outside verbs/: $bad"; rc=1; fi
bad=$(grep -lE '#include *"(mfrdma|wire|engine|channel|state)\.h"' transport/*.[ch] verbs/*.[ch] 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: engine headers included below the engine: $bad"; rc=1; fi
# backend subdirectories have a wire.h and state.h of their own; the engine's others are out
bad=$(grep -lE '#include *"(mfrdma|engine|channel)\.h"|#include *"\.\./' transport/*/*.[ch] 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: engine headers included in a transport backend: $bad"; rc=1; fi
bad=$(grep -nE '(^|[^a-z_])ops->|->ops->|xp_(tcp|rdma)_ops\.' multifd-rdma/*.[ch] 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: the engine calls through an ops table, not xp_*(): $bad"; rc=1; fi
bad=$(grep -lE '#include *"(xp-tcp|xp-rdma|tcp-priv|rdma-priv|vb)\.h"' multifd-rdma/*.[ch] 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: backend or verbs header included in the engine: $bad"; rc=1; fi
bad=$(grep -lE 'vb_cm_|VbCmId|rdma_cm' verbs/device.c verbs/devinfo.c 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: CM code outside cm.c/cm-route.c in verbs/: $bad"; rc=1; fi
bad=$(grep -lE '(verbs|transport|mfr_internal)_dep\b|verbs_lib|transport_lib' tools/meson.build bench/meson.build 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: links a layer below libmfrdma a second time: $bad"; rc=1; fi
bad=$(grep -lE '#include *"xp\.h"' verbs/*.[ch] 2>/dev/null || true)
if [ -n "$bad" ]; then echo "layering: transport header included in verbs/: $bad"; rc=1; fi
bad=$(grep -rlE --include='*.[ch]' '\b(g_thread_new|g_thread_try_new|pthread_create) *\(' \
  multifd-rdma transport verbs 2>/dev/null | grep -v '^transport/thread\.[ch]$' || true)
if [ -n "$bad" ]; then echo "threads: created without xp_thread_new() (signals unblocked): $bad"; rc=1; fi
for f in $(git ls-files '*.c' '*.h' '*.sh' 'meson.build' '*/meson.build' 2>/dev/null); do
  head -3 "$f" | grep -q 'SPDX-License-Identifier: LGPL-2.1-or-later' || { echo "license: no SPDX line in $f"; rc=1; }
done
[ $rc -eq 0 ] && echo "layering and SPDX: ok"
exit $rc
