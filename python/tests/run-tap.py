#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run the Python package's pytest suite and print TAP on stdout, one line per test, so that
meson (and ci/test's closing line) count each test; pytest's own report goes to stderr.
meson runs it under every kernel profile (tests/meson.build, suite 'python').
    run-tap.py [PYTEST ARGS...]
The package is imported from the source tree (python/); ABD_LIBRARY names the library."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
tap = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # pytest's terminal report -> stderr
sys.stdout = sys.stderr

try:
    import pytest
except ImportError:
    tap.write("1..0 # SKIP pytest is not installed (ci/bootstrap installs python3-pytest)\n")
    sys.exit(0)


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = False

    def pytest_runtest_logreport(self, report):
        # one line per test: its call phase, or the phase that failed or skipped it
        if report.when == "call" or (report.when == "setup" and not report.passed) or \
                (report.when == "teardown" and report.failed):
            self.n += 1
            name = report.nodeid.split("::", 1)[-1]
            if report.skipped:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
                reason = reason.removeprefix("Skipped: ")
                tap.write(f"ok {self.n} - {name} # SKIP {reason}\n")
            elif report.passed:
                tap.write(f"ok {self.n} - {name}\n")
            else:
                self.failed = True
                tap.write(f"not ok {self.n} - {name} ({report.when})\n")

    def pytest_collectreport(self, report):
        if report.failed:
            self.n += 1
            self.failed = True
            tap.write(f"not ok {self.n} - collecting {report.nodeid}\n")

    def pytest_sessionfinish(self, session, exitstatus):
        if self.n == 0:
            tap.write("not ok 1 - pytest collected no test (exit status %d)\n" % exitstatus)
            self.n = 1
        tap.write(f"1..{self.n}\n")


plugin = Tap()
args = sys.argv[1:] or [here]
rc = pytest.main(["-p", "no:cacheprovider", "-rs", "--rootdir", here] + args, plugins=[plugin])
sys.exit(0 if rc in (0, 5) and not plugin.failed else 1)
