# SPDX-License-Identifier: MIT
"""Services from Python: push and pop, errors as OSError subclasses, the zero-copy view, the
GIL released while blocked, and real second processes (abdctl, another Python)."""
import errno
import os
import signal
import subprocess
import threading
import time

import pytest
from conftest import LONG, SCALE, python_child

import abd


def test_push_pop_round_trip_of_every_bytes_like_input(regdir):
    with abd.publish("py.rt", dir=regdir, role="producer", capacity=8, slot_size=64) as pub, \
            abd.open("py.rt", 5, dir=regdir, role="consumer") as sub:
        assert pub.is_publisher and not sub.is_publisher
        assert sub.publisher_pid == os.getpid()
        assert (sub.capacity, sub.slot_size) == (8, 64)
        pub.push(b"bytes")
        pub.push(bytearray(b"bytearray"))
        pub.push(memoryview(b"xxmemoryview")[2:])
        assert pub.try_push(b"")
        assert sub.pop() == b"bytes"
        buf = bytearray(64)
        n = sub.pop_into(buf, 1)
        assert bytes(buf[:n]) == b"bytearray"
        assert sub.pop(0) == b"memoryview"
        assert sub.try_pop() == b""
        assert sub.try_pop() is None
        for i in range(8):
            assert pub.try_push(b"%d" % i)
        assert not pub.try_push(b"full")
        assert [sub.pop(1) for _ in range(8)] == [b"%d" % i for i in range(8)]
        st = sub.stats()
        assert st["pushed"] == st["popped"] == 12


def test_errors_are_oserror_subclasses_carrying_the_errno(regdir):
    with pytest.raises(TimeoutError) as e:
        abd.open("py.absent", 0, dir=regdir)
    assert e.value.errno == errno.ETIMEDOUT and e.value.filename == "py.absent"
    with pytest.raises(OSError) as e:
        abd.publish("../evil", dir=regdir)
    assert e.value.errno == errno.EINVAL
    pub = abd.publish("py.err", dir=regdir, slot_size=16, type_name="py.msg", type_hash=7)
    sub = abd.open("py.err", 5, dir=regdir, role="consumer")
    with pytest.raises(OSError) as e:
        abd.open("py.err", 0, dir=regdir, type_name="py.msg", type_hash=8)
    assert e.value.errno == errno.EPROTOTYPE
    with pytest.raises(OSError) as e:
        pub.push(b"x" * 17)
    assert e.value.errno == errno.EMSGSIZE
    with pytest.raises(PermissionError) as e:
        sub.push(b"x")
    assert e.value.errno == errno.EPERM
    with pytest.raises(BlockingIOError) as e:
        sub.pop(0)
    assert e.value.errno == errno.EAGAIN
    with pytest.raises(TimeoutError):
        sub.pop(0.05)
    pub.push(b"last words")
    pub.close()
    assert sub.pop(1) == b"last words"  # sent before the publisher left: still delivered
    with pytest.raises(BrokenPipeError) as e:
        sub.pop(1)
    assert e.value.errno == errno.EPIPE
    assert sub.closed == errno.ESHUTDOWN
    sub.close()
    with pytest.raises(OSError) as e:
        sub.pop()
    assert e.value.errno == errno.EBADF


def _mapping_of(addr):
    for line in open("/proc/self/maps"):
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= addr < hi:
            return parts[5] if len(parts) > 5 else ""
    return None


def test_peek_gives_a_zero_copy_view_of_the_shared_ring_slot(regdir):
    import ctypes
    with abd.publish("py.peek", dir=regdir, role="producer") as pub, \
            abd.open("py.peek", 5, dir=regdir, role="consumer") as sub:
        pub.push(b"in place")
        with sub.peek(1) as msg:
            view = msg.view
            assert bytes(view) == b"in place" and view.readonly
            # the view's memory is the ring's shared mapping (a memfd), not a copy
            addr = ctypes.addressof(msg._arr)
            assert _mapping_of(addr).startswith("/memfd:"), _mapping_of(addr)
        with pytest.raises(ValueError):
            view[0]  # released with the message
        assert sub.try_pop() is None  # the message was consumed
        with pytest.raises(BlockingIOError):
            sub.peek(0)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            sub.peek(0.1)
        assert time.monotonic() - t0 >= 0.1
    # after the publisher left, a blocking peek ends with EPIPE, not a hang
    pub = abd.publish("py.peek2", dir=regdir, role="producer")
    sub = abd.open("py.peek2", 5, dir=regdir, role="consumer")
    threading.Timer(0.2, pub.close).start()
    with pytest.raises(BrokenPipeError):
        sub.peek(10)
    sub.close()


def test_a_thread_blocked_in_pop_lets_other_python_threads_run(regdir):
    pub = abd.publish("py.gil", dir=regdir, role="producer")
    sub = abd.open("py.gil", 5, dir=regdir, role="consumer")
    started, got = threading.Event(), []

    def consumer():
        started.set()
        got.append(sub.pop(10))

    t = threading.Thread(target=consumer)
    t.start()
    started.wait()
    time.sleep(0.1)  # the consumer is inside abd_service_pop now (the ring is empty)
    # If the call held the GIL, this thread could not run a single bytecode until pop
    # returned (after 10 s): count what it runs meanwhile.
    count, end = 0, time.monotonic() + 0.3
    while time.monotonic() < end:
        count += 1
    assert t.is_alive() and not got, "pop returned without a message"
    assert count > 1000, f"only {count} iterations ran beside the blocked pop"
    pub.push(b"release")
    t.join(5)
    assert got == [b"release"]
    sub.close()
    pub.close()


def test_messages_from_another_process_abdctl_send(regdir, abdctl):
    with abd.publish("py.fromctl", dir=regdir, role="consumer") as svc:
        p = subprocess.Popen([abdctl, "send", "--dir", regdir, "py.fromctl", "one", "two",
                              "three"])
        # the blocking pop runs the publisher's reactor: it answers the sender's handshake
        assert [svc.pop(LONG) for _ in range(3)] == [b"one", b"two", b"three"]
        assert p.wait(LONG) == 0


CHILD_PUBLISHER = """
import abd, sys, time
svc = abd.publish(sys.argv[1], dir=sys.argv[2], role="producer")
svc.push(b"ready from %d" % __import__("os").getpid())
print("published", flush=True)
while True:
    svc.run_once(None)  # serve openers (the handshake path runs through the reactor)
"""


def test_a_python_publisher_in_another_process_and_its_death(regdir):
    child = python_child(CHILD_PUBLISHER, "py.child", regdir, stdout=subprocess.PIPE)
    try:
        with abd.open("py.child", LONG, dir=regdir, role="consumer") as svc:
            assert svc.publisher_pid == child.pid
            assert svc.pop(LONG) == b"ready from %d" % child.pid
            child.send_signal(signal.SIGKILL)
            child.wait()
            # a blocking pop notices the death: EPIPE, not a hang
            with pytest.raises(BrokenPipeError):
                svc.pop(LONG)
            assert svc.closed == errno.ECONNRESET
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


LATE_PUSHER = """
import abd, sys, time
svc = abd.open(sys.argv[1], 60, dir=sys.argv[2], role="producer")
time.sleep(1.0)
svc.push(b"late")
"""


def test_a_blocking_peek_sleeps_until_another_process_pushes(regdir):
    with abd.publish("py.peekwait", dir=regdir, role="consumer") as svc:
        child = python_child(LATE_PUSHER, "py.peekwait", regdir)
        try:
            # the child opens through this publisher: serve it (the handshake path)
            while svc.stats()["producers"] == 0:
                svc.run_once(0.05)
            cpu = time.process_time()
            with svc.peek(LONG) as msg:
                assert bytes(msg.view) == b"late"
            cpu = time.process_time() - cpu
            # about a second of waiting on the wake word: no spinning
            assert cpu < 0.1 * SCALE, f"{cpu:.3f} s of CPU in a blocking peek"
            assert child.wait(LONG) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
