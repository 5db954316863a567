#!/bin/sh
# Every public C header alone, as C11 and as C++26; the C++ layer (abd.hpp) as C++23, as C++26
# and without exceptions: each must compile with no warnings.
# Prints TAP. Usage: check-headers.sh SRCDIR BUILDDIR CC CXX
set -u
src=$1 build=$2 cc=$3 cxx=$4
headers=$(cd "$src/include/abd" && ls *.h)
cxx_headers=$(cd "$src/include/abd" && ls *.hpp)
n=0; for h in $headers; do n=$((n + 2)); done
for h in $cxx_headers; do n=$((n + 3)); done
echo "1..$n"
i=0; fail=0
check() { # NAME LANG-LABEL COMPILER ARGS...
	h=$1 label=$2; shift 2
	i=$((i + 1))
	out=$(printf '#include <abd/%s>\n#include <abd/%s>\nint abd_header_check;\n' "$h" "$h" |
		"$@" -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$src/include" -I"$build/include" - 2>&1)
	if [ $? -eq 0 ]; then echo "ok $i - $h as $label"; else
		echo "not ok $i - $h as $label"; echo "$out" | sed 's/^/# /'; fail=1; fi
}
for h in $headers; do
	check "$h" c11 "$cc" -std=c11 -x c
	check "$h" c++26 "$cxx" -std=c++26 -x c++
done
for h in $cxx_headers; do
	check "$h" c++23 "$cxx" -std=c++23 -x c++
	check "$h" c++26 "$cxx" -std=c++26 -x c++
	check "$h" "c++26 -fno-exceptions" "$cxx" -std=c++26 -fno-exceptions -x c++
done
exit $fail
