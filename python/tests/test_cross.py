# SPDX-License-Identifier: MIT
"""test_cross.py: C and Python on the two ends (python/tests/c_peer): a C producer with a Python consumer and the reverse, for channels and topics, compared by CRC-32."""

import os
import zlib

import pytest

import memport
from conftest import PEER_TIMEOUT, read_line, wait_subscribers

COUNT = 24
SIZE = 3 << 20  # even messages: zero-copy through the pool; odd ones: small, through the ring


def peer_report(proc, count):
    """The peer's per-message lines "size crc" (after its "ready"), then its last line."""
    out, _ = proc.communicate(timeout=PEER_TIMEOUT)
    out = out.decode()
    lines = out.split("\n")
    rows = [tuple(l.split()) for l in lines if l and l not in ("ready", "held", "end") and not l.startswith("end ")]
    rows = [(int(s), int(c, 16)) for s, c in rows]
    ends = [l for l in lines if l.startswith("end")]
    assert len(rows) == count, out
    return rows, ends


def py_payload(i):
    return os.urandom(SIZE if i % 2 == 0 else 1 + (i * 37) % 300)


def test_c_channel_server_python_client(c_peer, name):
    p = c_peer("chan-server", name, COUNT, SIZE)
    assert read_line(p) == "ready"
    got = []
    with memport.Channel.connect(name, timeout=PEER_TIMEOUT) as ch:
        for _ in range(COUNT):
            with ch.recv(timeout=PEER_TIMEOUT) as m:
                got.append((len(m), zlib.crc32(m)))
        with pytest.raises(memport.Closed):
            ch.recv(timeout=PEER_TIMEOUT)
        ch.shutdown()
    rows, ends = peer_report(p, COUNT)
    assert got == rows
    assert p.returncode == 0, ends


def test_python_channel_server_c_client(c_peer, name):
    svc = memport.Service(name)
    p = c_peer("chan-client", name, COUNT)
    ch = svc.accept(timeout=PEER_TIMEOUT)
    sent = []
    with ch:
        assert ch.peer[0] == p.pid
        for i in range(COUNT):
            d = py_payload(i)
            if i % 4 == 0:  # some by loan, without a copy
                ln = ch.loan(len(d), timeout=PEER_TIMEOUT)
                with memoryview(ln) as mv:
                    mv[:] = d
                ln.send(timeout=PEER_TIMEOUT)
            else:
                ch.send(d, timeout=PEER_TIMEOUT)
            sent.append((len(d), zlib.crc32(d)))
        ch.shutdown()  # the C client then sees MEMPORT_ECLOSED
        rows, ends = peer_report(p, COUNT)
    svc.close()
    assert rows == sent
    assert ends == ["end MEMPORT_ECLOSED"]
    assert p.returncode == 0


def test_c_publisher_python_subscriber(c_peer, name):
    p = c_peer("pub", name, COUNT, SIZE, 1)
    assert read_line(p) == "ready"
    got = []
    with memport.Subscriber(name, timeout=PEER_TIMEOUT) as sub:
        for _ in range(COUNT):
            with sub.recv(timeout=PEER_TIMEOUT) as m:
                got.append((len(m), zlib.crc32(m)))
        with pytest.raises(memport.Closed):
            sub.recv(timeout=PEER_TIMEOUT)
    rows, _ = peer_report(p, COUNT)
    assert got == rows
    assert p.returncode == 0


def test_python_publisher_c_subscribers(c_peer, name):
    pub = memport.Publisher(name, depth=8, buffers=16, buffer_size=SIZE)
    peers = [c_peer("sub", name, COUNT) for _ in range(2)]
    wait_subscribers(pub, 2)
    sent = []
    for i in range(COUNT):
        d = py_payload(i)
        if i % 3 == 0:
            ln = pub.loan(len(d), timeout=PEER_TIMEOUT)
            with memoryview(ln) as mv:
                mv[:] = d
            ln.send(timeout=PEER_TIMEOUT)
        else:
            pub.send(d, timeout=PEER_TIMEOUT)
        sent.append((len(d), zlib.crc32(d)))
    pub.close()
    for p in peers:
        rows, ends = peer_report(p, COUNT)
        assert rows == sent
        assert ends == ["end MEMPORT_ECLOSED"]
        assert p.returncode == 0


def test_c_peer_numpy_view(c_peer, name):
    """A C producer's frames seen as numpy arrays over its pages, checked against its CRC."""
    np = pytest.importorskip("numpy")
    p = c_peer("pub", name, 4, 1 << 20, 1)
    assert read_line(p) == "ready"
    crcs = []
    with memport.Subscriber(name, timeout=PEER_TIMEOUT) as sub:
        for _ in range(4):
            m = sub.recv(timeout=PEER_TIMEOUT)
            a = np.frombuffer(m, dtype=np.uint8)
            crcs.append((a.size, zlib.crc32(a)))
            del a
            m.release()
    rows, _ = peer_report(p, 4)
    assert crcs == rows
