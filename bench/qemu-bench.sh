#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The QEMU comparison of docs/performance.md in one run: bench/qemu-bench.py on the host
# (rdma+multifd: over libmfrdma's tcp vs QEMU's multifd tcp), then inside the soft-RoCE VM
# (rdma+multifd: over rxe vs legacy rdma: vs multifd tcp), same QEMU binary throughout. The
# host runs land in build/qemu-bench/host.json; the VM's writes do not survive it (stdout does).
# Usage: bench/qemu-bench.sh [--repeats N] [--host-mem MB] [--vm-mem MB] [--channels N]
#                            [--host-only | --vm-only] [--modes LIST] [--profile]
# (--modes and --profile: see bench/qemu-bench.py --help; --modes applies to the VM part)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3 host_mem=128 vm_mem=64 channels=4 host_only=0 vm_only=0 vm_modes=() profile=()
while (($#)); do
  case $1 in
  --repeats) repeats=$2; shift 2 ;;
  --host-mem) host_mem=$2; shift 2 ;;
  --vm-mem) vm_mem=$2; shift 2 ;;
  --channels) channels=$2; shift 2 ;;
  --host-only) host_only=1; shift ;;
  --vm-only) vm_only=1; shift ;;
  --modes) vm_modes=(--modes "$2"); shift 2 ;;
  --profile) profile=(--profile); shift ;;
  *) echo "usage: $0 [--repeats N] [--host-mem MB] [--vm-mem MB] [--channels N]" \
          "[--host-only | --vm-only] [--modes LIST] [--profile]" >&2
     exit 2 ;;
  esac
done
MFR_QEMU_BINARY=$(qemu/fetch-build.sh --mfrdma-build build | tail -1)
export MFR_QEMU_BINARY
out=build/qemu-bench
mkdir -p "$out"
if ((!vm_only)); then
  echo "== host: $host_mem MiB guest, $channels channels, $repeats repeats =="
  python3 bench/qemu-bench.py --where host --mem "$host_mem" --channels "$channels" \
    --repeats "$repeats" --json "$out/host.json" "${profile[@]}"
fi
((host_only)) && exit 0
echo "== soft-RoCE VM (nested TCG): $vm_mem MiB guest, $channels channels, $repeats repeats =="
tests/softroce/vm-run.sh --timeout 3000 -- python3 bench/qemu-bench.py --where vm \
  --mem "$vm_mem" --channels "$channels" --repeats "$repeats" "${vm_modes[@]}" "${profile[@]}"
