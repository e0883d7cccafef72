#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Regenerates the seed corpus of tests/fuzz/corpus/ from real migrations: the fuzz build's
# `mfrdma demo` runs a few tcp migrations with MFR_RECORD_DIR set (transport/record.c writes
# every distinct received message), the messages are sorted by harness, the stream-shaped
# seeds are assembled from them, and each harness's -merge keeps the inputs that add coverage.
# Usage: tests/fuzz/make-corpus.sh [BUILD_DIR (default build-fuzz)]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-fuzz}
rec=$(mktemp -d)
raw=$(mktemp -d)
trap 'rm -rf "$rec" "$raw"' EXIT

run() { MFR_RECORD_DIR=$rec "$build/tools/mfrdma" demo -T tcp "$@" >/dev/null 2>&1; }
run -s 4M -c 2 -d 8 --max-rounds 4 --force-switchover
run -s 3M -b 3 -c 3 -d 0 --mix 30:30:40
run -s 1M -c 1 -d 0 --no-verify
run -s 2M -b 2 -c 4 -d 0 --mix 0:0:100

for h in hello ctrl packet regions tcp-stream dest-session; do mkdir -p "$raw/$h"; done
cp "$rec"/hello-* "$raw/hello/"
cp "$rec"/ctrl-* "$raw/ctrl/"
cp "$rec"/packet-* "$raw/packet/"
# regions: [u16 len][BLOCKS body][u16 len][BLOCKS_REPLY body]; tcp streams: framed messages
python3 - "$rec" "$raw" <<'PY'
import glob, os, struct, sys
rec, raw = sys.argv[1:]
def load(kind):
    return [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(rec, kind + "-*")))]
ctrl = {}
for m in load("ctrl"):
    ctrl.setdefault(struct.unpack_from("<H", m, 6)[0], []).append(m[16:])
CAPS, BLOCKS, REPLY = 1, 2, 3
for i, (b, r) in enumerate(zip(ctrl.get(BLOCKS, []), ctrl.get(REPLY, []))):
    seed = struct.pack("<H", len(b)) + b + struct.pack("<H", len(r)) + r
    open(os.path.join(raw, "regions", "recorded-%d" % i), "wb").write(seed)
frame = lambda m: struct.pack("<I", len(m)) + m
hellos, packets = load("hello"), load("packet")
ctrl_msgs = load("ctrl")
for i, h in enumerate(hellos):
    stream = frame(h) + b"".join(frame(m) for m in ctrl_msgs[:4])
    open(os.path.join(raw, "tcp-stream", "control-%d" % i), "wb").write(stream)
    stream = frame(h) + b"".join(frame(p) for p in packets[:4])
    open(os.path.join(raw, "tcp-stream", "channel-%d" % i), "wb").write(stream)
PY
MFR_FUZZ_DEST_SEED="$raw/dest-session/one-round" "$build/tests/fuzz/fuzz-dest-session" || true

for h in hello ctrl packet regions tcp-stream dest-session; do
  out=tests/fuzz/corpus/$h
  rm -rf "$out"
  mkdir -p "$out"
  "$build/tests/fuzz/fuzz-$h" -merge=1 "$out" "$raw/$h" 2>/dev/null
  echo "corpus/$h: $(ls "$out" | wc -l) inputs"
done
