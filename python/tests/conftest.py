# SPDX-License-Identifier: MIT
"""Fixtures of the Python suite. The package is imported from the source tree; the library
from $ABD_LIBRARY (meson sets it to the build tree's libabd_runtime.so.0.*), else from the
build tree next to the source ($ABD_BUILD_ROOT or ../build), else the installed one."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python/
ROOT = os.path.dirname(SRC)
BUILD = os.environ.get("ABD_BUILD_ROOT") or os.path.join(ROOT, "build")
sys.path.insert(0, SRC)
# How long a real second process may take to start and answer: 10 s, times $ABD_TEST_SCALE
# (ci/vm sets it in an emulated CPU, where a Python interpreter takes seconds to start).
SCALE = max(1.0, float(os.environ.get("ABD_TEST_SCALE") or 1))
LONG = 10 * SCALE
if not os.environ.get("ABD_LIBRARY"):
    libs = sorted(p for p in glob.glob(os.path.join(BUILD, "runtime", "libabd_runtime.so.*"))
                  if os.path.isfile(p) and not p.endswith(".p"))
    if libs:
        os.environ["ABD_LIBRARY"] = os.path.realpath(libs[-1])


@pytest.fixture
def regdir():
    """A private registry directory on tmpfs, removed afterwards."""
    d = tempfile.mkdtemp(prefix="abd-py-", dir="/dev/shm")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def abdctl():
    path = os.environ.get("ABD_ABDCTL") or os.path.join(BUILD, "tools", "abdctl")
    if not os.access(path, os.X_OK):
        pytest.fail(f"abdctl not found at {path} (build the tree, or set ABD_ABDCTL)")
    return path


def python_child(code, *args, **kw):
    """A second Python process running code with the same package and library."""
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kw)
