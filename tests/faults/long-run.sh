#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The long fault-matrix run whose table is in docs/reliability.md: tcp on the host, then rdma in
# the soft-RoCE VM (one boot), each with kill -9 RUNS times per cell (2 sides x 4 points x 1
# and 8 channels: 16 cells, so 64 runs per transport at the default 4) and every other fault
# twice per cell (once for SIGSTOP and cancel); rdma's link cells one run per VM boot (after a
# link down under traffic, rxe on Linux 6.1 can leave a process in the kernel, state D in
# cm_destroy_id, holding rxe0, which then cannot be re-created for the next run); then one
# table of all (matrix.py --table, rows of the same cell added up).
# Usage: tests/faults/long-run.sh [BUILD (default build)] [OUTDIR (default BUILD/fault-matrix)]
# MFR_MATRIX_SEED (default 12), MFR_MATRIX_KILL_RUNS (default 4), MFR_MATRIX_LINK_RUNS (rdma
# link runs per cell, each in its own VM boot; default 2: 12 boots), MFR_MATRIX_RDMA_SIZE (32M:
# rxe under TCG moves a few hundred MB/s at best), MFR_MATRIX_PARTS (default "tcp-kill9
# tcp-stop-cancel tcp-others rdma rdma-link": the parts to run again; the others' rows stay in
# OUTDIR), MFR_MATRIX_VM_TIMEOUT (seconds, default 5400).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-$build/fault-matrix}
seed=${MFR_MATRIX_SEED:-12}
kill_runs=${MFR_MATRIX_KILL_RUNS:-4}
mkdir -p "$out"
# the tcp host part (link runs across two network namespaces: needs root)
m=(python3 tests/faults/matrix.py --tool "$build/tools/mfrdma"
   --seams-tool "$build/tests/faults/mfrdma-seams" --seed "$seed")
parts=" ${MFR_MATRIX_PARTS:-tcp-kill9 tcp-stop-cancel tcp-others rdma rdma-link} "
runs() {  # NAME ARGS...: one matrix invocation, its log and rows in OUTDIR
  local name=$1; shift
  [[ $parts == *" $name "* ]] || return 0
  echo "fault matrix: $name"
  "$@" >"$out/$name.log" 2>&1 || true
  grep -E '^(total|UNCLEAN|matrix:)' "$out/$name.log" || true
}
runs tcp-kill9 "${m[@]}" --faults kill9 --runs "$kill_runs" --json "$out/tcp-kill9.json"
runs tcp-stop-cancel "${m[@]}" --faults stop,cancel --runs 1 --json "$out/tcp-stop-cancel.json"
runs tcp-others "${m[@]}" --faults qperr,slow,alloc,link --runs 2 --json "$out/tcp-others.json"
# the rdma part: one VM for every fault but link
rmat="python3 tests/faults/matrix.py --transport rdma --address \$MFR_TEST_RDMA_ADDR \
--tool $build/tools/mfrdma --seams-tool $build/tests/faults/mfrdma-seams \
--size ${MFR_MATRIX_RDMA_SIZE:-32M} --verbose --json -"
r="$rmat --seed $seed"
if [[ $parts == *" rdma "* ]]; then
  echo "fault matrix: rdma, in the soft-RoCE VM"
  # a VM that did not boot (TCG on a loaded host once panicked with 'IO-APIC + timer doesn't
  # work') is booted again, twice at most; one that ran keeps its log
  for try in 1 2 3; do
    tests/softroce/vm-run.sh --timeout "${MFR_MATRIX_VM_TIMEOUT:-5400}" -- sh -c "cd $PWD &&
      echo '== rdma-kill9' && $r --faults kill9 --runs $kill_runs;
      echo '== rdma-stop-cancel' && $r --faults stop,cancel --runs 1;
      echo '== rdma-others' && $r --faults qperr,slow,alloc --runs 2" \
      >"$out/rdma-try$try.log" 2>&1 || true
    cp "$out/rdma-try$try.log" "$out/rdma.log"
    grep -q 'rxe0 ACTIVE' "$out/rdma.log" && break
    echo "fault matrix: the VM did not boot (try $try): $(grep -m1 -E 'error|panic' "$out/rdma.log")"
  done
fi
for part in rdma-kill9 rdma-stop-cancel rdma-others; do
  [[ $parts == *" rdma "* ]] || break
  sed -n "/^== $part\$/,/^== /p" "$out/rdma.log" | sed -n 's/^json: //p' >"$out/$part.json"
  [ -s "$out/$part.json" ] || { echo "fault matrix: no rows from $part (see $out/rdma.log)"; rm -f "$out/$part.json"; }
done
if [[ $parts == *" rdma "* ]]; then grep -E '^(total|UNCLEAN|matrix:)' "$out/rdma.log" || true; fi
# rdma's link cells: one run per VM boot, each with its own seed (the outage's length)
if [[ $parts == *" rdma-link "* ]]; then
  echo "fault matrix: rdma link, one run per soft-RoCE VM boot"
  rm -f "$out"/rdma-link-*.json "$out"/rdma-link-*.log
  n=0
  for run in $(seq "${MFR_MATRIX_LINK_RUNS:-2}"); do
    for point in precopy switchover verify; do
      for ch in 1 8; do
        n=$((n + 1))
        log=$out/rdma-link-$n.log
        for try in 1 2 3; do
          tests/softroce/vm-run.sh --timeout 900 -- sh -c "cd $PWD &&
            $rmat --seed $((seed + n)) --faults link --points $point --channels $ch --runs 1" \
            >"$log" 2>&1 || true
          grep -q 'rxe0 ACTIVE' "$log" && break
          echo "fault matrix: the VM did not boot (link run $n, try $try)"
        done
        sed -n 's/^json: //p' "$log" >"$out/rdma-link-$n.json"
        [ -s "$out/rdma-link-$n.json" ] ||
          { echo "fault matrix: no row from link run $n (see $log)"; rm -f "$out/rdma-link-$n.json"; }
        grep -E '^(UNCLEAN|  link )' "$log" || true
      done
    done
  done
fi
python3 tests/faults/matrix.py --table "$out"/*.json
