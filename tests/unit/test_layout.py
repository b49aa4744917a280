"""The daemon package's shape (docs/architecture.md): no module imports one that
imports it back, however indirectly -- every import counts, those under
TYPE_CHECKING and inside functions too -- and no file grows past about 450 lines
without a stated reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "socksify"
MAX_LINES = 450
LONGER = {
    # name: why it may be longer than MAX_LINES
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports (a package's own __init__ is left
    out for its submodules: importing a sibling runs it, but it is not a dependency
    of theirs in the design)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            found.add(stem)
            found.update(f"{stem}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name
            and not name.startswith(m + ".")}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as a path that ends where it starts."""
    circles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):] + [nxt]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    circles.append(loop)
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["socksify.daemon"], "the import walk found nothing: is it broken?"
    circles = _circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_walk_sees_a_circle() -> None:
    """The check itself: a circle hidden in a function-local import is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c", "a"]]


def test_listeners_never_import_the_daemon() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith(("socksify.listeners", "socksify.core", "socksify.chains")):
            assert "socksify.daemon" not in _imports(name, path, modules), name


def test_no_long_files() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONGER), f"over {MAX_LINES} lines, no reason given: {long}"
