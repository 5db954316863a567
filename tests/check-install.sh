#!/bin/sh
# Install into a scratch DESTDIR and build a consumer the way a user would: through
# pkg-config (shared library) and against the static archive; then the C++ example
# (tools/examples/pubsub.cpp) from the installed <abd/abd.hpp>, run as publisher and
# subscriber; then the Python package, installed with pip from the source tree, in a
# program against the installed library. Prints TAP.
# Usage: check-install.sh BUILDDIR CC [CXX]
set -u
build=$1 cc=$2 cxx=${3:-}
src=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dest"' EXIT
echo "1..9"
if meson install -C "$build" --destdir "$dest" --no-rebuild >"$dest.log" 2>&1; then
	echo "ok 1 - meson install"
else
	echo "not ok 1 - meson install"; sed 's/^/# /' "$dest.log"; rm -f "$dest.log"; exit 1
fi
rm -f "$dest.log"
pc=$(find "$dest" -name abd_runtime.pc | head -1)
prefix=$(sed -n 's/^prefix=//p' "$pc")
cat >"$dest/user.c" <<'C'
#include <abd/abd.h>
#include <stdio.h>
int main(void)
{
	if (abd_version() != ABD_VERSION_NUMBER)
		return 1;
	printf("%s %s\n", abd_version_string(), abd_backend_name(abd_choose_backend()));
	return 0;
}
C
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs abd_runtime 2>&1)
if [ -n "$pc" ] && "$cc" -std=c11 -Werror $flags "$dest/user.c" -o "$dest/user" 2>"$dest/cc.log"; then
	echo "ok 2 - a C11 program builds with pkg-config --cflags --libs abd_runtime"
else
	echo "not ok 2 - pkg-config build ($flags)"; sed 's/^/# /' "$dest/cc.log"
fi
libdir=$(dirname "$(find "$dest" -name 'libabd_runtime.so.0' | head -1)")
if LD_LIBRARY_PATH=$libdir "$dest/user" >/dev/null 2>&1; then
	echo "ok 3 - it runs against the installed libabd_runtime.so.0"
else
	echo "not ok 3 - running against the installed library"
fi
# Only abd_* may be exported from the shared library.
bad=$(nm -D --defined-only "$libdir/libabd_runtime.so.0" | awk '{print $3}' | grep -v '^abd_' | grep -v '^ABD_' || true)
if [ -z "$bad" ]; then
	echo "ok 4 - the shared library exports only abd_* symbols"
else
	echo "not ok 4 - unexpected exports:"; echo "$bad" | sed 's/^/# /'
fi
# The C++ layer, as a user gets it: the installed header, pkg-config, the shared library.
if [ -z "$cxx" ]; then
	for t in 5 6 7; do echo "ok $t - # SKIP no C++ compiler (meson setup with CXX=clang++-22)"; done
else
	hpp=$(find "$dest" -path '*/include/abd/abd.hpp' | head -1)
	if [ -n "$hpp" ]; then
		echo "ok 5 - abd.hpp is installed beside the C headers (${hpp#"$dest"})"
	else
		echo "not ok 5 - abd.hpp is not installed"
	fi
	if "$cxx" -std=c++26 -Wall -Wextra -Werror "$src/tools/examples/pubsub.cpp" $flags -o "$dest/pubsub-cxx" \
		2>"$dest/cxx.log"; then
		echo "ok 6 - the C++ example builds from the installed headers with pkg-config (-std=c++26)"
	else
		echo "not ok 6 - building tools/examples/pubsub.cpp against the installed headers"; sed 's/^/# /' "$dest/cxx.log"
	fi
	export ABD_REGISTRY=$dest/registry LD_LIBRARY_PATH=$libdir
	mkdir -p "$ABD_REGISTRY"
	timeout 30 "$dest/pubsub-cxx" typed-sub install.check 200 >"$dest/sub.log" 2>&1 & sub=$!
	timeout 30 "$dest/pubsub-cxx" typed-pub install.check 200 >"$dest/pub.log" 2>&1 & pub=$!
	wait $sub; rs=$?
	wait $pub; rp=$?
	if [ $rs -eq 0 ] && [ $rp -eq 0 ]; then
		echo "ok 7 - it runs against the installed library: a typed publisher and subscriber"
	else
		echo "not ok 7 - the installed C++ example: subscriber exit $rs, publisher exit $rp"
		sed 's/^/# sub: /' "$dest/sub.log"; sed 's/^/# pub: /' "$dest/pub.log"
	fi
fi

# The Python package: pip from a copy of the source tree (setuptools writes build/ and
# *.egg-info next to pyproject.toml), into a target directory, built with the system's
# setuptools (no download). Debian's python3 first: it is the one with python3-pip.
py=
for p in /usr/bin/python3 python3; do
	if "$p" -m pip --version >/dev/null 2>&1 && "$p" -c 'import setuptools' 2>/dev/null; then
		py=$p; break
	fi
done
if [ -z "$py" ]; then
	echo "not ok 8 - no python3 with pip and setuptools (ci/bootstrap installs python3-pip, python3-setuptools)"
	echo "not ok 9 - python program against the installed library # not run"
	exit 0
fi
cp -r "$src/python" "$dest/pysrc"
if PIP_NO_INDEX=1 "$py" -m pip install --no-deps --no-build-isolation --no-cache-dir \
	--target "$dest/pylib" "$dest/pysrc" >"$dest/pip.log" 2>&1 && [ -f "$dest/pylib/abd/__init__.py" ]; then
	echo "ok 8 - pip installs the Python package abd from the source tree"
else
	echo "not ok 8 - pip install python/"; sed 's/^/# /' "$dest/pip.log"
fi
reg=$(mktemp -d /dev/shm/abd-install-XXXXXX)
if (cd "$dest" && env -u ABD_LIBRARY PYTHONPATH="$dest/pylib" LD_LIBRARY_PATH="$libdir" \
	ABD_REGISTRY="$reg" "$py" - "$libdir" >"$dest/py.log" 2>&1) <<'PY'
import os, sys
import abd
assert abd.__file__.startswith(os.path.realpath(os.environ["PYTHONPATH"])), abd.__file__
lib = os.path.realpath(os.path.join(sys.argv[1], "libabd_runtime.so.0"))
assert lib in open("/proc/self/maps").read(), "not the installed library: " + abd.library_path()
with abd.publish("install.check", role="producer") as pub, \
        abd.open("install.check", 5, role="consumer") as sub:
    pub.push(b"installed")
    assert sub.pop(5) == b"installed"
print(abd.version(), abd.library_path())
PY
then
	echo "ok 9 - a Python program with the installed package uses the installed libabd_runtime.so.0"
else
	echo "not ok 9 - python program against the installed library"; sed 's/^/# /' "$dest/py.log"
fi
rm -rf "$reg"
