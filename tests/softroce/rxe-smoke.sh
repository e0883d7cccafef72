#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Proves the soft-RoCE VM works, independent of mfrdma's own RDMA tests (suite rdma-inside):
# an RDMA port is ACTIVE and perftest's ib_write_bw over rdma_cm moves 200 x 1 MiB with a
# non-zero bandwidth. Skips (77) on a host without RDMA; inside the VM (MFR_VM=1) it must run.
set -euo pipefail
# shellcheck source=tests/softroce/perftest-lib.sh
. "$(dirname "$(readlink -f "$0")")/perftest-lib.sh"

fail() { echo "rxe-smoke: FAIL: $*" >&2; exit 1; }
skip() {
    [[ ${MFR_VM:-0} == 1 ]] && fail "inside the VM, but $*"
    echo "rxe-smoke: SKIP: $*"
    exit 77
}

mfr_find_device || skip "no RDMA device (run it through tests/softroce/vm-run.sh)"
info=$(ibv_devinfo -d "$MFR_DEV")
grep -q 'state:[[:space:]]*PORT_ACTIVE' <<<"$info" || fail "$MFR_DEV has no ACTIVE port:
$info"
echo "rxe-smoke: $MFR_DEV is ACTIVE ($(awk '/link_layer/ { print $2; exit }' <<<"$info"))"
addr=${MFR_TEST_RDMA_ADDR:-}
[[ -n $addr ]] || skip "MFR_TEST_RDMA_ADDR is not set: no address for rdma_cm"

size=1048576 iters=200
# perftest times with the CPU cycle counter and its idea of the clock rate; under TCG that
# occasionally yields a 0.00 reading although every byte moved (seen once in ~20 CI runs), so
# a zero reading is retried on a fresh port, up to 3 runs. A failed transfer fails at once.
for attempt in 1 2 3; do
    row=$(mfr_write_bw "$MFR_DEV" "$addr" $((18514 + attempt)) 1 "$size" "$iters") ||
        fail "ib_write_bw -R over $addr did not complete"
    read -r r_bytes r_iters _ r_avg _ <<<"$row"
    [[ $r_bytes == "$size" && $r_iters == "$iters" ]] ||
        fail "expected $iters x $size bytes, perftest reported '$row'"
    awk -v bw="$r_avg" 'BEGIN { exit !(bw + 0 > 0) }' && break
    echo "rxe-smoke: run $attempt: perftest reported bandwidth '$r_avg' (row '$row'), again"
    ((attempt < 3)) || fail "bandwidth is not a positive number in 3 runs: '$r_avg'"
done
echo "rxe-smoke: ib_write_bw -R $MFR_DEV $addr: $iters x 1 MiB, average $r_avg MB/s (2^20 B/s)"
