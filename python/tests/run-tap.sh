#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs run-tap.py with a python3 that has pytest: $ABD_PYTHON, else Debian's /usr/bin/python3
# (python3-pytest), else the python3 in PATH. meson test runs this (suite 'python').
dir=$(dirname "$0")
for py in "${ABD_PYTHON:-}" /usr/bin/python3 python3; do
	if [ -n "$py" ] && "$py" -c 'import pytest' 2>/dev/null; then
		exec "$py" "$dir/run-tap.py" "$@"
	fi
done
echo "1..0 # SKIP no python3 with pytest here (ci/bootstrap installs python3-pytest)"
