# SPDX-License-Identifier: MIT
# memport: zero-copy IPC between processes (the Python package: the C extension memport._memport, its exceptions, names() and asyncio helpers).
"""memport: zero-copy IPC between processes on one machine.

Regions and their mappings, semaphores, channels (1:1) and topics (1:N publish/subscribe),
with messages received as read-only buffers over the sender's own pages (no copy):
``numpy.frombuffer(msg, dtype)`` gives an array over them.

The objects come from the C extension :mod:`memport._memport`; this module re-exports them and
adds the pure-Python parts: :func:`names` and the asyncio helper :func:`recv_async` (also the
``recv_async`` method of :class:`Channel` and :class:`Subscriber`). doc/python.md is the reference.
"""
import asyncio as _asyncio

from . import _memport
from ._memport import *  # noqa: F401,F403  (the extension's public objects)

# The exception classes are the extension's (it raises them); the definitions below are only a
# fallback for an extension that does not define one, so that the names always exist.
if hasattr(_memport, "Error"):
    Error = _memport.Error
else:
    class Error(Exception):
        """A memport call failed: .code is the negative MEMPORT_E* value, .name its name."""

        def __init__(self, *args, code=0, name=""):
            super().__init__(*args)
            self.code = code
            self.name = name


def _exception(name, *bases, doc):
    cls = getattr(_memport, name, None)
    if cls is None:
        cls = type(name, (Error,) + bases, {"__doc__": doc, "__module__": __name__})
    return cls


Timeout = _exception("Timeout", TimeoutError, doc="MEMPORT_ETIMEDOUT: the timeout expired.")
WouldBlock = _exception("WouldBlock", BlockingIOError, doc="MEMPORT_EAGAIN: it would have to wait.")
PeerGone = _exception("PeerGone", ConnectionError, doc="MEMPORT_EPEER: the peer died or left.")
Closed = _exception("Closed", doc="MEMPORT_ECLOSED: the peer ended in order (no more messages).")
NotFound = _exception("NotFound", FileNotFoundError, doc="MEMPORT_ENOENT: no such name.")
PermissionDenied = _exception("PermissionDenied", PermissionError, doc="MEMPORT_EPERM/EACCES.")
ProtocolError = _exception("ProtocolError", doc="MEMPORT_EPROTO: the peer broke the protocol.")
MessageTooLarge = _exception("MessageTooLarge", ValueError, doc="MEMPORT_EMSGSIZE: too large.")
del _exception

_NAME_KINDS = {1: "service", 2: "region", 3: "topic"}


def names():
    """The live names of this user (memport_name_foreach), as a list of dicts.

    Each dict has at least ``name``, ``kind`` ("service", "region", "topic"), ``pid``, ``uid``
    and ``gid`` of the serving process, and ``subscribers`` for a topic.
    """
    raw = getattr(_memport, "_names", None) or getattr(_memport, "names", None)
    if raw is None:
        raise NotImplementedError("memport._memport has neither _names() nor names()")
    out = []
    for entry in raw():
        d = dict(entry)
        if isinstance(d.get("kind"), int):
            d["kind"] = _NAME_KINDS.get(d["kind"], str(d["kind"]))
        out.append(d)
    return out


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be None or a number of seconds, not %s" % type(timeout).__name__)
    if not timeout >= 0:  # also NaN
        raise ValueError("timeout must be >= 0 or None, not %r" % (timeout,))
    return float(timeout)


async def recv_async(endpoint, timeout=None):
    """Receive the next message of a Channel or Subscriber without blocking the event loop.

    Waits for the endpoint's fileno() to be readable (loop.add_reader; the handle's readiness is
    level-triggered: readable whenever a message or the end is there) and then receives without
    waiting. ``timeout=None`` waits for ever; a number is seconds (memport.Timeout when it
    expires); 0 does not wait. The errors are recv()'s: PeerGone, Closed, ...
    """
    timeout = _check_timeout(timeout)
    loop = _asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            return endpoint.recv(timeout=0)
        except (WouldBlock, Timeout):
            pass
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise Timeout("recv_async: the timeout expired")
        fd = endpoint.fileno()
        ready = loop.create_future()

        def wake(ready=ready):
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            if remaining is None:
                await ready
            else:
                try:
                    await _asyncio.wait_for(ready, remaining)
                except _asyncio.TimeoutError:
                    pass  # the next turn tries once more, then raises Timeout
        finally:
            loop.remove_reader(fd)


async def _recv_async_method(self, timeout=None):
    return await recv_async(self, timeout)


_recv_async_method.__doc__ = recv_async.__doc__
_recv_async_method.__name__ = _recv_async_method.__qualname__ = "recv_async"

# Channel.recv_async / Subscriber.recv_async, where the extension's types take attributes (heap
# types without Py_TPFLAGS_IMMUTABLETYPE) and do not define it themselves; memport.recv_async(ep)
# works in any case.
for _cls in (getattr(_memport, "Channel", None), getattr(_memport, "Subscriber", None)):
    if _cls is not None and not hasattr(_cls, "recv_async"):
        try:
            _cls.recv_async = _recv_async_method
        except (TypeError, AttributeError):
            pass
del _cls

__all__ = sorted({n for n in dir(_memport) if not n.startswith("_")} | {
    "Error", "Timeout", "WouldBlock", "PeerGone", "Closed", "NotFound", "PermissionDenied",
    "ProtocolError", "MessageTooLarge", "names", "recv_async",
})
