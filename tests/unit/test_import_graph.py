"""The import graph of platform/ and plugins/, read from the sources (nothing is imported): no cycles, a core
that imports no plugin, and generic architecture modules that import no architecture package.

Every import statement counts, function-level ones included (they run too, only later); imports under
`if TYPE_CHECKING:` do not, since they never run. `import a.b.c` is an edge to module a.b.c; `from a.b import c`
is an edge to module a.b.c when c is a module, else to a.b (its __init__ when a.b is a package).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "platform", REPO / "plugins")
ARCHITECTURES = "seqlab_plugins.architectures"
ARCHITECTURE_PACKAGES = ("decoder_only", "seq2seq")
# The one module directly in seqlab_plugins/architectures/ that may import the architecture packages: presets
# are configs of the packages' models.
ARCHITECTURE_COMPOSERS = {f"{ARCHITECTURES}.presets"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(REPO)}:{self.line})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """(module, names or None, level, line) of every import that can run."""

    def __init__(self) -> None:
        self.found: list[tuple[str, list[str] | None, int, int]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, None, 0, node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node.module or "", [alias.name for alias in node.names], node.level, node.lineno))


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module under the source roots."""
    out = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


@cache
def edges() -> tuple[Edge, ...]:
    known = modules()
    out = []
    for module, path in known.items():
        finder = _Imports()
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, names, level, line in finder.found:
            if level:
                base = _package_of(module, path)
                for _ in range(level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{target}" if target else base
            if names is None:
                candidates = [target]
            else:
                candidates = [f"{target}.{name}" if f"{target}.{name}" in known else target for name in names]
            out += [Edge(module, c, path, line) for c in dict.fromkeys(candidates) if c in known and c != module]
    return tuple(out)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycle(nodes: set[str], graph_edges: list[Edge]) -> list[Edge] | None:
    """One cycle among `nodes` as the list of its edges, or None (iterative depth-first search)."""
    out: dict[str, list[Edge]] = {}
    for edge in graph_edges:
        if edge.source in nodes and edge.target in nodes:
            out.setdefault(edge.source, []).append(edge)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(nodes):
        if start in state:
            continue
        path: list[Edge] = []
        stack = [(start, iter(out.get(start, ())))]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            edge = next(todo, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(edge.target) == 1:
                first = next((i for i, e in enumerate(path) if e.source == edge.target), len(path))
                return [*path[first:], edge]
            if edge.target not in state:
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(out.get(edge.target, ()))))
    return None


def test_the_graph_sees_the_layout():
    known = modules()
    assert {"seqlab.registry", "seqlab_plugins.architectures.presets",
            "seqlab_plugins.architectures.seq2seq", "seqlab_plugins.architectures.seq2seq.model"} <= set(known)
    targets = {(e.source, e.target) for e in edges()}
    # `from pkg import name` resolves to the package's __init__, a submodule to that submodule.
    assert ("seqlab_plugins.architectures.presets", "seqlab_plugins.architectures.seq2seq") in targets
    assert ("seqlab_plugins.architectures.presets", "seqlab_plugins.architectures.seq2seq.partner") in targets


def test_cycle_finder_reports_the_path():
    def edge(a, b):
        return Edge(a, b, REPO / "x.py", 1)

    assert find_cycle({"a", "b", "c"}, [edge("a", "b"), edge("b", "c")]) is None
    cycle = find_cycle({"a", "b", "c"}, [edge("a", "b"), edge("b", "c"), edge("c", "b")])
    assert [(e.source, e.target) for e in cycle] == [("b", "c"), ("c", "b")]
    assert [(e.source, e.target) for e in find_cycle({"a"}, [edge("a", "a")])] == [("a", "a")]


def test_type_checking_imports_are_not_edges():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                     "def f():\n    import c\n")
    finder = _Imports()
    finder.visit(tree)
    assert [found[0] for found in finder.found] == ["typing", "b", "c"]


def test_no_import_cycles():
    """Anywhere in plugins/ and platform/: a cycle either fails at import time or works only by the order in
    which modules happen to be imported."""
    cycle = find_cycle(set(modules()), list(edges()))
    assert cycle is None, "import cycle:\n  " + "\n  ".join(map(str, cycle))


def test_core_imports_no_plugin():
    offenders = [e for e in edges() if _under(e.source, "seqlab") and _under(e.target, "seqlab_plugins")]
    assert offenders == [], "the core imports plugins:\n  " + "\n  ".join(map(str, offenders))


def test_generic_architecture_modules_import_no_architecture_package():
    folder = modules()[ARCHITECTURES].parent
    generic = {m for m, path in modules().items() if path.parent == folder} - ARCHITECTURE_COMPOSERS
    packages = [f"{ARCHITECTURES}.{p}" for p in ARCHITECTURE_PACKAGES]
    assert generic and all(p in modules() for p in packages)
    offenders = [e for e in edges() if e.source in generic and any(_under(e.target, p) for p in packages)]
    assert offenders == [], ("generic architecture modules import an architecture package (the packages build "
                             "on the generic modules, never the reverse):\n  " + "\n  ".join(map(str, offenders)))
