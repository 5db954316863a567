#!/usr/bin/env python3
"""Check that every test docs/security.md cites exists: `suite::name` must be an
ABD_TEST(suite, name) in tests/, `chaos` the chaos peer, `fuzz-x` a fuzz target. A line of the
threat model whose test was renamed or removed fails the docs suite."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
doc = (root / 'docs' / 'security.md').read_text()
tests = set()
for f in (root / 'tests').glob('*.c'):
    for m in re.finditer(r'ABD_TEST\(\s*([a-z0-9_]+)\s*,\s*([a-z0-9_]+)', f.read_text()):
        tests.add(f'{m.group(1)}::{m.group(2)}')

cited = re.findall(r'`([a-z0-9_]+::[a-z0-9_]+)`', doc)
missing = sorted({c for c in cited if c not in tests})
for fz in re.findall(r'`(fuzz-[a-z0-9-]+)`', doc):
    if not (root / 'tests' / 'fuzz' / f'{fz}.c').exists():
        missing.append(fz)
if '`chaos`' in doc and not (root / 'tests' / 'chaos-peer.c').exists():
    missing.append('chaos')
if len(cited) < 20:
    missing.append(f'only {len(cited)} tests cited: the parser or the page is broken')
for m in missing:
    print(f'docs/security.md cites {m}, which does not exist', file=sys.stderr)
print(f'{len(set(cited))} tests cited, {len(missing)} missing')
sys.exit(1 if missing else 0)
