#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Command-line tests of the mfrdma tool: `cli-test.sh MFRDMA CASE` runs one case, checking
# exit codes and the exact messages users see. Migrations use small guests (64 MiB) over TCP.
set -u
mfrdma=$1
case_name=$2
helper=${3:-}  # a test program some cases need (listen_bad_verify: cli-bad-source)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

fail() { echo "FAIL ($case_name): $*"; for f in "$work"/*; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }

# run EXPECTED_RC ARGS...: runs mfrdma, stdout/stderr to $work/out, $work/err.
run() {
  local want=$1; shift
  "$mfrdma" "$@" >"$work/out" 2>"$work/err" </dev/null
  local rc=$?
  [ "$rc" -eq "$want" ] || fail "mfrdma $* exited $rc, expected $want"
}
has() { grep -qF -- "$2" "$work/$1" || fail "$1 lacks: $2"; }
hasnt() { ! grep -qF -- "$2" "$work/$1" || fail "$1 has: $2"; }
# usage ERROR_LINE ARGS...: exit 2 and the exact first stderr line.
usage() {
  local msg=$1; shift
  run 2 "$@"
  local first; first=$(head -1 "$work/err")
  [ "$first" = "$msg" ] || fail "stderr line 1 is '$first', expected '$msg'"
}

# Starts `mfrdma listen` in the background; sets URI, TOKEN, LPID. LISTEN_AT: where.
LISTEN_AT=tcp:127.0.0.1:0
start_listen() {
  "$mfrdma" listen "$LISTEN_AT" "$@" >"$work/lout" 2>"$work/lerr" </dev/null &
  LPID=$!
  for _ in $(seq 100); do
    grep -q '^token: ' "$work/lout" 2>/dev/null && break
    sleep 0.1
  done
  URI=$(sed -n 's/^listening: //p' "$work/lout")
  TOKEN=$(sed -n 's/^token: //p' "$work/lout")
  [[ "$URI" == "${LISTEN_AT%:0}:"* && "$URI" =~ :[1-9][0-9]*$ ]] || fail "listen printed no URI"
  [[ "$TOKEN" =~ ^[0-9a-f]{32}$ ]] || fail "listen printed no token"
}
wait_listen() {
  local want=$1 rc
  wait "$LPID"; rc=$?
  [ "$rc" -eq "$want" ] || fail "listen exited $rc, expected $want"
}

case "$case_name" in
help)
  run 0 --help; has out "Commands:"; has out "Exit status: 0 success, 1 migration failed"
  for c in demo listen migrate devices bench; do has out "  $c "; done
  run 0 help; has out "Commands:"
  run 2; has err "Commands:"
  ;;
help_commands)
  run 0 demo --help; has out "mfrdma demo [OPTION"; has out "--dirty-rate"; has out "--force-switchover"
  has out "Exit status:"
  has out "--size=SIZE"; has out "--mix=R:C:Z"; has out "--transport=NAME"
  run 0 listen --help; has out "mfrdma listen [OPTION"; has out "URI"; has out "--token"
  run 0 migrate --help; has out "mfrdma migrate [OPTION"; has out "--token"; has out "--channels"
  run 0 devices --help; has out "mfrdma devices"
  run 0 bench --help; has out "mfrdma bench"
  run 0 help migrate; has out "mfrdma migrate [OPTION"
  ;;
version)
  run 0 --version
  grep -qE '^mfrdma [0-9]+\.[0-9]+\.[0-9]+$' "$work/out" || fail "bad version line"
  ;;
bad_usage)
  usage "mfrdma demo: --size: '12Q' is not a size (examples: 512M, 2G)" demo --size 12Q
  usage "mfrdma demo: --size: '0' is not a size (examples: 512M, 2G)" demo --size 0
  usage "mfrdma demo: --size: 1000 bytes is not a multiple of the 4096-byte page size" demo --size 1000
  usage "mfrdma demo: --mix: '40:40' is not random:compressible:zero percentages summing to 100 (example: 40:40:20)" demo --mix 40:40
  usage "mfrdma demo: --dirty-rate: 'fast' is not a rate in MB/s (examples: 0, 64, 250.5)" demo --dirty-rate fast
  usage "mfrdma demo: --channels: 0 is out of range (1..64)" demo --channels 0
  usage "mfrdma demo: --blocks: 65 is out of range (1..64)" demo --blocks 65
  usage "mfrdma demo: --rc-retry: 8 is out of range (0..7)" demo --rc-retry 8
  usage "mfrdma demo: --rc-timeout: 32 is out of range (0..31)" demo --rc-timeout 32
  usage "mfrdma listen: --rc-retry: 9 is out of range (0..7)" listen tcp:127.0.0.1:0 --rc-retry 9
  usage "mfrdma listen: --registration-chunk: '1X' is not a size (examples: 512M, 2G)" listen tcp:127.0.0.1:0 --registration-chunk 1X
  usage "mfrdma demo: --registration-chunk: '0' is not a size (examples: 512M, 2G)" demo --registration-chunk 0
  usage "mfrdma demo: --transport: 'ib' is not a transport (tcp, rdma or auto)" demo --transport ib --size 64M
  usage "mfrdma demo: unexpected argument 'extra'" demo extra
  run 2 demo --size 64T; grep -qE "^mfrdma demo: --size: 65536.0 GiB does not fit in this host's [0-9.]+ GiB of RAM \(demo holds two copies: source and destination\)$" "$work/err" || fail "no RAM check"
  usage "mfrdma demo: Unknown option --bogus" demo --bogus
  usage "mfrdma listen: missing URI (example: tcp:0.0.0.0:4444)" listen
  usage "mfrdma listen: --token: 'abc' is not 32 hex digits (use the token printed by 'mfrdma listen')" listen tcp:127.0.0.1:0 --token abc
  usage "mfrdma migrate: missing URI (as printed by 'mfrdma listen')" migrate
  usage "mfrdma migrate: --token is required (the token printed by 'mfrdma listen')" migrate tcp:127.0.0.1:1
  usage "mfrdma migrate: --token: '00112233445566778899aabbccddeefg' is not 32 hex digits (use the token printed by 'mfrdma listen')" migrate tcp:127.0.0.1:1 --token 00112233445566778899aabbccddeefg
  usage "mfrdma: unknown command 'frobnicate' (commands: demo, listen, migrate, devices, bench, help)" frobnicate
  usage "mfrdma listen: --max-ram: '1X' is not a size (examples: 512M, 2G)" listen tcp:127.0.0.1:0 --max-ram 1X
  usage "mfrdma demo: --max-bandwidth: 'fast' is not a rate in bytes per second (examples: 125M, 1G, 500K, 0 for unlimited)" demo --max-bandwidth fast
  usage "mfrdma migrate: --max-bandwidth: '-1' is not a rate in bytes per second (examples: 125M, 1G, 500K, 0 for unlimited)" migrate tcp:127.0.0.1:1 --token 00112233445566778899aabbccddeeff --max-bandwidth -1
  ;;
demo_thp)
  # huge pages by default on both sides, measured from smaps; --no-thp turns them off
  thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)
  run 0 demo --size 64M --dirty-rate 0 --transport tcp --json
  grep -qE '"destination":\{.*"placement":\{"ram_bytes":67108864,"huge_bytes":[0-9]+,"thp_advised":true' "$work/out" || fail "destination not madvised"
  huge=$(sed -n 's/.*"destination":{.*"placement":{"ram_bytes":[0-9]*,"huge_bytes":\([0-9]*\).*/\1/p' "$work/out")
  if [ "$thp" != never ]; then [ "${huge:-0}" -gt 0 ] || fail "THP $thp: no huge page behind the destination"; fi
  run 0 demo --size 64M --dirty-rate 0 --transport tcp --no-thp
  has out "memory: destination 64.0 MiB, "; has out "not madvised for huge pages"
  if [ "$thp" = madvise ]; then has out "memory: destination 64.0 MiB, 0.0 MiB (0%) on huge pages (smaps)"; fi
  run 0 demo --size 64M --dirty-rate 0 --transport tcp --thp   # old scripts: accepted
  usage "mfrdma demo: --thp and --no-thp contradict" demo --thp --no-thp
  usage "mfrdma listen: --thp and --no-thp contradict" listen tcp:127.0.0.1:0 --thp --no-thp
  run 0 demo --help; has out "--no-thp"
  ;;
demo_max_bandwidth)
  # 24 MiB of non-zero pages at 20 MiB/s: about 1.2 s of transfer, never much less
  run 0 demo --size 32M --dirty-rate 0 --transport tcp --max-bandwidth 20M --json
  ms=$(sed -n 's/.*"source":{[^}]*"transfer_ms":\([0-9.]*\).*/\1/p' "$work/out")
  wire=$(sed -n 's/.*"source":{[^}]*"wire_bytes":\([0-9]*\).*/\1/p' "$work/out")
  [ -n "$ms" ] && [ -n "$wire" ] || fail "no transfer_ms/wire_bytes in the JSON"
  rate=$(( wire * 1000 / ${ms%.*} ))
  [ "$rate" -le $(( 20 * 1048576 * 11 / 10 )) ] || fail "wire rate $rate B/s above the 20M cap"
  run 0 demo --help; has out "--max-bandwidth=RATE"
  run 0 migrate --help; has out "--max-bandwidth=RATE"
  ;;
bad_uri)
  # Bad URIs are usage errors with the --help hint; migrate refuses one before it builds
  # (and fills) its guest, so 64 GiB asked cost nothing; port 0 means nothing to a source.
  tok=00112233445566778899aabbccddeeff
  start=$(date +%s%N)
  usage "mfrdma migrate: source: bad URI 'foo:1:2': unknown transport 'foo' (known: tcp, rdma)" migrate foo:1:2 --token $tok --size 64G
  usage "mfrdma migrate: source: bad URI 'tcp:127.0.0.1:0': port 0 (give the port the destination printed)" migrate tcp:127.0.0.1:0 --token $tok --size 64G
  usage "mfrdma migrate: source: bad URI 'tcp:127.0.0.1': missing :PORT" migrate tcp:127.0.0.1 --token $tok
  has err "Try 'mfrdma migrate --help'."
  # filling 64 GiB takes a minute here (or fails: the machine has less); three refusals take
  # well under a second, and 10 s leaves room for a loaded CI machine under ASan
  [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 10000 ] || fail "bad URIs took seconds: a guest was built"
  usage "mfrdma listen: destination: bad URI 'foo:1:2': unknown transport 'foo' (known: tcp, rdma)" listen foo:1:2
  has err "Try 'mfrdma listen --help'."
  usage "mfrdma demo: --transport: 'ib' is not a transport (tcp, rdma or auto)" demo --transport ib --size 64M
  has err "Try 'mfrdma demo --help'."
  # a listen failure names the URI once
  run 1 listen tcp:192.0.2.1:4444
  [ "$(cat "$work/err")" = "mfrdma listen: destination: cannot listen on tcp:192.0.2.1:4444: Cannot assign requested address" ] || fail "listen error: $(cat "$work/err")"
  ;;
demo)
  run 0 demo --size 64M --channels 2
  has out "transport: tcp"; has out "destination: listening on tcp:127.0.0.1:"
  has out "verification: OK (1 block, digests match)"
  has out "memcmp: OK (64.0 MiB in 1 block identical)"
  grep -qE '^  channel 1 MB/s +[0-9.]+ +[0-9.]+$' "$work/out" || fail "no channel 1 row"
  grep -qE '^  channel 2 MB/s' "$work/out" && fail "a third channel row"
  ;;
demo_blocks_idle)
  run 0 demo --size 48M --blocks 3 --channels 3 --dirty-rate 0 --mix 10:10:80 --transport tcp
  has out "guest: 48.0 MiB in 3 blocks"; has out "verification: OK (3 blocks, digests match)"
  has out "memcmp: OK (48.0 MiB in 3 blocks identical)"
  has out "guest: writers dirtied 0 pages"
  ;;
demo_json)
  run 0 demo --size 32M --channels 2 --json
  python3 - "$work/out" <<'PY' || fail "JSON on stdout is not what was expected"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["result"] == "ok" and d["error"] is None and d["memcmp"] == "ok", d
assert "source" in d and "destination" in d
PY
  has err "verification: OK"
  ;;
demo_no_verify)
  run 0 demo --size 32M --no-verify
  has out "verification: skipped (--no-verify)"; hasnt out "memcmp:"
  ;;
demo_bad_converge)
  # What the writers dirty during the first (full) round cannot go in 1 ms: one round
  # allowed, so it fails...
  run 1 demo --size 128M --dirty-rate 200 --downtime 1 --max-rounds 1
  has err "migration failed: migration does not converge: after 1 rounds"
  has err "(--force-switchover)"
  hasnt out "memcmp:"
  # ...unless told to switch over anyway.
  run 0 demo --size 128M --dirty-rate 200 --downtime 1 --max-rounds 1 --force-switchover
  grep -qE '^  converged +no \(forced\)' "$work/out" || fail "not reported as forced"
  has out "memcmp: OK"
  ;;
demo_sigint)
  # Ctrl-C as soon as the first round of 512 MiB starts: cancelled cleanly, exit 1.
  "$mfrdma" demo --size 512M >"$work/out" 2>"$work/err" </dev/null &
  pid=$!
  for _ in $(seq 400); do grep -q "^source: precopy" "$work/out" && break; sleep 0.05; done
  kill -INT $pid
  wait $pid; rc=$?
  [ "$rc" -eq 1 ] || fail "demo exited $rc after SIGINT, expected 1"
  has err "mfrdma: interrupted: cancelling the migration"
  has err "migration failed: source: migration cancelled"
  ;;
listen_migrate)
  start_listen
  run 0 migrate "$URI" --token "$TOKEN" --size 64M --channels 2 --blocks 2
  has out "verification: OK (2 blocks, digests match)"
  wait_listen 0
  grep -qF "verification: OK (2 blocks, digests match)" "$work/lout" || fail "listen did not verify"
  grep -qF "block ram1: 32.0 MiB" "$work/lout" || fail "listen did not list ram1"
  ;;
listen_migrate_json)
  start_listen --token 00112233445566778899aabbccddeeff
  [ "$TOKEN" = 00112233445566778899aabbccddeeff ] || fail "listen did not use the given token"
  run 0 migrate "$URI" --token "$TOKEN" --size 32M --json
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["result"]=="ok" and "source" in d' "$work/out" || fail "bad JSON"
  wait_listen 0
  ;;
demo_compress)
  # the default mix: compressible pages shrink, random ones go raw; both sides agree
  run 0 demo --size 64M --dirty-rate 0 --compress zstd --compress-level -1 --json
  python3 - "$work/out" <<'PY' || fail "bad compression JSON"
import json, sys
d = json.load(open(sys.argv[1]))
s, t = d["source"]["compression"], d["destination"]["compression"]
assert d["result"] == "ok" and s["negotiated"] and s["mode"] == "zstd" and s["level"] == -1
assert s["total"]["packets"] > 0 and s["total"]["packets"] == t["total"]["packets"]
assert s["total"]["compressed_bytes"] < s["total"]["raw_bytes"] and s["ratio"] > 1.2
assert d["source"]["wire_bytes"] < 0.8 * d["source"]["ram_bytes"]
PY
  run 0 demo --size 32M --dirty-rate 0 --compress auto
  has out "compression: auto, zstd level 1"; has out "sent raw: auto paused"
  usage "mfrdma demo: --compress: 'lz4' is not a compression mode (off, zstd or auto)" demo --compress lz4
  usage "mfrdma demo: --compress-level: zstd compression level 99, allowed -131072..22 (0: the default, 1)" demo --compress zstd --compress-level 99
  ;;
listen_migrate_bad_compress)
  # a destination that refuses compression: zstd fails with the reason on both sides, auto
  # falls back to none
  start_listen --compress off
  run 1 migrate "$URI" --token "$TOKEN" --size 32M --compress zstd
  has err "reported: destination: the source requires compression 0x2 (zstd), which this destination refuses (compression off)"
  wait_listen 1
  start_listen --compress off
  run 0 migrate "$URI" --token "$TOKEN" --size 32M --compress auto
  has out "compression: auto requested, the destination refused it: none used"
  wait_listen 0
  usage "mfrdma listen: --compress: 'yes' is not a compression mode (off, zstd or auto)" listen tcp:127.0.0.1:0 --compress yes
  ;;
listen_migrate_bad_token)
  start_listen
  run 1 migrate "$URI" --token 00000000000000000000000000000000 --size 32M
  has err "migration failed: "
  # The destination keeps waiting for the right source; Ctrl-C ends it with 1.
  kill -INT "$LPID"
  wait_listen 1
  grep -qF "migration failed: destination: migration cancelled" "$work/lerr" || fail "listen: no cancel message"
  ;;
listen_bad_max_ram)
  # Blocks beyond --max-ram are refused before anything is mapped, with the reason on both
  # sides; the failed run's summary says "no", not "no (forced)".
  start_listen --max-ram 16M
  run 1 migrate "$URI" --token "$TOKEN" --size 64M
  has err "reported: destination: block 'ram0': 64.0 MiB exceed the 16.0 MiB of --max-ram"
  grep -qE '^  converged +no$' "$work/out" || fail "a failed run is not reported as not converged"
  wait_listen 1
  grep -qF "migration failed: destination: block 'ram0': 64.0 MiB exceed the 16.0 MiB of --max-ram" "$work/lerr" || fail "listen: no block error"
  ;;
listen_bad_idle_connections)
  # Connections that never say hello (and one more after the source's control connection)
  # neither delay nor fail the migration that presents the token.
  start_listen
  port=${URI##*:}
  idle=()
  for _ in $(seq 200); do exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connect"; idle+=("$fd"); done
  start=$(date +%s%N)
  run 0 migrate "$URI" --token "$TOKEN" --size 32M --channels 4
  took=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "migration behind 200 idle connections: $took ms"
  [ "$took" -lt 4000 ] || fail "the migration took $took ms (one idle connection used to cost 5000)"
  wait_listen 0
  grep -qF "dropped connection from" "$work/lerr" && [ "$(grep -c "dropped connection" "$work/lerr")" -le 15 ] || fail "drops not logged, or not rate-limited"
  for fd in "${idle[@]}"; do exec {fd}>&-; done
  ;;
listen_bad_verify)
  # A source whose client loses a dirty bit (tests/cli/bad-source.c): the digests differ at
  # COMPLETE, both sides say which block, and listen exits 3.
  [ -x "$helper" ] || fail "no cli-bad-source given"
  start_listen
  "$helper" "$URI" "$TOKEN" >"$work/out" 2>"$work/err" </dev/null
  rc=$?
  [ "$rc" -eq 3 ] || fail "cli-bad-source exited $rc, expected 3"
  has err "cli-bad-source: verification failed: block 'ram0' differs on the destination $URI"
  wait_listen 3
  grep -qxF "migration failed: verification failed: block 'ram0' differs from the source" "$work/lerr" || fail "listen: no verification failure message"
  grep -qF "verification: OK" "$work/lout" && fail "listen claims verification OK"
  ;;
rdma_demo|rdma_listen_migrate|rdma_options)
  # Suite rdma-inside: runs in the soft-RoCE VM (tests/softroce); skips on a host without RDMA.
  addr=${MFR_TEST_RDMA_ADDR:-}
  if [ -z "$addr" ] || ! "$mfrdma" devices >/dev/null 2>&1; then
    echo "SKIP: no RDMA device (run through tests/softroce/vm-run.sh)"; exit 77
  fi
  if [ "$case_name" = rdma_options ]; then
    # devices: what a user looks at when nothing works
    run 0 devices
    cp "$work/out" "$work/devices"
    grep -qE '^rxe0  \(' "$work/out" || fail "devices does not list rxe0"
    grep -qE '^  port 1: +ACTIVE' "$work/out" || fail "devices: port 1 not ACTIVE"
    gid=$(awk -v a="::ffff:$addr" '$1 == "GID" && $5 == a { print $2; exit }' "$work/out")
    [ -n "$gid" ] || fail "devices: no GID of $addr"
    has out "ODP: "
    run 0 devices --json
    grep -qF '"name":"rxe0"' "$work/out" || fail "devices --json has no rxe0"
    # overrides that contradict the address fail with both sides named, before any data moves
    run 1 demo --transport rdma --size 16M --rdma-port 2 --timeout 30000
    has err "rdma_port=2 was requested, but"
    run 1 demo --transport rdma --size 16M --gid-index 0 --timeout 30000
    has err "gid_index 0 is GID"
    run 1 demo --transport rdma --size 16M --rdma-dev nosuchdev --timeout 30000
    has err "nosuchdev"
    # with --rdma-dev the GID is chosen, not checked: a link-local GID cannot reach IPv4
    ll=$(awk '$1 == "GID" && $5 ~ /^fe80:/ { print $2; exit }' "$work/devices")
    if [ -n "$ll" ]; then
      run 1 demo --transport rdma --size 16M --rdma-dev rxe0 --gid-index "$ll" --timeout 30000
      has err "rxe0 port 1 GID $ll (fe80:"
      has err "is no IPv4 address the destination can be reached from"
    fi
    # rxe (Linux 6.1) has no on-demand paging: a clear refusal, not a crash
    if ! "$mfrdma" devices | grep -q '^  ODP: yes'; then
      run 1 demo --transport rdma --size 16M --odp --timeout 30000
      has err "does not support on-demand paging"
    fi
    # matching overrides and a single registration thread migrate as usual
    run 0 demo --transport rdma --size 16M --channels 2 --dirty-rate 0 --rdma-dev rxe0 \
      --rdma-port 1 --gid-index "$gid" --registration-threads 1 --rc-retry 3 --rc-timeout 16 \
      --timeout 30000 --json
    grep -qF '"registration_threads":1' "$work/out" || fail "JSON lacks registration_threads 1"
    # the destination's registration chunk: 16 MiB in 1 MiB chunks, one MR and REGION each
    run 0 demo --transport rdma --size 16M --channels 2 --dirty-rate 0 \
      --registration-chunk 1M --timeout 30000 --json
    grep -qF '"region_chunks":16' "$work/out" || fail "JSON lacks region_chunks 16"
  elif [ "$case_name" = rdma_demo ]; then
    # auto must pick RDMA and find the device's address on its own.
    run 0 demo --size 32M --channels 2 --dirty-rate 4 --timeout 30000
    grep -qE '^transport: rdma \(device [^,]+, address [0-9.]+\)$' "$work/out" || fail "auto did not pick rdma"
    has out "destination: listening on rdma:"; has out "memcmp: OK (32.0 MiB in 1 block identical)"
    grep -qE '^  transport +rdma +rdma$' "$work/out" || fail "summary does not say rdma"
  else
    LISTEN_AT="rdma:$addr:0"
    start_listen --timeout 30000 --registration-chunk 3M
    run 0 migrate "$URI" --token "$TOKEN" --size 16M --blocks 2 --channels 3 --dirty-rate 4 --timeout 30000
    has out "verification: OK (2 blocks, digests match)"
    wait_listen 0
    grep -qE '^  transport +rdma$' "$work/lout" || fail "listen summary does not say rdma"
  fi
  ;;
*)
  echo "unknown case $case_name"; exit 2
  ;;
esac
echo "ok ($case_name)"
