# SPDX-License-Identifier: MIT
"""test_threads.py: Python threads sharing endpoints: concurrent senders and receivers lose or garble nothing, and a close from another thread ends a blocked call (each case in a forked child: a crash or a hang fails it)."""

import threading
import zlib

import pytest

import memport
from conftest import PEER_TIMEOUT, run_isolated, subscribe, unique_name

PER_THREAD = 3000


def _payload(t, i):
    body = b"%d:%d:" % (t, i) + bytes([(t * 31 + i) & 0xFF]) * (i % 700)
    return body + zlib.crc32(body).to_bytes(4, "little")


def _check(d):
    body, crc = d[:-4], int.from_bytes(d[-4:], "little")
    assert zlib.crc32(body) == crc, "garbled message"
    t, i = body.split(b":")[:2]
    return int(t), int(i)


def case_two_senders_one_receiver():
    a, b = memport.Channel.pair()
    errors = []

    def sender(t):
        try:
            for i in range(PER_THREAD):
                a.send(_payload(t, i), timeout=PEER_TIMEOUT)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=sender, args=(t,)) for t in (1, 2)]
    for t in ts:
        t.start()
    seen = {1: [], 2: []}
    for _ in range(2 * PER_THREAD):
        t, i = _check(b.recv_bytes(timeout=PEER_TIMEOUT))
        seen[t].append(i)
    for t in ts:
        t.join()
    assert not errors, errors
    assert seen[1] == list(range(PER_THREAD)) and seen[2] == list(range(PER_THREAD))


def case_two_receivers():
    a, b = memport.Channel.pair()
    got, errors = [], []

    def receiver():
        try:
            while True:
                with b.recv(timeout=PEER_TIMEOUT) as m:
                    d = bytes(m)
                if d == b"stop":
                    return
                got.append(_check(d))
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=receiver) for _ in range(2)]
    for t in ts:
        t.start()
    for i in range(PER_THREAD):
        a.send(_payload(0, i), timeout=PEER_TIMEOUT)
    a.send(b"stop")
    a.send(b"stop")
    for t in ts:
        t.join()
    assert not errors, errors
    assert sorted(i for _, i in got) == list(range(PER_THREAD))  # each exactly once


def case_release_in_another_thread():
    a, b = memport.Channel.pair(pool_buffers=2, pool_buffer_size=1 << 16, zerocopy_threshold=1024)
    msgs = []
    done = threading.Event()

    def releaser():
        n = 0
        while n < 200:
            if msgs:
                msgs.pop(0).release()
                n += 1
        done.set()

    t = threading.Thread(target=releaser)
    t.start()
    for i in range(200):
        a.send(bytes([i & 0xFF]) * 5000, timeout=PEER_TIMEOUT)  # needs the released buffers back
        msgs.append(b.recv(timeout=PEER_TIMEOUT))
    t.join()
    assert done.is_set()


def _close_during(block, close, unblock=None):
    """block() waits with no timeout in a thread; close() from here must end it. A close that
    refuses (raises) while the call runs is allowed: then unblock() ends the call its own way."""
    out = {}

    def run():
        try:
            block()
            out["r"] = "returned"
        except BaseException as e:
            out["r"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(0.2)  # in its wait by now, most likely; either way the close must end it
    try:
        close()
    except (ValueError, BufferError, RuntimeError, memport.Error):
        if unblock is not None:
            unblock()
    t.join(PEER_TIMEOUT)
    assert not t.is_alive(), "the blocked call did not end after close()"
    r = out["r"]
    assert r == "returned" or isinstance(r, (ValueError, memport.Error)), repr(r)


def case_close_channel_during_recv():
    a, b = memport.Channel.pair()
    _close_during(lambda: b.recv(), b.close, lambda: a.send(b"x"))


def case_close_peer_during_recv():
    a, b = memport.Channel.pair()
    _close_during(lambda: b.recv(), a.close)  # the peer's close ends even an endless wait


def case_close_subscriber_during_recv():
    name = unique_name("thr")
    pub = memport.Publisher(name)
    sub = subscribe(pub, name)
    _close_during(lambda: sub.recv(), sub.close, lambda: pub.send(b"x"))


def case_close_publisher_during_subscriber_recv():
    name = unique_name("thr")
    pub = memport.Publisher(name)
    sub = subscribe(pub, name)
    _close_during(lambda: sub.recv(), pub.close)  # orderly end: Closed


def case_close_semaphore_during_wait():
    s = memport.Semaphore(0)
    _close_during(lambda: s.wait(), s.close, s.post)


def case_close_service_during_accept():
    name = unique_name("thr")
    svc = memport.Service(name)
    _close_during(lambda: svc.accept(), svc.close, lambda: memport.Channel.connect(name, timeout=0))


def case_close_channel_during_blocked_send():
    a, b = memport.Channel.pair(ring_capacity=1 << 16, zerocopy_threshold=1 << 20)
    try:
        while True:
            a.send(bytes(1000), timeout=0)
    except (memport.WouldBlock, memport.Timeout):
        pass
    _close_during(lambda: a.send(bytes(1000)), a.close, lambda: [b.recv_bytes(timeout=0) for _ in range(3)])


def _gil_free_wait(block, unblock):
    """block() waits with no timeout in a thread; this thread then runs Python code and only
    after it unblock()s: a wait holding the GIL would never let it get there (a hang)."""
    out = {}

    def run():
        try:
            out["r"] = block()
        except BaseException as e:
            out["r"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(0.1)
    total = 0
    for i in range(300000):  # Python bytecode: needs the GIL
        total += i
    unblock()
    t.join(PEER_TIMEOUT)
    assert not t.is_alive(), "the waiting call never ended"
    assert not isinstance(out["r"], BaseException), repr(out["r"])


def case_gil_free_channel_recv():
    a, b = memport.Channel.pair()
    _gil_free_wait(lambda: b.recv_bytes(), lambda: a.send(b"x"))


def case_gil_free_subscriber_recv():
    name = unique_name("gil")
    pub = memport.Publisher(name)
    sub = subscribe(pub, name)
    _gil_free_wait(lambda: sub.recv_bytes(), lambda: pub.send(b"x"))


def case_gil_free_semaphore_wait():
    s = memport.Semaphore(0)
    _gil_free_wait(s.wait, s.post)


def case_gil_free_accept():
    name = unique_name("gil")
    svc = memport.Service(name)
    keep = []
    _gil_free_wait(lambda: keep.append(svc.accept()), lambda: keep.append(memport.Channel.connect(name, timeout=PEER_TIMEOUT)))


def case_gil_free_region_open():
    name = unique_name("gil")
    r = memport.Region(4096)
    keep = []
    _gil_free_wait(lambda: keep.append(memport.Region.open(name)), lambda: keep.append(r.publish(name)))


CASES = [(n[5:], f) for n, f in sorted(globals().items()) if n.startswith("case_")]


@pytest.mark.parametrize("fn", [f for _, f in CASES], ids=[n for n, _ in CASES])
def test_threads(fn):
    run_isolated(fn, (), timeout=60, may_return=True)
