#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the patched QEMU (qemu-system-x86_64 with the rdma+multifd: migration URI) against the
# libmfrdma of this checkout: Debian 13's qemu source via apt-get source, the series in
# qemu/patches/, a minimal x86_64-softmmu configure, ccache. The build is cached under a key
# of (QEMU version, patch series, mfrdma.h), so an unchanged series is not rebuilt. The
# binary's run path is $ORIGIN/../lib: the script gives each libmfrdma build its own
# BUILD/qemu/bin/qemu-system-x86_64 (a hard link to the cached one) next to BUILD/qemu/lib ->
# BUILD/multifd-rdma, so it loads the libmfrdma of that build without LD_LIBRARY_PATH.
# BUILD/qemu/ also links the source tree (src) and firmware the tests need (firmware:
# linuxboot_dma.bin, which Debian's +ds tarball lacks, for -kernel).
# Prints the binary's path as the last line of stdout.
# Usage: qemu/fetch-build.sh [--mfrdma-build DIR] [--print-key]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly ROOT

mfrdma_build=$ROOT/build
print_key=0
while (($#)); do
  case $1 in
  --mfrdma-build) mfrdma_build=$(cd "${2:?--mfrdma-build wants a directory}" && pwd); shift 2 ;;
  --print-key) print_key=1; shift ;;
  -h|--help) sed -n '3,9p' "$0"; exit 0 ;;
  *) echo "fetch-build: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

CACHE=${MFR_QEMU_CACHE:-$HOME/.cache/mfrdma-qemu}
readonly CACHE
# Which source package: Debian 13's QEMU (10.0). The suite is a parameter for whoever wants
# to try another release; the patch series is written against 10.0.
readonly SUITE=${MFR_QEMU_SUITE:-trixie}
readonly SOURCES=/etc/apt/sources.list.d/mfrdma-qemu.sources
readonly BUILD_PKGS=(ccache libpixman-1-dev libglib2.0-dev ninja-build gcc pkg-config
                     python3-venv dpkg-dev seabios libibverbs-dev librdmacm-dev libfdt-dev bzip2)

t0=$(date +%s)
log() { printf 'fetch-build: [%4ds] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "needs root (or sudo) for: $*"
  fi
}

# deb-src for $SUITE (only sources: no binary of it can ever be installed by accident) and
# bookworm-backports binaries (not installed unless asked for by name; we only download two).
ensure_apt_sources() {
  local want
  want="# mfrdma qemu/fetch-build.sh: QEMU's source and its build tools
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  # (no grep -q on apt-cache's output: its early exit would fail the pipe under pipefail)
  if [ "$(cat "$SOURCES" 2>/dev/null)" != "$want" ] ||
      [[ $(apt-cache showsrc qemu 2>/dev/null) != *"Version: 1:10."* ]]; then
    log "adding $SOURCES (deb-src $SUITE, bookworm-backports) and updating apt"
    printf '%s\n' "$want" | as_root tee "$SOURCES" >/dev/null
    as_root apt-get update -qq || die "apt-get update failed (network?)"
  fi
}

ensure_build_pkgs() {
  local p missing=()
  for p in "${BUILD_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
}

# QEMU 10.0's configure wants meson >= 1.5 and pycotap; bookworm has meson 1.0. Rather than
# replace the system's meson (other builds on this machine use it), unpack the backports
# packages into the cache and put them on PYTHONPATH for QEMU's configure only.
ensure_python_tools() {
  local dir=$CACHE/tools deb
  if [ ! -f "$dir/.done" ]; then
    log "fetching meson and python3-pycotap from bookworm-backports"
    rm -rf "$dir" && mkdir -p "$dir/debs" "$dir/root"
    (cd "$dir/debs" && apt-get download -qq meson/bookworm-backports \
      python3-pycotap/bookworm-backports) || die "apt-get download meson/pycotap failed"
    for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
    touch "$dir/.done"
  fi
  export PYTHONPATH=$dir/root/usr/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}
  export PATH=$dir/root/usr/bin:$PATH
  python3 -c 'import mesonbuild, pycotap' 2>/dev/null || die "unpacked meson/pycotap do not import"
}

# apt-get source into $CACHE/src/<version>/ (dpkg-source checks the .dsc's signature and
# applies Debian's own patches). Sets qemu_version and qemu_src.
ensure_source() {
  qemu_version=$(apt-cache showsrc qemu | awk '/^Version: 1:10\./ {print $2}' | sort -V | tail -1)
  [ -n "$qemu_version" ] || die "no qemu 10.x source in apt (deb-src $SUITE)"
  local dir=$CACHE/src/$qemu_version
  if [ ! -f "$dir/.done" ]; then
    log "apt-get source qemu=$qemu_version"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && apt-get source -qq "qemu=$qemu_version" >/dev/null) ||
      die "apt-get source qemu=$qemu_version failed"
    touch "$dir/.done"
  fi
  qemu_src=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -1)
  [ -n "$qemu_src" ] || die "no unpacked source tree in $dir"
}

# The cache key: what changes the binary. libmfrdma itself is linked dynamically, so only its
# public header (the ABI QEMU compiles against) is part of it.
cache_key() {
  {
    echo "qemu $qemu_version"
    for p in "$ROOT"/qemu/patches/*.patch; do
      [ -e "$p" ] || continue
      echo "patch ${p##*/}"; cat "$p"
    done
    cat "$ROOT/multifd-rdma/mfrdma.h"
    cat "$ROOT/qemu/fetch-build.sh"
  } | sha256sum | cut -c1-16
}

# QEMU compiles against a copy of mfrdma.h inside the keyed tree, through a pkg-config file
# of our own: with the checkout's include directories (the uninstalled .pc file's) every file
# of QEMU's libcommon would carry the checkout's path in its command line, and ccache (which
# rewrites only paths under CCACHE_BASEDIR) would miss them all in another checkout, such as
# CI's fresh clone: ~1,000 compilations instead of a few dozen.
write_pkgconfig() {
  local dir=$1 lib=$mfrdma_build/multifd-rdma
  [ -e "$lib/libmfrdma.so" ] ||
    die "no $lib/libmfrdma.so: build libmfrdma first (scripts/setup.sh build)"
  mkdir -p "$dir/mfrdma/include" "$dir/mfrdma/pkgconfig"
  cp "$ROOT/multifd-rdma/mfrdma.h" "$dir/mfrdma/include/"
  printf '%s\n' "Name: mfrdma" "Description: libmfrdma for QEMU (qemu/fetch-build.sh)" \
    "Version: 0.1.0" "Requires: glib-2.0" "Libs: -L$lib -lmfrdma" \
    "Cflags: -I$dir/mfrdma/include" >"$dir/mfrdma/pkgconfig/mfrdma.pc"
}

configure_and_build() {
  local dir=$1 pc=$1/mfrdma/pkgconfig
  rm -rf "$dir" && mkdir -p "$dir"
  write_pkgconfig "$dir"
  log "copying the source tree to $dir/src"
  cp -a "$qemu_src" "$dir/src"
  local p
  for p in "$ROOT"/qemu/patches/*.patch; do
    [ -e "$p" ] || continue
    log "applying ${p##*/}"
    patch -d "$dir/src" -p1 --forward --quiet <"$p" || die "patch ${p##*/} does not apply"
  done
  mkdir -p "$dir/build"
  # ccache: the tree's path differs per key, so hash relative paths only.
  export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache} CCACHE_BASEDIR=$dir CCACHE_NOHASHDIR=1
  log "configure (PKG_CONFIG_PATH=$pc)"
  # $ORIGIN reaches the linker as is (meson quotes it for ninja and the shell)
  (cd "$dir/build" && PKG_CONFIG_PATH=$pc ../src/configure --cc="ccache gcc" \
    --extra-ldflags='-Wl,-rpath,$ORIGIN/../lib' \
    --python=/usr/bin/python3 --target-list=x86_64-softmmu --without-default-features \
    --enable-tcg --enable-rdma --enable-mfrdma --disable-docs --disable-install-blobs \
    --disable-werror >"$dir/configure.log" 2>&1) ||
    { tail -30 "$dir/configure.log" >&2; die "configure failed (log: $dir/configure.log)"; }
  log "configured; building qemu-system-x86_64 (ninja -j$(nproc))"
  local tb=$(date +%s)
  ninja -C "$dir/build" -j"$(nproc)" qemu-system-x86_64 >"$dir/build.log" 2>&1 ||
    { grep -B2 -A8 -m3 'error' "$dir/build.log" >&2 || tail -30 "$dir/build.log" >&2
      die "build failed (log: $dir/build.log)"; }
  log "built in $(($(date +%s) - tb)) s; ccache: $(ccache -s 2>/dev/null | grep -iE '^ *hits' | head -1 | tr -s ' ')"
  build_firmware "$dir"
  touch "$dir/.done"
}

# linuxboot_dma.bin (the option ROM -kernel needs) from QEMU's own pc-bios/optionrom with the
# host gcc (-m16): configure skips it without an i386 cross compiler, and the +ds tarball
# ships no binaries. The tree's path has no ':' (make's VPATH separator), the source's has.
build_firmware() {
  local dir=$1 rom=$1/firmware-build
  mkdir -p "$rom" "$dir/firmware"
  cp "$dir/src/pc-bios/optionrom/Makefile" "$rom/"
  printf 'TOPSRC_DIR=%s\nCC=gcc\nOBJCOPY=objcopy\nPYTHON=/usr/bin/python3\n' "$dir/src" \
    >"$rom/config.mak"
  make -C "$rom" linuxboot_dma.bin >"$dir/firmware.log" 2>&1 ||
    { tail -20 "$dir/firmware.log" >&2; die "linuxboot_dma.bin did not build"; }
  cp "$rom/linuxboot_dma.bin" "$dir/firmware/"
}

# BUILD/qemu/: this libmfrdma build's view of the cached QEMU (see the top of this file).
# A hard link, not a symlink: $ORIGIN is where the binary was found, and a symlink would
# resolve to the cache. Replaced only when the cached binary changed.
install_for_build() {
  local dir=$1 out=$mfrdma_build/qemu
  mkdir -p "$out/bin"
  if ! [ "$out/bin/qemu-system-x86_64" -ef "$dir/build/qemu-system-x86_64" ]; then
    rm -f "$out/bin/qemu-system-x86_64"
    ln "$dir/build/qemu-system-x86_64" "$out/bin/qemu-system-x86_64" 2>/dev/null ||
      cp "$dir/build/qemu-system-x86_64" "$out/bin/qemu-system-x86_64"
  fi
  ln -sfn ../multifd-rdma "$out/lib"
  ln -sfn "$dir/src" "$out/src"
  ln -sfn "$dir/firmware" "$out/firmware"
}

# Keeps the newest three keyed builds (each ~1 GB with its copy of the source).
prune_old() {
  local old
  for old in $(ls -1dt "$CACHE"/build-* 2>/dev/null | tail -n +4); do rm -rf "$old"; done
}

mkdir -p "$CACHE"
ensure_apt_sources
ensure_build_pkgs
ensure_python_tools
ensure_source
key=$(cache_key)
if ((print_key)); then echo "$key"; exit 0; fi
dir=$CACHE/build-$key
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$dir/.done" ] && [ -x "$dir/build/qemu-system-x86_64" ]; then
  log "cached: QEMU $qemu_version, key $key"
else
  log "building QEMU $qemu_version with $(ls "$ROOT"/qemu/patches/*.patch 2>/dev/null | wc -l) patches, key $key"
  configure_and_build "$dir"
  prune_old
fi
touch "$dir"
install_for_build "$dir"
log "done (total $(($(date +%s) - t0)) s)"
echo "$mfrdma_build/qemu/bin/qemu-system-x86_64"
