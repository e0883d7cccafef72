#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Where the rdma destination's CPU goes: (1) callgrind of `mfrdma listen` for a small idle
# migration (the engine's user-space instructions per function), (2) the destination's user
# against system CPU for a bigger one without verification (from /proc/PID/stat). Needs an
# RDMA device and valgrind; in the soft-RoCE VM:
#   tests/softroce/vm-run.sh -- bench/profile-rdma-dest.sh [BUILD_DIR]
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
build=$(readlink -f "${1:-$here/../build}")
mfrdma=$build/tools/mfrdma
addr=${MFR_TEST_RDMA_ADDR:?set MFR_TEST_RDMA_ADDR (the VM does)}
command -v valgrind >/dev/null || { echo "profile-rdma-dest: needs valgrind" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/mfr-prof.XXXXXX")
trap 'rm -rf "$work"' EXIT

# start_listen PREFIX...: mfrdma listen (behind PREFIX), sets URI, TOKEN, LPID
start_listen() {
    "$@" "$mfrdma" listen "rdma:$addr:0" --timeout 60000 >"$work/dst.log" 2>&1 &
    LPID=$!
    for _ in $(seq 600); do grep -q '^token:' "$work/dst.log" 2>/dev/null && break; sleep 0.1; done
    URI=$(awk '/^listening:/ { print $2 }' "$work/dst.log")
    TOKEN=$(awk '/^token:/ { print $2 }' "$work/dst.log")
    [[ -n $URI && -n $TOKEN ]] || { cat "$work/dst.log" >&2; exit 1; }
}

echo "== callgrind: destination of a 32 MiB idle migration, 2 channels (instructions, exclusive)"
start_listen valgrind --tool=callgrind --callgrind-out-file="$work/cg.out"
"$mfrdma" migrate "$URI" --token "$TOKEN" --size 32M --channels 2 --dirty-rate 0 \
    --mix 100:0:0 --timeout 60000 >"$work/src.log" 2>&1
wait "$LPID"
callgrind_annotate "$work/cg.out" >"$work/cg.txt"
sed -n '/PROGRAM TOTALS/,+24p' "$work/cg.txt"

echo "== user vs system CPU: 128 MiB idle migration, 2 channels, no verification"
start_listen
"$mfrdma" migrate "$URI" --token "$TOKEN" --size 128M --channels 2 --dirty-rate 0 \
    --mix 100:0:0 --no-verify --timeout 60000 >"$work/src.log" 2>&1 &
mpid=$!
last=
while kill -0 "$LPID" 2>/dev/null; do
    s=$(awk '{ print $14, $15 }' "/proc/$LPID/stat" 2>/dev/null) && [[ -n $s ]] && last=$s
    sleep 0.05
done
wait "$mpid"
read -r ut st <<<"$last"
hz=$(getconf CLK_TCK)
awk -v u="$ut" -v s="$st" -v hz="$hz" 'BEGIN { printf "destination: %.2f s user, %.2f s system\n", u / hz, s / hz }'
grep -E 'registration ms|CPU s' "$work/dst.log"
