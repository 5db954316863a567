# SPDX-License-Identifier: MIT
"""The ctypes declarations of the C API (include/abd/*.h) that the package uses, and the
loading of libabd_runtime. Nothing here is public: abd/__init__.py is the interface.

Every function gets its argtypes and restype here, so that a wrong call is a TypeError and not
a corrupted stack; the structures mirror the C ones field by field (tests/test_ffi.py compiles
a C program that prints their sizes and offsets and compares them with these)."""
import ctypes
import ctypes.util
import os

c_int, c_uint, c_size_t, c_char_p, c_void_p = (ctypes.c_int, ctypes.c_uint, ctypes.c_size_t,
                                                ctypes.c_char_p, ctypes.c_void_p)
c_u32, c_u64, c_i64 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
c_pid, c_uid = ctypes.c_int, ctypes.c_uint32
P = ctypes.POINTER

SONAME = "libabd_runtime.so.0"


def _load():
    """$ABD_LIBRARY (a path: the build tree's library in tests), else what the dynamic linker
    finds: ctypes.util.find_library (the ldconfig cache), then the soname itself (which
    LD_LIBRARY_PATH and the default directories resolve)."""
    explicit = os.environ.get("ABD_LIBRARY")
    if explicit:
        return ctypes.CDLL(explicit, use_errno=False), explicit
    errors = []
    for cand in (ctypes.util.find_library("abd_runtime"), SONAME):
        if not cand:
            continue
        try:
            return ctypes.CDLL(cand), cand
        except OSError as e:
            errors.append(str(e))
    raise ImportError("abd: cannot load libabd_runtime (install abd, or set ABD_LIBRARY to "
                      "the path of libabd_runtime.so.0): " + "; ".join(errors))


lib, lib_path = _load()


class ServiceConfig(ctypes.Structure):  # struct abd_service_config
    _fields_ = [
        ("dir", c_char_p),
        ("capacity", c_u32),
        ("slot_size", c_u32),
        ("type_name", c_char_p),
        ("type_size", c_u32),
        ("type_hash", c_u64),
        ("allow_uids", P(c_uid)),
        ("n_allow_uids", c_uint),
        ("allow_gids", P(c_uid)),
        ("n_allow_gids", c_uint),
        ("ptracer", c_pid),
        ("reactor", c_void_p),
        ("reactor_flags", c_uint),
        ("publisher_uids", P(c_uid)),
        ("n_publisher_uids", c_size_t),
        ("publisher_gids", P(c_uid)),
        ("n_publisher_gids", c_size_t),
        ("reserved", c_void_p * 4),
    ]


class ServiceStats(ctypes.Structure):  # struct abd_service_stats
    _fields_ = [(n, c_u64) for n in ("capacity", "slot_size", "occupancy", "pushed", "popped",
                                     "recovered", "wakes", "waits")] + \
               [(n, c_u32) for n in ("producers", "consumers", "data_sleepers",
                                     "space_sleepers")] + \
               [("lost", c_u64), ("bytes", c_u64), ("last_send_ns", c_u64), ("reserved", c_u64 * 3)]


class Entry(ctypes.Structure):  # struct abd_entry
    _fields_ = [
        ("name", c_char_p),
        ("state", c_int),
        ("reason", c_char_p),
        ("record", c_void_p),
        ("service", c_char_p),
        ("instance", P(ctypes.c_uint8)),
        ("pid", c_pid),
        ("uid", c_uid),
        ("reserved", c_void_p * 4),
    ]


class WatchOpts(ctypes.Structure):  # struct abd_watch_opts
    _fields_ = [("flags", c_uint), ("service", c_char_p), ("reserved", c_void_p * 6)]


class BroadcastOpts(ctypes.Structure):  # struct abd_broadcast_opts
    _fields_ = [("subscribers", c_u32), ("history", c_u32), ("policy", c_u32),
                ("reserved0", c_u32), ("reserved", c_u64 * 4)]


class RpcOpts(ctypes.Structure):  # struct abd_rpc_opts
    _fields_ = [("response_size", c_u32), ("in_flight", c_u32), ("reserved", c_u64 * 3)]


# Sizes and offsets the layout test compares with C: name -> (ctypes class, C struct name).
STRUCTS = {"abd_service_config": ServiceConfig, "abd_service_stats": ServiceStats,
           "abd_entry": Entry, "abd_watch_opts": WatchOpts,
           "abd_broadcast_opts": BroadcastOpts, "abd_rpc_opts": RpcOpts}

EVENT_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_int, c_void_p)
WATCH_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, P(Entry))

_protos = {
    # version.h, probe.h
    "abd_version": (c_int, []),
    "abd_version_string": (c_char_p, []),
    "abd_probe_features": (c_u64, []),
    "abd_probe_has": (c_int, [c_int]),
    "abd_probe_error": (c_int, [c_int]),
    "abd_feature_name": (c_char_p, [c_int]),
    "abd_probe_ptrace_scope": (c_int, []),
    "abd_probe_cap_sys_ptrace": (c_int, []),
    "abd_choose_backend": (c_int, []),
    "abd_choose_fd_transfer": (c_int, []),
    "abd_choose_wake": (c_int, []),
    "abd_backend_name": (c_char_p, [c_int]),
    "abd_fd_transfer_name": (c_char_p, [c_int]),
    "abd_wake_name": (c_char_p, [c_int]),
    # registry.h
    "abd_registry_open": (c_int, [c_char_p, c_uint, P(c_void_p), c_char_p, c_size_t]),
    "abd_registry_free": (None, [c_void_p]),
    "abd_registry_path": (c_char_p, [c_void_p]),
    "abd_registry_snapshot": (c_int, [c_void_p, P(c_void_p)]),
    "abd_snapshot_count": (c_size_t, [c_void_p]),
    "abd_snapshot_entry": (P(Entry), [c_void_p, c_size_t]),
    "abd_snapshot_free": (None, [c_void_p]),
    "abd_entry_trusted": (c_int, [c_void_p, P(Entry), c_void_p]),
    "abd_state_name": (c_char_p, [c_int]),
    "abd_event_name": (c_char_p, [c_int]),
    "abd_record_meta_count": (c_size_t, [c_void_p]),
    "abd_record_meta_at": (c_int, [c_void_p, c_size_t, P(c_char_p), P(c_char_p)]),
    "abd_record_socket": (c_char_p, [c_void_p]),
    "abd_record_published_ns": (c_u64, [c_void_p]),
    "abd_watch_new_opts": (c_int, [c_void_p, P(WatchOpts), P(c_void_p)]),
    "abd_watch_free": (None, [c_void_p]),
    "abd_watch_fd": (c_int, [c_void_p]),
    "abd_watch_process": (c_int, [c_void_p, WATCH_FN, c_void_p]),
    "abd_watch_wait": (c_int, [c_void_p, c_int, WATCH_FN, c_void_p]),
    # reactor.h
    "abd_reactor_fd": (c_int, [c_void_p]),
    "abd_reactor_run_once": (c_int, [c_void_p, c_i64]),
    "abd_reactor_backend": (c_int, [c_void_p]),
    # ring.h (the zero-copy forms)
    "abd_ring_try_peek": (c_int, [c_void_p, P(c_void_p), P(c_size_t)]),
    "abd_ring_release": (c_int, [c_void_p, c_void_p]),
    "abd_ring_wait_prepare": (c_int, [c_void_p, c_int, P(c_u32), P(c_i64)]),
    "abd_ring_wait_finish": (c_int, [c_void_p, c_int]),
    "abd_ring_futex": (c_void_p, [c_void_p, c_int]),
    # service.h
    "abd_service_publish": (c_int, [c_char_p, P(ServiceConfig), c_uint, P(c_void_p)]),
    "abd_service_open": (c_int, [c_char_p, P(ServiceConfig), c_uint, c_i64, P(c_void_p)]),
    "abd_service_close": (None, [c_void_p]),
    "abd_service_try_push": (c_int, [c_void_p, c_void_p, c_size_t]),
    "abd_service_try_pop": (c_int, [c_void_p, c_void_p, c_size_t]),
    "abd_service_push": (c_int, [c_void_p, c_void_p, c_size_t, c_i64]),
    "abd_service_pop": (c_int, [c_void_p, c_void_p, c_size_t, c_i64]),
    "abd_service_set_event_fn": (c_int, [c_void_p, EVENT_FN, c_void_p]),
    "abd_service_reactor": (c_void_p, [c_void_p]),
    "abd_service_ring": (c_void_p, [c_void_p]),
    "abd_service_closed": (c_int, [c_void_p]),
    "abd_service_name": (c_char_p, [c_void_p]),
    "abd_service_record_name": (c_char_p, [c_void_p]),
    "abd_service_is_publisher": (c_int, [c_void_p]),
    "abd_service_publisher_pid": (c_pid, [c_void_p]),
    "abd_service_type": (c_int, [c_void_p, P(c_char_p), P(c_u32), P(c_u64)]),
    "abd_service_stats": (c_int, [c_void_p, P(ServiceStats)]),
    # service.h, broadcast services
    "abd_service_publish_broadcast": (c_int, [c_char_p, P(ServiceConfig), P(BroadcastOpts),
                                              c_uint, P(c_void_p)]),
    "abd_service_loan": (c_int, [c_void_p, c_size_t, P(c_void_p), c_i64]),
    "abd_service_send": (c_int, [c_void_p, c_void_p, c_size_t]),
    "abd_service_unloan": (c_int, [c_void_p, c_void_p]),
    "abd_service_peek": (c_int, [c_void_p, P(c_void_p), P(c_size_t), c_i64]),
    "abd_service_release": (c_int, [c_void_p]),
    "abd_service_lost": (c_i64, [c_void_p]),
    "abd_service_is_broadcast": (c_int, [c_void_p]),
    # service.h, request-response
    "abd_service_publish_rpc": (c_int, [c_char_p, P(ServiceConfig), P(RpcOpts), c_uint,
                                        P(c_void_p)]),
    "abd_service_try_take": (c_int, [c_void_p, c_void_p, c_size_t, P(c_u64)]),
    "abd_service_take": (c_int, [c_void_p, c_void_p, c_size_t, P(c_u64), c_i64]),
    "abd_service_reply": (c_int, [c_void_p, c_u64, c_void_p, c_size_t]),
    "abd_service_reply_error": (c_int, [c_void_p, c_u64, c_int]),
    "abd_service_call_send": (c_int, [c_void_p, c_void_p, c_size_t, P(c_u64), c_i64]),
    "abd_service_call_poll": (c_int, [c_void_p, c_u64, c_void_p, c_size_t]),
    "abd_service_call_wait": (c_int, [c_void_p, c_u64, c_void_p, c_size_t, c_i64]),
    "abd_service_call_cancel": (c_int, [c_void_p, c_u64]),
    "abd_service_is_rpc": (c_int, [c_void_p]),
}

for _name, (_res, _args) in _protos.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

# The message calls once more for the hot path (abd/__init__.py's push, pop and their try
# forms): without argtypes, which saves ctypes' conversion of each argument (about 0.1 µs a
# call, a tenth of a push from Python). Their callers pass every argument as a ctypes object
# of the C parameter's type (c_void_p handle, c_size_t length, c_int64 timeout) or as a
# buffer ctypes passes as a pointer (bytes, a ctypes array, byref()): nothing is left to
# ctypes' default conversion of a Python int. lib[name] makes a function object apart from
# the declared one above.
hot = {}
for _name in ("abd_service_try_push", "abd_service_try_pop", "abd_service_push",
              "abd_service_pop"):
    hot[_name] = lib[_name]
    hot[_name].restype = c_int

# Constants of the headers the package uses (include/abd/*.h).
SERVICE_PRODUCER, SERVICE_CONSUMER = 1 << 0, 1 << 1
SERVICE_SINGLE_PRODUCER, SERVICE_SINGLE_CONSUMER = 1 << 2, 1 << 3
SERVICE_PIDFD_GETFD, SERVICE_SCM_RIGHTS, SERVICE_OBSERVER = 1 << 4, 1 << 5, 1 << 6
SERVICE_EVENT_CLOSED, SERVICE_EVENT_READABLE = 1, 2
REACTOR_FORCE_EPOLL, REACTOR_FORCE_IO_URING = 0x1, 0x2
REGISTRY_CREATE = 1 << 0
WATCH_PIDFD = 1 << 0
RING_WAIT_DATA = 0  # enum abd_ring_wait_for
BROADCAST_BLOCK, BROADCAST_OVERWRITE = 0, 1  # enum abd_broadcast_policy
RING_MAX_SLOT_SIZE = 1 << 24


# futex(2) through libc's syscall(), for Service.peek's wait on the handle's own wake word
# (ring.h, abd_ring_wait_prepare: a shared futex, no FUTEX_PRIVATE_FLAG). None where the
# syscall number of this machine is not known here: peek then naps instead.
class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


FUTEX_WAIT = 0
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98, "ppc64le": 221, "s390x": 238,
              "i686": 240, "armv7l": 240}.get(os.uname().machine)
futex = None
if _SYS_FUTEX is not None:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
    _syscall.restype = ctypes.c_long
    _syscall.argtypes = [ctypes.c_long, c_void_p, c_int, c_u32, P(Timespec), c_void_p, c_int]

    def futex(word, value, timeout_s):
        """FUTEX_WAIT on word while it holds value, at most timeout_s seconds."""
        ts = Timespec(int(timeout_s), int((timeout_s % 1) * 1e9))
        _syscall(_SYS_FUTEX, word, FUTEX_WAIT, value, ctypes.byref(ts), None, 0)
