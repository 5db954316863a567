# SPDX-License-Identifier: MIT
"""Request-response services from Python (abd.publish_rpc, Service.take/reply/reply_error,
Service.call; docs/python.md): a Python client of a Python server and of the C example server
(tools/examples/rpc-calc), the server's errors, a server that dies while a call waits
(BrokenPipeError, EPIPE) and an unanswered call (TimeoutError, ETIMEDOUT). Real processes."""
import errno
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import BUILD, LONG, ROOT, SRC

import abd

# A Python server process: publishes NAME (argv[1]) and, by argv[2]:
#   echo N   answers N requests: b"bad" with EINVAL, any other with b"echo:" + request
#   silent   takes one request, never answers it, leaves after 5 s
#   die      takes one request and is killed (SIGKILL) before answering it
SERVER = r"""
import errno, os, signal, sys, time, abd
name, mode = sys.argv[1], sys.argv[2]
srv = abd.publish_rpc(name, slot_size=64, response_size=128, in_flight=4, capacity=16)
assert srv.kind == "rpc" and srv.is_publisher
print("serving", flush=True)
if mode == "echo":
    for _ in range(int(sys.argv[3])):
        req, token = srv.take(30)
        if req == b"bad":
            srv.reply_error(token, errno.EINVAL)
        else:
            srv.reply(token, b"echo:" + req)
else:
    req, token = srv.take(30)
    print("took", req.decode(), flush=True)
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)
srv.close()
"""

# A Python client process: calls NAME (argv[1]) argv[2] times, checks each answer, and one
# request the server refuses; prints "ok".
CLIENT = r"""
import errno, sys, abd
name, n = sys.argv[1], int(sys.argv[2])
cli = abd.open(name, 10)
assert cli.kind == "rpc" and not cli.is_publisher
for i in range(n):
    req = b"%d" % i * (i % 5 + 1)
    assert cli.call(req, timeout=10) == b"echo:" + req, i
# an answer far longer than a request slot: whole all the same
assert cli.call(b"big", timeout=10) == b"y" * 4000
try:
    cli.call(b"bad", timeout=10)
    raise SystemExit("the refused call returned")
except OSError as e:
    assert e.errno == errno.EINVAL, e
cli.close()
print("ok", flush=True)
"""


def _python(regdir, code, *args):
    env = dict(os.environ, ABD_REGISTRY=regdir, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _line(p, want):
    line = p.stdout.readline()
    assert line.startswith(want), f"{line}{p.communicate(timeout=LONG)[0]}"
    return line


def _done(p):
    out, _ = p.communicate(timeout=LONG * 3)
    return p.returncode, out


def test_a_python_client_calls_a_python_server(regdir):
    srv = abd.publish_rpc("py.rpc.echo", dir=regdir, slot_size=64, response_size=4096,
                          in_flight=4)
    assert srv.kind == "rpc"
    cli = _python(regdir, CLIENT, "py.rpc.echo", "40")
    try:
        for _ in range(42):  # take serves the client's open (the reactor runs in the wait)
            req, token = srv.take(LONG)
            if req == b"bad":
                srv.reply_error(token, errno.EINVAL)
            elif req == b"big":
                srv.reply(token, b"y" * 4000)
            else:
                srv.reply(token, b"echo:" + req)
        with pytest.raises(OSError) as e:  # answered already
            srv.reply(token, b"again")
        assert e.value.errno == errno.ESTALE
    finally:
        rc, out = _done(cli)
        srv.close()
    assert rc == 0 and out.endswith("ok\n"), out


def test_a_python_client_calls_the_c_example_server(regdir):
    calc = os.path.join(BUILD, "tools", "examples", "rpc-calc")
    if not os.access(calc, os.X_OK):
        pytest.fail(f"{calc} is not built")
    env = dict(os.environ, ABD_REGISTRY=regdir)
    srv = subprocess.Popen([calc, "serve", "py.rpc.calc", "20"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _line(srv, "serving")
        with abd.open("py.rpc.calc", LONG, dir=regdir) as cli:
            assert cli.kind == "rpc"
            for i in range(20):
                assert cli.call(b"%d+%d" % (i, 1000 * i), timeout=LONG) == b"%d" % (1001 * i)
                if i == 3:
                    with pytest.raises(OSError) as e:  # reply_error(-EINVAL): not counted
                        cli.call(b"three plus four", timeout=LONG)
                    assert e.value.errno == errno.EINVAL
            # 20 answered: the server withdrew; a call now finds nobody
            with pytest.raises(BrokenPipeError):
                cli.call(b"1+1", timeout=LONG)
    finally:
        rc, out = _done(srv)
    assert rc == 0, out


def test_a_server_that_dies_fails_the_waiting_call_with_epipe(regdir):
    srv = _python(regdir, SERVER, "py.rpc.die", "die")
    try:
        _line(srv, "serving")
        with abd.open("py.rpc.die", LONG, dir=regdir) as cli:
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                cli.call(b"last words", timeout=LONG * 3)
            assert e.value.errno == errno.EPIPE
            assert time.monotonic() - t0 < LONG  # at once, not at the deadline
    finally:
        rc, out = _done(srv)
    assert rc == -9 and "took last words" in out, out


def test_an_unanswered_call_times_out(regdir):
    srv = _python(regdir, SERVER, "py.rpc.silent", "silent")
    try:
        _line(srv, "serving")
        with abd.open("py.rpc.silent", LONG, dir=regdir) as cli:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError) as e:
                cli.call(b"anyone?", timeout=0.5)
            assert e.value.errno == errno.ETIMEDOUT
            assert 0.4 < time.monotonic() - t0 < 4.5  # the server stays 5 s
    finally:
        rc, out = _done(srv)
    assert rc == 0 and "took anyone?" in out, out


def test_rpc_roles_and_errors(regdir):
    with pytest.raises(OSError) as e:
        abd.publish_rpc("py.rpc.bad", dir=regdir, in_flight=65)
    assert e.value.errno == errno.EINVAL
    with abd.publish_rpc("py.rpc.roles", dir=regdir, slot_size=16) as srv:
        assert srv.try_take() is None
        with pytest.raises(BlockingIOError):
            srv.take(0)
        with pytest.raises(PermissionError):  # a server does not call
            srv.call(b"x", timeout=0)
        with pytest.raises(PermissionError):  # nor push
            srv.push(b"x", timeout=0)


@pytest.mark.parametrize("server", ["python", "c"])
def test_the_rpc_example_of_docs_python_md_runs(regdir, tmp_path, server):
    with open(os.path.join(ROOT, "docs", "python.md")) as f:
        text = f.read()
    blocks = {m.group(2): m.group(1)
              for m in re.finditer(r"```python\n(# (\w+\.py):.*?)```", text, re.S)}
    for f in ("calc_server.py", "calc_client.py"):
        assert f in blocks, f"docs/python.md has no block starting with '# {f}:'"
        (tmp_path / f).write_text(blocks[f])
    env = dict(os.environ, ABD_REGISTRY=regdir, PYTHONPATH=SRC)
    if server == "python":
        argv = [sys.executable, "calc_server.py"]
    else:
        argv = [os.path.join(BUILD, "tools", "examples", "rpc-calc"), "serve", "demo.calc", "99"]
        if not os.access(argv[0], os.X_OK):
            pytest.fail(f"{argv[0]} is not built")
    srv = subprocess.Popen(argv, env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    cli = subprocess.Popen([sys.executable, "calc_client.py"], env=env, cwd=tmp_path,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    (out_c, _), (out_s, _) = cli.communicate(timeout=LONG * 3), srv.communicate(timeout=LONG * 3)
    assert srv.returncode == 0, out_s
    assert cli.returncode == 0 and out_c.strip() == "the server left", out_c
