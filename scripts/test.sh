#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The whole test suite, as CI runs it: set-up if needed, then
#   1. a -Werror build and every suite (unit, conformance, integration, cli, the RDMA suite
#      inside the soft-RoCE VM, and qemu: real-guest migrations with the patched QEMU that
#      qemu/fetch-build.sh builds first),
#   2. an ASan+UBSan build and every suite again, the RDMA one inside the VM included (leaks
#      and memory errors on the RDMA paths show only there),
#   3. a ThreadSanitizer build and the host suites (the RDMA provider's threads are not
#      covered: they live in the VM's uninstrumented libibverbs),
#   4. the clang fuzz build: every libFuzzer harness replays its corpus and past crashes and
#      fuzzes for MFR_FUZZ_SECONDS (default 20) each (tests/fuzz/),
#   5. a short soak and a short fault matrix over tcp (tests/soak, tests/faults).
# Usage: scripts/test.sh [extra meson test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# In CI the soft-RoCE VM must run: a skipped RDMA suite must not pass for a green one.
if [[ ${CI:-} == true ]]; then
  export MFR_VM_REQUIRED=1
fi

# How long each part took (set-up and build included), printed at the end.
timings=()
t_part=$SECONDS
part_done() { timings+=("$1: $((SECONDS - t_part)) s"); t_part=$SECONDS; }

scripts/setup.sh build -Dwerror=true
meson configure build -Dwerror=true >/dev/null

# The patched QEMU for suite qemu and the rdma-inside QEMU test (qemu/fetch-build.sh: cached
# by content, so only a changed patch series or mfrdma.h rebuilds it; the first build takes
# ~10-20 min on 2 cores). Without it (no network, say) those tests skip, except in CI.
echo "== QEMU: qemu/fetch-build.sh =="
if qemu_bin=$(qemu/fetch-build.sh --mfrdma-build build); then
  export MFR_QEMU_BINARY=${qemu_bin##*$'\n'}
elif [[ ${CI:-} == true ]]; then
  echo "error: the patched QEMU did not build (CI=true)" >&2
  exit 1
else
  echo "warning: no patched QEMU: the QEMU tests will skip" >&2
fi
echo "== tests: -Werror build (incl. soft-RoCE VM) =="
meson test -C build --print-errorlogs "$@"
part_done "-Werror build"

scripts/setup.sh build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
echo "== tests: ASan+UBSan build (incl. soft-RoCE VM) =="
# LSAN_OPTIONS reaches the soft-RoCE VM too (tests/softroce passes it in); the file holds
# only a third-party library's process-lifetime cache (libnuma), nothing of ours.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  LSAN_OPTIONS=suppressions=$PWD/tests/asan/lsan.supp \
  meson test -C build-asan --print-errorlogs --no-suite reliability "$@"
part_done "ASan+UBSan build"
scripts/setup.sh build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false
echo "== tests: ThreadSanitizer build (host suites) =="
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan/glib.supp" \
  meson test -C build-tsan --print-errorlogs --timeout-multiplier 3 \
  --suite unit --suite conformance --suite integration --suite cli "$@"
part_done "ThreadSanitizer build"

tests/fuzz/build.sh >/dev/null
echo "== tests: libFuzzer harnesses (clang, ASan+UBSan) =="
meson test -C build-fuzz --no-rebuild --print-errorlogs --suite fuzz
part_done "fuzz build"

echo "== all tests passed ($(IFS=,; echo "${timings[*]}" | sed 's/,/, /g')) =="
# One closing line for every build (meson's own summaries are per build). The rdma-inside tests
# count once per build where they really ran: inside the VM, read from 'softroce's output; their
# host copies only skip.
python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
  build-tsan/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json <<'EOF'
import json, re, sys
n = {"passed": 0, "failed": 0, "skipped": 0}
def count(r):
    n["passed" if r in ("OK", "EXPECTEDFAIL") else "skipped" if r == "SKIP" else "failed"] += 1
for path in sys.argv[1:]:
    for line in open(path):
        t = json.loads(line)
        if t["name"].startswith("mfrdma:rdma-inside /"):
            continue
        if t["name"] == "mfrdma:rdma / softroce":
            inner = re.findall(r"^\s*\d+/\d+ mfrdma:rdma-inside / \S+\s+(\w+)", t["stdout"], re.M)
            for r in inner:
                count(r)
            if not inner or t["result"] != "OK":
                count(t["result"])
            continue
        count(t["result"])
print("tests: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % n)
EOF
