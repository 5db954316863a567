#!/bin/sh
# Every public header alone, as C11 and as C++26: each must compile with no warnings.
# Prints TAP. Usage: check-headers.sh SRCDIR BUILDDIR CC CXX
set -u
src=$1 build=$2 cc=$3 cxx=$4
headers=$(cd "$src/include/abd" && ls *.h)
n=0; for h in $headers; do n=$((n + 2)); done
echo "1..$n"
i=0; fail=0
for h in $headers; do
  for lang in c11 c++26; do
    i=$((i + 1))
    if [ "$lang" = c11 ]; then
      out=$(printf '#include <abd/%s>\n#include <abd/%s>\nint abd_header_check;\n' "$h" "$h" |
        "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$src/include" -I"$build/include" -x c - 2>&1)
    else
      out=$(printf '#include <abd/%s>\n#include <abd/%s>\nint abd_header_check;\n' "$h" "$h" |
        "$cxx" -std=c++26 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$src/include" -I"$build/include" -x c++ - 2>&1)
    fi
    if [ $? -eq 0 ]; then echo "ok $i - $h as $lang"; else
      echo "not ok $i - $h as $lang"; echo "$out" | sed 's/^/# /'; fail=1; fi
  done
done
exit $fail
