"""Static facts about the product code for tests/test_architecture.py, read with ``ast``.

Nothing is imported or run: each ``.py`` file under the given packages is
parsed, and every ``import`` statement counts, wherever it stands (module
level, inside a function, under ``if TYPE_CHECKING:``), because each one is a
dependency a reader has to follow. The functions take the repository root, so
a test can point them at a small planted tree and see each check fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PRODUCT = ("controller", "drivers", "cloud_sync", "local_ui", "simulators")


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    line: int


def modules(root: Path, packages: Iterable[str] = PRODUCT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` lands in: itself, or its longest prefix that is a known module."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in known:
            return cand
        parts.pop()
    return None


def _base(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def import_edges(root: Path, packages: Iterable[str] = PRODUCT) -> list[Edge]:
    """Every import from one product module to another (targets outside are dropped)."""
    known = modules(root, packages)
    edges: list[Edge] = []
    for mod, path in known.items():
        for node in ast.walk(_parse(path)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = _base(mod, path, node.level)
                    base = f"{pkg}.{base}" if base else pkg
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in known else base)
            else:
                continue
            for t in targets:
                dst = _resolve(t, known)
                if dst is not None and dst != mod:
                    edges.append(Edge(mod, dst, node.lineno))
    return edges


@dataclass(frozen=True, slots=True)
class Circle:
    path: list[str]  # one concrete circle, closed: [a, b, a]
    members: frozenset[str]  # every module of its strongly connected component

    def __str__(self) -> str:
        text = " -> ".join(self.path)
        if len(self.members) > len(self.path) - 1:
            text += f"  (one circle of {len(self.members)} entangled: {', '.join(sorted(self.members))})"
        return text


def cycles(edges: Iterable[Edge]) -> list[Circle]:
    """One concrete circle per strongly connected component (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[set[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:  # recursion depth is bounded by the module count
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [Circle(_circle(graph, c), frozenset(c)) for c in sorted(comps, key=min)]


def _circle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start = min(comp)
    prev: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle in component {sorted(comp)}")  # pragma: no cover


# --------------------------------------------------------------------------- string literals

_SQL = re.compile(
    r"\bSELECT\b[\s\S]+?\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bREPLACE\s+INTO\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:UNIQUE\s+|TEMP\s+|TEMPORARY\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\bALTER\s+TABLE\b"
    r"|\bDROP\s+(?:TABLE|INDEX|VIEW|TRIGGER)\b"
)


@dataclass(frozen=True, slots=True)
class Literal:
    path: Path
    line: int
    text: str


def _docstrings(tree: ast.Module) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def string_literals(path: Path) -> Iterator[Literal]:
    """Every string literal of a file but docstrings; an f-string counts as one, ``{}`` for values."""
    tree = _parse(path)
    skip = _docstrings(tree)
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = ""
            for part in node.values:
                inside_fstring.add(id(part))
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    text += part.value
                else:
                    text += "{}"
            yield Literal(path, node.lineno, text)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstring
        ):
            yield Literal(path, node.lineno, node.value)


def sql_literals(path: Path) -> list[Literal]:
    return [lit for lit in string_literals(path) if _SQL.search(lit.text)]


_TABLE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE(?:\s+IF\s+(?:NOT\s+)?EXISTS)?"
    r"|INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+ON)\s+(?!SET\b)([A-Za-z_]\w*)"
)


def sql_tables(text: str) -> set[str]:
    """The tables a statement names (after FROM, JOIN, INTO, UPDATE, TABLE, INDEX … ON)."""
    return {m.group(1) for m in _TABLE.finditer(text) if _SQL.search(text)}


@dataclass(frozen=True, slots=True)
class Call:
    path: Path
    line: int
    receiver: str
    method: str


def method_calls(path: Path, methods: Iterable[str]) -> list[Call]:
    """Calls ``<receiver>.<method>(...)`` for the given method names, with the receiver's text."""
    wanted = set(methods)
    out: list[Call] = []
    for node in ast.walk(_parse(path)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in wanted
        ):
            out.append(Call(path, node.lineno, ast.unparse(node.func.value), node.func.attr))
    return out


def attribute_uses(path: Path, names: Iterable[str]) -> list[Call]:
    """Any ``<x>.<name>`` (called or not): a method passed around counts as a use."""
    wanted = set(names)
    return [
        Call(path, node.lineno, ast.unparse(node.value), node.attr)
        for node in ast.walk(_parse(path))
        if isinstance(node, ast.Attribute) and node.attr in wanted
    ]
