# SPDX-License-Identifier: MIT
"""test_sigint.py: Ctrl-C (SIGINT) during each blocking call raises KeyboardInterrupt promptly (asserted within a generous 1 s, the contract says 100 ms) and leaves the objects usable."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import PEER_TIMEOUT, read_line

# Each snippet sets things up, then `block()` is the blocking call. The peer ends stay open, so
# nothing but the signal can end the wait.
SETUPS = {
    "channel-recv": """
        a, b = memport.Channel.pair()
        block = lambda: b.recv()
        after = lambda: (a.send(b"x"), b.recv_bytes(timeout=5))
    """,
    "channel-recv-bytes": """
        a, b = memport.Channel.pair()
        block = lambda: b.recv_bytes(timeout=None)
        after = lambda: (a.send(b"x"), b.recv_bytes(timeout=5))
    """,
    "channel-recv-long-timeout": """
        a, b = memport.Channel.pair()
        block = lambda: b.recv(timeout=3600.0)
        after = lambda: (a.send(b"x"), b.recv_bytes(timeout=5))
    """,
    "channel-send-full": """
        a, b = memport.Channel.pair(ring_capacity=1 << 16, zerocopy_threshold=1 << 20)
        try:
            while True:
                a.send(bytes(1000), timeout=0)
        except (memport.WouldBlock, memport.Timeout):
            pass
        block = lambda: a.send(bytes(1000))
        after = lambda: b.recv_bytes(timeout=5)
    """,
    "service-accept": """
        svc = memport.Service("pyt-sigint-%d" % os.getpid())
        block = lambda: svc.accept()
        after = lambda: None
    """,
    "subscriber-recv": """
        name = "pyt-sigint-%d" % os.getpid()
        pub = memport.Publisher(name)
        import threading
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("s", memport.Subscriber(name, timeout=30)))
        t.start()
        while t.is_alive():
            pub.process()
            time.sleep(0.001)
        sub = box["s"]
        block = lambda: sub.recv()
        after = lambda: (pub.send(b"x"), sub.recv_bytes(timeout=5))
    """,
    "semaphore-wait": """
        s = memport.Semaphore(0)
        block = lambda: s.wait()
        after = lambda: (s.post(), s.wait(timeout=5))
    """,
    "channel-loan-pool-empty": """
        a, b = memport.Channel.pair(pool_buffers=1, pool_buffer_size=1 << 16)
        first = a.loan(1000)  # the only buffer, kept
        block = lambda: a.loan(1000)
        after = lambda: (first.discard(), a.loan(1000, timeout=5).discard())
    """,
    "publisher-loan-pool-empty": """
        pub = memport.Publisher("pyt-sigint-%d" % os.getpid(), buffers=1)
        first = pub.loan(1000)
        block = lambda: pub.loan(1000)
        after = lambda: (first.discard(), pub.loan(1000, timeout=5).discard())
    """,
    "region-open-missing": """
        block = lambda: memport.Region.open("pyt-sigint-none-%d" % os.getpid())
        after = lambda: None
    """,
    "channel-connect-missing": """
        block = lambda: memport.Channel.connect("pyt-sigint-none-%d" % os.getpid())
        after = lambda: None
    """,
    "subscriber-connect": """
        import subprocess
        name = "pyt-sigint-%d" % os.getpid()
        # A publisher in another process that never makes a call: the join is never answered.
        holder = subprocess.Popen([sys.executable, "-c", "import memport, time; p = memport.Publisher(%r); "
                                   "print('up', flush=True); time.sleep(60)" % name], stdout=subprocess.PIPE)
        assert holder.stdout.readline().strip() == b"up"
        block = lambda: memport.Subscriber(name)
        after = lambda: (holder.kill(), holder.wait())
    """,
}

CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import memport
{setup}
print("ready", flush=True)
try:
    block()
except KeyboardInterrupt:
    t = time.monotonic()
    after()  # still usable after the interruption
    print("interrupted %.9f" % t, flush=True)
    sys.exit(0)
except BaseException as e:
    print("raised %r" % (e,), flush=True)
    sys.exit(3)
print("returned", flush=True)
sys.exit(4)
"""


@pytest.mark.parametrize("what", sorted(SETUPS))
def test_ctrl_c_interrupts_blocking_call(what):
    code = CHILD.format(setup=textwrap.dedent(SETUPS[what]))
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, bufsize=0, env=env)
    try:
        assert read_line(p) == "ready"
        time.sleep(0.3)  # let it enter the wait (if not yet there, the signal is still seen at once)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=PEER_TIMEOUT)
        out = out.decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    line = out.strip().splitlines()[-1] if out.strip() else "(nothing)"
    assert p.returncode == 0 and line.startswith("interrupted"), "child: %s (exit %s)" % (line, p.returncode)
    delay = float(line.split()[1]) - sent
    assert delay < 1.0, "KeyboardInterrupt %.3f s after SIGINT" % delay
