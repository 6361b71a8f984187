"""The station's shape: one coordinator of collaborators, no aliases, no borrowed privates,
and a load loop whose only time is the clock it is given.

The source checks read the product code with :mod:`ast` (nothing is imported to find
them), so they also catch what only runs on some paths.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

from controller.core.bay import Phase
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import Freshness, MeterReading, MeterSample, NodeTelemetry, PilotState

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("controller", "drivers", "cloud_sync", "local_ui", "simulators")
WALL_CLOCK = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
    }
)


def _sources(*packages: str) -> Iterator[tuple[Path, ast.Module]]:
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


# --------------------------------------------------------------------------- the coordinator


def test_station_is_no_stack_of_mixins() -> None:
    assert Station.__bases__ == (object,), [b.__qualname__ for b in Station.__mro__]


def private_aliases(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """Class attributes that only rename a private method (``block = _block``)."""
    found: list[tuple[ast.AST, str]] = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        methods = {
            n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for stmt in cls.body:
            value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
            if isinstance(value, ast.Name) and value.id in methods and value.id.startswith("_"):
                found.append((stmt, f"{cls.name}: {ast.unparse(stmt)}"))
    return found


def test_no_public_name_is_an_alias_of_a_private_method() -> None:
    found = [
        f"{_where(path, node)} {what}"
        for path, tree in _sources(*PRODUCT)
        for node, what in private_aliases(tree)
    ]
    assert found == []


async def test_station_and_its_collaborators_expose_no_renamed_private_method(
    tmp_path: Path,
) -> None:
    """At run time too: no public attribute of the station or a collaborator is the very
    function object of a private one (however it came to be)."""
    cfg = parse_config(
        {
            "station": {"id": "arch", "data_dir": str(tmp_path)},
            "site": {"main_limit_a": 32},
            "buses": [{"id": "bus1", "port": "/dev/null"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus1", "address": 1}],
        }
    )
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        station = Station(cfg, journal)
        lcfg = load_manager_config(cfg)
        assert lcfg is not None
        station.attach_load(lcfg)
    finally:
        await journal.close()
    objects: list[object] = [station]
    objects += [v for k, v in vars(station).items() if not k.startswith("_")]
    renamed = []
    for obj in objects:
        cls = type(obj)
        if cls.__module__.split(".")[0] != "controller":
            continue
        members = inspect.getmembers(cls, inspect.isfunction)
        private = {id(f): n for n, f in members if n.startswith("_") and not n.startswith("__")}
        renamed += [
            f"{cls.__name__}.{n} = {private[id(f)]}"
            for n, f in members
            if id(f) in private and not n.startswith("_")
        ]
    assert len(objects) > 10  # the collaborators were found
    assert renamed == []


# --------------------------------------------------------------------------- the README's trace

HOP = re.compile(r"`([\w/]+\.py):([\w.]+)`")


def readme_trace(text: str) -> list[tuple[str, str]]:
    """The hops of "A driver's stop, traced": (file, function) of each numbered line."""
    section = text.split("**A driver's stop, traced**", 1)[1]
    hops: list[tuple[str, str]] = []
    for line in section.splitlines()[1:]:
        if not line.strip():
            if hops:
                break
            continue
        m = re.match(r"\d+\. " + HOP.pattern, line)
        assert m, f"not a hop: {line!r}"
        hops.append((m.group(1), m.group(2)))
    return hops


def _function(path: str, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    scope: list[ast.stmt] = ast.parse((ROOT / path).read_text(encoding="utf-8")).body
    *classes, name = qualname.split(".")
    for cls in classes:
        scope = next(n.body for n in scope if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(
        n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    )


def _calls(fn: ast.AST) -> set[str]:
    return {
        c.func.attr if isinstance(c.func, ast.Attribute) else c.func.id
        for c in ast.walk(fn)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute | ast.Name)
    }


def test_the_readme_traces_a_stop_as_the_code_runs_it() -> None:
    """Each hop exists, and is called by a hop before it (directly or through at most
    three helpers, followed by name), in five hops or fewer from the kiosk's route."""
    hops = readme_trace((ROOT / "README.md").read_text(encoding="utf-8"))
    assert 2 <= len(hops) <= 5, hops
    assert hops[0][0].startswith("local_ui/") and hops[-1] == (
        "controller/core/journal.py",
        "Journal.commit",
    )
    by_name: dict[str, list[ast.AST]] = {}
    for _path, tree in _sources(*PRODUCT):
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                by_name.setdefault(n.name, []).append(n)
    functions = [_function(path, name) for path, name in hops]

    def reachable(start: ast.AST, depth: int = 4) -> set[str]:
        seen: set[str] = set()
        frontier = _calls(start)
        for _ in range(depth):
            seen |= frontier
            frontier = {
                c for name in frontier for fn in by_name.get(name, []) for c in _calls(fn)
            } - seen
        return seen

    for i in range(1, len(hops)):
        callers = [reachable(fn) for fn in functions[:i]]
        assert any(functions[i].name in r for r in callers), f"nothing before calls {hops[i]}"


# --------------------------------------------------------------------------- private names


def borrowed_privates(path: Path, tree: ast.Module) -> list[str]:
    """``from x import _y`` of a product module: a private helper used outside its module."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in PRODUCT:
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    found.append(f"{_where(path, node)} from {node.module} import {name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in PRODUCT and any(
                    p.startswith("_") and p != "__init__" for p in parts
                ):
                    found.append(f"{_where(path, node)} import {alias.name}")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    found = [hit for path, tree in _sources(*PRODUCT) for hit in borrowed_privates(path, tree)]
    assert found == []


# --------------------------------------------------------------------------- the clock


def wall_clock_calls(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """Calls of the process's own clocks, however ``time``/``datetime`` were imported."""
    names: dict[str, str] = {}  # local name -> what it is ("time", "datetime.datetime", ...)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    found: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts: list[str] = []
        f: ast.expr = node.func
        while isinstance(f, ast.Attribute):
            parts.insert(0, f.attr)
            f = f.value
        if not isinstance(f, ast.Name) or f.id not in names:
            continue
        qualified = ".".join([names[f.id], *parts])
        if qualified in WALL_CLOCK:
            found.append((node, qualified))
    return found


def test_the_load_manager_reads_no_clock_of_its_own() -> None:
    files = [*sorted((ROOT / "controller" / "load").rglob("*.py"))]
    files.append(ROOT / "controller" / "core" / "loadloop.py")
    found = [
        f"{_where(path, node)} {what}()"
        for path in files
        for node, what in wall_clock_calls(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []


def test_the_clock_check_sees_every_spelling() -> None:
    src = (
        "import time\nimport time as t\nimport datetime as dt\n"
        "from datetime import datetime, date\nfrom time import monotonic as mono\n"
        "a = time.monotonic(); b = t.time(); c = dt.datetime.now(); d = datetime.utcnow()\n"
        "e = date.today(); f = mono(); g = dt.datetime.fromtimestamp(0.0)\n"
    )
    assert [q for _n, q in wall_clock_calls(ast.parse(src))] == [
        "time.monotonic",
        "time.time",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.date.today",
        "time.monotonic",
    ]


class FakeClock:
    """Time moves only when the test says so."""

    def __init__(self, wall: float) -> None:
        self._wall = wall
        self._mono = 1000.0

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


async def test_a_rule_window_opens_on_the_clock_the_load_loop_is_given(tmp_path: Path) -> None:
    """ "10 A from 18:00": at 17:59 on the station's clock the bay may have 16 A, at 18:01
    only 10 — whatever time it is on the machine that runs the test."""
    cfg = parse_config(
        {
            "station": {"id": "rules", "data_dir": str(tmp_path)},
            "site": {"main_limit_a": 63},
            "rules": [
                {
                    "id": "evening",
                    "kind": "bay_current_cap",
                    "amps": 10,
                    "from": "18:00",
                    "to": "23:00",
                }
            ],
            "buses": [{"id": "bus1", "port": "/dev/null"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus1", "address": 1}],
        }
    )
    clock = FakeClock(dt.datetime(2024, 6, 3, 17, 59).timestamp())  # local time, a Monday
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        station = Station(cfg, journal, clock=clock)
        await station.restore()
        lcfg = load_manager_config(cfg)
        assert lcfg is not None
        load = station.attach_load(lcfg)

        async def report() -> None:
            now = clock.monotonic()
            tel = NodeTelemetry(
                "b1", now, (0.0, 0.0, 0.0), (230.0,) * 3, 0, False, 0.0, 5.0, pilot=PilotState.B
            )
            await station.nodes.take(tel)
            sample = MeterSample(at=now, current_a=(5.0, 5.0, 5.0))
            station.meters.on_reading(
                MeterReading("grid", now, Freshness.FRESH, sample), role="grid"
            )

        await report()
        assert (await station.commands.present_token("b1", "CARD", preauthorized="test")).ok
        assert station.bays["b1"].state.phase is Phase.AUTHORIZED
        before = await load.step()
        clock.advance(120.0)  # 18:01
        await report()
        after = await load.step()
    finally:
        await journal.close()
    assert before.targets_a["b1"] == 16.0
    assert after.targets_a["b1"] == 10.0
