#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# `meson install` into a DESTDIR, then use the result the way a packager or user would: the
# header, the library (with its SONAME links), the pkg-config file and the tool are in place,
# only the public ABI is exported, and a C program built with the installed pkg-config file's
# flags (DESTDIR as sysroot) links and runs against the installed library.
# Usage: install-test.sh MESON BUILD_DIR VERSION PREFIX BINDIR LIBDIR INCLUDEDIR SANITIZE CC...
# (the directories absolute, SANITIZE as b_sanitize: none or address,undefined, ...)
set -u
meson=$1 build=$2 version=$3 prefix=$4 bindir=$5 libdir=$6 includedir=$7 sanitize=$8
shift 8
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$work/root

fail() { echo "FAIL (install): $*"; for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }

"$meson" install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$work/install.log" 2>&1 ||
  fail "meson install -C $build --destdir $dest --no-rebuild failed"

# what must be there, and nothing of the engine's internal headers
[ -f "$dest$includedir/mfrdma/mfrdma.h" ] || fail "no $includedir/mfrdma/mfrdma.h"
headers=$(cd "$dest$includedir/mfrdma" && echo *)
[ "$headers" = mfrdma.h ] || fail "$includedir/mfrdma holds '$headers', expected only mfrdma.h"
lib=$dest$libdir/libmfrdma.so
[ -f "$lib.$version" ] || fail "no $libdir/libmfrdma.so.$version"
[ "$(readlink "$lib")" = libmfrdma.so.0 ] || fail "libmfrdma.so does not link to libmfrdma.so.0"
[ "$(readlink "$lib.0")" = "libmfrdma.so.$version" ] ||
  fail "libmfrdma.so.0 does not link to libmfrdma.so.$version"
objdump -p "$lib.$version" | grep -qE '^ *SONAME +libmfrdma\.so\.0$' || fail "SONAME is not libmfrdma.so.0"
pc=$dest$libdir/pkgconfig/mfrdma.pc
[ -f "$pc" ] || fail "no $libdir/pkgconfig/mfrdma.pc"
tool=$dest$bindir/mfrdma
[ -x "$tool" ] || fail "no executable $bindir/mfrdma"

# the version script: public functions exported (version MFRDMA_0), internals and seams not
syms=$(nm -D --defined-only "$lib" | awk 'NF == 3 {print $3}')
for s in mfr_dest_run mfr_buffer_is_zero mfr_digest; do
  grep -qx "$s@@MFRDMA_0" <<<"$syms" || fail "$s is not exported as $s@@MFRDMA_0"
done
# configs with struct_size (MFRDMA_0.4); the MFRDMA_0 versions take the old layout
for s in mfr_source_new mfr_dest_new mfr_source_config_init_sized mfr_dest_config_init_sized; do
  grep -qx "$s@@MFRDMA_0.4" <<<"$syms" || fail "$s is not exported as $s@@MFRDMA_0.4"
done
for s in mfr_source_new mfr_dest_new mfr_source_config_init mfr_dest_config_init; do
  grep -qx "$s@MFRDMA_0" <<<"$syms" || fail "$s@MFRDMA_0 (old config layout) is not exported"
done
for s in mfr_batch_fill mfr_send_channel_pick mfr_send_packet_layout mfr_source_inject_fault \
         mfr_wire_pack_packet xp_ops_lookup; do
  grep -qE "^$s(@|$)" <<<"$syms" && fail "internal $s is exported"
done

# the installed pkg-config file, with DESTDIR as the sysroot. A sysroot holds the whole
# system: give it the host's copies of the dependencies' include directories (only those,
# so a wrong path to our own files cannot be hidden by something on the host).
export PKG_CONFIG_PATH=$dest$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
pkg-config --exists mfrdma || fail "pkg-config does not find mfrdma"
[ "$(pkg-config --modversion mfrdma)" = "$version" ] || fail "pkg-config version is not $version"
requires=$(pkg-config --print-requires mfrdma)
[ "$requires" = glib-2.0 ] || fail "mfrdma.pc requires '$requires', expected glib-2.0"
for dir in $(PKG_CONFIG_SYSROOT_DIR= pkg-config --cflags-only-I glib-2.0); do
  dir=${dir#-I}
  [ -e "$dest$dir" ] || { mkdir -p "$(dirname "$dest$dir")" && ln -s "$dir" "$dest$dir"; }
done
cflags=$(pkg-config --cflags mfrdma) && libs=$(pkg-config --libs mfrdma) ||
  fail "pkg-config --cflags/--libs failed"
grep -qF -- "-I$dest$includedir/mfrdma" <<<"$cflags" || fail "cflags '$cflags' lack -I$dest$includedir/mfrdma"
grep -qF -- "-L$dest$libdir" <<<"$libs" || fail "libs '$libs' lack -L$dest$libdir"

cat >"$work/user.c" <<'EOF'
#include <mfrdma.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    MfrSourceConfig cfg;
    mfr_source_config_init(&cfg);
    if (cfg.channels != 4 || !cfg.verify || cfg.pages_per_packet != 128 ||
        cfg.timeout_ms != 5000) {
        fprintf(stderr, "defaults: %u channels, verify %d, %u pages, %u ms\n", cfg.channels,
                cfg.verify, cfg.pages_per_packet, cfg.timeout_ms);
        return 1;
    }
    /* an error made inside the library reaches the caller intact */
    GError *err = NULL;
    MfrRamBlock b = { 0 };
    if (mfr_source_new(&cfg, &b, 1, NULL, NULL, &err) ||
        !g_error_matches(err, MFR_ERROR, MFR_ERROR_USAGE) ||
        strcmp(err->message, "source: no destination URI given") != 0) {
        fprintf(stderr, "mfr_source_new: %s\n", err ? err->message : "no error");
        return 1;
    }
    g_error_free(err);
    puts(mfr_phase_str(MFR_PHASE_DONE));
    return 0;
}
EOF
san=()
[ "$sanitize" = none ] || san=(-fsanitize="$sanitize")
# shellcheck disable=SC2086 # pkg-config output is a list of words
"$@" "${san[@]}" -o "$work/user" "$work/user.c" $cflags $libs >"$work/cc.log" 2>&1 ||
  fail "cannot build a program with the installed pkg-config file: $* $cflags $libs"
export LD_LIBRARY_PATH=$dest$libdir
out=$("$work/user" 2>"$work/user.log") || fail "the program built against the installed library failed"
[ "$out" = done ] || fail "the program printed '$out', expected done"
ldd "$work/user" | grep -qF "libmfrdma.so.0 => $dest$libdir/libmfrdma.so.0" ||
  fail "the program did not load the installed library: $(ldd "$work/user")"

# the installed tool runs against the installed library
said=$("$tool" --version 2>"$work/tool.log") || fail "$bindir/mfrdma --version failed"
[ "$said" = "mfrdma $version" ] || fail "$bindir/mfrdma --version printed '$said'"
ldd "$tool" | grep -qF "libmfrdma.so.0 => $dest$libdir/libmfrdma.so.0" ||
  fail "the tool did not load the installed library: $(ldd "$tool")"
echo "ok (install: $prefix under $dest)"
