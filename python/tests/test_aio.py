# SPDX-License-Identifier: MIT
"""asyncio: `await svc.pop()` sleeps through the service's reactor descriptor on the event
loop: no thread, no polling; it wakes when another process sends."""
import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import LONG, SCALE, SRC

import abd
import abd.aio


def _threads():
    """The Python threads of this process, asyncio's own waitpid threads for its subprocesses
    aside: what the binding would start. (The C library's helpers are its own: io_uring's
    kernel workers, and on a backend that cannot wait on a futex word, the reactor's thread
    for futex sources: reactor.h.)"""
    return sum(not t.name.startswith("waitpid-") for t in threading.enumerate())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 6 * LONG))


SENDER = """
import abd, sys
svc = abd.open(sys.argv[1], 60, dir=sys.argv[2], role="producer")
print("opened", flush=True)
for line in sys.stdin:          # one message per line, when the test asks for it
    svc.push(line.strip().encode())
"""


def test_an_awaiting_pop_uses_no_cpu_while_idle_and_wakes_on_another_process(regdir):
    async def main():
        threads = _threads()
        svc = await abd.aio.publish("py.aio", dir=regdir, role="consumer")
        runs = 0
        on_reactor = svc._on_reactor

        def counted():
            nonlocal runs
            runs += 1
            on_reactor()
        svc._loop.remove_reader(svc._fd)
        svc._loop.add_reader(svc._fd, counted)
        # the other process: opens the service (served by this loop), then waits for a line
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SENDER, "py.aio", regdir, env=dict(os.environ, PYTHONPATH=SRC),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert await asyncio.wait_for(sender.stdout.readline(), LONG) == b"opened\n"
        task = asyncio.ensure_future(svc.pop())
        await asyncio.sleep(0.1)
        assert not task.done()
        # One idle second: what the process spends is what the waiting costs.
        runs, cpu, wall = 0, time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        idle_runs = runs
        assert not task.done()
        # (5% of a CPU; times $ABD_TEST_SCALE in an emulated CPU, where each timed look
        # costs more: a busy loop takes 50-100%)
        limit = 0.05 * min(SCALE, 4)
        assert cpu < limit * wall, f"{cpu:.3f} s of CPU in {wall:.2f} s idle ({idle_runs} runs)"
        # the reactor ran only when its descriptor said so: no spinning loop (a reactor
        # without futex sources looks on a timer: a few times per second)
        assert idle_runs <= 60, f"{idle_runs} reactor iterations in an idle second"
        assert _threads() == threads, "the binding started a thread for the service"
        # the message is the only thing that happens now: the ring's wake must end the wait
        sender.stdin.write(b"from another process\n")
        await sender.stdin.drain()
        assert await asyncio.wait_for(task, LONG) == b"from another process"
        sender.stdin.close()
        assert await asyncio.wait_for(sender.wait(), LONG) == 0
        svc.close()
    run(main())


def test_several_waiters_are_served_in_order_and_time_out(regdir):
    async def main():
        pub = abd.publish("py.aio2", dir=regdir, role="producer")
        sub = await abd.aio.open("py.aio2", 5, dir=regdir, role="consumer")
        a = asyncio.ensure_future(sub.pop())
        b = asyncio.ensure_future(sub.pop())
        await asyncio.sleep(0.05)
        pub.push(b"1")
        pub.push(b"2")
        assert await asyncio.wait_for(asyncio.gather(a, b), 5) == [b"1", b"2"]
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await sub.pop(0.1)
        assert time.monotonic() - t0 >= 0.1
        pub.push(b"3")  # nothing was lost by the timed-out waiter
        assert await sub.pop(5) == b"3"
        sub.close()
        pub.close()
    run(main())


def test_async_open_waits_for_a_late_publisher_without_blocking_the_loop(regdir, abdctl):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        tick = asyncio.ensure_future(ticker())
        opening = asyncio.ensure_future(abd.aio.open("py.late", LONG, dir=regdir,
                                                     role="consumer"))
        await asyncio.sleep(0.3)
        assert not opening.done()
        server = subprocess.Popen([abdctl, "serve", "--hold", "--dir", regdir, "py.late"],
                                  stdout=subprocess.DEVNULL)
        try:
            svc = await asyncio.wait_for(opening, LONG)
            assert ticks >= 10, f"the loop ran only {ticks} ticks while open waited"
            assert svc.service.publisher_pid == server.pid
            p = await asyncio.create_subprocess_exec(abdctl, "send", "--dir", regdir,
                                                     "py.late", "hello")
            assert await p.wait() == 0
            assert await svc.pop(5) == b"hello"
            waiting = asyncio.ensure_future(svc.pop())
            await asyncio.sleep(0.05)
            server.terminate()  # the publisher withdraws: the waiter learns it, no hang
            with pytest.raises(BrokenPipeError):
                await asyncio.wait_for(waiting, LONG)
            svc.close()
        finally:
            tick.cancel()
            if server.poll() is None:
                server.kill()
            server.wait()
    run(main())


def test_async_open_times_out(regdir):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await abd.aio.open("py.never", 0.2, dir=regdir)
        assert time.monotonic() - t0 >= 0.2
    run(main())


def test_the_loop_must_run_on_the_services_thread(regdir):
    svc = abd.publish("py.thread", dir=regdir, role="consumer")
    err = []

    def other():
        async def main():
            abd.aio.AsyncService(svc)
        try:
            asyncio.run(main())
        except OSError as e:
            err.append(e.errno)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    import errno
    assert err == [errno.EBUSY]
    svc.close()
