# SPDX-License-Identifier: MIT
"""test_topic.py: topics from Python: publisher and subscribers across fork with checksums, loans, drop-oldest and its missed count, history, orderly close giving memport.Closed, stats."""

import os
import random
import time
import zlib

import pytest

import memport
from conftest import PEER_TIMEOUT, subscribe, wait_for, wait_subscribers


def test_publisher_basics(name):
    with memport.Publisher(name) as pub:
        assert pub.subscribers == 0
        pub.process()
        st = pub.stats()
        assert isinstance(st, dict) and st["subscribers"] == 0
        assert isinstance(pub.fileno(), int)


def test_in_process_roundtrip(name):
    with memport.Publisher(name, buffer_size=1 << 20) as pub:
        sub = subscribe(pub, name)
        with sub:
            assert pub.subscribers == 1
            for n in (5, 200, 201, 5000, 1 << 20):
                d = os.urandom(n)
                pub.send(d)
                with sub.recv(timeout=PEER_TIMEOUT) as m:
                    assert len(m) == n and bytes(m) == d
            ln = pub.loan(1000)
            with memoryview(ln) as mv:
                mv[:] = b"L" * 1000
            ln.send()
            assert sub.recv_bytes(timeout=PEER_TIMEOUT) == b"L" * 1000
            assert sub.missed == 0
            assert sub.stats()["received"] == 6


def test_publisher_and_subscriber_in_one_thread(name):
    """A Subscriber made in the thread that owns the Publisher joins (the Publisher gets turns to
    admit it while the Subscriber waits), and so does a second one; a closed Publisher is left alone."""
    other = memport.Publisher(name + "-closed")
    other.close()
    with memport.Publisher(name, buffer_size=1 << 16) as pub:
        t0 = time.monotonic()
        with memport.Subscriber(name, timeout=5) as s1, memport.Subscriber(name, timeout=5) as s2:
            assert time.monotonic() - t0 < 5
            assert pub.subscribers == 2
            pub.send(b"x" * 60000)
            for s in (s1, s2):
                with s.recv(timeout=PEER_TIMEOUT) as m:
                    assert bytes(m) == b"x" * 60000


def payload(i):
    """Message i of a run: its size and bytes, known to both sides."""
    return random.Random(i).randbytes(1 + (i * 25000) % (1 << 20))


def test_publish_subscribe_across_fork(name, children):
    count, nsubs = 40, 3
    pub = memport.Publisher(name, depth=8, buffers=16, buffer_size=1 << 20)

    def subscriber():
        with memport.Subscriber(name, timeout=PEER_TIMEOUT) as sub:
            for i in range(count):
                with sub.recv(timeout=PEER_TIMEOUT) as m:
                    assert zlib.crc32(m) == zlib.crc32(payload(i)), i
            with pytest.raises(memport.Closed):
                sub.recv(timeout=PEER_TIMEOUT)
            assert sub.missed == 0

    kids = [children(subscriber) for _ in range(nsubs)]
    wait_subscribers(pub, nsubs)
    for i in range(count):
        d = payload(i)
        n = len(d)
        if i % 2:
            pub.send(d, timeout=PEER_TIMEOUT)
        else:
            ln = pub.loan(n, timeout=PEER_TIMEOUT)
            with memoryview(ln) as mv:
                mv[:] = d
            ln.send(timeout=PEER_TIMEOUT)
    pub.close()  # orderly: every subscriber gets all 40, then Closed
    for k in kids:
        k.expect_ok()


def test_subscriber_in_child_publisher_closes(name, children):
    """The reverse roles: a forked publisher, the subscriber here."""

    def publisher():
        with memport.Publisher(name) as pub:
            wait_subscribers(pub, 1)
            for i in range(10):
                pub.send(b"msg%d" % i, timeout=PEER_TIMEOUT)

    child = children(publisher)
    sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
    with sub:
        got = [sub.recv_bytes(timeout=PEER_TIMEOUT) for _ in range(10)]
        assert got == [b"msg%d" % i for i in range(10)]
        with pytest.raises(memport.Closed) as ei:
            sub.recv(timeout=PEER_TIMEOUT)
        assert ei.value.name == "MEMPORT_ECLOSED"
    child.expect_ok()


def test_drop_oldest_missed(name):
    depth = 4
    with memport.Publisher(name, depth=depth, overflow="drop-oldest") as pub:
        sub = subscribe(pub, name)
        with sub:
            for i in range(20):
                pub.send(b"%d" % i, timeout=0)  # never blocks under drop-oldest
            got = []
            while True:
                try:
                    got.append(int(sub.recv_bytes(timeout=0)))
                except (memport.WouldBlock, memport.Timeout):
                    break
            assert got == list(range(20 - len(got), 20)), got
            assert 1 <= len(got) <= depth
            assert sub.missed == 20 - len(got)
            assert sub.stats()["missed"] == sub.missed
            assert pub.stats()["dropped"] == 20 - len(got)


def test_drop_oldest_spelling():
    """The overflow names the contract accepts; an unknown one is a ValueError."""
    accepted = []
    for spelling in ("drop-oldest", "drop_oldest"):
        try:
            memport.Publisher("pyt-spell-%d" % os.getpid(), overflow=spelling).close()
            accepted.append(spelling)
        except ValueError:
            pass
    assert accepted, "neither 'drop-oldest' nor 'drop_oldest' is accepted"
    memport.Publisher("pyt-spell-%d" % os.getpid(), overflow="block").close()


def test_block_overflow_times_out(name):
    with memport.Publisher(name, depth=2, overflow="block") as pub:
        sub = subscribe(pub, name)
        with sub:
            pub.send(b"1")
            pub.send(b"2")
            with pytest.raises((memport.Timeout, memport.WouldBlock)):
                pub.send(b"3", timeout=0.05)
            assert sub.recv_bytes(timeout=PEER_TIMEOUT) == b"1"
            pub.send(b"3", timeout=PEER_TIMEOUT)


def test_history_for_late_joiner(name):
    with memport.Publisher(name, depth=8, history=3, buffers=8, inline_max=0) as pub:
        for i in range(6):
            pub.send(b"h%d" % i + bytes(300))
        sub = subscribe(pub, name)
        with sub:
            got = [sub.recv_bytes(timeout=PEER_TIMEOUT)[:2] for _ in range(3)]
            assert got == [b"h3", b"h4", b"h5"]


def test_subscriber_message_release_rules(name):
    np = pytest.importorskip("numpy")
    with memport.Publisher(name, inline_max=0) as pub:
        sub = subscribe(pub, name)
        with sub:
            pub.send(np.arange(1000, dtype=np.int32))
            m = sub.recv(timeout=PEER_TIMEOUT)
            arr = np.frombuffer(m, dtype=np.int32)
            with pytest.raises(BufferError):
                m.release()
            assert int(arr[999]) == 999
            del arr
            m.release()
            with pytest.raises(ValueError):
                bytes(m)


def test_subscriber_close_is_seen(name, children):
    pub = memport.Publisher(name)

    def subscriber():
        sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
        sub.close()

    child = children(subscriber)
    wait_for(lambda: (pub.process(), child.poll() is not None)[1])  # the join needs our calls
    child.expect_ok()
    # joined and left (or never counted): the count comes back to 0
    assert wait_for(lambda: (pub.process(), pub.subscribers == 0)[1])
    pub.send(b"nobody listens", timeout=0)
    pub.close()


def test_late_close_of_subscriber_message(name):
    with memport.Publisher(name, inline_max=0) as pub:
        sub = subscribe(pub, name)
        pub.send(bytes(5000))
        m = sub.recv(timeout=PEER_TIMEOUT)
        sub.close()
        m.release()  # a message of a closed endpoint: no-op
        with pytest.raises(ValueError):
            sub.recv(timeout=0)


def test_subscriber_stats_and_missed_types(name):
    with memport.Publisher(name) as pub:
        sub = subscribe(pub, name)
        with sub:
            assert isinstance(sub.missed, int) and sub.missed == 0
            st = sub.stats()
            assert st["received"] == 0 and st["buffer_size"] >= 1 << 20
            time.sleep(0)


def test_drop_oldest_across_fork(name, children):
    """A slow subscriber in another process loses the oldest messages and is told how many."""
    depth, sent = 4, 30
    joined = memport.Semaphore(0)
    published = memport.Semaphore(0)
    pub = memport.Publisher(name, depth=depth, overflow="drop-oldest", inline_max=0, buffers=depth + 4)

    def slow_subscriber():
        with memport.Subscriber(name, timeout=PEER_TIMEOUT) as sub:
            joined.post()
            published.wait(timeout=PEER_TIMEOUT)  # everything sent before the first receive
            got = []
            ended = False
            while not ended:
                try:
                    with sub.recv(timeout=0) as m:
                        got.append(int(bytes(m).split(b" ")[0]))
                except (memport.WouldBlock, memport.Timeout):
                    break
                except memport.Closed:  # the publisher may have closed already: the end
                    ended = True
            assert 1 <= len(got) <= depth, got
            assert got == list(range(sent - len(got), sent)), got  # the newest, in order
            assert sub.missed == sent - len(got)
            if not ended:
                with pytest.raises(memport.Closed):
                    sub.recv(timeout=PEER_TIMEOUT)

    child = children(slow_subscriber)
    wait_subscribers(pub, 1)
    joined.wait(timeout=PEER_TIMEOUT)
    for i in range(sent):
        pub.send(b"%d " % i + bytes(500), timeout=PEER_TIMEOUT)  # never blocks for long: it drops
    published.post()
    pub.close()
    child.expect_ok()
