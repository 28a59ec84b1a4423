# SPDX-License-Identifier: MIT
"""test_errors.py: the exception classes, and every call of the API with bad arguments giving TypeError, ValueError or memport.Error (each case in a forked child, so a crash fails that case only)."""

import errno

import pytest

import memport
from conftest import run_isolated, unique_name

BAD = (TypeError, ValueError, memport.Error)
# Negative sizes and counts are ValueError (python-api.md), never OverflowError.
# An int too large for the C type: OverflowError is what the CPython conversions raise.
BAD_BIG = BAD + (OverflowError,)
# A buffer that is not C-contiguous: PyObject_GetBuffer's own refusal is a BufferError.
BAD_LAYOUT = BAD + (BufferError,)
# Objects made by tp_new alone: a type may make a usable default object there, so returning is
# fine too; what is checked is that nothing crashes or hangs.
UNINIT = "uninit"

HIERARCHY = [
    ("Timeout", TimeoutError, -errno.ETIMEDOUT),
    ("WouldBlock", BlockingIOError, -errno.EAGAIN),
    ("PeerGone", ConnectionError, -errno.EPIPE),
    ("Closed", None, -errno.ESHUTDOWN),
    ("NotFound", FileNotFoundError, -errno.ENOENT),
    ("PermissionDenied", PermissionError, None),
    ("ProtocolError", None, -errno.EPROTO),
    ("MessageTooLarge", ValueError, -errno.EMSGSIZE),
]


def test_error_is_exception():
    assert issubclass(memport.Error, Exception)


@pytest.mark.parametrize("cls,builtin,code", HIERARCHY, ids=[h[0] for h in HIERARCHY])
def test_error_subclasses(cls, builtin, code):
    c = getattr(memport, cls)
    assert issubclass(c, memport.Error)
    if builtin is not None:
        assert issubclass(c, builtin)


def test_error_attributes_from_a_real_failure():
    a, b = memport.Channel.pair()
    with a, b:
        with pytest.raises(memport.Error) as ei:
            b.recv(timeout=0)
        e = ei.value
        assert isinstance(e, (memport.WouldBlock, memport.Timeout))
        assert isinstance(e.code, int) and e.code < 0
        assert e.code in (-errno.EAGAIN, -errno.ETIMEDOUT)
        assert e.name in ("MEMPORT_EAGAIN", "MEMPORT_ETIMEDOUT")
        assert str(e)


def test_timeout_with_positive_timeout():
    a, b = memport.Channel.pair()
    with a, b:
        with pytest.raises(memport.Timeout) as ei:
            b.recv(timeout=0.05)
        assert ei.value.code == -errno.ETIMEDOUT
        assert ei.value.name == "MEMPORT_ETIMEDOUT"
        assert isinstance(ei.value, TimeoutError)


def test_not_found_name():
    with pytest.raises(memport.NotFound) as ei:
        memport.Channel.connect(unique_name("nobody"), timeout=0)
    assert ei.value.code == -errno.ENOENT
    assert ei.value.name == "MEMPORT_ENOENT"


# ---- bad arguments, every call -----------------------------------------------------------------
# Each case builds what it needs inside the child. (label, fn, accepted exceptions)


def _pair():
    a, b = memport.Channel.pair()
    _pair.keep = (a, b)  # the other end stays open (a dropped end closes the channel)
    return a, b


def _closed_chan():
    a, b = memport.Channel.pair()
    a.close()
    return a


def _msg():
    a, b = memport.Channel.pair()
    a.send(b"hello")
    m = b.recv(timeout=5)
    _msg.keep = (a, b)
    return m


def _released_msg():
    m = _msg()
    m.release()
    return m


def _loan():
    a, b = memport.Channel.pair()
    _loan.keep = (a, b)
    return a.loan(100)


def _sent_loan():
    ln = _loan()
    ln.send()
    return ln


def _pub(**kw):
    return memport.Publisher(unique_name("bad"), **kw)


def _closed(obj):
    obj.close()
    return obj


def _region():
    return memport.Region(4096)


def _noncontig():
    return memoryview(bytearray(64))[::2]


def _svc():
    return memport.Service(unique_name("svc"))


def _uninit(obj):
    """An object of the same type made without its constructor's arguments (tp_new alone)."""
    t = type(obj)
    return t.__new__(t)


CASES = [
    # Region
    ("Region()", lambda: memport.Region(), (TypeError,)),
    ("Region(str)", lambda: memport.Region("4096"), (TypeError,)),
    ("Region(float)", lambda: memport.Region(4096.0), (TypeError,)),
    ("Region(None)", lambda: memport.Region(None), (TypeError,)),
    ("Region(-1)", lambda: memport.Region(-1), (ValueError,)),
    ("Region(0)", lambda: memport.Region(0), BAD),
    ("Region(2**64)", lambda: memport.Region(1 << 64), BAD_BIG),
    ("Region(2**62).map()", lambda: memport.Region(1 << 62).map(), BAD_BIG + (MemoryError,)),
    ("Region.map(extra)", lambda: _region().map(False, 1, 2), BAD),
    ("Region.map(bad kw)", lambda: _region().map(bogus=1), BAD),
    ("Region.publish(None)", lambda: _region().publish(None), (TypeError,)),
    ("Region.publish('')", lambda: _region().publish(""), BAD),
    ("Region.publish(long)", lambda: _region().publish("x" * 1000), BAD),
    ("Region.publish(NUL)", lambda: _region().publish("a\0b"), BAD),
    ("Region.publish(bytes)", lambda: _region().publish(b"abc"), BAD),
    ("Region.open(int)", lambda: memport.Region.open(123), (TypeError,)),
    ("Region.open('')", lambda: memport.Region.open("", timeout=0), BAD),
    ("Region.open(bad chars)", lambda: memport.Region.open("a/../b", timeout=0), BAD),
    ("Region.open(missing)", lambda: memport.Region.open(unique_name("none"), timeout=0), BAD),
    ("Region.open(timeout str)", lambda: memport.Region.open("x", timeout="1"), (TypeError,)),
    ("Region.open(timeout -1)", lambda: memport.Region.open("x", timeout=-1), (ValueError,)),
    ("Region.open(timeout nan)", lambda: memport.Region.open("x", timeout=float("nan")), (ValueError,)),
    ("closed Region.map", lambda: _closed(_region()).map(), (ValueError,)),
    ("closed Region.readonly", lambda: _closed(_region()).readonly(), (ValueError,)),
    ("closed Region.publish", lambda: _closed(_region()).publish(unique_name("r")), (ValueError,)),
    ("readonly Region writable map", lambda: _region().readonly().map(), BAD),
    ("readonly Mapping write", lambda: memoryview(_region().map(readonly=True)).__setitem__(0, 1), BAD),
    ("closed Mapping memoryview", lambda: memoryview(_closed(_region().map())), (ValueError,)),
    ("uninit Region", lambda: _uninit(_region()).map(), UNINIT),
    ("uninit Mapping", lambda: memoryview(_uninit(_region().map())), UNINIT),
    # Semaphore
    ("Semaphore(-1)", lambda: memport.Semaphore(-1), (ValueError,)),
    ("Semaphore(str)", lambda: memport.Semaphore("1"), (TypeError,)),
    ("Semaphore(2**40)", lambda: memport.Semaphore(1 << 40), BAD_BIG),
    ("Semaphore.wait(str)", lambda: memport.Semaphore(0).wait(timeout="1"), (TypeError,)),
    ("Semaphore.wait(-1)", lambda: memport.Semaphore(0).wait(timeout=-1), (ValueError,)),
    ("Semaphore.wait(nan)", lambda: memport.Semaphore(0).wait(timeout=float("nan")), (ValueError,)),
    ("Semaphore.wait(0) empty", lambda: memport.Semaphore(0).wait(timeout=0), (memport.Error,)),
    ("closed Semaphore.post", lambda: _closed(memport.Semaphore(0)).post(), (ValueError,)),
    ("closed Semaphore.wait", lambda: _closed(memport.Semaphore(1)).wait(0), (ValueError,)),
    ("uninit Semaphore", lambda: _uninit(memport.Semaphore(0)).post(), UNINIT),
    # Channel construction
    ("pair(ring_capacity=-1)", lambda: memport.Channel.pair(ring_capacity=-1), (ValueError,)),
    ("pair(ring_capacity=str)", lambda: memport.Channel.pair(ring_capacity="big"), (TypeError,)),
    ("pair(ring_capacity=2**31)", lambda: memport.Channel.pair(ring_capacity=1 << 31), BAD),
    ("pair(pool_buffers=-1)", lambda: memport.Channel.pair(pool_buffers=-1), (ValueError,)),
    ("pair(pool_buffer_size=2**64)", lambda: memport.Channel.pair(pool_buffer_size=1 << 64), BAD_BIG),
    ("pair(wait=bogus)", lambda: memport.Channel.pair(wait="bogus"), (ValueError,)),
    ("pair(wait=1.5)", lambda: memport.Channel.pair(wait=1.5), BAD),
    ("pair(spin_ns=-5)", lambda: memport.Channel.pair(spin_ns=-5), (ValueError,)),
    ("pair(unknown kw)", lambda: memport.Channel.pair(bogus=1), (TypeError,)),
    ("pair(positional)", lambda: memport.Channel.pair(1), (TypeError,)),
    ("connect(None)", lambda: memport.Channel.connect(None), (TypeError,)),
    ("connect('')", lambda: memport.Channel.connect("", timeout=0), BAD),
    ("connect(long)", lambda: memport.Channel.connect("n" * 65, timeout=0), BAD),
    ("connect(missing)", lambda: memport.Channel.connect(unique_name("none"), timeout=0), BAD),
    ("connect(timeout=str)", lambda: memport.Channel.connect("x", timeout="no"), (TypeError,)),
    ("connect(bad opt)", lambda: memport.Channel.connect("x", timeout=0, wait="x"), BAD),
    ("Service(None)", lambda: memport.Service(None), (TypeError,)),
    ("Service('')", lambda: memport.Service(""), BAD),
    ("Service(.hidden)", lambda: memport.Service(".hidden"), BAD),
    ("Service(long)", lambda: memport.Service("s" * 65), BAD),
    ("Service twice", lambda: [memport.Service(n) for n in [unique_name("dup")] * 2], BAD),
    ("Service.accept(0)", lambda: _svc().accept(timeout=0), (memport.Error,)),
    ("Service.accept(str)", lambda: _svc().accept(timeout="1"), (TypeError,)),
    ("Service.accept(-1)", lambda: _svc().accept(timeout=-1), (ValueError,)),
    ("closed Service.accept", lambda: _closed(_svc()).accept(timeout=0), (ValueError,)),
    ("closed Service.fileno", lambda: _closed(_svc()).fileno(), (ValueError,)),
    ("uninit Service", lambda: _uninit(_svc()).accept(timeout=0), UNINIT),
    # Channel calls
    ("send(int)", lambda: _pair()[0].send(123), (TypeError,)),
    ("send(str)", lambda: _pair()[0].send("text"), (TypeError,)),
    ("send(None)", lambda: _pair()[0].send(None), (TypeError,)),
    ("send(non-contiguous)", lambda: _pair()[0].send(_noncontig()), BAD_LAYOUT),
    ("send(timeout=str)", lambda: _pair()[0].send(b"x", timeout="1"), (TypeError,)),
    ("send(timeout=-1)", lambda: _pair()[0].send(b"x", timeout=-1), (ValueError,)),
    ("send(timeout=nan)", lambda: _pair()[0].send(b"x", timeout=float("nan")), (ValueError,)),
    ("send() no arg", lambda: _pair()[0].send(), (TypeError,)),
    ("loan(-1)", lambda: _pair()[0].loan(-1), (ValueError,)),
    ("loan(str)", lambda: _pair()[0].loan("10"), (TypeError,)),
    ("loan(2**62)", lambda: _pair()[0].loan(1 << 62), BAD_BIG + (MemoryError,)),
    ("loan(2**64)", lambda: _pair()[0].loan(1 << 64), BAD_BIG),
    ("recv(timeout=str)", lambda: _pair()[1].recv(timeout="1"), (TypeError,)),
    ("recv(timeout=-1)", lambda: _pair()[1].recv(timeout=-1), (ValueError,)),
    ("recv(0) empty", lambda: _pair()[1].recv(timeout=0), (memport.WouldBlock, memport.Timeout)),
    ("recv_bytes(0) empty", lambda: _pair()[1].recv_bytes(timeout=0), (memport.WouldBlock, memport.Timeout)),
    ("recv(extra)", lambda: _pair()[1].recv(1, 2), (TypeError,)),
    ("shutdown then send", lambda: (lambda a: (a.shutdown(), a.send(b"x")))(_pair()[0]), (memport.Closed,)),
    ("closed send", lambda: _closed_chan().send(b"x"), (ValueError,)),
    ("closed recv", lambda: _closed_chan().recv(timeout=0), (ValueError,)),
    ("closed recv_bytes", lambda: _closed_chan().recv_bytes(timeout=0), (ValueError,)),
    ("closed loan", lambda: _closed_chan().loan(10), (ValueError,)),
    ("closed fileno", lambda: _closed_chan().fileno(), (ValueError,)),
    ("closed stats", lambda: _closed_chan().stats(), (ValueError,)),
    ("closed peer", lambda: _closed_chan().peer, (ValueError,)),
    ("closed shutdown", lambda: _closed_chan().shutdown(), (ValueError,)),
    ("uninit Channel send", lambda: _uninit(_pair()[0]).send(b"x"), UNINIT),
    ("uninit Channel recv", lambda: _uninit(_pair()[0]).recv(timeout=0), UNINIT),
    ("uninit Channel fileno", lambda: _uninit(_pair()[0]).fileno(), UNINIT),
    ("Channel() direct", lambda: memport.Channel().send(b"x"), UNINIT),
    # Loan
    ("Loan.send(timeout=str)", lambda: _loan().send(timeout="1"), (TypeError,)),
    ("Loan.send twice", lambda: _sent_loan().send(), (ValueError,)),
    ("Loan.discard after send", lambda: _sent_loan().discard(), (ValueError,)),
    ("Loan memoryview after send", lambda: memoryview(_sent_loan()), (ValueError,)),
    ("Loan.send with view", lambda: (lambda ln: (memoryview(ln), ln.send()))(_loan()), (BufferError,)),
    ("uninit Loan", lambda: _uninit(_loan()).send(), UNINIT),
    ("uninit Loan view", lambda: memoryview(_uninit(_loan())), UNINIT),
    # Message
    ("released Message bytes", lambda: bytes(_released_msg()), (ValueError,)),
    ("released Message len", lambda: len(_released_msg()), (ValueError,)),
    ("released Message view", lambda: memoryview(_released_msg()), (ValueError,)),
    ("Message writable view", lambda: memoryview(_msg()).__setitem__(0, 1), (TypeError,)),
    ("uninit Message", lambda: bytes(_uninit(_msg())), UNINIT),
    ("uninit Message release", lambda: (_uninit(_msg()).release(), bytes(_uninit(_msg()))), UNINIT),
    # Publisher
    ("Publisher(None)", lambda: memport.Publisher(None), (TypeError,)),
    ("Publisher('')", lambda: memport.Publisher(""), BAD),
    ("Publisher(long)", lambda: memport.Publisher("p" * 65), BAD),
    ("Publisher(depth=0)", lambda: _pub(depth=0), BAD),
    ("Publisher(depth=-1)", lambda: _pub(depth=-1), (ValueError,)),
    ("Publisher(depth=5000)", lambda: _pub(depth=5000), BAD),
    ("Publisher(depth=str)", lambda: _pub(depth="8"), (TypeError,)),
    ("Publisher(overflow=bogus)", lambda: _pub(overflow="bogus"), (ValueError,)),
    ("Publisher(history>depth)", lambda: _pub(depth=4, history=8), BAD),
    ("Publisher(buffers=0)", lambda: _pub(buffers=0), BAD),
    ("Publisher(buffer_size=0)", lambda: _pub(buffer_size=0), BAD),
    ("Publisher(buffer_size=-1)", lambda: _pub(buffer_size=-1), (ValueError,)),
    ("Publisher(inline_max=10**6)", lambda: _pub(inline_max=10**6), BAD),
    ("Publisher(max_subscribers=5000)", lambda: _pub(max_subscribers=5000), BAD),
    ("Publisher(unknown kw)", lambda: _pub(bogus=1), (TypeError,)),
    ("Publisher twice", lambda: [memport.Publisher(n) for n in [unique_name("dup")] * 2], BAD),
    ("Publisher.send(int)", lambda: _pub().send(5), (TypeError,)),
    ("Publisher.send(non-contiguous)", lambda: _pub().send(_noncontig()), BAD_LAYOUT),
    ("Publisher.send(too large)", lambda: _pub(buffer_size=1 << 16).send(bytes(1 << 17)), (memport.MessageTooLarge,)),
    ("Publisher.loan(-1)", lambda: _pub().loan(-1), (ValueError,)),
    ("Publisher.loan(too large)", lambda: _pub(buffer_size=1 << 16).loan(1 << 17), (memport.MessageTooLarge,)),
    ("Publisher.loan(str)", lambda: _pub().loan("1"), (TypeError,)),
    ("Publisher.send(timeout=-1)", lambda: _pub().send(b"x", timeout=-1), (ValueError,)),
    ("closed Publisher.send", lambda: _closed(_pub()).send(b"x"), (ValueError,)),
    ("closed Publisher.loan", lambda: _closed(_pub()).loan(1), (ValueError,)),
    ("closed Publisher.process", lambda: _closed(_pub()).process(), (ValueError,)),
    ("closed Publisher.subscribers", lambda: _closed(_pub()).subscribers, (ValueError,)),
    ("closed Publisher.stats", lambda: _closed(_pub()).stats(), (ValueError,)),
    ("closed Publisher.fileno", lambda: _closed(_pub()).fileno(), (ValueError,)),
    ("uninit Publisher", lambda: _uninit(_pub()).send(b"x"), UNINIT),
    ("uninit Publisher subscribers", lambda: _uninit(_pub()).subscribers, UNINIT),
    # Subscriber
    ("Subscriber(None)", lambda: memport.Subscriber(None), (TypeError,)),
    ("Subscriber('')", lambda: memport.Subscriber("", timeout=0), BAD),
    ("Subscriber(missing)", lambda: memport.Subscriber(unique_name("none"), timeout=0), BAD),
    ("Subscriber(timeout=str)", lambda: memport.Subscriber("x", timeout="1"), (TypeError,)),
    ("Subscriber(timeout=-1)", lambda: memport.Subscriber("x", timeout=-1), (ValueError,)),
    # names
    ("names(arg)", lambda: memport.names(1), (TypeError,)),
]


@pytest.mark.parametrize("label,fn,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments(label, fn, expected):
    if expected == UNINIT:
        run_isolated(fn, BAD, timeout=20, may_return=True)
    else:
        run_isolated(fn, expected, timeout=20)


def test_uninitialised_subscriber():
    """A Subscriber made by tp_new alone (no publisher needed to get the type)."""
    def fn():
        t = memport.Subscriber
        s = t.__new__(t)
        s.recv(timeout=0)

    run_isolated(fn, BAD, timeout=20, may_return=True)


def test_close_is_idempotent_everywhere():
    a, b = memport.Channel.pair()
    r = memport.Region(4096)
    m = r.map()
    s = memport.Semaphore(0)
    p = memport.Publisher(unique_name("idem"))
    svc = memport.Service(unique_name("idem"))
    for obj in (m, r, a, b, s, p, svc):
        obj.close()
        obj.close()


def test_context_managers_close():
    with memport.Channel.pair()[0] as a:
        pass
    with pytest.raises(ValueError):
        a.send(b"x")
    with memport.Region(4096) as r:
        with r.map() as m:
            assert len(memoryview(m)) == 4096 or memoryview(m).nbytes == 4096
    with pytest.raises(ValueError):
        r.map()
    with memport.Semaphore(1) as s:
        pass
    with pytest.raises(ValueError):
        s.post()
    with memport.Publisher(unique_name("cm")) as p:
        pass
    with pytest.raises(ValueError):
        p.send(b"x")
