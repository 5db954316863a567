# SPDX-License-Identifier: MIT
"""Typed services across languages: Python computes the type identity as C's
abd_service_type_hash and C++'s abd::message_type<T> do, and a Python program exchanges
"example.sample" structs with the C example (tools/examples/typed-ring.c) and the C++ one
(tools/examples/pubsub.cpp, typed-pub / typed-sub) in both directions, as real processes.
docs/python.md's typed example is run as written against both."""
import ctypes
import errno
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import BUILD, LONG, ROOT, SRC

import abd
from test_ffi import _compiler

LAYOUT = "u64 seq; f64 value; u32 sensor; u32 check"


class Sample(ctypes.Structure):  # typed-ring.c's struct sample, pubsub.cpp's sample
    abd_type_name = "example.sample"
    abd_type_layout = LAYOUT
    _fields_ = [("seq", ctypes.c_uint64), ("value", ctypes.c_double),
                ("sensor", ctypes.c_uint32), ("check", ctypes.c_uint32)]


# The same identity as a struct module format: a tuple per message.
SAMPLE_TUPLE = abd.MessageType("example.sample", LAYOUT, "=QdII")
# What typed-ring.c's sub-v2 expects: the same name, another layout.
SAMPLE_V2 = abd.MessageType("example.sample", "u64 seq; f64 value; u64 sensor", "=QdQ")


def _check(i):
    return (i * 2654435761) & 0xFFFFFFFF


def _sample_ok(s, i):
    """The sample the C and C++ examples send as number i, field by field (the value and
    sensor fields show the offsets agree, not only the first and last)."""
    seq, value, sensor, check = s if isinstance(s, tuple) else (s.seq, s.value, s.sensor,
                                                                 s.check)
    return (seq, value, sensor, check) == (i, i / 8, 7, _check(i))


def _peer(kind):
    """The example program of a peer language and its modes: (path, pub mode, sub mode,
    sub mode expecting another layout or None)."""
    ex = os.path.join(BUILD, "tools", "examples")
    if kind == "c":
        path = os.path.join(ex, "typed-ring")
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is not built")
        return path, "pub", "sub"
    path = os.path.join(ex, "pubsub-cxx")
    if not os.access(path, os.X_OK):
        pytest.skip("tools/examples/pubsub-cxx is not built here (it needs a C++ compiler "
                    "that takes -std=c++26: meson setup with CXX=clang++-22)")
    return path, "typed-pub", "typed-sub"


def _spawn(argv, regdir, **kw):
    env = dict(os.environ, ABD_REGISTRY=regdir, PYTHONPATH=SRC)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def _finish(p):
    try:
        out, _ = p.communicate(timeout=LONG * 3)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"{p.args} did not finish:\n{out}")
    return p.returncode, out


def _wait_up(p, regdir, service=None):
    """Wait until the Python process p is up (its interpreter started and loaded the library),
    and, given a service, until that service is published: the C and C++ examples wait 10 s
    for their peer, and an interpreter may take seconds to start on a loaded machine."""
    deadline = time.monotonic() + LONG
    while True:
        assert p.poll() is None, f"{p.args} exited early: {p.communicate()[0]}"
        assert time.monotonic() < deadline, f"{p.args} did not come up"
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                up = "libabd_runtime" in f.read()
        except OSError:
            up = False
        if up and (service is None or any(e.service == service for e in abd.list(regdir))):
            return
        time.sleep(0.02)


def _wait_consumer(svc, p):
    """A publisher serves its opener's handshake (the no-ptrace profile's path) from its
    reactor: run it until a consumer is there (the process p)."""
    deadline = time.monotonic() + LONG
    while svc.stats()["consumers"] == 0:
        assert p.poll() is None, f"{p.args} exited: {p.communicate()[0]}"
        assert time.monotonic() < deadline, "no consumer came"
        svc.run_once(0.01)


def test_type_hash_is_the_c_librarys(tmp_path):
    layouts = ["", LAYOUT, "u64 seq; f64 value; u64 sensor", "x", "ü8 größe; <T>::v",
               "a" * 1000]
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler to compute abd_service_type_hash with (set ABD_CC)")
    src = tmp_path / "hash.c"
    src.write_text('#include <abd/abd.h>\n#include <stdio.h>\nint main(int c, char **v) {\n'
                   'for (int i = 1; i < c; i++) printf("%llu\\n",\n'
                   '(unsigned long long)abd_service_type_hash(v[i]));\nreturn 0; }\n')
    exe = tmp_path / "hash"
    subprocess.run([cc, "-std=c11", "-Werror", "-I", os.path.join(ROOT, "include"),
                    "-I", os.path.join(BUILD, "include"), str(src), "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe), *layouts], check=True, capture_output=True).stdout.split()
    assert [int(x) for x in out] == [abd.type_hash(s) for s in layouts]
    assert abd.type_hash(LAYOUT.encode()) == abd.type_hash(LAYOUT)
    assert abd.type_hash(LAYOUT + "\0ignored") == abd.type_hash(LAYOUT)  # C stops at the NUL
    mt = abd.MessageType.of(Sample)
    assert (mt.name, mt.size, mt.hash) == ("example.sample", 24, abd.type_hash(LAYOUT))
    assert SAMPLE_TUPLE.size == 24 and SAMPLE_TUPLE.hash == mt.hash


def test_message_types_are_checked_where_they_are_made(regdir):
    with pytest.raises(ValueError):
        abd.MessageType("bad name", LAYOUT, "=Q")
    with pytest.raises(ValueError):
        abd.MessageType("x" * 65, LAYOUT, "=Q")
    with pytest.raises(TypeError):
        abd.MessageType("ok", LAYOUT, 24)

    class Bare(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint64)]
    with pytest.raises(TypeError):
        abd.publish("py.typed.bare", dir=regdir, type=Bare)
    with pytest.raises(ValueError):
        abd.publish("py.typed.both", dir=regdir, type=Sample, type_name="example.sample")
    with abd.publish("py.typed", dir=regdir, type=Sample) as pub, \
            abd.open("py.typed", 5, dir=regdir, type=SAMPLE_TUPLE, role="consumer") as sub:
        assert pub.type == sub.type == ("example.sample", 24, abd.type_hash(LAYOUT))
        assert pub.slot_size == 24  # slot_size 0: the type's size
        with pytest.raises(TypeError):
            pub.push((1, 2.0, 3, 4))  # a ctypes-typed handle takes a Sample
        with pytest.raises(OSError) as e:
            pub.push(b"x" * 23)
        assert e.value.errno == errno.EMSGSIZE
        pub.push(Sample(seq=1, value=1 / 8, sensor=7, check=_check(1)))
        pub.push(bytes(Sample(seq=2, value=2 / 8, sensor=7, check=_check(2))))
        assert _sample_ok(sub.pop(1), 1) and _sample_ok(sub.try_pop(), 2)
        assert sub.try_pop() is None
        into = Sample()
        pub.push(Sample(seq=3, value=3 / 8, sensor=7, check=_check(3)))
        assert sub.pop_into(into, 1) == 24 and _sample_ok(into, 3)
        with pytest.raises(OSError) as e:
            abd.open("py.typed", 0, dir=regdir, type=SAMPLE_V2)
        assert e.value.errno == errno.EPROTOTYPE


@pytest.mark.parametrize("peer", ["c", "cpp"])
def test_a_python_publisher_and_a_consumer_in_another_language(regdir, peer):
    exe, _, sub_mode = _peer(peer)
    n = 500
    with abd.publish("py.typed.to", dir=regdir, role="producer", type=Sample) as svc:
        p = _spawn([exe, sub_mode, "py.typed.to", str(n)], regdir)
        try:
            _wait_consumer(svc, p)
            for i in range(n):
                svc.push(Sample(seq=i, value=i / 8, sensor=7, check=_check(i)), LONG)
        except BaseException:
            p.kill()
            raise
    # leaving the block withdrew the service: the peer drains it, then sees EPIPE
    rc, out = _finish(p)
    assert rc == 0, f"{peer} consumer:\n{out}"
    assert re.search(rf"\b{n} samples, 0 out of order or corrupt", out), out


@pytest.mark.parametrize("peer", ["c", "cpp"])
@pytest.mark.parametrize("as_tuple", [False, True], ids=["ctypes", "struct"])
def test_a_publisher_in_another_language_and_a_python_consumer(regdir, peer, as_tuple):
    exe, pub_mode, _ = _peer(peer)
    n = 500
    p = _spawn([exe, pub_mode, "py.typed.from", str(n)], regdir)
    try:
        with abd.open("py.typed.from", LONG, dir=regdir, role="consumer",
                      type=SAMPLE_TUPLE if as_tuple else Sample) as svc:
            got = []
            while True:
                try:
                    got.append(svc.pop(LONG))
                except BrokenPipeError:
                    break  # the publisher left and everything it sent was read
    finally:
        rc, out = _finish(p)
    assert rc == 0, f"{peer} publisher:\n{out}"
    assert len(got) == n
    assert all(isinstance(s, tuple if as_tuple else Sample) for s in got)
    bad = [i for i, s in enumerate(got) if not _sample_ok(s, i)]
    assert not bad, f"samples {bad[:5]}... differ from what the {peer} publisher sent"


def test_another_layout_is_refused_with_eprototype_both_ways(regdir):
    exe, _, _ = _peer("c")
    # a Python publisher of example.sample; the C consumer that expects another layout
    with abd.publish("py.typed.v1", dir=regdir, role="producer", type=Sample):
        p = _spawn([exe, "sub-v2", "py.typed.v1"], regdir)
        rc, out = _finish(p)
        assert rc == 3 and "EPROTOTYPE" in out, out
    # a C publisher; a Python consumer with another layout, then with the right one
    p = _spawn([exe, "pub", "py.typed.v2", "10"], regdir)
    try:
        with pytest.raises(OSError) as e:
            abd.open("py.typed.v2", LONG, dir=regdir, role="consumer", type=SAMPLE_V2)
        assert e.value.errno == errno.EPROTOTYPE
        with abd.open("py.typed.v2", LONG, dir=regdir, role="consumer", type=Sample) as svc:
            assert _sample_ok(svc.pop(LONG), 0)
            with pytest.raises(OSError) as e:
                svc.pop_into(bytearray(8), LONG)  # too small for the type: it stays there
            assert e.value.errno == errno.EMSGSIZE
            assert _sample_ok(svc.pop(LONG), 1)
            while True:
                try:
                    svc.pop(LONG)
                except BrokenPipeError:
                    break
    finally:
        rc, out = _finish(p)
    assert rc == 0, out


# ---- docs/python.md's typed example, as written

def _doc_blocks():
    """The ```python blocks of docs/python.md whose first line is "# FILE.py: ...", by FILE."""
    text = open(os.path.join(ROOT, "docs", "python.md")).read()
    blocks = {}
    for m in re.finditer(r"```python\n(# (\w+\.py):.*?)```", text, re.S):
        blocks[m.group(2)] = m.group(1)
    return blocks


@pytest.mark.parametrize("peer", ["c", "cpp"])
def test_the_typed_example_of_docs_python_md_runs_with_c_and_cpp(regdir, tmp_path, peer):
    blocks = _doc_blocks()
    for f in ("sample.py", "typed_pub.py", "typed_sub.py"):
        assert f in blocks, f"docs/python.md has no block starting with '# {f}:'"
        (tmp_path / f).write_text(blocks[f])
    exe, pub_mode, sub_mode = _peer(peer)
    n = "1000"  # what the doc's publisher sends and its commands give the peers
    py = [sys.executable]
    # Python publisher -> peer consumer
    pub = _spawn(py + ["typed_pub.py"], regdir, cwd=tmp_path)
    _wait_up(pub, regdir, "example.samples")
    sub = _spawn([exe, sub_mode, "example.samples", n], regdir)
    (rs, out_s), (rp, out_p) = _finish(sub), _finish(pub)
    assert rp == 0, f"docs' typed_pub.py:\n{out_p}"
    assert rs == 0 and f"{n} samples, 0 out of order" in out_s, out_s
    # peer publisher -> Python consumer
    sub = _spawn(py + ["typed_sub.py"], regdir, cwd=tmp_path)
    _wait_up(sub, regdir)
    pub = _spawn([exe, pub_mode, "example.samples", n], regdir)
    (rs, out_s), (rp, out_p) = _finish(sub), _finish(pub)
    assert rp == 0, out_p
    assert rs == 0 and out_s.strip().endswith(f"{n} samples"), f"docs' typed_sub.py:\n{out_s}"


def test_the_typed_example_of_docs_python_md_runs_with_itself(regdir, tmp_path):
    blocks = _doc_blocks()
    for f in ("sample.py", "typed_pub.py", "typed_sub.py"):
        (tmp_path / f).write_text(blocks[f])
    sub = _spawn([sys.executable, "typed_sub.py"], regdir, cwd=tmp_path)
    pub = _spawn([sys.executable, "typed_pub.py"], regdir, cwd=tmp_path)
    (rs, out_s), (rp, out_p) = _finish(sub), _finish(pub)
    assert rp == 0, out_p
    assert rs == 0 and out_s.strip().endswith("1000 samples"), out_s


def test_an_awaiting_pop_of_a_typed_service_returns_the_type(regdir):
    import asyncio
    import abd.aio

    async def main():
        with abd.publish("py.typed.aio", dir=regdir, role="producer", type=Sample) as pub:
            svc = await abd.aio.open("py.typed.aio", LONG, dir=regdir, role="consumer",
                                     type=Sample)
            async with svc:
                asyncio.get_running_loop().call_later(
                    0.05, pub.push, Sample(seq=4, value=4 / 8, sensor=7, check=_check(4)))
                s = await svc.pop(LONG)
                assert isinstance(s, Sample) and _sample_ok(s, 4)
    asyncio.run(main())
