#!/bin/sh
# Every public C header alone, as C11 and as C++26; the C++ layer (abd.hpp) as C++23, as C++26
# and without exceptions: each must compile with no warnings. Then two programs abd.hpp must
# refuse, each with its static_assert's reason: abd::service<T> of a T that is not trivially
# copyable, and of a T without a type identity.
# Prints TAP. Usage: check-headers.sh SRCDIR BUILDDIR CC CXX
set -u
src=$1 build=$2 cc=$3 cxx=$4
headers=$(cd "$src/include/abd" && ls *.h)
cxx_headers=$(cd "$src/include/abd" && ls *.hpp)
n=0; for h in $headers; do n=$((n + 2)); done
for h in $cxx_headers; do n=$((n + 3)); done
n=$((n + 2))
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
refuse() { # WHAT EXPECTED-TEXT PROGRAM
	i=$((i + 1))
	out=$(printf '%s\n' "$3" | "$cxx" -std=c++26 -fsyntax-only -I"$src/include" -I"$build/include" -x c++ - 2>&1)
	if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "$2"; then echo "ok $i - $1"; else
		echo "not ok $i - $1"; echo "$out" | sed 's/^/# /'; fail=1; fi
}
refuse "abd::service<T> refuses a T that is not trivially copyable, saying why" "must be trivially copyable" \
	'#include <abd/abd.hpp>
#include <string>
struct m { static constexpr std::string_view abd_type_name = "t.m", abd_type_layout = "str s"; std::string s; };
auto r = abd::service<m>::open("x");'
refuse "abd::service<T> refuses a T without a type identity, saying how to give one" "needs T.s type identity" \
	'#include <abd/abd.hpp>
struct m { int a; };
auto r = abd::service<m>::open("x");'
exit $fail
