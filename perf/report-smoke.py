#!/usr/bin/env python3
"""CI check of perf/report: runs it in quick mode with 2 interleaved rounds on two short
families (reactor, acquire) into a scratch folder and checks what it wrote: report.md with the
machine table, abd rows beside their baselines with the ratio's spread over the rounds, every
image it links present as a PNG (or, without gnuplot, the note that plots were skipped),
results.jsonl parseable with the rounds keys. Never judges a figure or a duration."""
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(report, perf):
    checks = []

    def check(ok, what, detail=""):
        checks.append((bool(ok), what, detail))

    with tempfile.TemporaryDirectory(prefix="abd-report-") as tmp:
        out = Path(tmp) / "r"
        run = subprocess.run([sys.executable, report, "--quick", "--rounds", "2", "--no-install", "--perf", perf,
                              "--out", str(out), "reactor", "acquire"],
                             capture_output=True, text=True)
        check(run.returncode == 0, "perf/report --quick exits 0", run.stderr[-1500:])
        md_path = out / "report.md"
        md = md_path.read_text() if md_path.exists() else ""
        check(md, "report.md written")
        check("## Machine" in md and re.search(r"\| CPU \| \S", md) and re.search(r"\| kernel \| \S", md)
              and re.search(r"\| vCPUs \| \d", md) and "load average" in md,
              "report.md names the machine (CPU, vCPUs, kernel, load average)")
        check(re.search(r"^\| reactor \| abd-reactor-\S+ \|.*\| bare-", md, re.M),
              "report.md has abd rows beside their baselines")
        check("(smoke) sizes" in md, "report.md says the sizes were quick")
        check(re.search(r"^\| family \| subject \|.*\| ratio \| spread \| rounds \| cost \|$", md, re.M),
              "the summary has the ratio's spread and rounds columns")
        check(re.search(r"^\| acquire \| abd-acquire-\S+ \|.*\| [0-9.]+ \| [0-9.e+-]+–[0-9.e+-]+(?: \*\*wide\*\*)? \| 2 \|", md, re.M),
              "an acquire row shows its ratio, its min–max over 2 rounds")
        rows = []
        try:
            rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
        except (OSError, ValueError) as e:
            check(False, "results.jsonl parses", str(e))
        check(rows and all("family" in r and "subject" in r for r in rows),
              "results.jsonl holds the rows with their family")
        abd = [r for r in rows if str(r.get("subject", "")).startswith("abd-") and not r.get("skipped")]
        check(abd and all(r.get("rounds") == 2 and "ratio_min" in r and "ratio_max" in r
                          for r in abd if r.get("ratio") is not None),
              "results.jsonl's abd rows carry rounds, ratio_min, ratio_max")
        images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
        if shutil.which("gnuplot"):
            check(len(images) >= 2, "report.md links the plots", f"{images}")
            for img in images:
                p = out / img
                ok = p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
                check(ok, f"{img} is a PNG")
        else:
            check(not images and "Plots skipped" in md, "without gnuplot, report.md says the plots were skipped")

    print(f"1..{len(checks)}")
    for n, (ok, what, detail) in enumerate(checks, 1):
        if not ok and detail:
            for line in detail.splitlines():
                print(f"# {line}")
        print(f"{'ok' if ok else 'not ok'} {n} - {what}")
    return 0 if all(ok for ok, _, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
