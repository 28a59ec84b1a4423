#!/bin/sh
# SPDX-License-Identifier: MIT
# test_python.sh: runs the Python binding's pytest suite (python/tests) against the build-tree package.
#
# The harness's environment (python/local.am) gives MEMPORT_PYTHON (the configured interpreter),
# MEMPORT_PYTHON_BUILT (yes/no) and MEMPORT_PYTHON_SKIP (set in sanitizer builds, whose module
# the uninstrumented interpreter cannot load without the sanitizer runtime preloaded).
# The tests see PYTHONPATH=<build>/python/build (the package), LD_LIBRARY_PATH=<build>/.libs and
# MEMPORT_TOP_BUILDDIR / MEMPORT_TOP_SRCDIR (absolute), e.g. to find C peer programs.
# Exit: 0 passed, 77 skipped (binding not built, sanitizer build, pytest or numpy missing),
# 1 failed, including pytest's 5 "no tests collected": an empty run must not pass.
set -u
py=${MEMPORT_PYTHON:-/usr/bin/python3}
if [ "${MEMPORT_PYTHON_BUILT:-no}" != yes ]; then
  echo "SKIP: the Python binding is not built (configure found no Python 3 with Python.h, or --disable-python)"
  exit 77
fi
if [ -n "${MEMPORT_PYTHON_SKIP:-}" ]; then
  echo "SKIP: Python tests not run: $MEMPORT_PYTHON_SKIP"
  exit 77
fi
for m in pytest numpy; do
  if ! "$py" -c "import $m" >/dev/null 2>&1; then
    echo "SKIP: $py cannot import $m (Debian: apt-get install python3-$m)"
    exit 77
  fi
done
MEMPORT_TOP_BUILDDIR=$(cd "${top_builddir:-.}" && pwd) || exit 99
MEMPORT_TOP_SRCDIR=$(cd "${top_srcdir:-.}" && pwd) || exit 99
pkg=$MEMPORT_TOP_BUILDDIR/python/build
if [ ! -f "$pkg/memport/.stamp" ]; then
  echo "ERROR: no build-tree package in $pkg/memport (run make first)"
  exit 99
fi
PYTHONPATH=$pkg${PYTHONPATH:+:$PYTHONPATH}
LD_LIBRARY_PATH=$MEMPORT_TOP_BUILDDIR/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# no __pycache__ in the build tree (distclean) or the source tree (read-only in distcheck)
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH LD_LIBRARY_PATH PYTHONDONTWRITEBYTECODE MEMPORT_TOP_BUILDDIR MEMPORT_TOP_SRCDIR

# The package imported must be this build's, not an installed copy.
where=$("$py" -c 'import memport; print(memport.__file__)') || { echo "FAIL: $py cannot import memport from $pkg"; exit 1; }
case $where in
  "$pkg"/memport/*) ;;
  *) echo "FAIL: memport imported from $where, not from $pkg"; exit 1 ;;
esac

echo "$py -m pytest python/tests (memport from $pkg/memport)"
"$py" -m pytest -q -p no:cacheprovider "$MEMPORT_TOP_SRCDIR/python/tests"
rc=$?
case $rc in
  0) exit 0 ;;
  5) echo "FAIL: pytest collected no tests in $MEMPORT_TOP_SRCDIR/python/tests"; exit 1 ;;
  *) echo "FAIL: pytest exited with status $rc"; exit 1 ;;
esac
