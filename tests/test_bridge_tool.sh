#!/bin/sh
# SPDX-License-Identifier: MIT
# test_bridge_tool.sh: memport-bridge as a user meets it: usage errors, keygen, the plain-TCP warning, a clean stop on SIGTERM with its stats, and the library's exports (127.0.0.1 only).
set -u
bin=${top_builddir:-.}/tools/memport-bridge
lib=${top_builddir:-.}/.libs/libmemport-bridge.so
header=${top_srcdir:-.}/include/memport_bridge.h
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }
expect() { # expected-status description command...
  want=$1; what=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  got=$?
  [ "$got" -eq "$want" ] || { fail "$what: exit $got, expected $want"; cat "$tmp/err"; }
}

expect 0 "--help" "$bin" --help
grep -q "usage: memport-bridge" "$tmp/out" || fail "--help prints no usage"
expect 2 "no arguments" "$bin"
expect 2 "unknown direction" "$bin" sideways topic t tcp://127.0.0.1:1
expect 2 "unknown kind" "$bin" export queue t tcp://127.0.0.1:1
expect 2 "unknown option" "$bin" export topic t tcp://127.0.0.1:1 --frobnicate 1
expect 2 "bad number" "$bin" import topic t tcp://127.0.0.1:1 --hwm 12x
expect 2 "bad overflow" "$bin" import topic t tcp://127.0.0.1:1 --overflow sometimes
expect 2 "name too long" "$bin" export topic "$(printf 'n%.0s' $(seq 1 80))" tcp://127.0.0.1:1
expect 2 "endpoint without a transport" "$bin" export topic t 127.0.0.1:1

# keygen: a 0600 file with both keys, the public key printed; never overwrites.
expect 0 "keygen" "$bin" keygen "$tmp/a.key"
pub=$(cat "$tmp/out")
[ ${#pub} -eq 40 ] || fail "keygen printed '$pub', not a 40-character key"
grep -qxF "public $pub" "$tmp/a.key" || fail "the key file does not hold the printed public key"
grep -qE '^secret .{40}$' "$tmp/a.key" || fail "the key file holds no secret key"
mode=$(stat -c %a "$tmp/a.key")
[ "$mode" = 600 ] || fail "key file mode $mode, expected 600"
expect 1 "keygen over an existing file" "$bin" keygen "$tmp/a.key"
"$bin" keygen "$tmp/b.key" >"$tmp/b.pub"
(echo "# the importer on host B"; cat "$tmp/b.pub") >"$tmp/b.allow"
# CURVE half set: usage errors.
expect 2 "export with keys but no allow list" "$bin" export topic t tcp://127.0.0.1:1 --curve-keys "$tmp/a.key"
expect 2 "import with keys but no server key" "$bin" import topic t tcp://127.0.0.1:1 --curve-keys "$tmp/b.key"
expect 2 "import with an allow list" "$bin" import topic t tcp://127.0.0.1:1 --curve-allow "$tmp/b.pub"
echo "not a key" >"$tmp/bad.allow"
expect 1 "an allow list without keys" "$bin" export topic t tcp://127.0.0.1:1 --curve-keys "$tmp/a.key" --curve-allow "$tmp/bad.allow"

# A running export: the warning without keys, none with them; SIGTERM stops it with exit 0 and
# prints its stats.
run_and_stop() { # file-prefix stats(1/0) args...
  pre=$1; want_stats=$2; shift 2
  "$bin" "$@" >"$tmp/$pre.out" 2>"$tmp/$pre.err" &
  pid=$!
  sleep 0.5
  kill -0 "$pid" 2>/dev/null || { fail "$pre: not running"; cat "$tmp/$pre.err"; return; }
  kill -TERM "$pid"
  wait "$pid"
  st=$?
  [ "$st" -eq 0 ] || fail "$pre: exit $st after SIGTERM"
  if [ "$want_stats" = 1 ]; then
    grep -q "^messages=0 bytes=0 " "$tmp/$pre.err" || { fail "$pre: no final stats line"; cat "$tmp/$pre.err"; }
  elif [ -s "$tmp/$pre.err" ]; then
    fail "$pre: printed something with --quiet"; cat "$tmp/$pre.err"
  fi
}
name=bridgetool$$
run_and_stop plain 1 export topic "$name" 'tcp://127.0.0.1:*'
grep -q "warning: no CURVE keys" "$tmp/plain.err" || fail "plain TCP: no warning"
run_and_stop curve 1 export topic "$name" 'tcp://127.0.0.1:*' --curve-keys "$tmp/a.key" --curve-allow "$tmp/b.allow"
grep -q "warning" "$tmp/curve.err" && fail "CURVE: a warning was printed"
run_and_stop quiet 0 import channel "$name" 'tcp://127.0.0.1:9' --quiet

# The library exports exactly what memport_bridge.h declares.
if [ -f "$lib" ]; then
  nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u >"$tmp/exported"
  grep -oE '\bmemport_bridge_[a-z0-9_]+[[:space:]]*\(' "$header" | tr -d ' (' | sort -u >"$tmp/declared"
  diff -u "$tmp/declared" "$tmp/exported" || fail "libmemport-bridge exports differ from memport_bridge.h"
fi
[ $status -eq 0 ] && echo "PASS: memport-bridge tool"
exit $status
