# SPDX-License-Identifier: MIT
"""conftest.py: shared helpers of the memport Python tests (unique names, forked peers, the C peer, resident memory, crash isolation)."""

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

# A missing or broken module is an error of the whole run, never a skip.
import memport  # noqa: F401

SECOND = 1.0
PEER_TIMEOUT = 30.0  # generous bound on anything a peer must do (never a timing assertion)

_counter = itertools.count()


def unique_name(tag="t"):
    """A memport name ([A-Za-z0-9._-], at most 64 bytes) no other test or run uses."""
    return "pyt-%s-%d-%d" % (tag, os.getpid(), next(_counter))


@pytest.fixture
def name(request):
    return unique_name(request.node.name.split("[")[0][-20:].replace("_", "-").strip("-") or "t")


def rss_bytes():
    """Resident memory of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_for(pred, timeout=PEER_TIMEOUT, step=0.001):
    """Poll pred() until it is true or timeout passes; returns its last value."""
    until = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > until:
            return v
        time.sleep(step)


class Child:
    """A forked peer: runs fn() in a child process that reports by exit status only
    (0 when fn returns normally, 1 on an exception, whose traceback goes to stderr)."""

    def __init__(self, fn, *args):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(*args)
                code = 0
            except BaseException:  # report everything, a child never returns into pytest
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.status = None

    def poll(self):
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = st
        return self.status

    def join(self, timeout=PEER_TIMEOUT):
        until = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > until:
                self.kill()
                pytest.fail("forked peer %d did not end within %.0f s" % (self.pid, timeout))
            time.sleep(0.005)
        return self.status

    def kill(self, sig=signal.SIGKILL):
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if sig == signal.SIGKILL:
                _, self.status = os.waitpid(self.pid, 0)

    def expect_ok(self, timeout=PEER_TIMEOUT):
        st = self.join(timeout)
        if os.WIFSIGNALED(st):
            pytest.fail("forked peer killed by signal %d" % os.WTERMSIG(st))
        assert os.WEXITSTATUS(st) == 0, "forked peer failed (see its traceback in stderr)"


@pytest.fixture
def children():
    """Forked peers of one test; any still running at its end are killed."""
    made = []

    def spawn(fn, *args):
        c = Child(fn, *args)
        made.append(c)
        return c

    yield spawn
    for c in made:
        c.kill()


def subscribe(pub, name, **kw):
    """A Subscriber of our own Publisher in this process, made in another thread while this
    thread runs pub.process(): the way a program whose publisher thread is busy joins it."""
    result = {}

    def connect():
        try:
            result["sub"] = memport.Subscriber(name, timeout=PEER_TIMEOUT, **kw)
        except BaseException as e:  # handed to the test below
            result["err"] = e

    t = threading.Thread(target=connect)
    t.start()
    until = time.monotonic() + PEER_TIMEOUT
    while t.is_alive() and time.monotonic() < until:
        pub.process()
        time.sleep(0.001)
    t.join(1.0)
    assert not t.is_alive(), "Subscriber() did not return"
    if "err" in result:
        raise result["err"]
    return result["sub"]


def wait_subscribers(pub, n, timeout=PEER_TIMEOUT):
    """Run the publisher's calls until n subscribers have joined."""
    ok = wait_for(lambda: (pub.process(), pub.subscribers)[1] >= n, timeout)
    assert ok, "only %d of %d subscribers joined" % (pub.subscribers, n)


# ---- the C peer --------------------------------------------------------------------------------


@pytest.fixture
def c_peer():
    """Start python/tests/c_peer: $MEMPORT_C_PEER, else (under make check) the built one; skip when run by hand without it."""
    path = os.environ.get("MEMPORT_C_PEER")
    top = os.environ.get("MEMPORT_TOP_BUILDDIR")  # set by tests/test_python.sh under make check
    if not path and top:
        path = os.path.join(top, "python/tests/c_peer")
        if not os.access(path, os.X_OK):
            pytest.fail("%s is not built (python/tests/local.am must be included by python/local.am)" % path)
    if not path:
        pytest.skip("MEMPORT_C_PEER is not set (the path of a built python/tests/c_peer; make check finds it)")
    if not os.access(path, os.X_OK):
        pytest.fail("MEMPORT_C_PEER=%s is not an executable" % path)
    procs = []

    def start(*args):
        # bytes, unbuffered: read_line takes bytes from the descriptor itself, so select() sees
        # exactly what is left, and communicate() reads the rest
        p = subprocess.Popen([path] + [str(a) for a in args], stdout=subprocess.PIPE, bufsize=0)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()


def read_line(proc, timeout=PEER_TIMEOUT):
    """One line of a peer's stdout (an unbuffered bytes pipe), waiting at most timeout."""
    fd = proc.stdout.fileno()
    line = b""
    until = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        r, _, _ = select.select([fd], [], [], max(until - time.monotonic(), 0))
        if not r:
            pytest.fail("peer wrote no full line within %.0f s (got %r)" % (timeout, line))
        b = os.read(fd, 1)
        if not b:
            break
        line += b
    return line.decode().strip()


# ---- crash isolation ---------------------------------------------------------------------------


def run_isolated(fn, expected, timeout=PEER_TIMEOUT, may_return=False):
    """Run fn() in a forked child and return a description of what it raised. A crash (signal),
    a hang, no exception (unless may_return), or an exception that is not one of `expected`
    fails the test."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            try:
                fn()
                out = {"ok": may_return, "what": "no exception"}
            except expected as e:
                out = {"ok": True, "what": "%s: %s" % (type(e).__name__, e)}
            except BaseException as e:
                out = {"ok": False, "what": "unexpected %s: %s" % (type(e).__name__, e)}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    until = time.monotonic() + timeout
    while True:
        left = until - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(left, 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            pytest.fail("hung for %.0f s" % timeout)
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        pytest.fail("crashed: signal %d" % os.WTERMSIG(st))
    if not data:
        pytest.fail("child reported nothing (exit status %d)" % os.WEXITSTATUS(st))
    out = json.loads(data.decode())
    assert out["ok"], out["what"]
    return out["what"]
