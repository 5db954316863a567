#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""perf/python-bench.py: the Python package (python/abd) against pyzmq over ipc://, in
interleaved rounds, printed as abd-perf prints its rows (docs/perf.md, family "python").

    perf/python-bench.py [--json] [--quick] [--iters N] [--rounds N] [--cpus split,shared]
                         [--build DIR] [CASE...]
    perf/python-bench.py --calls      what one call of the Python layer costs (one process)

Rows, each abd row measured alternately with its pyzmq baseline (one sample of each per
round, the abd row first in even rounds), ratio = median of the rounds' ratios:

    abd-python      rtt           64 B   blocking push + pop through two services
                                         vs pyzmq-ipc rtt (PAIR, blocking send + recv)
    abd-python-aio  rtt-asyncio   64 B   `await svc.pop()` (abd.aio, the reactor fd in the
                                         loop) vs pyzmq-ipc rtt-asyncio (zmq.asyncio PAIR)
    abd-python      throughput    64 B, 4096 B   push / blocking pop (bytes out), one way
                                         vs pyzmq-ipc throughput (PUSH/PULL, send / recv)
    abd-python      throughput-into  64 B, 4096 B   pop_into a preallocated bytearray
                                         vs the same pyzmq-ipc throughput row

CASE names rows by case (rtt, rtt-asyncio, throughput, throughput-into). Each sample runs
in two fresh processes (this script with --worker), pinned like abd-perf's runners: split =
each on its own allowed vCPU, shared = both on one. Every message is checked (its first 8
bytes carry its number), so no side can skip work. Without pyzmq (Debian's python3-zmq;
ci/bootstrap installs it with ABD_BOOTSTRAP_PEERS=1) the rows are printed skipped with that
reason. The package is imported from python/ and libabd_runtime from $ABD_LIBRARY, else from
BUILD/runtime (default build/)."""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = "python"
TIMEOUT = 300  # seconds per sample (both processes): a loaded machine stretches the asyncio tail

# (subject, case, bytes): every row; baseline subject pyzmq-ipc, baseline case below
ROWS = [
    ("abd-python", "rtt", 64),
    ("abd-python-aio", "rtt-asyncio", 64),
    ("abd-python", "throughput", 64),
    ("abd-python", "throughput", 4096),
    ("abd-python", "throughput-into", 64),
    ("abd-python", "throughput-into", 4096),
]
BASE_CASE = {"rtt": "rtt", "rtt-asyncio": "rtt-asyncio", "throughput": "throughput",
             "throughput-into": "throughput"}
ITERS = {"rtt": (20000, 2000), "rtt-asyncio": (20000, 2000), "throughput": (200000, 20000),
         "throughput-into": (200000, 20000)}  # (full, --quick)


# The throughput rows' ring: 2048 slots, as many messages as pyzmq's PUSH/PULL pair queues by
# default (SNDHWM + RCVHWM = 1000 + 1000): the same slack when one side is preempted.
CAPACITY = 2048


def warmup(iters):
    return max(10, min(10000, iters // 10))  # as bench_warmup


# ---------------------------------------------------------------------------- the workers
# A worker is one process of a sample: role "a" (ping / producer) or "b" (pong / consumer).
# It prints one JSON line: the sample's figures (a for round trips, b for throughput).

def seqmsg(i, size):
    return i.to_bytes(8, "little") + bytes(size - 8)


def check(data, i):
    if int.from_bytes(bytes(data[:8]), "little") != i:
        raise SystemExit(f"message {i} out of order: got {bytes(data[:8]).hex()}")


def stats(samples):
    s = sorted(samples)
    n = len(s)

    def rank(p):  # nearest rank, as bench.c
        i = -(-int(p * n * 1000) // 1000)  # ceil without float drift at p * n exact
        return s[max(i, 1) - 1]
    return {"p50_ns": rank(0.50), "p99_ns": rank(0.99), "p999_ns": rank(0.999), "iters": n}


def abd_rtt(role, d, size, iters, warm):
    import abd
    if role == "b":
        ping = abd.publish("bench.ping", dir=d, role="consumer", slot_size=size,
                           single_consumer=True)
        pong = abd.publish("bench.pong", dir=d, role="producer", slot_size=size,
                           single_producer=True)
        # serve the other side's opens (the handshake path runs through the reactors)
        while ping.stats()["producers"] == 0 or pong.stats()["consumers"] == 0:
            ping.run_once(0.001)
            pong.run_once(0.001)
        pop, push = ping.pop, pong.push
        for _ in range(warm + iters):
            push(pop())
        return None
    ping = abd.open("bench.ping", 60, dir=d, role="producer")
    pong = abd.open("bench.pong", 60, dir=d, role="consumer")
    push, pop = ping.push, pong.pop
    clock = time.perf_counter_ns
    samples = []
    for i in range(warm + iters):
        msg = seqmsg(i, size)
        t0 = clock()
        push(msg)
        r = pop()
        t1 = clock()
        check(r, i)
        if i >= warm:
            samples.append(t1 - t0)
    return stats(samples)


def zmq_rtt(role, d, size, iters, warm):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.linger = 1000
    addr = f"ipc://{d}/pair"
    if role == "b":
        s.bind(addr)
        recv, send = s.recv, s.send
        for _ in range(warm + iters):
            send(recv())
        s.close()
        ctx.term()
        return None
    s.connect(addr)
    send, recv = s.send, s.recv
    clock = time.perf_counter_ns
    samples = []
    for i in range(warm + iters):
        msg = seqmsg(i, size)
        t0 = clock()
        send(msg)
        r = recv()
        t1 = clock()
        check(r, i)
        if i >= warm:
            samples.append(t1 - t0)
    s.close()
    ctx.term()
    return stats(samples)


def abd_rtt_asyncio(role, d, size, iters, warm):
    import asyncio
    import abd
    import abd.aio

    async def b():
        ping = await abd.aio.publish("bench.ping", dir=d, role="consumer", slot_size=size)
        pong = abd.publish("bench.pong", dir=d, role="producer", slot_size=size)
        while ping.service.stats()["producers"] == 0 or pong.stats()["consumers"] == 0:
            pong.run_once(0)
            await asyncio.sleep(0.001)  # the loop runs ping's reactor
        pop, push = ping.pop, pong.push
        for _ in range(warm + iters):
            push(await pop())
        return None

    async def a():
        ping = abd.open("bench.ping", 60, dir=d, role="producer")
        pong = await abd.aio.open("bench.pong", 60, dir=d, role="consumer")
        push, pop = ping.push, pong.pop
        clock = time.perf_counter_ns
        samples = []
        for i in range(warm + iters):
            msg = seqmsg(i, size)
            t0 = clock()
            push(msg)
            r = await pop()
            t1 = clock()
            check(r, i)
            if i >= warm:
                samples.append(t1 - t0)
        return stats(samples)
    return asyncio.run(a() if role == "a" else b())


def zmq_rtt_asyncio(role, d, size, iters, warm):
    import asyncio
    import zmq
    import zmq.asyncio

    async def run():
        ctx = zmq.asyncio.Context()
        s = ctx.socket(zmq.PAIR)
        s.linger = 1000
        addr = f"ipc://{d}/pair"
        try:
            if role == "b":
                s.bind(addr)
                for _ in range(warm + iters):
                    await s.send(await s.recv())
                return None
            s.connect(addr)
            clock = time.perf_counter_ns
            samples = []
            for i in range(warm + iters):
                msg = seqmsg(i, size)
                t0 = clock()
                await s.send(msg)
                r = await s.recv()
                t1 = clock()
                check(r, i)
                if i >= warm:
                    samples.append(t1 - t0)
            return stats(samples)
        finally:
            s.close()
            ctx.term()
    return asyncio.run(run())


def _consume(pop_one, iters, warm):
    """b's side of a throughput sample: timed from the end of the warm-up batch to the last
    message, as abd-perf's runner."""
    for i in range(warm):
        check(pop_one(), i)
    t0 = time.perf_counter_ns()
    for i in range(warm, warm + iters):
        check(pop_one(), i)
    ns = time.perf_counter_ns() - t0
    return {"ops_per_s": iters * 1e9 / ns, "iters": iters}


def abd_throughput(role, d, size, iters, warm, into=False):
    import abd
    if role == "b":
        svc = abd.publish("bench.tp", dir=d, role="consumer", slot_size=size,
                          capacity=CAPACITY, single_producer=True, single_consumer=True)
        if into:
            buf = bytearray(size)
            view, pop_into = memoryview(buf), svc.pop_into

            def one():
                n = pop_into(buf)
                return view[:n]
            return _consume(one, iters, warm)
        return _consume(svc.pop, iters, warm)
    svc = abd.open("bench.tp", 60, dir=d, role="producer")
    push = svc.push
    msgs = [seqmsg(i, size) for i in range(warm + iters)]  # made before: not timed work
    for m in msgs:
        push(m)
    return None


def zmq_throughput(role, d, size, iters, warm):
    import zmq
    ctx = zmq.Context()
    addr = f"ipc://{d}/pipe"
    if role == "b":
        s = ctx.socket(zmq.PULL)
        s.bind(addr)
        out = _consume(s.recv, iters, warm)
    else:
        s = ctx.socket(zmq.PUSH)
        s.linger = -1  # close waits until every message is delivered
        s.connect(addr)
        send = s.send
        for m in [seqmsg(i, size) for i in range(warm + iters)]:
            send(m)
        out = None
    s.close()
    ctx.term()
    return out


WORKERS = {
    ("abd-python", "rtt"): abd_rtt,
    ("pyzmq-ipc", "rtt"): zmq_rtt,
    ("abd-python-aio", "rtt-asyncio"): abd_rtt_asyncio,
    ("pyzmq-ipc", "rtt-asyncio"): zmq_rtt_asyncio,
    ("abd-python", "throughput"): abd_throughput,
    ("abd-python", "throughput-into"): lambda *a: abd_throughput(*a, into=True),
    ("pyzmq-ipc", "throughput"): zmq_throughput,
}


def worker(subject, case, role, d, size, iters, warm, cpu):
    os.sched_setaffinity(0, {cpu})  # before any library starts a thread: they inherit it
    out = WORKERS[(subject, case)](role, d, size, iters, warm)
    if out is not None:
        print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- the driver

def env_for(build):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if not env.get("ABD_LIBRARY"):
        libs = sorted(p for p in glob.glob(os.path.join(build, "runtime", "libabd_runtime.so.*"))
                      if os.path.isfile(p))
        if libs:
            env["ABD_LIBRARY"] = os.path.realpath(libs[-1])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cpus_for(mode):
    allowed = sorted(os.sched_getaffinity(0))
    if mode == "shared":
        return allowed[0], allowed[0], None
    if len(allowed) < 2:
        return None, None, "split needs two allowed CPUs"
    return allowed[0], allowed[1], None


def sample(subject, case, cpus, size, iters, env):
    """One sample: both processes of the row, fresh. Returns (figures, None) or (None, why)."""
    a_cpu, b_cpu, why = cpus_for(cpus)
    if why:
        return None, why
    d = tempfile.mkdtemp(prefix="abd-pybench-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                         else None)
    warm = warmup(iters)
    me = [sys.executable, os.path.abspath(__file__), "--worker"]
    args = [subject, case, None, d, str(size), str(iters), str(warm)]
    procs = {}
    try:
        for role, cpu in (("b", b_cpu), ("a", a_cpu)):  # the listener first, as abd-perf
            argv = me + args[:2] + [role] + args[3:] + [str(cpu)]
            procs[role] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT
        outs = {}
        for role in ("a", "b"):
            try:
                outs[role] = procs[role].communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for p in procs.values():
                    p.kill()
                    p.communicate()
                return None, "timeout"
            if procs[role].returncode != 0:
                other = procs["b" if role == "a" else "a"]
                if other.poll() is None:
                    other.kill()
                    other.communicate()
                err = (outs[role][1].strip().splitlines() or ["?"])[-1]
                return None, f"{role}: exit {procs[role].returncode}: {err}"
        line = outs["a" if case.startswith("rtt") else "b"][0].strip().splitlines()
        return json.loads(line[-1]), None
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
        shutil.rmtree(d, ignore_errors=True)


def median(v):
    return statistics.median(v) if v else None


def row_median(rows):
    out = {}
    for k in ("p50_ns", "p99_ns", "p999_ns", "ops_per_s"):
        v = [r[k] for r in rows if r.get(k) is not None]
        if v:
            out[k] = round(median(v), 0 if k == "ops_per_s" else 1)  # as abd-perf prints
    return out


def emit(row, as_json):
    if as_json:
        print(json.dumps(row), flush=True)
        return
    fig = lambda v: "" if v is None else (f"{v / 1e3:.3g} µs" if v >= 1e3 else f"{v:.0f} ns")
    if row.get("skipped"):
        print(f"{BENCH:<10} {row['subject']:<24} {row['case']:<18} {row['cpus']:<6} "
              f"{row['msg_bytes']:>5} skipped: {row['reason']}", flush=True)
        return
    ops = row.get("ops_per_s")
    ops = f"{ops / 1e6:.3g} M/s" if ops and ops >= 1e6 else (f"{ops / 1e3:.3g} k/s" if ops else "")
    how = ""
    if row.get("ratio") is not None:
        how = (f"{row['ratio']:.2f}x {row['baseline']} ({row['ratio_of']}; {row['rounds']} rounds "
               f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}x)")
    elif row.get("rounds"):
        how = f"(median of {row['rounds']} rounds)"
    print(f"{BENCH:<10} {row['subject']:<24} {row['case']:<18} {row['cpus']:<6} "
          f"{row['msg_bytes']:>5} {fig(row.get('p50_ns')):>9} {fig(row.get('p99_ns')):>9} "
          f"{fig(row.get('p999_ns')):>9} {ops:>10}  {how}", flush=True)


def run_row(subject, case, size, cpus, iters, rounds, env, emitted, as_json, skip_zmq):
    bcase = BASE_CASE[case]
    row = {"bench": BENCH, "subject": subject, "case": case, "cpus": cpus, "msg_bytes": size}
    base = {"bench": BENCH, "subject": "pyzmq-ipc", "case": bcase, "cpus": cpus,
            "msg_bytes": size}
    ratio_of = "p50_ns" if case.startswith("rtt") else "ops_per_s"
    mine, theirs, ratios = [], [], []
    for r in range(rounds):
        order = ["mine", "theirs"] if r % 2 == 0 else ["theirs", "mine"]
        got = {}
        for side in order:
            if side == "theirs" and skip_zmq:
                got[side] = (None, skip_zmq)
                continue
            subj, c = (subject, case) if side == "mine" else ("pyzmq-ipc", bcase)
            got[side] = sample(subj, c, cpus, size, iters, env)
        m, why = got["mine"]
        if m is None:
            emit(dict(row, skipped=True, reason=why), as_json)
            return 1
        mine.append(m)
        t, twhy = got["theirs"]
        if t is not None:
            theirs.append(t)
            ratios.append(m[ratio_of] / t[ratio_of])
    key = (base["subject"], bcase, cpus, size)
    if key not in emitted:
        emitted.add(key)
        if theirs:
            emit(dict(base, iters=iters, **row_median(theirs), rounds=len(theirs)), as_json)
        else:
            emit(dict(base, skipped=True, reason=twhy), as_json)
    out = dict(row, iters=iters, **row_median(mine), rounds=len(mine), baseline="pyzmq-ipc",
               baseline_case=bcase, ratio_of=ratio_of)
    if ratios:
        out.update(ratio=round(median(ratios), 3), ratio_min=round(min(ratios), 3),
                   ratio_max=round(max(ratios), 3),
                   baseline_figure=round(median([t[ratio_of] for t in theirs]), 2))
    else:
        out["ratio"] = None
    emit(out, as_json)
    return 0


def calls(build):
    """--calls: what one call of the Python layer costs, in one process with no peer (a ring
    never empty or full, so nothing waits): the minimum over 5 runs of 50000 calls, beside
    the bare ctypes call of the C function (declared with argtypes, as _ffi declares it)."""
    import ctypes
    import abd
    n, runs, size = 50000, 5, 64
    d = tempfile.mkdtemp(prefix="abd-pybench-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                         else None)
    try:
        pub = abd.publish("bench.calls", dir=d, role="consumer", slot_size=size,
                          capacity=1 << 16, single_producer=True, single_consumer=True)
        sub = abd.open("bench.calls", 5, dir=d, role="producer")
        msg, buf = bytes(size), bytearray(size)
        lib = abd.lib
        hp, hc, cbuf = sub._h, pub._h, pub._buf

        def fill():
            for _ in range(n):
                sub.try_push(msg)

        def drain():
            while pub.try_pop() is not None:
                pass

        def timed(before, loop):
            best = None
            for _ in range(runs):
                before()
                t0 = time.perf_counter_ns()
                loop()
                ns = (time.perf_counter_ns() - t0) / n
                best = ns if best is None else min(best, ns)
            return best

        def loop(f, *args):
            def run():
                for _ in range(n):
                    f(*args)
            return run
        rows = [
            ("push(bytes)", timed(drain, loop(sub.push, msg))),
            ("try_push(bytes)", timed(drain, loop(sub.try_push, msg))),
            ("ctypes abd_service_try_push", timed(drain, loop(lib.abd_service_try_push, hp,
                                                               msg, size))),
            ("pop() -> bytes", timed(fill, loop(pub.pop))),
            ("try_pop() -> bytes", timed(fill, loop(pub.try_pop))),
            ("pop_into(bytearray)", timed(fill, loop(pub.pop_into, buf))),
            ("ctypes abd_service_try_pop", timed(fill, loop(lib.abd_service_try_pop, hc, cbuf,
                                                             size))),
        ]
        for what, ns in rows:
            print(f"{what:<32} {ns:7.0f} ns", flush=True)
        sub.close()
        pub.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def have_zmq(python):
    return subprocess.run([python, "-c", "import zmq"], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("cases", nargs="*", metavar="CASE")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    ap.add_argument("--iters", type=int, help="timed iterations (messages) per sample")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (1..32, default 5)")
    ap.add_argument("--cpus", default="split", help="split, shared or split,shared")
    ap.add_argument("--build", default=os.environ.get("ABD_BUILD", os.path.join(ROOT, "build")))
    ap.add_argument("--calls", action="store_true",
                    help="print what one call of the Python layer costs (one process) and exit")
    ap.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        subject, case, role, d, size, iters, warm, cpu = a.worker
        worker(subject, case, role, d, int(size), int(iters), int(warm), int(cpu))
        return 0
    if a.calls:
        env = env_for(a.build)
        if not os.environ.get("ABD_LIBRARY"):
            if not env.get("ABD_LIBRARY"):
                print(f"python-bench: no libabd_runtime in {a.build}/runtime", file=sys.stderr)
                return 2
            os.execve(sys.executable, [sys.executable] + sys.argv, env)  # the tree's package
        sys.path.insert(0, os.path.join(ROOT, "python"))
        calls(a.build)
        return 0
    if not 1 <= a.rounds <= 32:
        print("python-bench: --rounds takes 1..32", file=sys.stderr)
        return 2
    modes = [m for m in a.cpus.split(",") if m]
    if not modes or any(m not in ("split", "shared") for m in modes):
        print("python-bench: --cpus takes split, shared or both", file=sys.stderr)
        return 2
    unknown = [c for c in a.cases if c not in BASE_CASE]
    if unknown:
        print(f"python-bench: unknown case {unknown[0]} ({', '.join(BASE_CASE)})",
              file=sys.stderr)
        return 2
    env = env_for(a.build)
    skip_all = None
    if not env.get("ABD_LIBRARY"):
        # the package would find an installed library: say which one is measured
        skip_all = f"no libabd_runtime in {a.build}/runtime (build first, or set ABD_LIBRARY)"
    # pyzmq: this interpreter's, else Debian's python3 (a pyenv or venv python may lack it)
    skip_zmq = None
    if not have_zmq(sys.executable):
        if os.path.exists("/usr/bin/python3") and have_zmq("/usr/bin/python3") and \
                os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        skip_zmq = ("pyzmq is not installed (Debian's python3-zmq; ci/bootstrap installs it "
                    "with ABD_BOOTSTRAP_PEERS=1)")
        print(f"python-bench: {skip_zmq}: the pyzmq rows are skipped", file=sys.stderr)
    emitted = set()
    failed = 0
    for cpus in modes:
        for subject, case, size in ROWS:
            if a.cases and case not in a.cases:
                continue
            iters = a.iters or ITERS[case][1 if a.quick else 0]
            if skip_all:
                emit({"bench": BENCH, "subject": subject, "case": case, "cpus": cpus,
                      "msg_bytes": size, "skipped": True, "reason": skip_all}, a.json)
                continue
            failed |= run_row(subject, case, size, cpus, iters, a.rounds, env, emitted,
                              a.json, skip_zmq)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
