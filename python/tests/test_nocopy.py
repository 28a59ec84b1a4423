# SPDX-License-Identifier: MIT
"""test_nocopy.py: received messages are the sender's pages, not copies: 64 frames of 8 MiB grow a subscriber's resident memory by far less than one frame, and views of messages are the pool mapping (same address for the same pool buffer, shared memory between exports)."""

import gc

import pytest

import memport
from conftest import PEER_TIMEOUT, read_line, rss_bytes, subscribe, wait_subscribers

np = pytest.importorskip("numpy")

FRAME = 8 << 20
FRAMES = 64
WINDOW = 8  # frames held at once by the subscriber (numpy views alive)


def addr(arr):
    return arr.__array_interface__["data"][0]


def test_64_frames_of_8mib_no_copy(name, children):
    def publisher():
        with memport.Publisher(name, depth=4, buffers=WINDOW + 6, buffer_size=FRAME) as pub:
            wait_subscribers(pub, 1)
            for i in range(FRAMES):
                ln = pub.loan(FRAME, timeout=PEER_TIMEOUT)
                mv = memoryview(ln)
                q = mv.cast("Q")
                q[0] = i  # two pages touched, no more
                q[-1] = i + 1000
                q.release()
                mv.release()
                ln.send(timeout=PEER_TIMEOUT)

    child = children(publisher)
    sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
    held = []
    gc.collect()
    base = rss_bytes()
    peak = base
    total = 0
    for i in range(FRAMES):
        m = sub.recv(timeout=PEER_TIMEOUT)
        assert len(m) == FRAME
        a = np.frombuffer(m, dtype=np.uint64)
        assert int(a[0]) == i and int(a[-1]) == i + 1000  # one value per end: two pages touched
        total += int(a[0])
        held.append((m, a))
        if len(held) > WINDOW:
            old_m, old_a = held.pop(0)
            del old_a
            old_m.release()
        peak = max(peak, rss_bytes())
    del a
    msgs = [m for m, _ in held]
    held.clear()  # the arrays go: the messages can be released
    for m in msgs:
        m.release()
    del m, msgs
    with pytest.raises(memport.Closed):
        sub.recv(timeout=PEER_TIMEOUT)
    sub.close()
    child.expect_ok()
    assert total == sum(range(FRAMES))
    grown = peak - base
    # A copy of even one held frame is 8 MiB; WINDOW held copies would be 64 MiB.
    assert grown < FRAME // 4, "resident memory grew by %.1f MiB receiving %d frames of 8 MiB" % (
        grown / (1 << 20),
        FRAMES,
    )


def test_topic_same_pool_buffer_same_address(name):
    with memport.Publisher(name, buffers=1, inline_max=0, buffer_size=1 << 20) as pub:
        sub = subscribe(pub, name)
        with sub:
            addrs = []
            for i in range(5):
                pub.send(np.full(100000, i, dtype=np.uint8), timeout=PEER_TIMEOUT)
                m = sub.recv(timeout=PEER_TIMEOUT)
                a1 = np.frombuffer(m, dtype=np.uint8)
                a2 = np.frombuffer(memoryview(m), dtype=np.uint8)
                assert np.shares_memory(a1, a2)  # two exports of one message: the same pages
                assert addr(a1) == addr(a2)
                assert int(a1[0]) == i
                addrs.append(addr(a1))
                del a1, a2
                m.release()
            assert len(set(addrs)) == 1, "one pool buffer, yet the views were at %s" % [hex(x) for x in addrs]


def test_channel_same_pool_buffer_same_address():
    a, b = memport.Channel.pair(pool_buffers=1, pool_buffer_size=1 << 20, zerocopy_threshold=1024)
    with a, b:
        addrs = []
        for i in range(5):
            a.send(np.full(200000, i, dtype=np.uint8), timeout=PEER_TIMEOUT)
            m = b.recv(timeout=PEER_TIMEOUT)
            v = np.frombuffer(m, dtype=np.uint8)
            assert int(v[-1]) == i
            addrs.append(addr(v))
            del v
            m.release()
        assert len(set(addrs)) == 1, [hex(x) for x in addrs]
        assert b.stats()["recv_pool_msgs"] == 5


def test_loan_is_the_pool_buffer():
    """What is written through a loan's view is what the receiver sees, at one address per buffer."""
    a, b = memport.Channel.pair(pool_buffers=1, pool_buffer_size=1 << 20, zerocopy_threshold=1024)
    with a, b:
        seen = set()
        for i in range(3):
            ln = a.loan(1 << 19, timeout=PEER_TIMEOUT)
            w = np.frombuffer(ln, dtype=np.uint8)
            seen.add(addr(w))
            w[:] = i + 1
            del w
            ln.send(timeout=PEER_TIMEOUT)
            m = b.recv(timeout=PEER_TIMEOUT)
            r = np.frombuffer(m, dtype=np.uint8)
            assert int(r.min()) == int(r.max()) == i + 1
            del r
            m.release()
        assert len(seen) == 1


def test_c_camera_64_frames_of_8mib_no_copy(c_peer, name):
    """The issue's story: a C producer's 8 MiB frames as numpy arrays over its own pages."""
    p = c_peer("frames", name, FRAMES, FRAME)
    assert read_line(p) == "ready"
    sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
    gc.collect()
    base = peak = rss_bytes()
    held = []
    for i in range(FRAMES):
        m = sub.recv(timeout=PEER_TIMEOUT)
        a = np.frombuffer(m, dtype=np.uint64)
        assert a.size * 8 == FRAME
        assert int(a[0]) == i and int(a[-1]) == i + 1000
        held.append((m, a))
        if len(held) > 4:
            old_m, old_a = held.pop(0)
            del old_a
            old_m.release()
        peak = max(peak, rss_bytes())
    del a
    msgs = [m for m, _ in held]
    held.clear()
    for m in msgs:
        m.release()
    del m, msgs
    with pytest.raises(memport.Closed):
        sub.recv(timeout=PEER_TIMEOUT)
    sub.close()
    assert p.wait(timeout=PEER_TIMEOUT) == 0
    assert peak - base < FRAME // 4, "resident memory grew by %.1f MiB" % ((peak - base) / (1 << 20))
