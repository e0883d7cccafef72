#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A hostile source against `mfrdma listen` over tcp: for every protocol state (hello, CAPS,
# BLOCKS, channel hello, packet, SYNC, COMPLETE) and SEEDS mutations of that state's message
# (tests/faults/hostile-peer.c), a fresh listener with --timeout 2000 must end the session
# with a named error ('migration failed: destination: ...', exit 1) within the timeout + 1 s
# of the mutated message; a refused hello must leave the listener serving (the peer checks
# that a valid hello is accepted next). Never a crash, a hang or another exit status.
# Usage: tests/faults/hostile.sh MFRDMA HOSTILE_PEER [SEEDS (default 3)]
set -uo pipefail
tool=$1 peer=$2 seeds=${3:-3}
token=00112233445566778899aabbccddeeff
# 2 s, not less: the peer sends no keepalives, so a host too busy to run it for the timeout
# (seen at load 12 with 1 s) ends the session before the mutated message is sent
timeout_ms=2000
work=$(mktemp -d)
trap 'kill $lpid 2>/dev/null; rm -rf "$work"' EXIT
runs=0 bad=0
for state in hello caps blocks channel packet sync complete; do
  for ((seed = 1; seed <= seeds; seed++)); do
    runs=$((runs + 1))
    "$tool" listen tcp:127.0.0.1:0 --token $token --timeout $timeout_ms \
      >"$work/out" 2>"$work/err" </dev/null &
    lpid=$!
    for _ in $(seq 100); do grep -qs '^listening: ' "$work/out" && break; sleep 0.05; done
    port=$(sed -n 's/^listening: .*:\([0-9]*\)$/\1/p' "$work/out")
    res=$("$peer" "$port" $token $state $seed 2>"$work/perr") || {
      echo "FAIL $state seed $seed: $(cat "$work/perr")"; bad=$((bad + 1)); kill $lpid; wait $lpid; continue; }
    # the listener's end: at once after the session ended (closed), or its own timeout
    for _ in $(seq 60); do kill -0 $lpid 2>/dev/null || break; sleep 0.05; done
    if kill -0 $lpid 2>/dev/null; then
      echo "FAIL $state seed $seed ($res): listener still running"; bad=$((bad + 1))
      kill -9 $lpid; wait $lpid; continue
    fi
    wait $lpid; rc=$?
    ms=${res#* }
    if [ $rc -ne 1 ] || ! grep -q '^migration failed: destination: ' "$work/err" ||
       [ "${res% *}" = open ] || [ "$ms" -gt $((timeout_ms + 1000)) ]; then
      echo "FAIL $state seed $seed ($res): listen exited $rc: $(tail -2 "$work/err")"
      bad=$((bad + 1))
    else
      echo "ok $state seed $seed: $res ms: $(sed -n 's/^migration failed: //p' "$work/err")"
    fi
  done
done
echo "hostile peer: $((runs - bad)) passed, $bad failed"
[ $bad -eq 0 ]
