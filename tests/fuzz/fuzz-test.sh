#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# One harness as a regression test (suite fuzz): replay its seed corpus and every past crash
# input (regressions/HARNESS/), then fuzz for a fixed time from the corpus (into a scratch copy:
# the repository's corpus changes only through make-corpus.sh). A crash fails the test and
# leaves its input in the log's artifact path: add it to regressions/HARNESS/ with the fix.
# Usage: fuzz-test.sh EXE NAME SRCDIR [SECONDS (default $MFR_FUZZ_SECONDS, else 20)]
# MFR_FUZZ_WORKDIR=DIR keeps the grown corpus in DIR/NAME across runs (campaign.sh);
# MFR_FUZZ_RUNS=N stops after N executions if that comes first.
set -euo pipefail
exe=$1 name=$2 src=$3 secs=${4:-${MFR_FUZZ_SECONDS:-20}}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Longest input worth trying: what the parser can be handed at all (a hello fits the 56 bytes of
# rdma_cm private data, a message XP_MSG_MAX), more only for streams.
case $name in
  hello) max_len=64 ;;
  ctrl|packet) max_len=8200 ;;
  *) max_len=20000 ;;
esac
# ASan's quarantine (256 MiB by default) makes every allocation of a fast harness touch fresh
# pages: a smaller one still catches a use after free within the same input, at twice the rate.
export ASAN_OPTIONS=quarantine_size_mb=32${ASAN_OPTIONS:+:$ASAN_OPTIONS}
# libnuma's process-lifetime cache of node CPU masks (a channel thread binding itself to its
# node) is no leak of ours: the ASan build's suppression (scripts/test.sh), the only entry
export LSAN_OPTIONS=suppressions=$src/../asan/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
opts=(-dict="$src/wire.dict" -max_len=$max_len -timeout=10 -rss_limit_mb=2048
      -artifact_prefix="$scratch/crash-")
# fail with the input named, and keep it where the log says
keep_crash() {
  for f in "$scratch"/crash-*; do
    [ -e "$f" ] || continue
    mkdir -p "${TMPDIR:-/tmp}/mfr-fuzz-crashes"
    cp "$f" "${TMPDIR:-/tmp}/mfr-fuzz-crashes/$name-$(basename "$f")"
    echo "fuzz: $name crashed on ${TMPDIR:-/tmp}/mfr-fuzz-crashes/$name-$(basename "$f")"
  done
  exit 1
}
replay=("$src/corpus/$name")
[ -d "$src/regressions/$name" ] && replay+=("$src/regressions/$name")
echo "fuzz: $name: replaying ${replay[*]}"
"$exe" "${opts[@]}" -runs=0 "${replay[@]}" >"$scratch/replay" 2>&1 ||
  { tail -60 "$scratch/replay"; keep_crash; }
tail -1 "$scratch/replay"
work=$scratch/corpus
[ -n "${MFR_FUZZ_WORKDIR:-}" ] && work=$MFR_FUZZ_WORKDIR/$name
mkdir -p "$work"
echo "fuzz: $name: fuzzing for $secs s${MFR_FUZZ_RUNS:+ or $MFR_FUZZ_RUNS executions}"
t0=$(date +%s)
"$exe" "${opts[@]}" -max_total_time="$secs" ${MFR_FUZZ_RUNS:+-runs=$MFR_FUZZ_RUNS} \
  -print_final_stats=1 "$work" "$src/corpus/$name" >"$scratch/log" 2>&1 ||
  { tail -60 "$scratch/log"; keep_crash; }
echo "fuzz: $name: fuzzed for $(($(date +%s) - t0)) s"
grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$scratch/log"
grep -E '^#[0-9]+ +DONE' "$scratch/log" || true
