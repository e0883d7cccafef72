#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The long fuzzing campaign: every harness of the fuzz build for SECONDS each (one at a time:
# the machine is shared), each growing its corpus in WORKDIR/NAME so a campaign can be resumed,
# then one table of executions, corpus size and crashes per harness (the figures of
# docs/reliability.md). A crash input is kept in $TMPDIR/mfr-fuzz-crashes/ (see fuzz-test.sh).
# Usage: tests/fuzz/campaign.sh [SECONDS (default 600)] [WORKDIR (default build-fuzz/campaign)]
#        [HARNESS...]  (default: all)
# MFR_FUZZ_RUNS=N stops a harness after N executions if that comes before SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-600}
export MFR_FUZZ_WORKDIR=${2:-build-fuzz/campaign}
tests/fuzz/build.sh
mkdir -p "$MFR_FUZZ_WORKDIR/logs"
harnesses=("${@:3}")
((${#harnesses[@]})) || harnesses=(hello ctrl packet regions tcp-stream dest-session rdma-wire compress)
run() {
  local h=$1
  if tests/fuzz/fuzz-test.sh "build-fuzz/tests/fuzz/fuzz-$h" "$h" tests/fuzz "$secs" \
      >"$MFR_FUZZ_WORKDIR/logs/$h" 2>&1; then
    echo ok >>"$MFR_FUZZ_WORKDIR/logs/$h"
  fi
}
for h in "${harnesses[@]}"; do
  run "$h"
done
printf '%-14s %14s %8s %10s %8s %s\n' harness execs seconds exec/s corpus crashes
for h in "${harnesses[@]}"; do
  log=$MFR_FUZZ_WORKDIR/logs/$h
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  took=$(sed -n 's/^fuzz: .*: fuzzed for \([0-9]*\) s$/\1/p' "$log")
  crashes=$(grep -c '^fuzz: .* crashed on' "$log" || true)
  printf '%-14s %14s %8s %10s %8s %s\n' "$h" "${execs:-?}" "${took:-?}" \
    "$(( ${execs:-0} / ${took:-$secs} ))" "$(ls "$MFR_FUZZ_WORKDIR/$h" | wc -l)" "$crashes"
done
