#!/bin/sh
# The C++ examples of docs/cpp.md that say they compile (a ```cpp block right after a line
# "<!-- compiled by tests/check-doc-cpp.sh ... -->") compile as written, against the source
# tree's headers, as C++26 and as C++23 with -Wall -Wextra -Wpedantic -Werror, so that the
# page cannot drift from abd.hpp. Prints TAP. Usage: check-doc-cpp.sh SRCDIR BUILDDIR CXX
set -u
src=$1 build=$2 cxx=$3
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
# Each marked block into its own file: block-1.cpp, block-2.cpp, ...
awk -v dir="$tmp" '
	/^<!-- compiled by tests\/check-doc-cpp.sh/ { armed = 1; next }
	armed && /^```cpp$/ { n++; out = dir "/block-" n ".cpp"; inblock = 1; armed = 0; next }
	inblock && /^```$/ { inblock = 0; close(out); next }
	inblock { print > out; next }
	{ armed = 0 }
' "$src/docs/cpp.md"
blocks=$(ls "$tmp" | grep -c '^block-')
if [ "$blocks" -eq 0 ]; then
	echo "1..1"; echo "not ok 1 - docs/cpp.md has no block marked as compiled"; exit 1
fi
echo "1..$((blocks * 2))"
i=0; fail=0
for b in $(seq 1 "$blocks"); do
	for std in c++26 c++23; do
		i=$((i + 1))
		out=$("$cxx" -std=$std -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
			-I"$src/include" -I"$build/include" -x c++ "$tmp/block-$b.cpp" 2>&1)
		if [ $? -eq 0 ]; then echo "ok $i - docs/cpp.md compiled block $b as $std"; else
			echo "not ok $i - docs/cpp.md compiled block $b as $std"; echo "$out" | sed 's/^/# /'; fail=1; fi
	done
done
exit $fail
