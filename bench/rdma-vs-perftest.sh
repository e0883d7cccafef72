#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# `mfrdma migrate` over rdma against perftest's ib_write_bw -R in the same run, same QP count
# and the engine's packet size as perftest's message size, plus registration time per GiB and
# how it scales with registration threads. Run it where an RDMA device is, e.g. the VM:
#   tests/softroce/vm-run.sh -- bench/rdma-vs-perftest.sh [BUILD_DIR]
# Env: MFR_BENCH_MIB (guest MiB per case, default 128), MFR_BENCH_QPS (default "1 4"),
# MFR_BENCH_REG_MIB (guest MiB for the registration scaling, default 256).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=tests/softroce/perftest-lib.sh
. "$here/../tests/softroce/perftest-lib.sh"
build=${1:-$here/../build}
mfrdma=$build/tools/mfrdma
[[ -x $mfrdma ]] || { echo "rdma-vs-perftest: no $mfrdma (build first)" >&2; exit 2; }
mfr_find_device || { echo "rdma-vs-perftest: SKIP: no RDMA device"; exit 77; }
addr=${MFR_TEST_RDMA_ADDR:-}
[[ -n $addr ]] || { echo "rdma-vs-perftest: SKIP: MFR_TEST_RDMA_ADDR is not set"; exit 77; }
mib=${MFR_BENCH_MIB:-128}
reg_mib=${MFR_BENCH_REG_MIB:-256}
qps_list=${MFR_BENCH_QPS:-1 4}
pkt=$((128 * 4096)) # the engine's default packet: 128 pages of 4 KiB
work=$(mktemp -d "${TMPDIR:-/tmp}/mfr-rvp.XXXXXX")
trap 'rm -rf "$work"' EXIT

# json_num FILE SIDE KEY: first KEY number inside the "SIDE" object of mfrdma's JSON.
json_num() {
    sed -e "s/.*\"$2\":{//" "$1" | grep -oE "\"$3\":[0-9.eE+-]+" | head -n1 | cut -d: -f2
}

# migrate QPS MIB [extra options for both sides]: one listen + migrate pair; JSON in $work.
migrate() {
    local q=$1 m=$2 uri tok
    shift 2
    "$mfrdma" listen "rdma:$addr:0" --json --timeout 60000 "$@" >"$work/dst.json" \
        2>"$work/dst.err" </dev/null &
    local lpid=$!
    for _ in $(seq 200); do
        grep -q '^token: ' "$work/dst.err" 2>/dev/null && break
        sleep 0.1
    done
    uri=$(awk '/^listening: / { print $2 }' "$work/dst.err")
    tok=$(awk '/^token: / { print $2 }' "$work/dst.err")
    [[ -n $uri && -n $tok ]] || { cat "$work/dst.err" >&2; return 1; }
    "$mfrdma" migrate "$uri" --token "$tok" --size "${m}M" --channels "$q" --dirty-rate 0 \
        --mix 100:0:0 --timeout 60000 --json "$@" >"$work/src.json" 2>"$work/src.err" ||
        { cat "$work/src.err" >&2; wait "$lpid" || true; return 1; }
    wait "$lpid" || { cat "$work/dst.err" >&2; return 1; }
}

echo "# $MFR_DEV via $addr; ${mib} MiB of random pages per case; message = packet = $pkt B"
echo "# MB = 2^20 bytes. ib_write_bw -R: average BW; mfrdma: guest bytes / transfer time."
printf '%-4s %-14s %-14s %-7s %-10s %-16s %-16s\n' qps perftest_MB/s mfrdma_MB/s ratio total_ms \
    src_reg_ms/GiB dst_reg_ms/GiB
port=18600
for q in $qps_list; do
    iters=$((mib * 1048576 / pkt / q))
    row=$(mfr_write_bw "$MFR_DEV" "$addr" "$port" "$q" "$pkt" "$iters")
    port=$((port + 1))
    read -r _ _ _ pt_avg _ <<<"$row"
    migrate "$q" "$mib"
    bps=$(json_num "$work/src.json" source throughput_bps)
    total=$(json_num "$work/src.json" source total_ms)
    sreg=$(json_num "$work/src.json" source registration_ms)
    dreg=$(json_num "$work/dst.json" destination registration_ms)
    awk -v q="$q" -v pt="$pt_avg" -v bps="$bps" -v tot="$total" -v sr="$sreg" -v dr="$dreg" \
        -v gib="$(awk -v m="$mib" 'BEGIN { print m / 1024 }')" 'BEGIN {
        mb = bps / 1048576
        printf "%-4s %-14.1f %-14.1f %-7.2f %-10.0f %-16.0f %-16.0f\n", q, pt, mb, mb / pt, tot,
               sr / gib, dr / gib }'
done

echo "# destination registration (fresh memory: populate + pin) of ${reg_mib} MiB against threads"
printf '%-8s %-16s %-16s\n' threads dst_reg_ms dst_reg_ms/GiB
for t in 1 2; do
    migrate 1 "$reg_mib" --registration-threads "$t"
    dreg=$(json_num "$work/dst.json" destination registration_ms)
    used=$(json_num "$work/dst.json" destination registration_threads)
    awk -v t="$used" -v r="$dreg" -v m="$reg_mib" \
        'BEGIN { printf "%-8s %-16.0f %-16.0f\n", t, r, r / (m / 1024) }'
done
