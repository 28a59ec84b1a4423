#!/bin/sh
# SPDX-License-Identifier: MIT
# test_exports.sh: the shared library exports exactly the functions the public header declares.
set -u
lib=${top_builddir:-.}/.libs/libmemport.so
header=${top_srcdir:-.}/include/memport.h
if [ ! -f "$lib" ]; then
  echo "SKIP: no shared library at $lib"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u >"$tmp/exported"
grep -oE '\bmemport_[a-z0-9_]+[[:space:]]*\(' "$header" | tr -d ' (' | sort -u >"$tmp/declared"
status=0
if grep -v '^memport_[a-z]' "$tmp/exported" >"$tmp/stray"; then
  echo "FAIL: exported symbols outside the memport_ namespace:"; cat "$tmp/stray"; status=1
fi
if ! diff -u "$tmp/declared" "$tmp/exported" >"$tmp/diff"; then
  echo "FAIL: exported symbols differ from the header's declarations (- header only, + library only):"
  cat "$tmp/diff"; status=1
fi
n=$(wc -l <"$tmp/exported")
[ $status -eq 0 ] && echo "ok: $n exported symbols, all declared in memport.h, all declarations exported"
exit $status
