# SPDX-License-Identifier: MIT
"""test_death.py: a peer killed with SIGKILL: the Python side gets memport.PeerGone (channel and topic, Python or C peer), and views of what it had sent stay readable."""

import signal
import time

import pytest

import memport
from conftest import PEER_TIMEOUT, read_line, wait_for, wait_subscribers


def _client_that_sends_then_sleeps(name, payload):
    def client():
        c = memport.Channel.connect(name, timeout=PEER_TIMEOUT)
        c.send(payload)
        time.sleep(PEER_TIMEOUT * 2)  # until killed

    return client


def test_channel_peer_killed(name, children):
    svc = memport.Service(name)
    child = children(_client_that_sends_then_sleeps(name, b"before death"))
    ch = svc.accept(timeout=PEER_TIMEOUT)
    assert ch.recv_bytes(timeout=PEER_TIMEOUT) == b"before death"
    child.kill(signal.SIGKILL)
    with pytest.raises(memport.PeerGone) as ei:
        ch.recv(timeout=PEER_TIMEOUT)
    assert isinstance(ei.value, ConnectionError)
    assert ei.value.name == "MEMPORT_EPEER"
    with pytest.raises(memport.PeerGone):
        ch.recv(timeout=PEER_TIMEOUT)  # stays gone
    with pytest.raises(memport.PeerGone):
        ch.send(b"to nobody", timeout=PEER_TIMEOUT)
    ch.close()
    svc.close()


def test_view_of_dead_peers_message_stays_readable(name, children):
    np = pytest.importorskip("numpy")
    frame = np.arange(1 << 19, dtype=np.uint32)  # 2 MiB: through the peer's pool
    svc = memport.Service(name)
    child = children(_client_that_sends_then_sleeps(name, frame.tobytes()))
    ch = svc.accept(timeout=PEER_TIMEOUT)
    m = ch.recv(timeout=PEER_TIMEOUT)
    view = np.frombuffer(m, dtype=np.uint32)
    child.kill(signal.SIGKILL)
    with pytest.raises(memport.PeerGone):
        ch.recv(timeout=PEER_TIMEOUT)
    assert np.array_equal(view, frame)  # its pages are still mapped here
    del view
    try:
        m.release()
    except memport.Error:
        pass  # the peer is gone: telling it is allowed to fail, but never to crash
    ch.close()
    svc.close()


def test_publisher_killed(name, children):
    def publisher():
        pub = memport.Publisher(name, inline_max=0)
        wait_subscribers(pub, 1)
        pub.send(bytes(10000), timeout=PEER_TIMEOUT)
        while True:  # answer nothing more, until killed
            time.sleep(1)

    child = children(publisher)
    sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
    m = sub.recv(timeout=PEER_TIMEOUT)
    assert len(m) == 10000
    child.kill(signal.SIGKILL)
    with pytest.raises(memport.PeerGone) as ei:
        sub.recv(timeout=PEER_TIMEOUT)
    assert ei.value.name == "MEMPORT_EPEER"
    assert bytes(m) == bytes(10000)  # held message still readable
    try:
        m.release()
    except memport.Error:
        pass
    sub.close()


def test_subscriber_killed_holding_a_buffer(name, children):
    pub = memport.Publisher(name, inline_max=0, buffers=4)

    def subscriber():
        sub = memport.Subscriber(name, timeout=PEER_TIMEOUT)
        sub.recv(timeout=PEER_TIMEOUT)  # held, never released
        while True:
            time.sleep(1)

    child = children(subscriber)
    wait_subscribers(pub, 1)
    pub.send(bytes(5000), timeout=PEER_TIMEOUT)
    assert wait_for(lambda: pub.stats()["delivered"] >= 1)
    child.kill(signal.SIGKILL)
    assert wait_for(lambda: (pub.process(), pub.subscribers)[1] == 0)
    st = wait_for(lambda: (lambda s: s if s["buffers_free"] == s["buffers"] else None)(pub.stats()))
    assert st, pub.stats()
    for _ in range(8):  # more than the pool: the dead subscriber's buffer came back
        pub.send(bytes(5000), timeout=PEER_TIMEOUT)
    pub.close()


def test_c_peer_killed(c_peer, name):
    p = c_peer("chan-server", name, 2, 1 << 20, "hold")
    assert read_line(p) == "ready"
    with memport.Channel.connect(name, timeout=PEER_TIMEOUT) as ch:
        assert len(ch.recv(timeout=PEER_TIMEOUT)) == 1 << 20
        ch.recv(timeout=PEER_TIMEOUT).release()
        lines = [read_line(p), read_line(p), read_line(p)]
        assert lines[-1] == "held"
        p.kill()
        p.wait()
        with pytest.raises(memport.PeerGone):
            ch.recv(timeout=PEER_TIMEOUT)


def test_c_publisher_killed(c_peer, name):
    p = c_peer("pub", name, 3, 1 << 20, 1, "hold")
    assert read_line(p) == "ready"
    with memport.Subscriber(name, timeout=PEER_TIMEOUT) as sub:
        for _ in range(3):
            sub.recv(timeout=PEER_TIMEOUT).release()
        assert [read_line(p) for _ in range(4)][-1] == "held"
        p.kill()
        p.wait()
        with pytest.raises(memport.PeerGone):
            sub.recv(timeout=PEER_TIMEOUT)


def test_hostile_server_handshake(c_peer, name):
    """A server answering the handshake with junk: an exception (the protocol's), never a crash."""
    p = c_peer("bad-server", name, 4)
    assert read_line(p) == "ready"
    for _ in range(4):
        with pytest.raises(memport.Error) as ei:
            memport.Channel.connect(name, timeout=PEER_TIMEOUT)
        assert isinstance(ei.value, (memport.ProtocolError, memport.PeerGone)), repr(ei.value)
    assert read_line(p) == "end"
    assert p.wait(timeout=PEER_TIMEOUT) == 0
