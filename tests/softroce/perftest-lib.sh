# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
# Shared by rxe-smoke.sh and bench-raw.sh (sourced, not run): find the RDMA device and run one
# perftest ib_write_bw server/client pair over rdma_cm, returning the average bandwidth.
# Callers decide what "no device" means (skip on the host, failure inside the VM).

# Prints the first line of perftest's result row: "#bytes #iterations peak avg msgrate".
# usage: mfr_write_bw DEV ADDR PORT QPS SIZE ITERS (ITERS per QP, as perftest counts them)
mfr_write_bw() {
    local dev=$1 addr=$2 port=$3 qps=$4 size=$5 iters=$6 out srv_pid try rc=1
    local args=(-R -F -d "$dev" -p "$port" -q "$qps" -s "$size" -n "$iters")
    out=$(mktemp "${TMPDIR:-/tmp}/mfr-write-bw.XXXXXX")
    # The server gives up on its own if no client ever arrives.
    timeout 300 ib_write_bw "${args[@]}" >"$out.srv" 2>&1 &
    srv_pid=$!
    # rdma_cm rejects a connect until the server listens; there is no port to poll, so retry.
    for try in $(seq 40); do
        sleep 0.25
        if timeout 300 ib_write_bw "${args[@]}" "$addr" >"$out" 2>&1; then
            rc=0
            break
        fi
        kill -0 "$srv_pid" 2>/dev/null || break
    done
    if ! wait "$srv_pid"; then
        echo "ib_write_bw server (port $port) failed:" >&2
        cat "$out.srv" >&2
        rc=1
    fi
    if ((rc != 0)); then
        echo "ib_write_bw client to $addr:$port failed after $try attempt(s):" >&2
        cat "$out" >&2
    else
        awk -v size="$size" '$1 == size && NF >= 5 { print; found = 1; exit }
                             END { exit !found }' "$out" ||
            { echo "ib_write_bw printed no result row:" >&2; cat "$out" >&2; rc=1; }
    fi
    rm -f "$out" "$out.srv"
    return "$rc"
}

# Sets MFR_DEV to the device to use (MFR_TEST_RDMA_DEV or the first one), or returns 1.
mfr_find_device() {
    command -v ibv_devinfo >/dev/null || return 1
    MFR_DEV=${MFR_TEST_RDMA_DEV:-$(ibv_devinfo -l 2>/dev/null | awk 'NR > 1 && NF { print $1; exit }')}
    [[ -n $MFR_DEV ]] && ibv_devinfo -d "$MFR_DEV" >/dev/null 2>&1
}
