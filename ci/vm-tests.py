#!/usr/bin/env python3
"""The test side of ci/vm: what the guest runs, and what comes back from it.

usage: vm-tests.py plan BUILD_DIR PROFILE       the guest's test list (sh, sourced by ci/vm-init)
       vm-tests.py collect RESULTS_LOG OUT_JSON [MANIFEST]
                                                 guest output -> a meson-style testlog.json;
                                                 with MANIFEST, its [[tcg]] entries (a guest
                                                 without KVM) turn the failures they match into
                                                 TAP "# TODO" lines, listed but not counted
       vm-tests.py probes RESULTS_LOG OUT_JSON   the guest's `abdctl probe --json` per profile

The plan is meson's own list (meson-info/intro-tests.json): every test of the suite named
PROFILE, with its command, working directory, environment and timeout, except those that need
the build machine rather than the kernel (headers: the compiler). The guest prints each test
between "@@ABD-BEGIN name" and "@@ABD-END name rc" lines on its second serial port."""
import json
import re
import shlex
import sys
import tomllib

# Suites that test the build machine, not the kernel: not run in the guest.
HOST_ONLY = {"headers"}


def plan(build, profile, timeout_mult):
    with open(f"{build}/meson-info/intro-tests.json") as f:
        tests = json.load(f)
    for t in tests:
        suites = {s.split(":")[-1] for s in t["suite"]}  # "abd:native" -> "native"
        if profile not in suites or HOST_ONLY & suites:
            continue
        env = [f"{k}={v}" for k, v in sorted((t.get("env") or {}).items())]
        timeout = int((t.get("timeout") or 30) * timeout_mult)
        cwd = t.get("workdir") or build
        words = [t["name"], str(timeout), cwd] + env + ["--"] + t["cmd"]
        print("run_test " + " ".join(shlex.quote(w) for w in words))


def sections(path):
    """(kind, name, rc, stdout, stderr) for each framed section of the guest's output."""
    cur = None
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\r\n")
            if line.startswith("@@ABD-BEGIN "):
                cur = {"kind": "test", "name": line.split(" ", 1)[1], "out": [], "err": []}
                stream = "out"
            elif line.startswith("@@ABD-PROBE "):
                cur = {"kind": "probe", "name": line.split(" ", 1)[1], "out": [], "err": []}
                stream = "out"
            elif line == "@@ABD-STDERR" and cur:
                stream = "err"
            elif line.startswith("@@ABD-END ") and cur:
                parts = line.split(" ")
                rc = int(parts[2]) if len(parts) > 2 and parts[2].lstrip("-").isdigit() else -1
                yield cur["kind"], cur["name"], rc, "\n".join(cur["out"]), "\n".join(cur["err"])
                cur = None
            elif cur:
                cur[stream].append(line)
    if cur:  # the guest died inside this section
        yield cur["kind"], cur["name"], None, "\n".join(cur["out"]), "\n".join(cur["err"])


def tcg_rules(manifest):
    if not manifest:
        return []
    with open(manifest, "rb") as f:
        return [(re.compile(r["match"]), re.compile(r.get("tests", "")), r["why"])
                for r in tomllib.load(f).get("tcg", [])]


def known(rules, name, lines):
    """Failures a [[tcg]] rule matches become TAP TODO (expected) failures."""
    out = []
    for l in lines:
        m = re.match(r"^not ok\b\s*\d*\s*-?\s*(.*)$", l)
        if m and "# TODO" not in l:
            for rx, tests, why in rules:
                if rx.search(m.group(1)) and tests.search(name):
                    l = f"{l} # TODO under TCG: {why}"
                    break
        out.append(l)
    return out


def collect(results, out, manifest=None):
    """One entry per test; a NAME#retry section replaces NAME's, which is kept as
    "first_failures" (the TAP lines that failed the first time)."""
    rules = tcg_rules(manifest)
    tests = {}
    for kind, name, rc, stdout, stderr in sections(results):
        if kind != "test":
            continue
        lines = known(rules, name.removesuffix("#retry"), stdout.splitlines())
        stdout = "\n".join(lines)
        tap_failed = any((l.startswith("not ok") and "# TODO" not in l) or
                         l.startswith("Bail out!") for l in lines)
        # exit 1 from failures that are all expected ones: the program passed
        if rc == 1 and not tap_failed and any(l.startswith("not ok") for l in lines):
            rc = 0
        if rc is None:
            result = "TIMEOUT"  # the guest stopped (hang or crash) during this test
        elif rc in (124, 137, 143):
            result = "TIMEOUT"  # killed by the guest's per-test timeout
        elif rc == 0 and not tap_failed:
            result = "OK"
        else:
            result = "FAIL"
        entry = {"name": name, "result": result, "returncode": rc, "stdout": stdout,
                 "stderr": stderr}
        if name.endswith("#retry") and name[:-6] in tests:
            first = tests[name[:-6]]
            if first["result"] == "OK":
                continue  # its only failures were expected ones: the first run stands
            entry["name"] = first["name"]
            entry["first_failures"] = [l for l in first["stdout"].splitlines()
                                       if l.startswith("not ok") and "# TODO" not in l] or \
                [f"{first['result']} (exit code {first['returncode']})"]
            tests[first["name"]] = entry
        else:
            tests[name] = entry
    with open(out, "w") as o:
        for entry in tests.values():
            o.write(json.dumps(entry) + "\n")
    return len(tests)


def probes(results, out):
    found = {}
    for kind, name, rc, stdout, stderr in sections(results):
        if kind != "probe":
            continue
        try:
            found[name] = json.loads(stdout)
        except ValueError:
            found[name] = {"error": f"no JSON from abdctl probe (rc {rc}): {stdout} {stderr}"}
    with open(out, "w") as o:
        json.dump(found, o, indent=1, sort_keys=True)
    return len(found)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "plan":
        plan(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 1.0)
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "collect":
        print(collect(*sys.argv[2:5]))
    elif len(sys.argv) == 4 and sys.argv[1] == "probes":
        print(probes(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
