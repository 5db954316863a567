# SPDX-License-Identifier: MIT
"""The ctypes layer against the C headers: every structure the package declares has the
size, field offsets and field sizes the C compiler gives it, and every constant it copies has the header's
value. A C program compiled from include/abd prints them."""
import ctypes
import json
import os
import shutil
import subprocess

import pytest
from conftest import BUILD, ROOT

import abd
from abd import _ffi

CONSTANTS = {
    "SERVICE_PRODUCER": "ABD_SERVICE_PRODUCER", "SERVICE_CONSUMER": "ABD_SERVICE_CONSUMER",
    "SERVICE_SINGLE_PRODUCER": "ABD_SERVICE_SINGLE_PRODUCER",
    "SERVICE_SINGLE_CONSUMER": "ABD_SERVICE_SINGLE_CONSUMER",
    "SERVICE_PIDFD_GETFD": "ABD_SERVICE_PIDFD_GETFD", "SERVICE_SCM_RIGHTS": "ABD_SERVICE_SCM_RIGHTS",
    "SERVICE_OBSERVER": "ABD_SERVICE_OBSERVER",
    "SERVICE_EVENT_CLOSED": "ABD_SERVICE_EVENT_CLOSED",
    "SERVICE_EVENT_READABLE": "ABD_SERVICE_EVENT_READABLE",
    "REACTOR_FORCE_EPOLL": "ABD_REACTOR_FORCE_EPOLL",
    "REACTOR_FORCE_IO_URING": "ABD_REACTOR_FORCE_IO_URING",
    "REGISTRY_CREATE": "ABD_REGISTRY_CREATE", "WATCH_PIDFD": "ABD_WATCH_PIDFD",
    "RING_WAIT_DATA": "ABD_RING_WAIT_DATA",
    "BROADCAST_BLOCK": "ABD_BROADCAST_BLOCK", "BROADCAST_OVERWRITE": "ABD_BROADCAST_OVERWRITE",
    "RING_MAX_SLOT_SIZE": "ABD_RING_MAX_SLOT_SIZE",
}


def _compiler():
    for cc in (os.environ.get("ABD_CC"), os.environ.get("CC"), "clang-22", "cc", "gcc"):
        if cc and shutil.which(cc):
            return cc
    return None


def test_structures_and_constants_match_the_c_headers(tmp_path):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler to read the headers with (set ABD_CC)")
    lines = ['#include <abd/abd.h>', '#include <stddef.h>', '#include <stdio.h>',
             'int main(void) {', 'printf("{");']
    for cname, cls in _ffi.STRUCTS.items():
        lines.append(f'printf("\\"{cname}\\": [%zu, {{", sizeof(struct {cname}));')
        for i, (f, _) in enumerate(cls._fields_):
            sep = "," if i else ""
            lines.append(f'printf("{sep}\\"{f}\\": [%zu, %zu]", offsetof(struct {cname}, {f}), '
                         f'sizeof(((struct {cname} *)0)->{f}));')
        lines.append('printf("}], ");')
    for i, (py, c) in enumerate(CONSTANTS.items()):
        sep = ", " if i else ""
        lines.append(f'printf("{sep}\\"{py}\\": %lld", (long long)({c}));')
    lines += ['printf("}\\n");', "return 0; }"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-Werror", "-I", os.path.join(ROOT, "include"),
                    "-I", os.path.join(BUILD, "include"), str(src), "-o", str(exe)],
                   check=True)
    c = json.loads(subprocess.run([str(exe)], check=True, capture_output=True,
                                  text=True).stdout)
    for cname, cls in _ffi.STRUCTS.items():
        size, offsets = c[cname]
        assert ctypes.sizeof(cls) == size, cname
        for f, _ in cls._fields_:
            assert [getattr(cls, f).offset, getattr(cls, f).size] == offsets[f], \
                f"{cname}.{f}: (offset, size) differ from C's"
    for py in CONSTANTS:
        assert getattr(_ffi, py) == c[py], py


def test_the_library_loaded_is_the_one_named_by_abd_library():
    want = os.environ.get("ABD_LIBRARY")
    assert want, "the suite runs against the build tree's library (ABD_LIBRARY)"
    assert abd.library_path() == want
    maps = open("/proc/self/maps").read()
    assert os.path.realpath(want) in maps
    assert abd.version().count(".") == 2


def test_the_package_version_is_the_librarys():
    import tomllib
    with open(os.path.join(ROOT, "python", "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["project"]["version"] == abd.version()
