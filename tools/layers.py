#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The library's layers, and which file depends on which.

Prints, for the library's sources (runtime/, compat/, include/abd/), which file includes which
and which file calls into which (a symbol one file defines and another uses), each edge tagged
with the layers it joins. With --check it exits 1 when an edge points up (to a higher layer, or
sideways to another layer of the same height), when a file breaks its layer's own direction,
when files call each other in a circle through two layers, or when a source file has no
layer here. An ALLOW entry that no edge needs any more is noted on stderr.

Calls are read from the symbols of the built library (nm on the static archive, --lib), so a
call hidden behind an internal header or a macro is seen; without --lib they are read from the
sources (a grep of abd_ and abd__ names), which is good enough to look at, not to check.

  python3 tools/layers.py                         the include graph, calls from the sources
  python3 tools/layers.py --lib build/runtime/libabd_runtime.a --check
  python3 tools/layers.py --dot                   the same as a graphviz digraph
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Layers, lowest first. A file may depend on files of its own layer and of lower heights; two
# layers of the same height know nothing of each other.
LAYERS = [
    ("base", 0, ["compat/kernel.h", "runtime/internal.h", "runtime/probe.c",
                 "runtime/version.c", "include/abd/common.h", "include/abd/probe.h",
                 "include/abd/version.h"]),
    ("registry", 1, ["runtime/record.c", "runtime/registry.c", "runtime/registry-uring.c",
                     "runtime/registry-internal.h", "include/abd/registry.h"]),
    ("ring", 1, ["runtime/ring-lease.c", "runtime/ring.c", "runtime/ring-wait.c", "runtime/ring-recover.c",
                 "runtime/ring-internal.h", "include/abd/ring.h"]),
    ("rpc", 2, ["runtime/rpc.c", "runtime/rpc-internal.h"]),
    ("reactor", 2, ["runtime/reactor.c", "runtime/reactor-uring.c", "compat/reactor-epoll.c",
                    "compat/futex-thread.c", "compat/futex-thread.h",
                    "runtime/reactor-internal.h", "include/abd/reactor.h"]),
    ("broadcast", 2, ["runtime/bcast.c", "runtime/bcast-internal.h"]),
    ("acquire", 3, ["runtime/acquire.c", "runtime/watch.c", "runtime/gc.c",
                    "compat/handshake.c", "compat/handshake.h", "include/abd/acquire.h"]),
    ("service", 4, ["runtime/service.c", "runtime/service-bcast.c", "runtime/service-rpc.c",
                    "runtime/service-internal.h", "include/abd/service.h"]),
    ("umbrella", 5, ["include/abd/abd.h"]),
]

# Direction inside a layer: a file may call files of a lower rank only (files not listed: any
# file of their layer). The ring: the lease table at the bottom, the slots on it, waiting and
# recovery on top.
INNER = {
    "ring": {"runtime/ring-lease.c": 0, "runtime/ring.c": 1, "runtime/ring-wait.c": 2,
             "runtime/ring-recover.c": 2},
}

# Edges --check tolerates for now, each with the reason and who removes it. Keep it short.
ALLOW = {
}

SOURCE_DIRS = ["runtime", "compat", "include/abd"]
GENERATED = {"config.h", "include/abd/version.h"}  # made by meson; version.h also in base

# A file not listed above takes the layer of the first prefix it starts with (a new ring or
# reactor file belongs with its siblings); any other new file must be placed in LAYERS.
PREFIXES = [("runtime/ring", "ring"), ("runtime/reactor", "reactor"), ("compat/reactor", "reactor"),
            ("runtime/registry", "registry"), ("runtime/record", "registry")]

LAYER_OF = {f: name for name, _, files in LAYERS for f in files}
HEIGHT = {name: h for name, h, _ in LAYERS}


def sources():
    out = []
    for d in SOURCE_DIRS:
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            if f.endswith((".c", ".h")):
                out.append(f"{d}/{f}")
    for f in out:
        for prefix, layer in PREFIXES:
            if f not in LAYER_OF and f.startswith(prefix):
                LAYER_OF[f] = layer
    return out


def resolve_include(src, name, angle):
    """The project file an #include names, or None (a system header)."""
    cands = []
    if angle:
        if name.startswith("abd/"):
            cands.append("include/" + name)
    else:
        cands += [os.path.normpath(os.path.join(os.path.dirname(src), name)), name,
                  "include/" + name]
    for c in cands:
        if c in GENERATED or os.path.exists(os.path.join(ROOT, c)):
            return c
    return None


INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def include_edges(files):
    edges = {}
    for src in files:
        with open(os.path.join(ROOT, src), encoding="utf-8") as fh:
            text = fh.read()
        for m in INCLUDE.finditer(text):
            dst = resolve_include(src, m.group(2), m.group(1) == "<")
            if dst and dst != src and dst != "config.h":
                edges.setdefault((src, dst), set()).add("#include")
    return edges


def member(obj):
    """The source's base name in an nm -A prefix: "lib.a:ring.c.o", "dir/ring.c.o" and meson's
    "lib.a:.._compat_handshake.c.o" (a source outside the target's folder) -> "ring.c"..."""
    name = os.path.basename(obj.rpartition(":")[2] or obj)
    if name.endswith(".o"):  # (str.removesuffix is Python 3.9; Ubuntu 20.04 has 3.8)
        name = name[:-2]
    return name.rpartition("_")[2]


def call_edges_nm(lib, files):
    """(user, definer) -> symbols, from nm of an archive or object files."""
    by_base = {os.path.basename(f): f for f in files if f.endswith(".c")}
    out = subprocess.run(["nm", "-A", "--defined-only", *lib], capture_output=True, text=True,
                         check=True).stdout
    defs = {}
    for line in out.splitlines():
        obj, _, rest = line.rpartition(":")
        parts = rest.split()
        if len(parts) == 3 and parts[1] in "TDBRVW" and parts[1].isupper():
            src = by_base.get(member(obj))
            if src:
                defs[parts[2]] = src
    out = subprocess.run(["nm", "-A", "--undefined-only", *lib], capture_output=True,
                         text=True, check=True).stdout
    edges = {}
    for line in out.splitlines():
        obj, _, rest = line.rpartition(":")
        parts = rest.split()
        if len(parts) != 2:
            continue
        user = by_base.get(member(obj))
        definer = defs.get(parts[1])
        if user and definer and user != definer:
            edges.setdefault((user, definer), set()).add(parts[1])
    return edges


DEFINITION = re.compile(r'^[A-Za-z_][\w \t\*]*?\b(abd_{1,2}\w+)\s*\([^;]*$', re.M)
USE = re.compile(r'\b(abd_{1,2}\w+)\s*\(')


def call_edges_source(files):
    defs, texts = {}, {}
    for src in files:
        if not src.endswith(".c"):
            continue
        with open(os.path.join(ROOT, src), encoding="utf-8") as fh:
            texts[src] = re.sub(r'/\*.*?\*/', '', fh.read(), flags=re.S)
        for m in DEFINITION.finditer(texts[src]):
            if not m.group(0).lstrip().startswith("static"):
                defs.setdefault(m.group(1), src)
    edges = {}
    for src, text in texts.items():
        for m in USE.finditer(text):
            definer = defs.get(m.group(1))
            if definer and definer != src:
                edges.setdefault((src, definer), set()).add(m.group(1))
    return edges


def cycles(edges):
    """The strongly connected components of more than one file (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def edge_problem(a, b):
    la, lb = LAYER_OF.get(a), LAYER_OF.get(b)
    if la is None or lb is None:
        return None
    if la == lb:
        inner = INNER.get(la, {})
        if a in inner and b in inner and inner[b] >= inner[a]:
            return f"inside {la}: {a} may not use {b} (the layer's direction: " + \
                   ", ".join(f"{f}={r}" for f, r in inner.items()) + ")"
        return None
    if HEIGHT[lb] >= HEIGHT[la]:
        kind = "up" if HEIGHT[lb] > HEIGHT[la] else "sideways"
        return f"{kind}: {la} ({a}) -> {lb} ({b})"
    return None


def self_test():
    """The checker's own rules on made-up edges: what must fail fails, what may pass passes."""
    sources()  # places files by prefix
    must_fail = [("runtime/registry.c", "runtime/acquire.c"),   # up
                 ("runtime/registry.c", "compat/handshake.h"),  # up, an include
                 ("runtime/ring.c", "runtime/reactor.c"),       # up
                 ("runtime/registry.c", "runtime/ring.c"),      # sideways
                 ("runtime/ring.c", "runtime/ring-wait.c"),     # against the ring's direction
                 ("runtime/ring-recover.c", "runtime/ring-wait.c")]
    may_pass = [("runtime/acquire.c", "runtime/registry.c"), ("runtime/service.c", "runtime/ring.c"),
                ("runtime/ring-wait.c", "runtime/ring.c"), ("runtime/reactor.c", "runtime/reactor-uring.c"),
                ("runtime/reactor-uring.c", "runtime/reactor.c"), ("runtime/gc.c", "compat/handshake.c")]
    bad = [f"not caught: {a} -> {b}" for a, b in must_fail if not edge_problem(a, b)]
    bad += [f"refused: {a} -> {b}: {edge_problem(a, b)}" for a, b in may_pass if edge_problem(a, b)]
    circle = {("runtime/registry.c", "runtime/acquire.c"): 1, ("runtime/acquire.c", "runtime/registry.c"): 1}
    if cycles(circle) != [["runtime/acquire.c", "runtime/registry.c"]]:
        bad.append("a circle through two files not found")
    for b in bad:
        print(b, file=sys.stderr)
    print("layers self-test: " + ("FAILED" if bad else "ok"))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", nargs="*", default=None,
                    help="static archive or object files to read the calls from (nm)")
    ap.add_argument("--check", action="store_true", help="exit 1 on an upward edge or a cycle")
    ap.add_argument("--dot", action="store_true", help="print a graphviz digraph")
    ap.add_argument("--self-test", action="store_true", help="check the checker's rules")
    args = ap.parse_args()
    if args.self_test:
        return self_test()

    files = sources()
    incs = include_edges(files)
    calls = call_edges_nm(args.lib, files) if args.lib else call_edges_source(files)
    edges = {}
    for e, why in incs.items():
        edges.setdefault(e, set()).update(why)
    for e, syms in calls.items():
        edges.setdefault(e, set()).update(syms)

    if args.dot:
        print("digraph abd {\n  rankdir=BT;")
        for name, h, _ in LAYERS:
            print(f'  subgraph "cluster_{name}" {{ label="{name} ({h})";')
            for f in files + sorted(GENERATED):
                if LAYER_OF.get(f) == name:
                    print(f'    "{f}";')
            print("  }")
        for (a, b), why in sorted(edges.items()):
            style = "" if "#include" in why else " [style=dashed]"
            print(f'  "{a}" -> "{b}"{style};')
        print("}")
    else:
        print("# layers (height): files")
        for name, h, _ in LAYERS:
            members = [f for f in files if LAYER_OF.get(f) == name]
            members += [f for f in sorted(GENERATED) if LAYER_OF.get(f) == name]
            print(f"{name} ({h}): {' '.join(members)}")
        print("\n# includes: file -> file it includes")
        for (a, b) in sorted(incs):
            print(f"{a} -> {b}")
        print("\n# calls (%s): file -> file it calls into: symbols" %
              ("nm " + " ".join(os.path.basename(p) for p in args.lib) if args.lib
               else "from the sources"))
        for (a, b), syms in sorted(calls.items()):
            print(f"{a} -> {b}: {' '.join(sorted(syms))}")
        print("\n# layer -> layer")
        pairs = {}
        for (a, b) in edges:
            la, lb = LAYER_OF.get(a, "?"), LAYER_OF.get(b, "?")
            if la != lb:
                pairs[(la, lb)] = pairs.get((la, lb), 0) + 1
        for (la, lb), n in sorted(pairs.items(), key=lambda p: (HEIGHT.get(p[0][0], 9), p[0])):
            print(f"{la} -> {lb} ({n} edge{'s' if n > 1 else ''})")

    problems = []
    for f in files:
        if f not in LAYER_OF:
            problems.append(f"{f}: no layer; add it to LAYERS in tools/layers.py")
    for (a, b), why in sorted(edges.items()):
        p = edge_problem(a, b)
        if p and (a, b) not in ALLOW:
            problems.append(f"{p}: {' '.join(sorted(why))}")
    # Files of one layer may call each other both ways (a backend and its core: reactor.c and
    # reactor-uring.c); a circle through two layers is always an error.
    live = {e: w for e, w in edges.items() if e not in ALLOW}
    for comp in cycles(live):
        if len({LAYER_OF.get(f) for f in comp}) > 1:
            problems.append("cycle: " + " <-> ".join(comp))
    # An allowance no longer needed is said, not failed: the change that removes the edge
    # need not touch this file in the same commit.
    for e in sorted(ALLOW):
        if e not in edges:
            print(f"note: allowed edge {e[0]} -> {e[1]} is gone: remove it from ALLOW",
                  file=sys.stderr)
    if problems:
        print("\n# problems", file=sys.stderr if args.check else sys.stdout)
        for p in problems:
            print(p, file=sys.stderr if args.check else sys.stdout)
    if args.check:
        if problems:
            print(f"layers: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        print("\nlayers: no upward edge, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
