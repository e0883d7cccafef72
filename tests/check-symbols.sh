#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# No global symbol of our static libraries may share a name with a symbol of a shared library
# libmfrdma links: a program linking both would call ours where the library's was meant (a
# non-static rdma_listen() in transport/ once took librdmacm's place inside verbs/cm.c).
# Usage: check-symbols.sh LIBMFRDMA.so STATIC.a...
set -u
lib=$1; shift
ours=$(nm -g --defined-only "$@" 2>/dev/null | awk 'NF == 3 && $2 ~ /[TDBR]/ {print $3}' | sort -u)
[ -n "$ours" ] || { echo "symbols: no symbols read from $*"; exit 1; }
deps=$(ldd "$lib" | awk '$3 ~ /^\// {print $3}')
theirs=$(for d in $deps; do nm -D --defined-only "$d" | awk '{print $NF}' | sed 's/@.*//'; done | sort -u)
clash=$(comm -12 <(echo "$ours") <(echo "$theirs"))
if [ -n "$clash" ]; then
  echo "symbols: ours and a linked library's: $(echo $clash)"
  exit 1
fi
echo "symbols: no clash with $(echo "$deps" | wc -l) linked libraries"
