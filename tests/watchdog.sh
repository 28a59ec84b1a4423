#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/watchdog.sh COMMAND [ARG...]: run one test program (the test harness's LOG_COMPILER)
# under a time limit, so that a test that hangs fails with its stacks in its log instead of
# holding `make check`, and CI, until an outer timeout kills everything without a word.
#
# The limit is MEMPORT_TEST_TIMEOUT seconds (default 900; 0 turns the watchdog off). The test
# runs in a process group of its own; when the limit passes, the watchdog prints the stacks of
# every process in that group (with gdb, where it is installed), then kills the group, forked
# children included, and the test fails with status 124.
limit=${MEMPORT_TEST_TIMEOUT:-900}
if [ "$limit" = 0 ]; then
  exec "$@"
fi

set -m # each background job gets its own process group, led by the job's first process
"$@" &
pid=$!

# The members of the test's process group, from /proc (procps may be absent).
members() {
  local f rest
  for f in /proc/[0-9]*/stat; do
    read -r rest <"$f" 2>/dev/null || continue
    rest=${rest##*) } # fields after the command name: state ppid pgrp ...
    set -- $rest
    [ "$3" = "$pid" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
  done
}

# Interrupted (make check stopped with ^C, or killed): the test goes too, as without a watchdog.
trap 'kill -KILL -- -"$pid" 2>/dev/null; kill "$watcher" 2>/dev/null; exit 130' INT TERM HUP

(
  sleep "$limit" &
  s=$!
  trap 'kill $s 2>/dev/null; exit 0' TERM
  wait $s
  trap '' TERM # fired: finish the report even if the test ends meanwhile
  echo "watchdog: '$*' still running after $limit s (MEMPORT_TEST_TIMEOUT): stacks, then SIGKILL" >&2
  for p in $(members); do
    echo "watchdog: process $p: $(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null)" >&2
    if command -v gdb >/dev/null 2>&1; then
      timeout 60 gdb -q -batch -p "$p" -ex 'thread apply all bt' </dev/null 2>&1 | grep -v '^\[' >&2
    else
      echo "  waiting in: $(cat /proc/$p/wchan 2>/dev/null)" >&2
    fi
  done
  kill -KILL -- -"$pid" 2>/dev/null
  exit 3
) 2>&1 &
watcher=$!

wait "$pid"
rc=$?
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
# Killed by the watchdog: say so with timeout(1)'s status.
[ $? = 3 ] && exit 124
exit "$rc"
