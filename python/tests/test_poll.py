# SPDX-License-Identifier: MIT
"""test_poll.py: fileno() with selectors (level-triggered: ready while a message waits, whatever calls came before) for channels, subscribers, publishers and services, and asyncio's recv_async when present."""

import asyncio
import selectors

import pytest

import memport
from conftest import PEER_TIMEOUT, Child, subscribe, wait_subscribers


def ready(sel, timeout=0):
    return bool(sel.select(timeout))


def settled_not_ready(sel, drain):
    """After a receive said nothing waits, the handle is not ready, but for the occasional
    spurious wake-up the man pages allow, after which the next receive settles it."""
    if not ready(sel):
        return True
    with pytest.raises((memport.WouldBlock, memport.Timeout)):
        drain()
    return not ready(sel)


@pytest.fixture
def selector():
    sel = selectors.DefaultSelector()
    yield sel
    sel.close()


def test_channel_level_triggered(selector):
    a, b = memport.Channel.pair()
    with a, b:
        fd = b.fileno()
        assert isinstance(fd, int) and fd >= 0
        assert b.fileno() == fd  # the same handle for the endpoint's life
        selector.register(fd, selectors.EVENT_READ)
        assert not ready(selector)
        a.send(b"one")
        assert ready(selector, PEER_TIMEOUT)
        assert ready(selector)  # level: still ready, nothing consumed
        b.stats()
        b.send(b"reply")  # a send on this end does not take the readiness away
        b.peer
        assert ready(selector)
        a.send(b"two")
        assert b.recv_bytes(timeout=0) == b"one"
        assert ready(selector)  # one more waits
        assert b.recv_bytes(timeout=0) == b"two"
        with pytest.raises((memport.WouldBlock, memport.Timeout)):
            b.recv(timeout=0)
        assert settled_not_ready(selector, lambda: b.recv(timeout=0))
        a.send(bytes(500000))  # a large one, through the pool
        assert ready(selector, PEER_TIMEOUT)
        b.recv(timeout=0).release()
        selector.unregister(fd)


def test_channel_ready_after_peer_close(selector):
    a, b = memport.Channel.pair()
    selector.register(b.fileno(), selectors.EVENT_READ)
    a.close()
    assert ready(selector, PEER_TIMEOUT)
    with pytest.raises((memport.Closed, memport.PeerGone)):
        b.recv(timeout=0)
    selector.unregister(b.fileno())
    b.close()


def test_channel_ready_from_forked_peer(name, selector):
    svc = memport.Service(name)
    selector.register(svc.fileno(), selectors.EVENT_READ)

    def client():
        with memport.Channel.connect(name, timeout=PEER_TIMEOUT) as c:
            c.send(b"hi")
            assert c.recv_bytes(timeout=PEER_TIMEOUT) == b"bye"

    child = Child(client)
    try:
        assert ready(selector, PEER_TIMEOUT)  # a connection waits
        ch = svc.accept(timeout=0)
        selector.unregister(svc.fileno())
        selector.register(ch.fileno(), selectors.EVENT_READ)
        assert ready(selector, PEER_TIMEOUT)
        assert ch.recv_bytes(timeout=0) == b"hi"
        ch.send(b"bye")
        child.expect_ok()
        ch.close()
    finally:
        child.kill()
        svc.close()


def test_subscriber_level_triggered(name, selector):
    with memport.Publisher(name) as pub:
        sub = subscribe(pub, name)
        with sub:
            selector.register(sub.fileno(), selectors.EVENT_READ)
            with pytest.raises((memport.WouldBlock, memport.Timeout)):
                sub.recv(timeout=0)
            assert settled_not_ready(selector, lambda: sub.recv(timeout=0))
            pub.send(b"1")
            pub.send(b"2")
            assert ready(selector, PEER_TIMEOUT)
            sub.stats()
            sub.missed
            assert ready(selector)
            assert sub.recv_bytes(timeout=0) == b"1"
            assert ready(selector)
            assert sub.recv_bytes(timeout=0) == b"2"
            with pytest.raises((memport.WouldBlock, memport.Timeout)):
                sub.recv(timeout=0)
            assert settled_not_ready(selector, lambda: sub.recv(timeout=0))
            selector.unregister(sub.fileno())


def test_publisher_fileno_ready_on_join(name, selector):
    pub = memport.Publisher(name)
    selector.register(pub.fileno(), selectors.EVENT_READ)

    def subscriber():
        with memport.Subscriber(name, timeout=PEER_TIMEOUT) as s:
            assert s.recv_bytes(timeout=PEER_TIMEOUT) == b"welcome"

    child = Child(subscriber)
    try:
        assert ready(selector, PEER_TIMEOUT)  # the join waits for our process()
        wait_subscribers(pub, 1)
        pub.send(b"welcome")
        pub.close()
        child.expect_ok()
    finally:
        child.kill()


# ---- asyncio -------------------------------------------------------------------------------------


def _needs_async(obj):
    if not hasattr(obj, "recv_async"):
        pytest.skip("recv_async is not provided")


def test_channel_recv_async():
    a, b = memport.Channel.pair()
    with a, b:
        _needs_async(b)

        async def main():
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, a.send, b"later")
            m = await asyncio.wait_for(b.recv_async(), PEER_TIMEOUT)
            with m:
                assert bytes(m) == b"later"
            a.send(b"now")  # already waiting: no wait at all
            m = await asyncio.wait_for(b.recv_async(), PEER_TIMEOUT)
            assert bytes(m) == b"now"
            m.release()

        asyncio.run(main())


def test_channel_recv_async_cancel_then_use():
    a, b = memport.Channel.pair()
    with a, b:
        _needs_async(b)

        async def main():
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.recv_async(), 0.05)
            a.send(b"after cancel")
            m = await asyncio.wait_for(b.recv_async(), PEER_TIMEOUT)
            assert bytes(m) == b"after cancel"
            m.release()

        asyncio.run(main())


def test_channel_recv_async_peer_closed():
    a, b = memport.Channel.pair()
    _needs_async(b)

    async def main():
        asyncio.get_running_loop().call_later(0.02, a.close)
        with pytest.raises((memport.Closed, memport.PeerGone)):
            await asyncio.wait_for(b.recv_async(), PEER_TIMEOUT)

    asyncio.run(main())
    b.close()


def test_subscriber_recv_async(name):
    with memport.Publisher(name) as pub:
        sub = subscribe(pub, name)
        with sub:
            _needs_async(sub)

            async def main():
                got = []
                loop = asyncio.get_running_loop()
                for i in range(5):
                    loop.call_later(0.01 * i, pub.send, b"a%d" % i)
                for _ in range(5):
                    m = await asyncio.wait_for(sub.recv_async(), PEER_TIMEOUT)
                    got.append(bytes(m))
                    m.release()
                return got

            assert asyncio.run(main()) == [b"a%d" % i for i in range(5)]
