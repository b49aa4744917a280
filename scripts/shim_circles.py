#!/usr/bin/env python3
"""Check that the Linux shim (shim/common + shim/linux) has no circles.

What a circle is, for C:
  - A *module* is one .c file together with the header of the same name beside it
    (linux/connect.c + linux/connect.h; common/wire.c + common/socksify_wire.h, a
    "socksify_" prefix being dropped). A header with no .c of its name is a module of
    its own (types and macros only).
  - Module A *depends on* module B when A's .c or .h #includes B's header, or when A's
    compiled object uses a symbol that B's object defines: a call (a hook calling a
    helper, init.c calling a per-hook resolver, one hook calling another exported hook)
    or a variable. Symbols are read with nm from objects compiled here, so a call hidden
    behind a macro counts too; symbols no module defines (libc's) do not.
  - A *circle* is a set of two or more modules that depend on each other, directly or
    through others (a strongly connected component of that graph).

Exit status 0 when there is none; 1, with each circle and the edges that close it, when
there is. Usage: shim_circles.py [SHIM_DIR]  (default: the shim/ beside this script's
parent). $CC picks the compiler (default cc). Run by `make -C shim` (and its test
target) and by tests/unit/test_shim_circles.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
CFLAGS = ["-std=gnu11", "-O0", "-fPIC", "-D_GNU_SOURCE", "-w"]
DIRS = ("common", "linux")


def module_of(path: Path, shim: Path) -> str:
    """The module a .c or .h file belongs to, as "dir/stem"."""
    rel = path.relative_to(shim)
    stem = rel.stem
    if rel.suffix == ".h":
        for candidate in (stem, stem.removeprefix("socksify_")):
            if (path.parent / f"{candidate}.c").is_file():
                return f"{rel.parent}/{candidate}"
        return f"{rel.parent}/{rel.name}"
    return f"{rel.parent}/{stem}"


def find_header(name: str, including: Path, shim: Path) -> Path | None:
    for d in (including.parent, *(shim / x for x in DIRS), shim):
        if (d / name).is_file():
            return d / name
    return None


def include_edges(shim: Path) -> dict[str, dict[str, str]]:
    """module -> {module it includes: why}."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for d in DIRS:
        for f in sorted((shim / d).rglob("*.[ch]")):
            a = module_of(f, shim)
            edges.setdefault(a, {})
            for name in INCLUDE.findall(f.read_text()):
                h = find_header(name, f, shim)
                if h is None:
                    continue
                b = module_of(h, shim)
                if a != b:
                    edges[a].setdefault(b, f"{f.relative_to(shim)} includes {name}")
    return edges


def symbol_edges(shim: Path, edges: dict[str, dict[str, str]]) -> None:
    """Add module -> module for every symbol one object uses and another defines."""
    cc = shlex.split(os.environ.get("CC") or "cc")
    sources = [f for d in DIRS for f in sorted((shim / d).rglob("*.c"))]
    defined: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def symbols(src: Path) -> tuple[str, str]:
            mod = module_of(src, shim)
            obj = Path(tmp) / (mod.replace("/", "_") + ".o")
            subprocess.run([*cc, *CFLAGS, *(f"-I{shim / d}" for d in DIRS), f"-I{shim}",
                            "-c", str(src), "-o", str(obj)], check=True)
            return mod, subprocess.run(["nm", "-P", str(obj)], check=True,
                                       capture_output=True, text=True).stdout

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for mod, out in pool.map(symbols, sources):
                used[mod] = set()
                for line in out.splitlines():
                    fields = line.split()
                    if len(fields) < 2:
                        continue
                    name, kind = fields[0], fields[1]
                    if kind in ("U", "w", "v"):
                        used[mod].add(name)
                    elif kind.isupper():
                        defined[name] = mod
    for a, names in used.items():
        for name in sorted(names):
            b = defined.get(name)
            if b is not None and b != a:
                edges[a].setdefault(b, f"{a}.c uses {name}() of {b}.c")


def circles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(edges) | {b for out in edges.values() for b in out})

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    shim = Path(argv[1]).resolve() if len(argv) > 1 else \
        Path(__file__).resolve().parents[1] / "shim"
    edges = include_edges(shim)
    symbol_edges(shim, edges)
    found = circles(edges)
    for component in found:
        members = set(component)
        print(f"circle of {len(component)} modules: {' '.join(component)}")
        for a in component:
            for b, why in sorted(edges[a].items()):
                if b in members:
                    print(f"  {a} -> {b}: {why}")
    if found:
        return 1
    n = len(set(edges) | {b for out in edges.values() for b in out})
    print(f"shim: {n} modules, no circles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
