# SPDX-License-Identifier: MIT
"""test_lifetime.py: views outliving what made them (a closed channel, subscriber, mapping or region, a dead loan): each case in a forked child, where reading freed or unmapped memory would crash; a view must stay valid or the call must raise."""

import pytest

import memport
from conftest import PEER_TIMEOUT, run_isolated, subscribe, unique_name

np = pytest.importorskip("numpy")

N = 1 << 18  # uint32 values: 1 MiB, through the pool


def _expect_intact(arr):
    assert int(arr[0]) == 0 and int(arr[-1]) == N - 1
    assert int(arr.sum(dtype=np.uint64)) == N * (N - 1) // 2


def case_channel_closed_under_view():
    a, b = memport.Channel.pair()
    a.send(np.arange(N, dtype=np.uint32))
    m = b.recv(timeout=PEER_TIMEOUT)
    arr = np.frombuffer(m, dtype=np.uint32)
    try:
        b.close()  # may refuse (BufferError) while the view lives; must never unmap under it
    except BufferError:
        pass
    a.close()
    _expect_intact(arr)
    del arr
    m.release()  # a message of a closed endpoint: no-op


def case_message_bytes_after_endpoint_closed():
    a, b = memport.Channel.pair()
    a.send(np.arange(N, dtype=np.uint32))
    m = b.recv(timeout=PEER_TIMEOUT)
    b.close()
    a.close()
    try:
        data = bytes(m)
    except ValueError:
        return  # refusing is fine
    assert np.array_equal(np.frombuffer(data, dtype=np.uint32), np.arange(N, dtype=np.uint32))


def case_subscriber_closed_under_view():
    name = unique_name("life")
    pub = memport.Publisher(name, inline_max=0, buffer_size=4 << 20)
    sub = subscribe(pub, name)
    pub.send(np.arange(N, dtype=np.uint32))
    m = sub.recv(timeout=PEER_TIMEOUT)
    arr = np.frombuffer(m, dtype=np.uint32)
    try:
        sub.close()
    except BufferError:
        pass
    pub.close()
    _expect_intact(arr)
    for _ in range(3):  # and nothing reused it
        pub2 = memport.Publisher(unique_name("life"))
        pub2.close()
    _expect_intact(arr)


def case_publisher_closed_under_subscriber_view():
    name = unique_name("life")
    pub = memport.Publisher(name, inline_max=0, buffer_size=4 << 20)
    sub = subscribe(pub, name)
    pub.send(np.arange(N, dtype=np.uint32))
    m = sub.recv(timeout=PEER_TIMEOUT)
    arr = np.frombuffer(m, dtype=np.uint32)
    pub.close()
    with pytest.raises(memport.Closed):
        sub.recv(timeout=PEER_TIMEOUT)
    _expect_intact(arr)


def case_mapping_view_after_region_close():
    r = memport.Region(1 << 20)
    m = r.map()
    arr = np.frombuffer(m, dtype=np.uint8)
    arr[:] = 7
    r.close()  # the mapping is its own
    assert int(arr.sum()) == 7 << 20
    try:
        m.close()
    except BufferError:
        pass
    assert int(arr[12345]) == 7


def case_loan_view_after_channel_close():
    a, b = memport.Channel.pair()
    ln = a.loan(1 << 20)
    arr = np.frombuffer(ln, dtype=np.uint8)
    try:
        a.close()
    except BufferError:
        pass
    arr[:] = 1  # writable memory still, whatever happened to the channel
    assert int(arr.sum()) == 1 << 20
    del arr
    try:
        ln.send()
    except (ValueError, memport.Error):
        pass


def case_loan_dropped_with_channel_first():
    a, b = memport.Channel.pair()
    ln = a.loan(1000)
    del a, b
    import gc

    gc.collect()
    try:
        ln.send()
    except (ValueError, memport.Error):
        pass
    del ln
    gc.collect()


def case_message_dropped_after_channel():
    a, b = memport.Channel.pair()
    a.send(bytes(200000))
    m = b.recv(timeout=PEER_TIMEOUT)
    del a, b
    import gc

    gc.collect()
    try:
        assert bytes(m) == bytes(200000)
    except ValueError:
        pass
    del m
    gc.collect()


def case_view_survives_message_object():
    a, b = memport.Channel.pair()
    a.send(np.arange(N, dtype=np.uint32))
    arr = np.frombuffer(b.recv(timeout=PEER_TIMEOUT), dtype=np.uint32)
    for _ in range(10):  # the pool buffer must not be handed out again while arr lives
        a.send(np.zeros(N, dtype=np.uint32))
        b.recv(timeout=PEER_TIMEOUT).release()
    _expect_intact(arr)


CASES = [(n[5:], f) for n, f in sorted(globals().items()) if n.startswith("case_")]


@pytest.mark.parametrize("fn", [f for _, f in CASES], ids=[n for n, _ in CASES])
def test_view_lifetime(fn):
    run_isolated(fn, (), timeout=60, may_return=True)
