#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Raw RDMA WRITE bandwidth of this machine's RDMA device (rxe0 in the soft-RoCE VM), as a
# baseline for the bench harness: perftest ib_write_bw -R with 1 and 4 QPs, 64 KiB and 1 MiB
# messages. Run it inside the VM: tests/softroce/vm-run.sh -- tests/softroce/bench-raw.sh
# Output: one "qps size_bytes iterations bw_avg_MBps bw_peak_MBps" row per case (MB = 2^20 B).
# MFR_BENCH_RAW_MIB sets the data moved per case (default 128 MiB). Skips (77) without RDMA.
set -euo pipefail
# shellcheck source=tests/softroce/perftest-lib.sh
. "$(dirname "$(readlink -f "$0")")/perftest-lib.sh"

if ! mfr_find_device; then
    echo "bench-raw: SKIP: no RDMA device (run it through tests/softroce/vm-run.sh)"
    exit 77
fi
addr=${MFR_TEST_RDMA_ADDR:-}
if [[ -z $addr ]]; then
    echo "bench-raw: SKIP: MFR_TEST_RDMA_ADDR is not set: no address for rdma_cm"
    exit 77
fi
mib=${MFR_BENCH_RAW_MIB:-128}
[[ $mib =~ ^[0-9]+$ && $mib -gt 0 ]] || { echo "bench-raw: bad MFR_BENCH_RAW_MIB '$mib'" >&2; exit 2; }

echo "# ib_write_bw -R on $MFR_DEV via $addr, $mib MiB per case, MB/s = 2^20 B/s"
printf '%-4s %-11s %-10s %-12s %s\n' '#qps' 'size_bytes' 'iterations' 'bw_avg_MBps' 'bw_peak_MBps'
port=18520
for qps in 1 4; do
    for size in 65536 1048576; do
        # perftest counts iterations per QP; keep the total bytes equal across cases.
        iters=$((mib * 1048576 / size / qps))
        ((iters >= 5)) || iters=5
        start=$SECONDS
        row=$(mfr_write_bw "$MFR_DEV" "$addr" "$port" "$qps" "$size" "$iters") || {
            echo "bench-raw: ib_write_bw -q $qps -s $size failed" >&2
            exit 1
        }
        port=$((port + 1))
        read -r _ r_iters r_peak r_avg _ <<<"$row"
        printf '%-4s %-11s %-10s %-12s %-12s # %d s\n' "$qps" "$size" "$r_iters" "$r_avg" "$r_peak" \
            $((SECONDS - start))
    done
done
