#!/usr/bin/env python3
"""Count every TAP subtest that meson recorded (test x profile) and print the closing line.

usage: tap-summary.py BUILD_DIR|TESTLOG_JSON [LABEL]
Reads BUILD_DIR/meson-logs/testlog.json, or a file in its format (ci/vm writes one per kernel:
its last line is "LABEL: N passed, ..."). A test executable that produced no TAP at all (it
crashed before printing, or timed out) counts as one failure, so nothing disappears."""
import json
import os
import re
import sys

build = sys.argv[1]
label = sys.argv[2] if len(sys.argv) > 2 else ""
passed = failed = skipped = 0
failures = []
retried = []
todo = []
skip_reasons = {}
path = build if os.path.isfile(build) else f"{build}/meson-logs/testlog.json"
with open(path) as f:
    for line in f:
        t = json.loads(line)
        out = t.get("stdout") or ""
        for first in t.get("first_failures") or []:  # ci/vm: failed, then ran again
            retried.append(f"{t['name']}: {first.strip()}")
        seen = 0
        for l in out.splitlines():
            m = re.match(r"^(not ok|ok)\b\s*\d*\s*-?\s*(.*)$", l)
            if not m:
                continue
            seen += 1
            desc = m.group(2)
            if m.group(1) == "not ok" and "# TODO" in desc:  # an expected failure (TAP)
                todo.append(f"{t['name']}: {desc.strip()}")
            elif "# SKIP" in desc or "# skip" in desc:
                skipped += 1
                reason = desc.split("#", 1)[1].strip()
                skip_reasons.setdefault(reason, 0)
                skip_reasons[reason] += 1
            elif m.group(1) == "ok":
                passed += 1
            else:
                failed += 1
                failures.append(f"{t['name']}: {desc.strip()}")
        if seen == 0:
            if t.get("result") in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif t.get("result") == "SKIP":
                skipped += 1
            else:
                failed += 1
                failures.append(f"{t['name']}: {t.get('result')} with no TAP output")
        elif t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL") and not any(
                f.startswith(t["name"] + ":") for f in failures):
            failed += 1
            failures.append(f"{t['name']}: {t.get('result')} (exit code {t.get('returncode')})")

for reason, n in sorted(skip_reasons.items()):
    print(f"skipped {n}x: {reason}")
for f in failures:
    print(f"FAILED: {f}")
for r in retried:
    print(f"FAILED FIRST, counted from a second run: {r}")
for r in todo:
    print(f"EXPECTED FAILURE, not counted: {r}")
prefix = f"{label}: " if label else ""
notes = ([f"{len(retried)} failed first, counted from a second run"] if retried else []) + \
    ([f"{len(todo)} expected failures not counted"] if todo else [])
suffix = f" ({'; '.join(notes)})" if notes else ""
print(f"{prefix}{passed} passed, {failed} failed, {skipped} skipped{suffix}")
sys.exit(1 if failed else 0)
