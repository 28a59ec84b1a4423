# SPDX-License-Identifier: MIT
"""test_refcount.py: reference counting: 10^5 send/recv rounds (MEMPORT_PYTEST_ROUNDS, at least 2*10^4) leave the number of live objects, the references to what was sent and to the endpoints, the traced allocations and the resident memory where they were."""

import gc
import os
import sys
import tracemalloc

import pytest

import memport
from conftest import PEER_TIMEOUT, rss_bytes, subscribe

ROUNDS = max(int(os.environ.get("MEMPORT_PYTEST_ROUNDS", "100000")), 20000)
WARMUP = 2000


class Probe:
    """Counts that a leak makes grow: live gc objects, references held, traced memory, RSS."""

    def __init__(self, *watched):
        self.watched = watched

    def snap(self):
        gc.collect()
        return {
            "objects": len(gc.get_objects()),
            "refs": [sys.getrefcount(w) for w in self.watched],
            "traced": tracemalloc.get_traced_memory()[0],
            "rss": rss_bytes(),
            "blocks": sys.getallocatedblocks(),
            "fds": len(os.listdir("/proc/self/fd")),
        }

    def check(self, before, after, rounds):
        assert after["refs"] == before["refs"], "references leaked: %s -> %s" % (before["refs"], after["refs"])
        assert after["objects"] - before["objects"] < 100, "gc objects %d -> %d" % (before["objects"], after["objects"])
        # One leaked block per round would be >= rounds blocks.
        assert after["blocks"] - before["blocks"] < rounds // 20, "allocated blocks %d -> %d" % (
            before["blocks"],
            after["blocks"],
        )
        assert after["traced"] - before["traced"] < 256 << 10, "traced memory grew by %d bytes" % (
            after["traced"] - before["traced"]
        )
        assert after["fds"] <= before["fds"], "descriptors %d -> %d" % (before["fds"], after["fds"])
        assert after["rss"] - before["rss"] < 8 << 20, "RSS grew by %.1f MiB" % ((after["rss"] - before["rss"]) / (1 << 20))


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _channel_rounds(a, b, small, big, n):
    for i in range(n):
        a.send(big if i % 64 == 0 else small)
        m = b.recv(timeout=PEER_TIMEOUT)
        if i % 3 == 0:
            with m:
                len(m)
        elif i % 3 == 1:
            mv = memoryview(m)
            mv.release()
            m.release()
        else:
            bytes(m)
            del m  # dealloc releases
        if i % 16 == 0:
            b.send(small)
            a.recv_bytes(timeout=PEER_TIMEOUT)


def test_channel_rounds_leak_nothing(traced):
    a, b = memport.Channel.pair()
    small = b"s" * 100
    big = bytearray(300000)  # through the pool
    probe = Probe(a, b, small, big)
    _channel_rounds(a, b, small, big, WARMUP)
    before = probe.snap()
    _channel_rounds(a, b, small, big, ROUNDS)
    after = probe.snap()
    probe.check(before, after, ROUNDS)
    a.close()
    b.close()


def _loan_rounds(a, b, n):
    for i in range(n):
        ln = a.loan(4096 if i % 2 else 100000)
        mv = memoryview(ln)
        mv[0] = i & 0xFF
        mv.release()
        if i % 10 == 9:
            ln.discard()
            continue
        ln.send()
        m = b.recv(timeout=PEER_TIMEOUT)
        m.release()


def test_loan_rounds_leak_nothing(traced):
    a, b = memport.Channel.pair()
    probe = Probe(a, b)
    _loan_rounds(a, b, WARMUP)
    before = probe.snap()
    _loan_rounds(a, b, ROUNDS // 2)
    after = probe.snap()
    probe.check(before, after, ROUNDS // 2)
    a.close()
    b.close()


def _topic_rounds(pub, sub, small, big, n):
    for i in range(n):
        pub.send(big if i % 64 == 0 else small, timeout=PEER_TIMEOUT)
        if i % 2:
            with sub.recv(timeout=PEER_TIMEOUT) as m:
                len(m)
        else:
            sub.recv_bytes(timeout=PEER_TIMEOUT)
        if i % 1000 == 0:
            pub.process()
            pub.stats()
            sub.stats()
            sub.missed


def test_topic_rounds_leak_nothing(name, traced):
    pub = memport.Publisher(name)
    sub = subscribe(pub, name)
    small = b"t" * 100
    big = bytes(100000)
    probe = Probe(pub, sub, small, big)
    _topic_rounds(pub, sub, small, big, WARMUP)
    before = probe.snap()
    _topic_rounds(pub, sub, small, big, ROUNDS)
    after = probe.snap()
    probe.check(before, after, ROUNDS)
    sub.close()
    pub.close()


def test_error_paths_leak_nothing(traced):
    """Raising (timeouts, bad arguments) must not leak either."""
    a, b = memport.Channel.pair()
    probe = Probe(a, b)

    def rounds(n):
        for i in range(n):
            try:
                b.recv(timeout=0)
            except (memport.WouldBlock, memport.Timeout) as e:
                e.code, e.name
            try:
                a.send("not a buffer")
            except TypeError:
                pass
            try:
                a.loan(-1)
            except (ValueError, OverflowError):
                pass

    rounds(WARMUP)
    before = probe.snap()
    rounds(ROUNDS // 5)
    after = probe.snap()
    probe.check(before, after, ROUNDS // 5)
    a.close()
    b.close()


def test_create_close_objects_leak_nothing(traced):
    """Making and dropping objects (closed or left to dealloc) leaks nothing."""

    def rounds(n):
        for i in range(n):
            a, b = memport.Channel.pair()
            if i % 2:
                a.close()
                b.close()
            r = memport.Region(4096)
            m = r.map()
            memoryview(m).release()
            if i % 2:
                m.close()
                r.close()
            s = memport.Semaphore(1)
            s.try_wait()
            del a, b, r, m, s

    rounds(200)
    probe = Probe()
    before = probe.snap()
    rounds(2000)
    after = probe.snap()
    probe.check(before, after, 2000 * 10)
