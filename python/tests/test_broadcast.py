# SPDX-License-Identifier: MIT
"""Broadcast services from Python (abd.publish_broadcast; docs/python.md): every subscriber
gets every message in order, by copy (pop) and in place (peek); a Python subscriber reads the
C camera example's frames in place; the "overwrite" policy counts what a lagging subscriber
lost; a loan left unsent is given back and never delivered. Real processes throughout."""
import errno
import os
import re
import struct
import subprocess
import sys
import time

import pytest
from conftest import BUILD, LONG, ROOT, SRC

import abd

# A subscriber process: opens NAME (argv[1]) with argv[2] ("pop" or "peek"), says "ready",
# reads stdin up to a "go" line when argv[3] is "wait", then takes every message until the
# publisher left and prints them (hex) and its lost count.
SUBSCRIBER = r"""
import sys, abd
name, how, wait = sys.argv[1], sys.argv[2], sys.argv[3]
sub = abd.open(name, 10, role="consumer")
print("ready", flush=True)
if wait == "wait":
    sys.stdin.readline()
got = []
while True:
    try:
        if how == "pop":
            got.append(sub.pop(10))
        else:
            with sub.peek(10) as msg:
                got.append(bytes(msg.view))
                view = msg.view
            try:
                view[0]
                print("view alive after release", flush=True)
            except (ValueError, IndexError):
                pass
    except BrokenPipeError:
        break
print("lost", sub.lost)
print("got", " ".join(m.hex() for m in got), flush=True)
sub.close()
"""


def _subscriber(regdir, name, how, wait=False):
    env = dict(os.environ, ABD_REGISTRY=regdir, PYTHONPATH=SRC)
    p = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, name, how,
                          "wait" if wait else "now"], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p


def _ready(p):
    line = p.stdout.readline()
    assert line == "ready\n", f"subscriber: {line}{p.communicate(timeout=LONG)[0]}"


def _wait_subscribers(pub, n):
    """Serve the openers' handshakes (the no-ptrace profile's path: the publisher's reactor
    answers them) until n subscribed, before waiting for their "ready"."""
    deadline = time.monotonic() + LONG
    while pub.stats()["consumers"] < n:
        assert time.monotonic() < deadline, "the subscribers did not come"
        pub.run_once(0.01)


def _result(p):
    out, _ = p.communicate(timeout=LONG * 3)
    assert p.returncode == 0, out
    assert "view alive" not in out, out
    lines = dict(line.split(" ", 1) if " " in line else (line, "")
                 for line in out.splitlines())
    got = [bytes.fromhex(h) for h in lines["got"].split()]
    return got, int(lines["lost"])


def test_every_subscriber_gets_every_message_in_order(regdir):
    # capacity 4 and the "block" policy: the publisher runs ahead by at most 4 messages, so
    # a subscriber that never released a peeked message would stall it (peek: EBUSY)
    pub = abd.publish_broadcast("py.bcast.order", dir=regdir, subscribers=2, capacity=4,
                                slot_size=64, policy="block")
    assert pub.kind == "broadcast" and pub.is_publisher
    subs = [_subscriber(regdir, "py.bcast.order", how) for how in ("pop", "peek")]
    _wait_subscribers(pub, 2)
    for p in subs:
        _ready(p)
    want = []
    for i in range(60):
        m = struct.pack("<Q", i) + bytes([i]) * (i % 40)
        want.append(m)
        if i % 2:
            pub.push(m, timeout=LONG)
        else:
            with pub.loan(len(m), timeout=LONG) as buf:
                buf[:len(m)] = m
                buf.send(len(m))
    pub.close()
    for p in subs:
        got, lost = _result(p)
        assert got == want
        assert lost == 0


def test_a_python_subscriber_reads_the_c_camera_frames_in_place(regdir):
    cam = os.path.join(BUILD, "tools", "examples", "camera")
    if not os.access(cam, os.X_OK):
        pytest.fail(f"{cam} is not built")
    env = dict(os.environ, ABD_REGISTRY=regdir)
    p = subprocess.Popen([cam, "pub", "py.camera", "6", "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        sub = abd.open("py.camera", LONG, dir=regdir, role="consumer")
        assert sub.kind == "broadcast" and not sub.is_publisher
        seqs = []
        while True:
            try:
                msg = sub.peek(LONG)
            except BrokenPipeError:
                break
            with msg:
                v = msg.view
                assert len(v) == 4 << 20 and v.readonly
                seq, w, h = struct.unpack_from("<QII", v)
                assert (w, h) == (1024, 1024)
                # the frame's pixels, one byte per page, read in the shared pool
                assert all(v[page * 4096] == (seq * 31 + page) & 0xff
                           for page in range(1, 1024))
                seqs.append(seq)
        assert seqs == sorted(seqs) and seqs, seqs
        assert len(seqs) + sub.lost == 6
        sub.close()
    finally:
        out, _ = p.communicate(timeout=LONG * 3)
    assert p.returncode == 0, out


def test_the_overwrite_policy_reports_what_a_lagging_subscriber_lost(regdir):
    pub = abd.publish_broadcast("py.bcast.over", dir=regdir, subscribers=1, capacity=4,
                                slot_size=16, policy="overwrite")
    p = _subscriber(regdir, "py.bcast.over", "pop", wait=True)
    _wait_subscribers(pub, 1)
    _ready(p)
    for i in range(20):  # never waits: the subscriber reads nothing until "go"
        pub.push(struct.pack("<Q", i), timeout=0)
    pub.close()
    p.stdin.write("go\n")
    p.stdin.flush()
    got, lost = _result(p)
    seqs = [struct.unpack("<Q", m)[0] for m in got]
    assert seqs == list(range(20 - len(seqs), 20)) and len(seqs) <= 4, seqs
    assert lost == 20 - len(seqs)


def test_a_loan_left_unsent_is_given_back_and_not_delivered(regdir):
    pub = abd.publish_broadcast("py.bcast.loan", dir=regdir, subscribers=1, capacity=4,
                                slot_size=32)
    p = _subscriber(regdir, "py.bcast.loan", "pop")
    _wait_subscribers(pub, 1)
    _ready(p)
    with pub.loan(16, timeout=LONG) as buf:
        buf[:5] = b"never"
        view = buf.view
    with pytest.raises(ValueError):  # the view went with the loan
        view[0] = 1
    with pytest.raises(ValueError):  # not a loan any more
        buf.send(5)
    pub.push(b"after", timeout=LONG)
    with pub.loan(16, timeout=LONG) as buf:  # the one loan is free again
        buf[:4] = b"sent"
        buf.send(4)
    with pytest.raises(ValueError):
        buf.view[0]
    pub.close()
    got, lost = _result(p)
    assert got == [b"after", b"sent"]
    assert lost == 0


def test_broadcast_errors_are_oserrors_with_errno(regdir):
    with pytest.raises(OSError) as e:
        abd.publish_broadcast("py.bcast.bad", dir=regdir, capacity=4, history=4)
    assert e.value.errno == errno.EINVAL  #: history >= capacity
    with pytest.raises(ValueError):
        abd.publish_broadcast("py.bcast.bad", dir=regdir, policy="drop")
    with abd.publish_broadcast("py.bcast.ok", dir=regdir, capacity=4, slot_size=16) as pub:
        with pytest.raises(OSError) as e:
            pub.loan(17)
        assert e.value.errno == errno.EMSGSIZE
        with pytest.raises(PermissionError):
            pub.pop(0)
        with pub.loan(8) as buf:
            with pytest.raises(OSError) as e:
                pub.loan(8)
            assert e.value.errno == errno.EBUSY  # one loan at a time
            buf.send(0)


def _doc_blocks():
    """The ```python blocks of docs/python.md whose first line is "# FILE.py: ...", by FILE."""
    with open(os.path.join(ROOT, "docs", "python.md")) as f:
        text = f.read()
    return {m.group(2): m.group(1)
            for m in re.finditer(r"```python\n(# (\w+\.py):.*?)```", text, re.S)}


def test_the_broadcast_example_of_docs_python_md_runs(regdir, tmp_path):
    blocks = _doc_blocks()
    for f in ("bcast_pub.py", "bcast_sub.py"):
        assert f in blocks, f"docs/python.md has no block starting with '# {f}:'"
        (tmp_path / f).write_text(blocks[f])
    env = dict(os.environ, ABD_REGISTRY=regdir, PYTHONPATH=SRC)
    run = [subprocess.Popen([sys.executable, f], env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for f in ("bcast_sub.py", "bcast_sub.py", "bcast_pub.py")]
    outs = [p.communicate(timeout=LONG * 3) for p in run]
    for p, (out, _) in zip(run, outs):
        assert p.returncode == 0, out
    for out, _ in outs[:2]:
        assert out.strip() == "100 readings, 0 lost", out
