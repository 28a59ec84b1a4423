# SPDX-License-Identifier: MIT
"""test_channel.py: channels from Python: send of every buffer kind, loans, messages and their lifetime (use after release, release with live views), half-close, peer credentials, stats, and a Service across fork."""

import os
import zlib

import pytest

import memport
from conftest import PEER_TIMEOUT


@pytest.fixture
def pair():
    a, b = memport.Channel.pair()
    yield a, b
    a.close()
    b.close()


SIZES = [1, 7, 200, 4096, 65536, 1 << 20, (4 << 20) + 3]


@pytest.mark.parametrize("size", SIZES)
def test_send_recv_bytes(pair, size):
    a, b = pair
    data = os.urandom(size)
    a.send(data)
    with b.recv(timeout=PEER_TIMEOUT) as m:
        assert len(m) == size
        assert bytes(m) == data
        mv = memoryview(m)
        assert mv.readonly
        assert mv.nbytes == size
        assert mv.tobytes() == data
        mv.release()


def test_send_every_buffer_kind(pair):
    a, b = pair
    payloads = [b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), memoryview(b"xxsliced")[2:]]
    for p in payloads:
        a.send(p)
    for p in payloads:
        assert b.recv_bytes(timeout=PEER_TIMEOUT) == bytes(p)


def test_send_numpy(pair):
    np = pytest.importorskip("numpy")
    a, b = pair
    arr = np.arange(100000, dtype=np.float64)
    a.send(arr)
    m = b.recv(timeout=PEER_TIMEOUT)
    got = np.frombuffer(m, dtype=np.float64)
    assert got.shape == arr.shape
    assert np.array_equal(got, arr)
    assert not got.flags.writeable
    del got
    m.release()
    # Fortran-ordered (not C-contiguous) arrays are refused, not sent garbled.
    f = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    with pytest.raises((TypeError, ValueError, BufferError)):
        a.send(f)


def test_recv_bytes_is_a_copy(pair):
    a, b = pair
    a.send(b"abc")
    got = b.recv_bytes(timeout=PEER_TIMEOUT)
    assert type(got) is bytes and got == b"abc"


def test_empty_message(pair):
    a, b = pair
    try:
        a.send(b"")
    except (ValueError, memport.Error):
        pytest.skip("empty messages are refused (allowed by the contract)")
    m = b.recv(timeout=PEER_TIMEOUT)
    assert len(m) == 0 and bytes(m) == b""
    m.release()


def test_order_mixed_sizes(pair):
    a, b = pair
    sent = [os.urandom(n) for n in (10, 300000, 20, 2 << 20, 5, 70000)]
    for d in sent:
        a.send(d)
    for d in sent:
        assert b.recv_bytes(timeout=PEER_TIMEOUT) == d


def test_both_directions(pair):
    a, b = pair
    a.send(b"ping")
    assert b.recv_bytes(timeout=PEER_TIMEOUT) == b"ping"
    b.send(b"pong")
    assert a.recv_bytes(timeout=PEER_TIMEOUT) == b"pong"


# ---- loans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 100000, 3 << 20])
def test_loan_send(pair, size):
    a, b = pair
    ln = a.loan(size)
    mv = memoryview(ln)
    assert not mv.readonly
    assert mv.nbytes == size
    data = os.urandom(size)
    mv[:] = data
    mv.release()
    ln.send()
    with b.recv(timeout=PEER_TIMEOUT) as m:
        assert bytes(m) == data


def test_loan_discard_then_access(pair):
    a, b = pair
    ln = a.loan(1000)
    ln.discard()
    with pytest.raises(ValueError):
        memoryview(ln)
    with pytest.raises(ValueError):
        ln.send()
    with pytest.raises(ValueError):
        ln.discard()
    with pytest.raises((memport.WouldBlock, memport.Timeout)):
        b.recv(timeout=0)


def test_loan_send_with_live_view_refused(pair):
    a, b = pair
    ln = a.loan(64)
    mv = memoryview(ln)
    mv[:5] = b"hello"
    with pytest.raises(BufferError):
        ln.send()
    with pytest.raises(BufferError):
        ln.discard()
    mv.release()
    ln.send()
    assert b.recv_bytes(timeout=PEER_TIMEOUT)[:5] == b"hello"


def test_loan_numpy_fill(pair):
    np = pytest.importorskip("numpy")
    a, b = pair
    ln = a.loan(8 * 1000)
    arr = np.frombuffer(ln, dtype=np.uint64)
    assert arr.flags.writeable
    arr[:] = np.arange(1000, dtype=np.uint64)
    del arr
    ln.send()
    m = b.recv(timeout=PEER_TIMEOUT)
    assert np.array_equal(np.frombuffer(m, dtype=np.uint64), np.arange(1000, dtype=np.uint64))
    m.release()


def test_unsent_loan_dropped_is_given_back():
    a, b = memport.Channel.pair(pool_buffers=2, pool_buffer_size=1 << 16, zerocopy_threshold=256)
    with a, b:
        for _ in range(10):  # more than the pool holds: dropped loans must come back
            ln = a.loan(1 << 15, timeout=5)
            del ln
        a.loan(1 << 15, timeout=5).send()
        assert len(b.recv(timeout=PEER_TIMEOUT)) == 1 << 15


# ---- messages ------------------------------------------------------------------------------------


def test_message_after_release_raises(pair):
    a, b = pair
    a.send(b"x" * 100000)
    m = b.recv(timeout=PEER_TIMEOUT)
    m.release()
    with pytest.raises(ValueError):
        bytes(m)
    with pytest.raises(ValueError):
        memoryview(m)
    with pytest.raises(ValueError):
        len(m)
    m.release()  # a second release: nothing (or ValueError), never a crash


def test_message_with_block_releases(pair):
    a, b = pair
    a.send(b"abc")
    with b.recv(timeout=PEER_TIMEOUT) as m:
        assert bytes(m) == b"abc"
    with pytest.raises(ValueError):
        bytes(m)


def test_release_with_live_memoryview_raises(pair):
    a, b = pair
    a.send(b"z" * 300000)
    m = b.recv(timeout=PEER_TIMEOUT)
    mv = memoryview(m)
    with pytest.raises(BufferError):
        m.release()
    assert mv[0] == ord("z") and mv[-1] == ord("z")  # kept: still readable
    assert bytes(m)[:1] == b"z"
    mv.release()
    m.release()
    with pytest.raises(ValueError):
        bytes(m)


def test_release_with_live_numpy_view_raises(pair):
    np = pytest.importorskip("numpy")
    a, b = pair
    a.send(np.full(100000, 7, dtype=np.int32))
    m = b.recv(timeout=PEER_TIMEOUT)
    arr = np.frombuffer(m, dtype=np.int32)
    with pytest.raises(BufferError):
        m.release()
    assert int(arr.sum()) == 700000
    with pytest.raises(BufferError):
        with m:
            pass
    assert int(arr[-1]) == 7
    del arr
    m.release()


def test_with_block_left_by_an_exception_keeps_the_exception_and_releases_at_the_last_view():
    """An exception leaving `with msg:` while a view lives is not replaced by a BufferError; the
    message stays readable under the view and goes back to the sender when the view goes."""
    a, b = memport.Channel.pair(pool_buffers=1, pool_buffer_size=1 << 16, zerocopy_threshold=256)
    with a, b:
        a.send(b"q" * 40000)
        m = b.recv(timeout=PEER_TIMEOUT)
        mv = None
        with pytest.raises(KeyError):
            with m:
                mv = memoryview(m)
                raise KeyError("the original")
        assert not m.released
        assert mv[0] == ord("q") and mv[-1] == ord("q")
        with pytest.raises(memport.Timeout):  # the only pool buffer is still held
            a.send(b"r" * 40000, timeout=0.2)
        mv.release()
        assert m.released
        a.send(b"r" * 40000, timeout=5)  # given back: the pool buffer is free again
        assert bytes(b.recv(timeout=PEER_TIMEOUT)) == b"r" * 40000
        # Without an exception, the views still make the with block's exit refuse.
        a.send(b"s" * 40000, timeout=5)
        m = b.recv(timeout=PEER_TIMEOUT)
        mv = memoryview(m)
        with pytest.raises(BufferError):
            with m:
                pass
        mv.release()
        m.release()


def test_loan_with_block_left_by_an_exception_is_discarded_at_the_last_view():
    a, b = memport.Channel.pair(pool_buffers=1, pool_buffer_size=1 << 16, zerocopy_threshold=256)
    with a, b:
        ln = a.loan(1 << 15, timeout=5)
        mv = None
        with pytest.raises(KeyError):
            with ln:
                mv = memoryview(ln)
                mv[0] = 1
                raise KeyError("the original")
        assert not ln.released
        mv.release()
        assert ln.released
        a.loan(1 << 15, timeout=5).send()  # the only pool buffer came back
        assert len(b.recv(timeout=PEER_TIMEOUT)) == 1 << 15


def test_message_outlives_dropped_reference(pair):
    """A numpy view keeps what it needs alive when the message object itself is dropped."""
    np = pytest.importorskip("numpy")
    a, b = pair
    a.send(np.arange(50000, dtype=np.int64))
    arr = np.frombuffer(b.recv(timeout=PEER_TIMEOUT), dtype=np.int64)
    assert int(arr[49999]) == 49999
    a.send(b"next")
    assert b.recv_bytes(timeout=PEER_TIMEOUT) == b"next"
    assert int(arr.sum()) == sum(range(50000))
    del arr


def test_message_of_closed_endpoint_release_is_noop():
    a, b = memport.Channel.pair()
    a.send(b"data" * 1000)
    m = b.recv(timeout=PEER_TIMEOUT)
    b.close()
    m.release()  # no-op, no crash
    a.close()


def test_many_messages_held(pair):
    a, b = pair
    held = []
    for i in range(20):
        a.send(bytes([i]) * 50000)
        held.append(b.recv(timeout=PEER_TIMEOUT))
    for i, m in enumerate(held):
        assert bytes(m) == bytes([i]) * 50000
        m.release()


# ---- half-close, peer, stats ----------------------------------------------------------------------


def test_shutdown_gives_closed_after_the_data(pair):
    a, b = pair
    a.send(b"one")
    a.send(b"two")
    a.shutdown()
    assert b.recv_bytes(timeout=PEER_TIMEOUT) == b"one"
    assert b.recv_bytes(timeout=PEER_TIMEOUT) == b"two"
    with pytest.raises(memport.Closed) as ei:
        b.recv(timeout=PEER_TIMEOUT)
    assert ei.value.name == "MEMPORT_ECLOSED"
    b.send(b"reply")  # the other direction still works
    assert a.recv_bytes(timeout=PEER_TIMEOUT) == b"reply"
    with pytest.raises(memport.Closed):
        a.send(b"more")


def test_close_gives_peer_closed(pair):
    a, b = pair
    a.send(b"last")
    a.close()
    assert b.recv_bytes(timeout=PEER_TIMEOUT) == b"last"
    with pytest.raises((memport.Closed, memport.PeerGone)):
        b.recv(timeout=PEER_TIMEOUT)


def test_peer_credentials(pair):
    a, b = pair
    pid, uid, gid = a.peer
    assert pid == os.getpid() and uid == os.getuid() and gid == os.getgid()


def test_stats(pair):
    a, b = pair
    a.send(b"x" * 10)
    b.recv(timeout=PEER_TIMEOUT).release()
    sa, sb = a.stats(), b.stats()
    assert isinstance(sa, dict) and isinstance(sb, dict)
    assert sa["sent_ring_msgs"] + sa.get("sent_pool_msgs", 0) >= 1
    assert sb["recv_ring_msgs"] + sb.get("recv_pool_msgs", 0) >= 1
    assert all(isinstance(v, int) for v in sa.values())


@pytest.mark.parametrize("wait", ["block", "spin", "adaptive"])
def test_options(wait):
    a, b = memport.Channel.pair(
        ring_capacity=1 << 16, zerocopy_threshold=1024, pool_buffer_size=1 << 16, pool_buffers=4, wait=wait, spin_ns=10000
    )
    with a, b:
        for n in (10, 5000, 60000):
            d = os.urandom(n)
            a.send(d)
            assert b.recv_bytes(timeout=PEER_TIMEOUT) == d


def test_zero_copy_send_is_counted():
    a, b = memport.Channel.pair(zerocopy_threshold=1024)
    with a, b:
        a.send(bytes(100000))
        b.recv(timeout=PEER_TIMEOUT).release()
        s = a.stats()
        assert s["sent_pool_msgs"] + s["sent_oneoff_msgs"] == 1


# ---- service across fork --------------------------------------------------------------------------


def test_service_across_fork(name, children):
    svc = memport.Service(name)

    def client():
        with memport.Channel.connect(name, timeout=PEER_TIMEOUT) as c:
            for i in range(50):
                d = os.urandom(1 + i * 9000)
                c.send(d)
                c.send(zlib.crc32(d).to_bytes(4, "little"))
            got = c.recv_bytes(timeout=PEER_TIMEOUT)
            assert got == b"done"

    child = children(client)
    ch = svc.accept(timeout=PEER_TIMEOUT)
    with ch:
        assert ch.peer[0] == child.pid
        for i in range(50):
            with ch.recv(timeout=PEER_TIMEOUT) as m:
                crc = zlib.crc32(m)
                assert len(m) == 1 + i * 9000
            assert int.from_bytes(ch.recv_bytes(timeout=PEER_TIMEOUT), "little") == crc
        ch.send(b"done")
        child.expect_ok()
    svc.close()


def test_closed_object_says_closed():
    a, b = memport.Channel.pair()
    a.close()
    with pytest.raises(ValueError, match="closed"):
        a.send(b"x")
    b.close()


def test_forward_a_received_message():
    """A Message is a buffer: it can be sent on (copied into the next channel) as it is."""
    a, b = memport.Channel.pair()
    c, d = memport.Channel.pair()
    with a, b, c, d:
        data = os.urandom(200000)
        a.send(data)
        with b.recv(timeout=PEER_TIMEOUT) as m:
            c.send(m)
        assert d.recv_bytes(timeout=PEER_TIMEOUT) == data


def test_publisher_loan_is_exactly_n_bytes(name):
    with memport.Publisher(name) as pub:
        for n in (1, 4095, 4097, 1 << 20):
            ln = pub.loan(n)
            with memoryview(ln) as mv:
                assert mv.nbytes == n and not mv.readonly
            ln.discard()
