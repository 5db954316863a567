#!/usr/bin/env python3
"""Check a kernel's probe results and a test run's skips against the kernel's manifest.

usage: check.py MANIFEST PROBES_JSON TESTLOG_JSON [UNAME_R]
       check.py --self-test

MANIFEST is ci/kernels/KERNEL.toml: for each kernel profile, the probe features that must be
present (yes) and absent (no), every feature of the probe listed in one of the two, and
optionally how an absent one fails (errors: feature = "ENOSYS") and the paths abd must pick
(backend, fd_transfer, wake); [[skip]] entries name the
skip reasons that are expected on that kernel and why; [[tcg]] entries the failures that
ci/vm lists but does not count in a guest without KVM (ci/vm-tests.py collect). PROBES_JSON maps a profile to
`abdctl probe --json` as run in the guest (ci/vm-tests.py probes); TESTLOG_JSON is meson's
testlog format (ci/vm-tests.py collect).

It fails (exit 1, each disagreement on its own line) when a probe result differs from the
manifest, when the probe has a feature the manifest does not list, and when a test skipped
for a reason the manifest does not explain. A skip "profile P: FEATURE unavailable (...)" (the
harness's abd_test_require) is explained by FEATURE being in profile P's `no` list; any other
reason must match (re.search) the `match` of a [[skip]] entry. So a probe regression that
turns a feature off (and with it turns failures into skips) fails the run here."""
import json
import os
import re
import sys
import tempfile
import tomllib

REQUIRE = re.compile(r"^profile (\S+): (\S+) unavailable \(")
PATHS = ("backend", "fd_transfer", "wake")


def skips(testlog):
    """(test name, reason) of every skipped TAP line or skipped test program."""
    with open(testlog) as f:
        for line in f:
            t = json.loads(line)
            seen = False
            for l in (t.get("stdout") or "").splitlines():
                m = re.match(r"^(not ok|ok)\b", l)
                if not m:
                    continue
                seen = True
                m = re.search(r"#\s*skip\b:?\s*(.*)$", l, re.IGNORECASE)
                if m and m.group(1) is not None:
                    yield t["name"], m.group(1).strip()
            if not seen and t.get("result") == "SKIP":
                yield t["name"], "(the whole program skipped, no TAP)"


def check(manifest_path, probes_path, testlog_path, uname=""):
    with open(manifest_path, "rb") as f:
        man = tomllib.load(f)
    with open(probes_path) as f:
        probes = json.load(f)
    errors = []
    release = man.get("kernel", {}).get("release")
    if uname and release and not re.search(release, uname):
        errors.append(f"kernel: the guest runs {uname}, the manifest is for {release}")
    profiles = man.get("profile", {})
    for prof, want in profiles.items():
        got = probes.get(prof)
        if not isinstance(got, dict) or "features" not in got:
            errors.append(f"probe {prof}: no result ({(got or {}).get('error', 'not run')})")
            continue
        yes, no = set(want.get("yes", [])), set(want.get("no", []))
        for feat in sorted(yes & no):
            errors.append(f"manifest {prof}: {feat} is listed both yes and no")
        for feat, present in sorted(got["features"].items()):
            why = got.get("errors", {}).get(feat, "")
            if feat in yes and not present:
                errors.append(f"probe {prof}: {feat} is absent ({why}), the manifest says yes")
            elif feat in no and present:
                errors.append(f"probe {prof}: {feat} is present, the manifest says no")
            elif feat not in yes and feat not in no:
                errors.append(f"probe {prof}: {feat} ({'yes' if present else 'no'}) is not in "
                              "the manifest: add it to yes or no")
        for feat in sorted((yes | no) - set(got["features"])):
            errors.append(f"probe {prof}: the manifest names {feat}, the probe has no such feature")
        for feat, err in sorted(want.get("errors", {}).items()):
            if feat not in no:
                errors.append(f"manifest {prof}: errors names {feat}, which is not in no")
            elif feat in got["features"] and not got["features"][feat] and \
                    got.get("errors", {}).get(feat) != err:
                errors.append(f"probe {prof}: {feat} fails with {got.get('errors', {}).get(feat)}, "
                              f"the manifest says {err}")
        for key in PATHS:
            if key in want and got.get(key) != want[key]:
                errors.append(f"probe {prof}: {key} is {got.get(key)}, the manifest says {want[key]}")
    rules = []
    for i, s in enumerate(man.get("skip", []), 1):
        if not isinstance(s.get("match"), str) or not isinstance(s.get("why"), str):
            errors.append(f"manifest: [[skip]] entry {i} needs match and why (strings)")
            continue
        rules.append((re.compile(s["match"]), s.get("tests")))
    for i, s in enumerate(man.get("tcg", []), 1):
        if not isinstance(s.get("match"), str) or not isinstance(s.get("why"), str):
            errors.append(f"manifest: [[tcg]] entry {i} needs match and why (strings)")
    for name, reason in skips(testlog_path):
        m = REQUIRE.match(reason)
        if m and m.group(1) in profiles and m.group(2) in profiles[m.group(1)].get("no", []):
            continue
        if any(r.search(reason) and (tests is None or re.search(tests, name))
               for r, tests in rules):
            continue
        errors.append(f"skip not explained by the manifest: {name}: {reason}")
    return errors


def self_test():
    """The checker must catch what it is for: run it on made-up results."""
    man = """
[kernel]
release = '^6\\.1\\.'
[profile.native]
yes = ["io_uring", "pidfd_getfd"]
no = ["pidfs_ino"]
backend = "io_uring"
[profile.native.errors]
pidfs_ino = "ENOENT"
[[skip]]
match = "^epoll: no futex waits"
why = "structural"
"""
    probe = {"native": {"backend": "io_uring", "features": {"io_uring": True, "pidfd_getfd": True,
                                                             "pidfs_ino": False},
                        "errors": {"pidfs_ino": "ENOENT"}}}
    tap_ok = ("ok 1 - a::b\nok 2 - a::c # SKIP profile native: pidfs_ino unavailable (No such "
              "file or directory)\nok 3 - # SKIP epoll: no futex waits on this backend\n1..3\n")
    cases = [
        ("agreeing results pass", probe, tap_ok, "6.1.0-57-cloud-amd64", 0),
        ("a feature the manifest wants present, absent", {"native": dict(
            probe["native"], features=dict(probe["native"]["features"], pidfd_getfd=False))},
         tap_ok, "", 1),
        ("a feature the manifest wants absent, present", {"native": dict(
            probe["native"], features=dict(probe["native"]["features"], pidfs_ino=True))},
         tap_ok, "", 1),
        ("a probe feature the manifest does not list", {"native": dict(
            probe["native"], features=dict(probe["native"]["features"], kcmp=True))},
         tap_ok, "", 1),
        ("an absent feature failing another way", {"native": dict(
            probe["native"], errors={"pidfs_ino": "EPERM"})}, tap_ok, "", 1),
        ("another backend", {"native": dict(probe["native"], backend="epoll")}, tap_ok, "", 1),
        ("a skip for a feature the manifest says is present", probe,
         tap_ok + "ok 4 - a::d # SKIP profile native: pidfd_getfd unavailable (Operation not "
         "permitted)\n", "", 1),
        ("a skip with a reason the manifest does not know", probe,
         tap_ok + "ok 4 - a::d # SKIP needs root\n", "", 1),
        ("a missing probe", {}, tap_ok, "", 1),
        ("another kernel", probe, tap_ok, "5.10.0-46-cloud-amd64", 1),
    ]
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        mp, pp, tp = (os.path.join(d, n) for n in ("m.toml", "p.json", "t.json"))
        with open(mp, "w") as f:
            f.write(man)
        for i, (what, pr, tap, uname, want) in enumerate(cases, 1):
            with open(pp, "w") as f:
                json.dump(pr, f)
            with open(tp, "w") as f:
                f.write(json.dumps({"name": "x@native", "result": "OK", "stdout": tap}) + "\n")
            errs = check(mp, pp, tp, uname)
            ok = (1 if errs else 0) == want
            bad += not ok
            print(f"{'ok' if ok else 'not ok'} {i} - {what}: "
                  f"{'; '.join(errs) if errs else 'no disagreement'}")
    print(f"1..{len(cases)}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    errs = check(*sys.argv[1:5])
    name = os.path.basename(sys.argv[1])
    for e in errs:
        print(f"MANIFEST {name}: {e}")
    if not errs:
        print(f"manifest {name}: probes and skips agree")
    sys.exit(1 if errs else 0)
