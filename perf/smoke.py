#!/usr/bin/env python3
"""Smoke-runs every abd-perf family with --quick --json --rounds 2 and checks the output
contract: exit 0, one JSON object per line with bench/subject, a figure or skipped+reason on
each; on every abd-... row baseline/ratio_of/ratio, and on a measured one the interleaved
rounds: rounds = 2, ratio_min <= ratio <= ratio_max and the baseline's figure beside them.
Also that --rounds refuses a bad count. No figure is judged: speed is not a test.
    smoke.py ABD_PERF [PYTHON_BENCH BUILD]
With PYTHON_BENCH (perf/python-bench.py) the Python family runs too, with --iters 1000 (the
shape is what is checked), against BUILD's library; without pyzmq its pyzmq rows are skipped
with the reason, and the contract is the same."""
import json
import subprocess
import sys

FIGURES = ("p50_ns", "p99_ns", "p999_ns", "ops_per_s", "cpu_ns", "wakeups_per_s", "wakeups_per_msg")
ROUNDS = 2


def row_problems(row, baselines=frozenset()):
    """baselines: the (subject, case, cpus) that abd rows of the same run name as their
    baseline; an abd-... row that is one of them (e.g. herd-1c beside herd-4c) was measured in
    the rounds of that row and needs no baseline of its own."""
    problems = [k for k in ("bench", "subject") if k not in row]
    has_fig = any(k in row for k in FIGURES)
    if row.get("skipped"):
        if not row.get("reason") or has_fig:
            problems.append("skipped row needs a reason and no figures")
        return problems
    if not has_fig:
        problems.append("no figure")
    if not str(row.get("subject", "")).startswith("abd-"):
        return problems
    if "baseline" not in row and (row.get("subject"), row.get("case"), row.get("cpus")) in baselines:
        return problems if row.get("rounds") == ROUNDS else problems + [f"rounds {row.get('rounds')!r}"]
    problems += [k for k in ("baseline", "ratio_of", "ratio") if k not in row]
    if row.get("rounds") != ROUNDS:
        problems.append(f"rounds {row.get('rounds')!r}, not {ROUNDS}")
    if row.get("ratio") is not None:
        lo, mid, hi = row.get("ratio_min"), row.get("ratio"), row.get("ratio_max")
        if lo is None or hi is None or not lo <= mid <= hi:
            problems.append(f"ratio {mid} not within ratio_min {lo} .. ratio_max {hi}")
        if not row.get("baseline_figure", 0) > 0:
            problems.append("no baseline_figure beside the ratio")
    return problems


def main(exe, pybench=None, build=None):
    families = [l.split()[0] for l in subprocess.run(
        [exe, "list"], check=True, capture_output=True, text=True).stdout.splitlines() if l.strip()]
    commands = [[exe, "--quick", "--json", "--rounds", str(ROUNDS), fam] for fam in families]
    if pybench:
        families.append("python")
        commands.append([sys.executable, pybench, "--quick", "--json", "--rounds", str(ROUNDS),
                         "--iters", "1000", "--build", build])
    print(f"1..{len(families) + 1}")
    failed = 0
    for n, (fam, cmd) in enumerate(zip(families, commands), 1):
        bad = 0
        run = subprocess.run(cmd, capture_output=True, text=True)
        rows = 0
        parsed = []
        for line in run.stdout.splitlines():
            rows += 1
            try:
                parsed.append((json.loads(line), line))
            except ValueError as e:
                print(f"# {fam}: not JSON ({e}): {line!r}")
                bad += 1
        baselines = frozenset((r["baseline"], r.get("baseline_case", r.get("case")), r.get("cpus"))
                              for r, _ in parsed if r.get("baseline"))
        for row, line in parsed:
            problems = row_problems(row, baselines)
            if problems:
                print(f"# {fam}: {problems}: {line}")
                bad += 1
        if run.returncode != 0 or rows == 0:
            for l in run.stderr[-2000:].splitlines():
                print(f"# {l}")
            bad += 1
        print(f"{'not ok' if bad else 'ok'} {n} - {fam}: exit {run.returncode}, {rows} rows")
        failed += bad > 0
    bad_counts = []
    for arg in ("0", "33", "x"):
        run = subprocess.run([exe, "--rounds", arg, "list"], capture_output=True, text=True)
        if run.returncode != 2 or "--rounds" not in run.stderr:
            bad_counts.append(f"--rounds {arg}: exit {run.returncode}, {run.stderr.strip()!r}")
    for b in bad_counts:
        print(f"# {b}")
    print(f"{'not ok' if bad_counts else 'ok'} {len(families) + 1} - --rounds refuses 0, 33 and x with exit 2")
    failed += bool(bad_counts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
