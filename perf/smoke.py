#!/usr/bin/env python3
"""Smoke-runs every abd-perf family with --quick --json and checks the output contract:
exit 0, one JSON object per line with bench/subject, a figure or skipped+reason on each,
baseline/ratio_of/ratio on every abd-... row. No figure is judged: speed is not a test."""
import json
import subprocess
import sys

FIGURES = ("p50_ns", "p99_ns", "p999_ns", "ops_per_s", "cpu_ns")


def main(exe):
    families = [l.split()[0] for l in subprocess.run(
        [exe, "list"], check=True, capture_output=True, text=True).stdout.splitlines() if l.strip()]
    print(f"1..{len(families)}")
    failed = 0
    for n, fam in enumerate(families, 1):
        bad = 0
        run = subprocess.run([exe, "--quick", "--json", fam], capture_output=True, text=True)
        rows = 0
        for line in run.stdout.splitlines():
            rows += 1
            try:
                row = json.loads(line)
            except ValueError as e:
                print(f"# {fam}: not JSON ({e}): {line!r}")
                bad += 1
                continue
            problems = [k for k in ("bench", "subject") if k not in row]
            has_fig = any(k in row for k in FIGURES)
            if row.get("skipped"):
                if not row.get("reason") or has_fig:
                    problems.append("skipped row needs a reason and no figures")
            elif not has_fig:
                problems.append("no figure")
            if str(row.get("subject", "")).startswith("abd-"):
                problems += [k for k in ("baseline", "ratio_of", "ratio") if k not in row]
            if problems:
                print(f"# {fam}: {problems}: {line}")
                bad += 1
        if run.returncode != 0 or rows == 0:
            for l in run.stderr[-2000:].splitlines():
                print(f"# {l}")
            bad += 1
        print(f"{'not ok' if bad else 'ok'} {n} - {fam}: exit {run.returncode}, {rows} rows")
        failed += bad > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
