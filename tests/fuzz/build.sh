#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Configures (once) and builds the fuzz build in build-fuzz: clang-14 with libFuzzer, ASan and
# UBSan, -Dfuzz=true. Installs clang-14 and its runtime (Debian) when missing; the gcc builds
# are not touched.
# Usage: tests/fuzz/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}"
  SUDO=
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-14 meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
fi
# the harnesses and the recorder's tool (make-corpus.sh); the rest of the tree is gcc's business
ninja -C build-fuzz tools/mfrdma $(for h in hello ctrl packet regions tcp-stream dest-session rdma-wire compress; do
  echo tests/fuzz/fuzz-$h; done)
