# SPDX-License-Identifier: MIT
"""abd: brokerless discovery and shared-memory rings between processes on one Linux host.

Python binding of libabd_runtime (the C library; docs/python.md). A publisher::

    import abd
    with abd.publish("camera.frames", role="producer") as svc:
        svc.push(b"frame 1")

and a consumer in another process::

    with abd.open("camera.frames", timeout=5, role="consumer") as svc:
        data = svc.pop()            # bytes; BrokenPipeError once the publisher left

Errors are OSError subclasses carrying the C library's errno (TimeoutError for ETIMEDOUT,
BrokenPipeError for EPIPE, PermissionError for EPERM/EACCES, ...). Blocking calls release the
GIL. asyncio: abd.aio (``await svc.pop()`` through the reactor's descriptor).

Typed services carry one C struct per message, checked by name, size and layout hash at open
as C (ABD_SERVICE_TYPED) and C++ (abd::service<T>) check it::

    class Sample(ctypes.Structure):
        abd_type_name = "example.sample"
        abd_type_layout = "u64 seq; f64 value; u32 sensor; u32 check"
        _fields_ = [("seq", ctypes.c_uint64), ("value", ctypes.c_double),
                    ("sensor", ctypes.c_uint32), ("check", ctypes.c_uint32)]

    svc = abd.open("example.samples", 5, type=Sample, role="consumer")
    s = svc.pop()                   # a Sample

Timeouts are in seconds (float); None waits forever, 0 does not wait.
"""
import ctypes
import dataclasses
import errno as _errno
import os
import re as _re
import struct as _struct
import time

from . import _ffi
from ._ffi import lib

__all__ = ["publish", "publish_broadcast", "publish_rpc", "open", "Service", "Message", "Loan", "MessageType", "type_hash", "list", "info",
           "watch", "Watch", "Entry", "Event", "probe", "version", "library_path"]

_list = list  # the builtin; abd.list is the registry listing


def _err(r, what, name=None):
    """OSError(errno, message[, name]): Python picks the subclass from the errno."""
    e = -r
    if name is not None:
        return OSError(e, f"{what}: {os.strerror(e)}", name)
    return OSError(e, f"{what}: {os.strerror(e)}")


def _check(r, what, name=None):
    if r < 0:
        raise _err(r, what, name)
    return r


def _ns(timeout):
    """Seconds (None: forever) to the C library's nanoseconds (< 0: forever)."""
    if timeout is None or timeout < 0:
        return -1
    return int(timeout * 1e9)


_hot_try_push, _hot_try_pop = _ffi.hot["abd_service_try_push"], _ffi.hot["abd_service_try_pop"]
_hot_push, _hot_pop = _ffi.hot["abd_service_push"], _ffi.hot["abd_service_pop"]
_FOREVER = ctypes.c_int64(-1)  # never changed: shared by every call that waits forever
_EAGAIN = -_errno.EAGAIN


def _tmo(timeout):
    """Seconds (None: forever) as the c_int64 nanoseconds the hot calls take."""
    return _FOREVER if timeout is None else ctypes.c_int64(_ns(timeout))


def _str(p):
    return p.decode("utf-8", "surrogateescape") if p is not None else None


def _enc(s):
    if s is None:
        return None
    return os.fsencode(s) if not isinstance(s, bytes) else s


def version():
    """The loaded library's version string, e.g. "0.1.0"."""
    return _str(lib.abd_version_string())


def library_path():
    """Which libabd_runtime was loaded (the ABD_LIBRARY path, or what the linker found)."""
    return _ffi.lib_path


_ROLES = {"producer": _ffi.SERVICE_PRODUCER, "consumer": _ffi.SERVICE_CONSUMER,
          "both": _ffi.SERVICE_PRODUCER | _ffi.SERVICE_CONSUMER,
          "observer": _ffi.SERVICE_OBSERVER}


# ---------------------------------------------------------------------------- message types

_FNV_OFFSET, _FNV_PRIME, _U64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1
_TYPE_NAME = _re.compile(r"[A-Za-z0-9._:<>-]{1,64}")
_CTYPES_BASES = (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)


def type_hash(layout):
    """The type hash of a layout description (str or bytes): FNV-1a 64 over its bytes (UTF-8),
    up to a NUL if there is one; the same value as C's abd_service_type_hash(layout) and C++'s
    abd::type_hash(layout)."""
    data = layout.encode() if isinstance(layout, str) else bytes(layout)
    h = _FNV_OFFSET
    for b in data.split(b"\0", 1)[0]:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


class MessageType:
    """The message type of a typed service: its identity (name, layout, hence size and hash)
    and how a Python value becomes the message's bytes and back.

    MessageType(name, layout, ctype): messages are instances of a ctypes type (a
    ctypes.Structure subclass mirrors a C struct, padding included): push takes an instance,
    pop returns a new one. MessageType(name, layout, "=QdII"): a struct module format: push
    takes a tuple, pop returns a tuple (size struct.calcsize: spell out a C struct's padding,
    trailing padding included, with "x"). publish and open take either this or, directly, a
    ctypes type that carries abd_type_name and abd_type_layout as class attributes (the
    convention of C++'s abd::message_type<T>)."""

    __slots__ = ("name", "layout", "size", "hash", "ctype", "struct")

    def __init__(self, name, layout, ctype_or_format):
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            raise ValueError(f"abd message type name {name!r}: 1..64 characters of "
                             "[A-Za-z0-9._:<>-]")
        self.name, self.layout, self.hash = name, layout, type_hash(layout)
        self.ctype = self.struct = None
        if isinstance(ctype_or_format, (str, bytes)):
            self.struct = _struct.Struct(ctype_or_format)
            self.size = self.struct.size
        elif isinstance(ctype_or_format, type) and issubclass(ctype_or_format, _CTYPES_BASES):
            self.ctype = ctype_or_format
            self.size = ctypes.sizeof(ctype_or_format)
        else:
            raise TypeError("abd.MessageType: give a ctypes type or a struct format, not "
                            f"{ctype_or_format!r}")
        if not 0 < self.size <= 1 << 24:  # ABD_RING_MAX_SLOT_SIZE
            raise ValueError(f"abd message type {name}: {self.size} bytes do not fit a slot")

    @classmethod
    def of(cls, t):
        """t itself if it is a MessageType; a ctypes type with abd_type_name and
        abd_type_layout as a MessageType."""
        if isinstance(t, cls):
            return t
        if isinstance(t, type) and issubclass(t, _CTYPES_BASES):
            name, layout = getattr(t, "abd_type_name", None), getattr(t, "abd_type_layout", None)
            if name is None or layout is None:
                raise TypeError(f"abd: {t.__name__} needs the class attributes abd_type_name "
                                "and abd_type_layout (the strings its C and C++ peers use)")
            return cls(name, layout, t)
        raise TypeError(f"abd: type= takes a ctypes type or an abd.MessageType, not {t!r}")

    def __repr__(self):
        how = self.ctype.__name__ if self.ctype is not None else repr(self.struct.format)
        return (f"abd.MessageType({self.name!r}, {self.layout!r}, {how}: "
                f"{self.size} bytes, hash {self.hash:#018x})")


def _typed_args(type, type_name, type_size, type_hash):
    if type is None:
        return None, type_name, type_size, type_hash
    if type_name is not None or type_size or type_hash:
        raise ValueError("abd: give type= or type_name/type_size/type_hash, not both")
    mt = MessageType.of(type)
    return mt, mt.name, mt.size, mt.hash


def _ids(seq):
    seq = _list(seq or ())
    if not seq:
        return None, 0
    return (ctypes.c_uint32 * len(seq))(*[ctypes.c_uint32(int(x)).value for x in seq]), len(seq)


def _config(dir, capacity=0, slot_size=0, type_name=None, type_size=0, type_hash=0,
            allow_uids=(), allow_gids=(), publisher_uids=(), publisher_gids=(), epoll=False):
    cfg = _ffi.ServiceConfig()
    keep = []  # arrays the struct points into: alive until the call returns
    cfg.dir = _enc(dir)
    cfg.capacity, cfg.slot_size = capacity, slot_size
    cfg.type_name = _enc(type_name)
    cfg.type_size, cfg.type_hash = type_size, type_hash
    for field, seq in (("allow_uids", allow_uids), ("allow_gids", allow_gids),
                       ("publisher_uids", publisher_uids), ("publisher_gids", publisher_gids)):
        arr, n = _ids(seq)
        keep.append(arr)
        if arr is not None:
            setattr(cfg, field, ctypes.cast(arr, ctypes.POINTER(ctypes.c_uint32)))
        setattr(cfg, "n_" + field, n)
    cfg.reactor_flags = _ffi.REACTOR_FORCE_EPOLL if epoll else 0
    return cfg, keep


def publish(name, *, role="both", dir=None, capacity=0, slot_size=0, type=None,
            type_name=None, type_size=0, type_hash=0, allow_uids=(), allow_gids=(),
            single_producer=False, single_consumer=False, epoll=False):
    """Create a ring service and publish it as `name` (abd_service_publish).

    role: "producer", "consumer", "both" or "observer" (this handle's role). capacity (a power
    of two; 0: 256) and slot_size (the largest message; 0: the type's size, or 256) shape the
    ring. type: a typed service (a ctypes type with abd_type_name and abd_type_layout, or an
    abd.MessageType): push takes and pop returns that type, and openers must give the same
    identity. type_name, type_size, type_hash: the same identity given by hand (type_size != 0:
    every message is exactly that long). allow_uids/allow_gids: who else may open it (default:
    the same uid and root). epoll: force the epoll reactor. Returns a Service; raises
    OSError."""
    flags = _ROLES[role] | (_ffi.SERVICE_SINGLE_PRODUCER if single_producer else 0) | \
        (_ffi.SERVICE_SINGLE_CONSUMER if single_consumer else 0)
    mt, type_name, type_size, type_hash = _typed_args(type, type_name, type_size, type_hash)
    cfg, keep = _config(dir, capacity, slot_size, type_name, type_size, type_hash,
                        allow_uids, allow_gids, epoll=epoll)
    out = ctypes.c_void_p()
    _check(lib.abd_service_publish(_enc(name), ctypes.byref(cfg), flags, ctypes.byref(out)),
           "abd_service_publish", name)
    del keep
    return Service(out.value, mt)


def open(name, timeout=None, *, role="both", dir=None, type=None, type_name=None,
         type_size=0, type_hash=0, publisher_uids=(), publisher_gids=(), pidfd_getfd=False,
         scm_rights=False, epoll=False):
    """Open the service `name`, waiting up to `timeout` seconds (None: forever, 0: only what
    is there now) for an alive trusted publisher (abd_service_open). The wait releases the GIL.

    type (as publish's), or type_name/type_size/type_hash: accept only a service of this type
    (OSError with errno EPROTOTYPE otherwise). publisher_uids/gids:
    trust these publishers too (default: the same uid and root; 0xffffffff: anyone).
    pidfd_getfd/scm_rights force an acquisition path. Returns a Service; raises OSError
    (TimeoutError when none appeared in time)."""
    flags = _ROLES[role] | (_ffi.SERVICE_PIDFD_GETFD if pidfd_getfd else 0) | \
        (_ffi.SERVICE_SCM_RIGHTS if scm_rights else 0)
    mt, type_name, type_size, type_hash = _typed_args(type, type_name, type_size, type_hash)
    cfg, keep = _config(dir, type_name=type_name, type_size=type_size, type_hash=type_hash,
                        publisher_uids=publisher_uids, publisher_gids=publisher_gids,
                        epoll=epoll)
    out = ctypes.c_void_p()
    _check(lib.abd_service_open(_enc(name), ctypes.byref(cfg), flags, _ns(timeout),
                                ctypes.byref(out)), "abd_service_open", name)
    del keep
    return Service(out.value, mt)


_POLICIES = {"block": _ffi.BROADCAST_BLOCK, "overwrite": _ffi.BROADCAST_OVERWRITE}


def publish_broadcast(name, *, subscribers=0, history=0, policy="block", role="producer",
                      dir=None, capacity=0, slot_size=0, type=None, type_name=None, type_size=0,
                      type_hash=0, allow_uids=(), allow_gids=(), epoll=False):
    """Create a broadcast service and publish it as `name` (abd_service_publish_broadcast,
    docs/broadcast.md): every subscriber gets every message, in order. The handle is the
    publisher: push copies a message in, loan lends a chunk of the payload pool to write one in
    place. Subscribers open it with abd.open (pop, peek, lost).

    subscribers: at most this many at a time (1..64; 0: 8); history: messages a late
    subscriber still gets (< capacity); policy: "block" (a subscriber a whole ring behind holds
    push/loan back) or "overwrite" (the publisher never waits; a lagging subscriber skips, and
    its ``lost`` counts). role: "producer" or "observer". capacity, slot_size (the largest
    message), type, allow_uids, allow_gids, dir, epoll: as publish's. Raises OSError."""
    if policy not in _POLICIES:
        raise ValueError(f"abd broadcast policy {policy!r}: 'block' or 'overwrite'")
    if role not in ("producer", "observer"):
        raise ValueError(f"abd broadcast role {role!r}: 'producer' or 'observer'")
    mt, type_name, type_size, type_hash = _typed_args(type, type_name, type_size, type_hash)
    cfg, keep = _config(dir, capacity, slot_size, type_name, type_size, type_hash,
                        allow_uids, allow_gids, epoll=epoll)
    opts = _ffi.BroadcastOpts(subscribers=subscribers, history=history,
                              policy=_POLICIES[policy])
    out = ctypes.c_void_p()
    _check(lib.abd_service_publish_broadcast(_enc(name), ctypes.byref(cfg), ctypes.byref(opts),
                                             _ROLES[role], ctypes.byref(out)),
           "abd_service_publish_broadcast", name)
    del keep
    return Service(out.value, mt)


def publish_rpc(name, *, response_size=0, in_flight=0, dir=None, capacity=0, slot_size=0,
                type=None, type_name=None, type_size=0, type_hash=0, allow_uids=(),
                allow_gids=(), epoll=False):
    """Create a request-response service and publish it as `name` (abd_service_publish_rpc,
    docs/rpc.md). The handle is the server: take a request, then reply (or reply_error) with
    its token. Clients open it with abd.open and call.

    slot_size: the largest request (0: 256); capacity: requests the ring holds; response_size:
    the largest answer (0: slot_size); in_flight: calls one client may have pending (1..64;
    0: 8). type (the request type), allow_uids, allow_gids, dir, epoll: as publish's. Raises
    OSError."""
    mt, type_name, type_size, type_hash = _typed_args(type, type_name, type_size, type_hash)
    cfg, keep = _config(dir, capacity, slot_size, type_name, type_size, type_hash,
                        allow_uids, allow_gids, epoll=epoll)
    opts = _ffi.RpcOpts(response_size=response_size, in_flight=in_flight)
    out = ctypes.c_void_p()
    _check(lib.abd_service_publish_rpc(_enc(name), ctypes.byref(cfg), ctypes.byref(opts), 0,
                                       ctypes.byref(out)), "abd_service_publish_rpc", name)
    del keep
    return Service(out.value, mt)


def _buffer_arg(data):
    """A pointer and a length for a bytes-like object, without a copy where ctypes allows."""
    if isinstance(data, bytes):
        return data, len(data)
    mv = memoryview(data)
    if not mv.c_contiguous:
        b = mv.tobytes()
        return b, len(b)
    if mv.readonly:
        b = mv.tobytes()
        return b, len(b)
    n = mv.nbytes
    if n == 0:
        return None, 0
    return (ctypes.c_char * n).from_buffer(mv.cast("B")), n


class Message:
    """A message popped in place (Service.peek): ``view`` is a read-only memoryview of the
    ring's slot in shared memory, no copy made. It is valid only until the message is
    released: the end of the ``with`` block, or release(); the view is released then too
    (using it raises ValueError). Do not keep slices of it past that point: the slot goes back
    to the producers, who overwrite it. Copy what you keep (bytes(msg.view))."""

    __slots__ = ("_svc", "_ptr", "view", "_arr", "_bcast")

    def __init__(self, svc, ptr, n, bcast=False):
        self._svc, self._ptr, self._bcast = svc, ptr, bcast
        self._arr = (ctypes.c_char * n).from_address(ptr) if n else None
        self.view = memoryview(self._arr).cast("B").toreadonly() if n else memoryview(b"")

    def __len__(self):
        return self.view.nbytes

    def __bytes__(self):
        return self.view.tobytes()

    def release(self):
        """Hand the slot back to the producers (abd_ring_release). Raises OSError with
        EOWNERDEAD when the slot was taken from this handle meanwhile (what was read may be
        garbled: discard it)."""
        if self._ptr is None:
            return
        self.view.release()
        ptr, self._ptr, self._arr = self._ptr, None, None
        if self._bcast:  # a broadcast subscriber's peek (abd_service_release)
            _check(lib.abd_service_release(self._svc._handle()), "abd_service_release")
            return
        _check(lib.abd_ring_release(self._svc._ring, ptr), "abd_ring_release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        if getattr(self, "_ptr", None) is not None and self._svc._h:
            try:
                self.release()
            except OSError:
                pass


class Loan:
    """A chunk of a broadcast publisher's payload pool lent to write a message in place
    (Service.loan): ``view`` is a writable memoryview of it (indexing the Loan writes it too:
    ``loan[:n] = data``). send(n) publishes its first n bytes; leaving the ``with`` block (or
    close()) without sending gives it back unsent (abd_service_unloan). The view is released
    either way: using it afterwards raises ValueError."""

    __slots__ = ("_svc", "_ptr", "view", "_arr")

    def __init__(self, svc, ptr, n):
        self._svc, self._ptr = svc, ptr
        self._arr = (ctypes.c_char * n).from_address(ptr)
        self.view = memoryview(self._arr).cast("B")

    def __len__(self):
        return self.view.nbytes

    def __getitem__(self, i):
        return self.view[i]

    def __setitem__(self, i, v):
        self.view[i] = v

    def _end(self):
        ptr, self._ptr, self._arr = self._ptr, None, None
        self.view.release()
        return ptr

    def send(self, n=None):
        """Publish the first n bytes (None: the whole chunk) of the loan (abd_service_send).
        The loan ends: the view is released."""
        if self._ptr is None:
            raise ValueError("abd loan: sent or given back already")
        n = self.view.nbytes if n is None else n
        ptr = self._end()
        _check(lib.abd_service_send(self._svc._handle(), ptr, n), "abd_service_send")

    def close(self):
        """Give the loan back unsent (abd_service_unloan), unless sent. Idempotent."""
        if self._ptr is None:
            return
        ptr = self._end()
        if self._svc._h:
            _check(lib.abd_service_unloan(self._svc._h, ptr), "abd_service_unloan")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_ptr", None) is not None and self._svc._h:
            try:
                self.close()
            except OSError:
                pass


class Service:
    """A published or opened ring service (struct abd_service). Close it (close(), or use it
    as a context manager). A handle is used by one thread at a time; its reactor belongs to
    the thread that published or opened it (the one abd.aio must run on).

    message_type: the MessageType given as type= to publish or open (None: messages are
    bytes); type: the (name, size, hash) the service was published with."""

    def __init__(self, handle, message_type=None):
        self._h = handle
        self.message_type = message_type
        st = self.stats()
        self.capacity, self.slot_size = st["capacity"], st["slot_size"]
        self._buf = ctypes.create_string_buffer(max(1, self.slot_size))
        self._view = memoryview(self._buf).cast("B")
        # the hot calls' arguments, made once (_ffi.hot: every argument a ctypes object)
        self._hp, self._slot = ctypes.c_void_p(handle), ctypes.c_size_t(self.slot_size)
        self._into = None  # pop_into's last buffer: (buffer, its ctypes array, c_size_t)
        self._push_n, self._push_size = 0, ctypes.c_size_t(0)
        self._type_size = ctypes.c_size_t(message_type.size if message_type else 0)
        self._ring = lib.abd_service_ring(handle)
        self._event_fn = None  # the ctypes callback abd.aio sets: kept alive here
        name, size, hsh = ctypes.c_char_p(), ctypes.c_uint32(), ctypes.c_uint64()
        lib.abd_service_type(handle, ctypes.byref(name), ctypes.byref(size), ctypes.byref(hsh))
        self.type = (_str(name.value) or "", size.value, hsh.value)
        # "ring" (a work queue), "broadcast" or "rpc"
        self.kind = ("broadcast" if lib.abd_service_is_broadcast(handle) == 1 else
                     "rpc" if lib.abd_service_is_rpc(handle) == 1 else "ring")
        self._resp = None  # an rpc client's answer buffer (grown to the largest answer seen)

    def _handle(self):
        if not self._h:
            raise OSError(_errno.EBADF, "abd service: the handle is closed")
        return self._h

    # ---- messages
    def _arg(self, data):
        """A pointer and a length for a message: an instance of the message type (typed), else
        any bytes-like object."""
        mt = self.message_type
        if mt is not None:
            if mt.ctype is not None and isinstance(data, mt.ctype):
                return ctypes.byref(data), mt.size
            if mt.struct is not None and isinstance(data, tuple):
                b = mt.struct.pack(*data)
                return b, len(b)
            try:
                return _buffer_arg(data)
            except TypeError:
                what = mt.ctype.__name__ if mt.ctype is not None else "tuple"
                raise TypeError(f"abd service of {mt.name}: push takes a {what} (or its "
                                f"{mt.size} bytes), not {data.__class__.__name__}") from None
        return _buffer_arg(data)

    def _decode(self, n):
        """The message of n bytes that a pop left in self._buf: bytes, or a value of the
        message type."""
        mt = self.message_type
        if mt is None:
            return self._view[:n].tobytes()
        if n != mt.size:  # the library checks a typed handle's sizes: a peer broke the ring
            raise OSError(_errno.EBADMSG, f"abd_service_pop: {n} bytes, not a {mt.name}",
                          self.name)
        if mt.ctype is not None:
            return mt.ctype.from_buffer_copy(self._buf)
        return mt.struct.unpack_from(self._buf)

    # The message calls below are the hot path: they call _ffi.hot's functions with arguments
    # made once per handle where they can, try the non-blocking form first (when a message or
    # a slot is there, the blocking form would do just that, with one more argument to
    # convert), and check the handle only on an error (a closed handle passes NULL: -EINVAL).
    def _fail(self, r, what):
        if not self._h:
            return OSError(_errno.EBADF, "abd service: the handle is closed")
        return _err(r, what)

    def _size(self, n):
        """n as a c_size_t, the one of the previous push when n is the same."""
        if n != self._push_n:
            self._push_n, self._push_size = n, ctypes.c_size_t(n)
        return self._push_size

    def push(self, data, timeout=None):
        """Push one message, waiting up to timeout seconds for space (None: forever; 0: not at
        all). data: a bytes-like object; on a typed service an instance of its ctypes type or
        a tuple for its struct format (or the message's exact bytes). Raises BlockingIOError
        (EAGAIN) when full with timeout 0, TimeoutError, BrokenPipeError (the publisher left),
        OSError(EMSGSIZE)."""
        if self.message_type is None and data.__class__ is bytes:  # the common case, inline
            p, n = data, len(data)
        else:
            p, n = self._arg(data)
        size = self._size(n)
        r = _hot_try_push(self._hp, p, size)
        if r == _EAGAIN and timeout != 0:
            r = _hot_push(self._hp, p, size, _FOREVER if timeout is None else _tmo(timeout))
        if r < 0:
            raise self._fail(r, "abd_service_push")

    def try_push(self, data):
        """Push without waiting: True, or False when the ring is full."""
        if self.message_type is None and data.__class__ is bytes:
            p, n = data, len(data)
        else:
            p, n = self._arg(data)
        r = _hot_try_push(self._hp, p, self._size(n))
        if r < 0:
            if r == _EAGAIN:
                return False
            raise self._fail(r, "abd_service_try_push")
        return True

    def pop_into(self, buffer, timeout=None):
        """Pop one message into a writable buffer (bytearray, memoryview, array, an instance of
        the message's ctypes type...), waiting up to timeout seconds; returns its length.
        Raises OSError(EMSGSIZE) when the message is longer than the buffer (it stays in the
        ring), TimeoutError, BrokenPipeError (the publisher left and everything it sent was
        read). The handle keeps the last buffer it was given exported (a bytearray then cannot
        be resized) until it is given another one or closed: popping into the same buffer
        again costs no new export."""
        into = self._into
        if into is None or into[0] is not buffer:
            mv = memoryview(buffer).cast("B")
            if mv.readonly:
                raise TypeError("pop_into needs a writable buffer")
            n = mv.nbytes
            into = self._into = (buffer, (ctypes.c_char * n).from_buffer(mv) if n else None,
                                 ctypes.c_size_t(n))
        r = _hot_try_pop(self._hp, into[1], into[2])
        if r == _EAGAIN and timeout != 0:
            r = _hot_pop(self._hp, into[1], into[2],
                         _FOREVER if timeout is None else _tmo(timeout))
        if r < 0:
            raise self._fail(r, "abd_service_pop")
        return r

    def pop(self, timeout=None):
        """Pop one message, waiting up to timeout seconds (None: forever; 0: not at all:
        BlockingIOError when empty): bytes, or on a typed service a new instance of its ctypes
        type (a tuple for a struct format). The wait releases the GIL. Raises TimeoutError,
        BrokenPipeError once the publisher left and the ring is drained (messages sent before
        it left are delivered first)."""
        mt = self.message_type
        if mt is not None and mt.ctype is not None:  # straight into the new instance
            obj = mt.ctype()
            ref, size = ctypes.byref(obj), self._type_size
        else:
            ref, size = self._buf, self._slot
        r = _hot_try_pop(self._hp, ref, size)
        if r == _EAGAIN and timeout != 0:
            r = _hot_pop(self._hp, ref, size, _FOREVER if timeout is None else _tmo(timeout))
        if r < 0:
            raise self._fail(r, "abd_service_pop")
        if mt is None:
            return self._view[:r].tobytes()
        if ref is self._buf:
            return self._decode(r)
        if r != mt.size:  # the library checks a typed handle's sizes: a peer broke the ring
            raise OSError(_errno.EBADMSG, f"abd_service_pop: {r} bytes, not a {mt.name}",
                          self.name)
        return obj

    def try_pop(self):
        """Pop without waiting: what pop returns, or None when the ring is empty."""
        if self.message_type is not None:
            try:
                return self.pop(0)
            except BlockingIOError:
                return None
        r = _hot_try_pop(self._hp, self._buf, self._slot)
        if r < 0:
            if r == _EAGAIN:
                return None
            raise self._fail(r, "abd_service_try_pop")
        return self._view[:r].tobytes()

    def peek(self, timeout=None):
        """Pop one message in place, without copying it: a Message whose ``view`` is a
        read-only memoryview of the ring slot in shared memory, valid until the message is
        released (the end of ``with svc.peek() as msg:``, or msg.release()). Waits up to
        timeout seconds (None: forever, 0: BlockingIOError when empty) on the handle's own
        wake word (futex), in slices of at most 100 ms (to notice a publisher that left),
        with the GIL released. Raises BrokenPipeError once the
        publisher left and the ring is drained. The view is the message as it lies in the
        slot: a typed handle's size check is not applied (ring.h, abd_ring_try_peek).
        A broadcast subscriber peeks with abd_service_peek (one wait in the library, the GIL
        released; released by abd_service_release): its chunk is not reused while held."""
        h = self._handle()
        ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
        if self.kind == "broadcast":  # abd_service_peek, released by abd_service_release
            _check(lib.abd_service_peek(h, ctypes.byref(ptr), ctypes.byref(n), _ns(timeout)),
                   "abd_service_peek")
            return Message(self, ptr.value, n.value, bcast=True)
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while True:
            r = lib.abd_ring_try_peek(self._ring, ctypes.byref(ptr), ctypes.byref(n))
            if r == 0:
                return Message(self, ptr.value, n.value)
            if r != -_errno.EAGAIN:
                _check(r, "abd_ring_try_peek")
            if lib.abd_service_closed(h) != 0:
                # closed: messages committed before are still there; then EPIPE
                r = lib.abd_ring_try_peek(self._ring, ctypes.byref(ptr), ctypes.byref(n))
                if r == 0:
                    return Message(self, ptr.value, n.value)
                raise OSError(_errno.EPIPE, "abd_ring_try_peek: the publisher left",
                              self.name)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if timeout == 0:
                    raise OSError(_errno.EAGAIN, "abd_ring_try_peek: empty")
                raise OSError(_errno.ETIMEDOUT, "abd service peek: timed out", self.name)
            self._wait_data(0.1 if left is None else min(left, 0.1))

    # ---- broadcast services
    def loan(self, size=None, timeout=None):
        """Broadcast publisher: lend a chunk of the payload pool of at least size bytes (None:
        the slot size) to write a message in place (abd_service_loan), waiting up to timeout
        seconds for room under the "block" policy. Returns a Loan: ``with pub.loan(n) as buf:
        buf[:n] = data; buf.send(n)``; leaving the block unsent gives it back. One loan at a
        time (OSError EBUSY). Raises BlockingIOError (timeout 0), TimeoutError,
        OSError(EMSGSIZE) (size > slot size), PermissionError (not a broadcast publisher)."""
        size = self.slot_size if size is None else size
        ptr = ctypes.c_void_p()
        _check(lib.abd_service_loan(self._handle(), size, ctypes.byref(ptr), _ns(timeout)),
               "abd_service_loan")
        return Loan(self, ptr.value, size)

    @property
    def lost(self):
        """Broadcast subscriber: the messages it missed since it joined (overwritten before
        it read them: the "overwrite" policy); 0 for every other handle."""
        return _check(lib.abd_service_lost(self._handle()), "abd_service_lost")

    # ---- request-response
    def take(self, timeout=None):
        """Request-response server: the next request, waiting up to timeout seconds (None:
        forever, 0: BlockingIOError when none): (request bytes, token); answer it with
        reply(token, data) or reply_error(token, errno). The wait releases the GIL."""
        tok = ctypes.c_uint64()
        r = lib.abd_service_take(self._handle(), self._buf, self.slot_size, ctypes.byref(tok),
                                 _ns(timeout))
        _check(r, "abd_service_take")
        return self._view[:r].tobytes(), tok.value

    def try_take(self):
        """take without waiting: (request, token), or None when no request is waiting."""
        tok = ctypes.c_uint64()
        r = lib.abd_service_try_take(self._handle(), self._buf, self.slot_size,
                                     ctypes.byref(tok))
        if r == _EAGAIN:
            return None
        _check(r, "abd_service_try_take")
        return self._view[:r].tobytes(), tok.value

    def reply(self, token, data):
        """Request-response server: answer the request of token with data (bytes-like;
        abd_service_reply). Never blocks. Raises OSError ESTALE (answered already, or the
        caller gave up), EMSGSIZE (longer than response_size)."""
        p, n = _buffer_arg(data)
        _check(lib.abd_service_reply(self._handle(), token, p, n), "abd_service_reply")

    def reply_error(self, token, error):
        """Request-response server: answer the request of token with an error: the caller's
        call raises OSError(error) (error: a positive errno, e.g. errno.EINVAL)."""
        _check(lib.abd_service_reply_error(self._handle(), token, -abs(int(error))),
               "abd_service_reply_error")

    def call(self, data, timeout=None):
        """Request-response client: send data (bytes-like) as a request and wait up to
        timeout seconds (None: forever) for its answer: bytes. The wait releases the GIL.
        Raises the server's error (reply_error) as OSError, TimeoutError (the call is given
        up), BrokenPipeError (the server left), OSError EBUSY (in_flight calls pending),
        EMSGSIZE (request longer than the slot size)."""
        h = self._handle()
        p, n = _buffer_arg(data)
        ticket = ctypes.c_uint64()
        tmo = _ns(timeout)
        _check(lib.abd_service_call_send(h, p, n, ctypes.byref(ticket), tmo), "abd_service_call")
        if self._resp is None:
            self._resp = ctypes.create_string_buffer(max(1, self.slot_size))
        r = lib.abd_service_call_wait(h, ticket.value, self._resp, len(self._resp), tmo)
        if r == -_errno.EMSGSIZE:  # an answer longer than the buffer: it stays, take it
            self._resp = ctypes.create_string_buffer(_ffi.RING_MAX_SLOT_SIZE)
            r = lib.abd_service_call_poll(h, ticket.value, self._resp, len(self._resp))
        if r in (-_errno.EINTR, -_errno.ECANCELED, -_errno.EMSGSIZE, _EAGAIN):
            lib.abd_service_call_cancel(h, ticket.value)  # still in flight: give it up
        _check(r, "abd_service_call")
        return ctypes.string_at(self._resp, r)

    def _wait_data(self, slice_s):
        """One sleep of at most slice_s on the handle's own data wake word (the eventcount of
        ring.h: announce, sleep, withdraw), the GIL released."""
        val, tmo = ctypes.c_uint32(), ctypes.c_int64()
        r = lib.abd_ring_wait_prepare(self._ring, _ffi.RING_WAIT_DATA, ctypes.byref(val),
                                      ctypes.byref(tmo))
        if r != 0:
            _check(r, "abd_ring_wait_prepare")
            return
        try:
            if tmo.value >= 0:
                slice_s = min(slice_s, tmo.value / 1e9)
            word = lib.abd_ring_futex(self._ring, _ffi.RING_WAIT_DATA)
            if _ffi.futex is not None and word:
                _ffi.futex(word, val.value, slice_s)
            else:
                time.sleep(slice_s)
        finally:
            lib.abd_ring_wait_finish(self._ring, _ffi.RING_WAIT_DATA)

    # ---- state
    @property
    def name(self):
        return _str(lib.abd_service_name(self._h)) if self._h else None

    @property
    def record_name(self):
        return _str(lib.abd_service_record_name(self._h)) if self._h else None

    @property
    def is_publisher(self):
        return lib.abd_service_is_publisher(self._handle()) == 1

    @property
    def publisher_pid(self):
        return lib.abd_service_publisher_pid(self._handle())

    @property
    def closed(self):
        """None while the publisher is there; else errno.ESHUTDOWN (it withdrew) or
        errno.ECONNRESET (it died), as far as this handle knows. True-ish once it left."""
        if not self._h:
            return _errno.EBADF
        r = lib.abd_service_closed(self._h)
        return -r if r < 0 else None

    def stats(self):
        """A snapshot of the ring's figures (abd_service_stats) as a dict."""
        st = _ffi.ServiceStats()
        _check(lib.abd_service_stats(self._handle(), ctypes.byref(st)), "abd_service_stats")
        return {f: getattr(st, f) for f, _ in _ffi.ServiceStats._fields_ if f != "reserved"}

    # ---- embedding
    def reactor_fd(self):
        """The descriptor of the service's reactor that polls readable when it has work
        (abd_reactor_fd): watch it in your loop, then call run_once(0)."""
        return _check(lib.abd_reactor_fd(lib.abd_service_reactor(self._handle())),
                      "abd_reactor_fd")

    def run_once(self, timeout=0):
        """Run the service's reactor once (abd_reactor_run_once), waiting up to timeout
        seconds for work. Returns the number of callbacks run."""
        return _check(lib.abd_reactor_run_once(lib.abd_service_reactor(self._handle()),
                                               _ns(timeout)), "abd_reactor_run_once")

    def close(self):
        """Leave the service (abd_service_close). A publisher withdraws: its openers get
        BrokenPipeError after draining. Idempotent."""
        h, self._h = self._h, None
        self._hp, self._into = None, None
        if h:
            lib.abd_service_close(h)
        self._event_fn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_h", None):
            try:
                self.close()
            except Exception:  # interpreter shutdown: the module may be gone already
                pass

    def __repr__(self):
        state = "closed" if not self._h else ("publisher" if self.is_publisher else "opener")
        return f"<abd.Service {self.name!r} {state}>"


# ---------------------------------------------------------------------------- registry

@dataclasses.dataclass
class Entry:
    """One registry entry (struct abd_entry) with its record's metadata."""
    name: str
    state: str              # "alive", "stale" or "invalid"
    service: str = None     # None when invalid
    pid: int = 0
    uid: int = 0
    instance: str = None    # 32 hex digits; None when invalid
    reason: str = None      # why invalid
    trusted: bool = False   # would a lookup (open) take it (the default publisher policy)
    socket: str = None      # handshake socket path
    published_ns: int = 0
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Event:
    """A registry change: type "added", "removed", "died" or "overflow", and the entry."""
    type: str
    entry: Entry


def _entry(reg, e):
    c = e.contents
    ent = Entry(name=_str(c.name), state=_str(lib.abd_state_name(c.state)),
                service=_str(c.service), pid=c.pid, uid=c.uid, reason=_str(c.reason))
    if c.instance:
        ent.instance = bytes(c.instance[:16]).hex()
    if c.record:
        ent.socket = _str(lib.abd_record_socket(c.record)) or None
        ent.published_ns = lib.abd_record_published_ns(c.record)
        k, v = ctypes.c_char_p(), ctypes.c_char_p()
        for i in range(lib.abd_record_meta_count(c.record)):
            if lib.abd_record_meta_at(c.record, i, ctypes.byref(k), ctypes.byref(v)) == 0:
                ent.meta[_str(k.value)] = _str(v.value)
        ent.trusted = reg is not None and lib.abd_entry_trusted(reg, e, None) == 1
    return ent


class _Registry:
    def __init__(self, dir):
        out = ctypes.c_void_p()
        why = ctypes.create_string_buffer(256)
        r = lib.abd_registry_open(_enc(dir), 0, ctypes.byref(out), why, len(why))
        if r < 0:
            raise OSError(-r, f"abd_registry_open: {os.strerror(-r)} ({_str(why.value)})",
                          dir)
        self.h = out.value

    def close(self):
        h, self.h = self.h, None
        if h:
            lib.abd_registry_free(h)


def list(dir=None, all=False):
    """The registry's entries (abd_registry_snapshot): alive services; all=True adds stale
    records and invalid entries (with the reason). dir None: the default registry directory
    ($ABD_REGISTRY, /run/abd, ...). Returns a list of Entry, sorted by name."""
    reg = _Registry(dir)
    try:
        snap = ctypes.c_void_p()
        _check(lib.abd_registry_snapshot(reg.h, ctypes.byref(snap)), "abd_registry_snapshot")
        try:
            out = [_entry(reg.h, lib.abd_snapshot_entry(snap, i))
                   for i in range(lib.abd_snapshot_count(snap))]
        finally:
            lib.abd_snapshot_free(snap)
    finally:
        reg.close()
    return sorted((e for e in out if all or e.state == "alive"), key=lambda e: e.name)


def info(name, dir=None):
    """The records of service `name` (alive ones first, newest first), each an Entry with its
    metadata: abd.service, abd.capacity, abd.slot_size, abd.type, ... (docs/service.md).
    Raises FileNotFoundError (ENOENT) when the registry holds none."""
    recs = [e for e in list(dir, all=True) if e.service == name]
    if not recs:
        raise OSError(_errno.ENOENT, "abd info: no record of that service", name)
    recs.sort(key=lambda e: (e.state != "alive", -e.published_ns))
    return recs


class Watch:
    """Registry changes as they happen (abd_watch_new_opts): the first read reports every
    entry as "added", then each change once. service: only that service's records. pidfd:
    also learn deaths from a pidfd per publisher. fileno() polls readable when read(0) has
    work (asyncio: loop.add_reader(w.fileno(), ...))."""

    def __init__(self, dir=None, service=None, pidfd=False):
        self._reg = _Registry(dir)
        opts = _ffi.WatchOpts()
        opts.flags = _ffi.WATCH_PIDFD if pidfd else 0
        opts.service = _enc(service)
        out = ctypes.c_void_p()
        r = lib.abd_watch_new_opts(self._reg.h, ctypes.byref(opts), ctypes.byref(out))
        if r < 0:
            self._reg.close()
            raise _err(r, "abd_watch_new_opts", service)
        self._h = out.value
        self._events = []
        self._fn = _ffi.WATCH_FN(self._on_event)

    def _on_event(self, _ud, type_, entry):
        self._events.append(Event(_str(lib.abd_event_name(type_)), _entry(self._reg.h, entry)))

    def fileno(self):
        return lib.abd_watch_fd(self._handle())

    def _handle(self):
        if not self._h:
            raise OSError(_errno.EBADF, "abd watch: closed")
        return self._h

    def read(self, timeout=None):
        """The events that happened, waiting up to timeout seconds (None: until one does;
        0: none) for the first. The wait releases the GIL. Returns a list (empty on
        timeout)."""
        ms = -1 if timeout is None or timeout < 0 else int(timeout * 1000)
        h = self._handle()
        if ms == 0:
            r = lib.abd_watch_process(h, self._fn, None)
        else:
            r = lib.abd_watch_wait(h, ms, self._fn, None)
        ev, self._events = self._events, []
        _check(r, "abd_watch_wait")
        return ev

    def __iter__(self):
        while True:
            yield from self.read()

    def close(self):
        h, self._h = self._h, None
        if h:
            lib.abd_watch_free(h)
            self._reg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_h", None):
            self.close()


def watch(dir=None, service=None, pidfd=False):
    """A Watch of the registry (see Watch)."""
    return Watch(dir, service, pidfd)


def probe():
    """What this kernel offers and what abd picks (abd_probe_*, the same as `abdctl probe`):
    a dict with version, backend, fd_transfer, wake, ptrace_scope (None without Yama),
    cap_sys_ptrace, features {name: bool} and errors {name: errno name} of missing ones."""
    feats, errs = {}, {}
    i = 0
    while True:
        n = lib.abd_feature_name(i)
        if n is None:
            break
        n = _str(n)
        feats[n] = lib.abd_probe_has(i) == 1
        if not feats[n]:
            e = -lib.abd_probe_error(i)
            errs[n] = _errno.errorcode.get(e, str(e))
        i += 1
    scope = lib.abd_probe_ptrace_scope()
    return {
        "version": version(),
        "backend": _str(lib.abd_backend_name(lib.abd_choose_backend())),
        "fd_transfer": _str(lib.abd_fd_transfer_name(lib.abd_choose_fd_transfer())),
        "wake": _str(lib.abd_wake_name(lib.abd_choose_wake())),
        "ptrace_scope": None if scope < 0 else scope,
        "cap_sys_ptrace": lib.abd_probe_cap_sys_ptrace() == 1,
        "features": feats,
        "errors": errs,
    }
