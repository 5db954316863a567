#!/bin/sh
# Install into a scratch DESTDIR and build a consumer the way a user would: through
# pkg-config (shared library) and against the static archive. Prints TAP.
# Usage: check-install.sh BUILDDIR CC
set -u
build=$1 cc=$2
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
echo "1..4"
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
