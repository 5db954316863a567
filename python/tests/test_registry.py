# SPDX-License-Identifier: MIT
"""list, info, watch and probe from Python, checked against abdctl and real processes."""
import json
import os
import signal
import subprocess

import pytest
from conftest import LONG, python_child

import abd

CHILD = """
import abd, sys, time
svc = abd.publish(sys.argv[1], dir=sys.argv[2])
print("published", flush=True)
time.sleep(60)
"""


def test_list_and_info_show_a_service_as_abdctl_does(regdir, abdctl):
    with abd.publish("py.listed", dir=regdir, capacity=64, slot_size=128, type_name="py.msg",
                     type_size=16, type_hash=0xabc):
        ents = abd.list(regdir)
        assert len(ents) == 1
        e = ents[0]
        assert (e.service, e.state, e.pid, e.uid) == ("py.listed", "alive", os.getpid(),
                                                      os.geteuid())
        assert e.trusted and e.name == f"py.listed.{e.instance}"
        ctl = json.loads(subprocess.run([abdctl, "list", "--json", "--dir", regdir],
                                        check=True, capture_output=True, text=True).stdout)
        assert [(c["name"], c["pid"], c["state"]) for c in ctl] == [(e.name, e.pid, e.state)]
        assert ctl[0]["meta"] == e.meta
        meta = abd.info("py.listed", regdir)[0].meta
        assert meta["abd.service"].startswith("ring/")
        assert (meta["abd.capacity"], meta["abd.slot_size"]) == ("64", "128")
        assert (meta["abd.type"], meta["abd.type_size"]) == ("py.msg", "16")
        assert int(meta["abd.type_hash"], 16) == 0xabc
    assert abd.list(regdir) == []
    with pytest.raises(FileNotFoundError):
        abd.info("py.listed", regdir)
    # a file that is not a record is listed as invalid with its reason, never followed
    open(os.path.join(regdir, "junk.0123"), "w").write("garbage")
    bad = abd.list(regdir, all=True)
    assert [(b.name, b.state) for b in bad] == [("junk.0123", "invalid")] and bad[0].reason


def test_watch_reports_added_died_and_removed(regdir):
    with abd.watch(regdir, pidfd=True) as w:
        assert w.read(0) == []
        child = python_child(CHILD, "py.watched", regdir, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"published\n"
            ev = w.read(LONG)
            assert [(x.type, x.entry.service, x.entry.pid) for x in ev] == \
                [("added", "py.watched", child.pid)]
            child.send_signal(signal.SIGKILL)
            child.wait()
            got = []
            while not any(x.type == "died" for x in got):
                more = w.read(LONG)
                assert more, f"no 'died' event within {LONG} s of the kill"
                got += more
            died = [x for x in got if x.type == "died"][0]
            assert died.entry.pid == child.pid and died.entry.state == "stale"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        svc = abd.publish("py.watched2", dir=regdir)
        assert [x.type for x in w.read(LONG)] == ["added"]
        svc.close()
        ev = w.read(LONG)
        assert [(x.type, x.entry.service) for x in ev] == [("removed", "py.watched2")]
        assert w.read(0.05) == []


def test_a_watch_of_one_service_ignores_the_others(regdir):
    with abd.watch(regdir, service="py.mine") as w:
        other = abd.publish("py.other", dir=regdir)
        mine = abd.publish("py.mine", dir=regdir)
        ev = w.read(LONG)
        assert [(x.type, x.entry.service) for x in ev] == [("added", "py.mine")]
        other.close()
        mine.close()


def test_probe_agrees_with_abdctl_probe(abdctl):
    ctl = json.loads(subprocess.run([abdctl, "probe", "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    p = abd.probe()
    for k in ("version", "backend", "fd_transfer", "wake", "ptrace_scope", "cap_sys_ptrace",
              "features"):
        assert p[k] == ctl[k], k
    assert set(p["errors"]) == {f for f, ok in p["features"].items() if not ok}
