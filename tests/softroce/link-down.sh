#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Soft-RoCE VM only: runs the link-down failure test (/failure/rdma/link_down, which takes
# eth0 down mid-migration) in its own process, then restores eth0 and a fresh rxe0 with the
# VM's MFR_VM_LINK_UP script. That must happen after the test process exits: rxe0 cannot be
# deleted while a process holds it open (librdmacm keeps every device open until exit).
# Usage: link-down.sh TEST-FAILURE-BINARY
set -uo pipefail
bin=${1:?usage: link-down.sh TEST-FAILURE-BINARY}
if [[ ${MFR_VM:-0} != 1 || -z ${MFR_VM_LINK_UP:-} ]]; then
    echo "1..0 # SKIP only inside the soft-RoCE VM (tests/softroce/vm-run.sh)"
    exit 0
fi
MFR_TEST_LINK_DOWN=1 "$bin" --tap -p /failure/rdma/link_down --rdma-only
rc=$?
if ! "$MFR_VM_LINK_UP" >&2; then
    echo "not ok - restoring eth0 and rxe0 after the test failed"
    exit 1
fi
exit "$rc"
