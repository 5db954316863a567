# SPDX-License-Identifier: MIT
"""asyncio integration: a service's reactor runs inside the event loop.

    svc = await abd.aio.open("camera.frames", timeout=5, role="consumer")
    data = await svc.pop()

How it works (docs/python.md): the service's reactor descriptor (abd_reactor_fd) is given to
loop.add_reader; when it polls readable the loop calls abd_reactor_run_once(reactor, 0), which
serves the publisher's handshakes and the opener's registry watch and delivers the service's
events. While a coroutine waits in pop(), the service's event callback is set
(abd_service_set_event_fn), which arms ABD_SERVICE_EVENT_READABLE: the reactor sleeps on a
futex source of the handle's wake word, and a producer's wake makes the descriptor readable.
Then the waiters pop with the try form. The binding starts no thread and does not poll: an
idle awaiting coroutine costs nothing until a message (or the publisher's departure) arrives.

The service must be published or opened on the thread that runs the loop (its reactor belongs
to that thread); abd.aio.open/publish do that. One service, one loop.
"""
import asyncio
import collections
import errno as _errno

from . import _ffi, _check, _err
from . import open as _open, publish as _publish, Watch
from ._ffi import lib

__all__ = ["open", "publish", "AsyncService"]


class AsyncService:
    """A Service driven by the running asyncio loop. ``service`` is the underlying
    abd.Service (its non-blocking calls may be used directly: try_pop, try_push, stats).
    Close it with close() or ``async with``."""

    def __init__(self, service, loop=None):
        self.service = service
        self._loop = loop or asyncio.get_running_loop()
        self._waiters = collections.deque()
        self._armed = False
        self._reactor = lib.abd_service_reactor(service._handle())
        fd = lib.abd_reactor_fd(self._reactor)
        if fd == -_errno.EBUSY:
            raise OSError(_errno.EBUSY, "abd.aio: the service's reactor belongs to another "
                          "thread: publish or open it on the event loop's thread")
        self._fd = _check(fd, "abd_reactor_fd")
        # a ctypes callback: kept alive by the Service as long as the C side may call it
        service._event_fn = _ffi.EVENT_FN(self._on_event)
        self._loop.add_reader(self._fd, self._on_reactor)
        # work the reactor may have queued before the reader was there
        self._loop.call_soon(self._on_reactor)

    @property
    def name(self):
        return self.service.name

    # ---- the reactor, run by the loop
    def _on_event(self, _svc, _event, _status, _ud):
        pass  # READABLE / CLOSED: the waiters are served after run_once returns

    def _on_reactor(self):
        h = self.service._h
        if not h:
            return
        r = lib.abd_reactor_run_once(self._reactor, 0)
        if r < 0 and r != -_errno.EINTR:
            self._fail_all(_err(r, "abd_reactor_run_once"))
            return
        self._serve()

    def _serve(self):
        svc = self.service
        while self._waiters:
            fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            r = lib.abd_service_try_pop(svc._h, svc._buf, svc.slot_size)
            if r == -_errno.EAGAIN:
                break
            self._waiters.popleft()
            if r < 0:
                fut.set_exception(_err(r, "abd_service_pop", svc.name))
                if r == -_errno.EPIPE:
                    self._fail_all(_err(r, "abd_service_pop", svc.name))
            else:
                try:
                    fut.set_result(svc._decode(r))
                except OSError as e:
                    fut.set_exception(e)
        self._arm(bool(self._waiters))

    def _arm(self, want):
        """The event callback is set only while a coroutine waits: set, READABLE is armed
        (a producer then owes this process a wake); clear, the ring costs nothing."""
        if want == self._armed or not self.service._h:
            return
        fn = self.service._event_fn if want else _ffi.EVENT_FN()
        r = lib.abd_service_set_event_fn(self.service._h, fn, None)
        if r < 0:
            self._fail_all(_err(r, "abd_service_set_event_fn"))
            return
        self._armed = want

    def _fail_all(self, exc):
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self._arm(False)

    # ---- messages
    async def pop(self, timeout=None):
        """Pop one message (bytes, or the message type of a typed service), waiting (without blocking the loop) up to timeout
        seconds (None: forever). Raises TimeoutError, BrokenPipeError once the publisher left
        and the ring is drained, OSError for the other errors of abd_service_try_pop."""
        svc = self.service
        if not self._waiters:
            r = lib.abd_service_try_pop(svc._handle(), svc._buf, svc.slot_size)
            if r >= 0:
                return svc._decode(r)
            if r != -_errno.EAGAIN:
                raise _err(r, "abd_service_pop", svc.name)
        fut = self._loop.create_future()
        self._waiters.append(fut)
        self._arm(True)
        # setting the callback may have found a message already: served at the next turn
        self._loop.call_soon(self._serve)
        try:
            if timeout is None:
                return await fut
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise OSError(_errno.ETIMEDOUT, "abd.aio pop: timed out", svc.name) from None
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
            if not self._waiters:
                self._arm(False)

    def try_pop(self):
        return self.service.try_pop()

    async def push(self, data, timeout=None):
        """Push one message. A full ring is waited for in steps of 1 ms doubling up to 20 ms
        (the service has no space event), so the loop keeps running. Raises TimeoutError, BrokenPipeError,
        OSError(EMSGSIZE)."""
        deadline = None if timeout is None else self._loop.time() + timeout
        step = 0.001
        while not self.service.try_push(data):
            if deadline is not None and self._loop.time() >= deadline:
                raise OSError(_errno.ETIMEDOUT, "abd.aio push: timed out", self.name)
            await asyncio.sleep(step)
            step = min(step * 2, 0.02)

    def try_push(self, data):
        return self.service.try_push(data)

    # ---- lifetime
    def close(self):
        """Leave the service; coroutines waiting in pop() get OSError(ECANCELED)."""
        if self.service._h:
            self._loop.remove_reader(self._fd)
            self._fail_all(OSError(_errno.ECANCELED, "abd.aio: the service was closed"))
        self.service.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<abd.aio.AsyncService {self.name!r}>"


async def publish(name, **kw):
    """abd.publish on the loop's thread, its reactor run by the loop (so that openers are
    served through the handshake while the loop runs). Takes publish's arguments."""
    return AsyncService(_publish(name, **kw))


async def open(name, timeout=None, **kw):
    """abd.open without blocking the loop: waits up to timeout seconds (None: forever) for an
    alive trusted publisher. A registry watch of that service (its descriptor on the loop)
    wakes the attempt when a record appears; an alive publisher that does not answer yet is
    tried again after a back-off of 1 ms doubling up to 1 s. Takes open's arguments; raises
    TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    w = Watch(kw.get("dir"), service=name)
    backoff = 0.001
    try:
        w.read(0)  # the entries already there: the first attempt covers them
        while True:
            try:
                return AsyncService(_open(name, 0, **kw), loop)
            except TimeoutError:
                pass
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise OSError(_errno.ETIMEDOUT, "abd.aio open: no publisher in time", name)
            ready = loop.create_future()
            loop.add_reader(w.fileno(), lambda: ready.done() or ready.set_result(True))
            try:
                wait = backoff if left is None else min(backoff, left)
                await asyncio.wait_for(asyncio.shield(ready), wait)
                w.read(0)  # a change of this service: try at once
            except asyncio.TimeoutError:
                backoff = min(backoff * 2, 1.0)
            finally:
                loop.remove_reader(w.fileno())
    finally:
        w.close()
