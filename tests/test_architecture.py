"""The architecture, checked from the source (ast, no imports): circles, layers, who imports
whom, and who writes SQL into which tables.

- No import circle anywhere in product code (imports under ``if TYPE_CHECKING:`` and inside
  functions count: each is a dependency a reader follows).
- Inside ``controller/`` an import only goes down the layers of :data:`LAYERS`.
- ``controller`` imports no adapter; adapters import no other adapter and no controller
  layer above ``ops``; nothing but tests imports ``simulators`` (DESIGN.md's rule), and the
  simulators write their own frame and register encoders: they import no driver codec.
- ``local_ui/`` and ``cloud_sync/`` keep every SQL statement in their ``store.py``; nothing
  there calls the journal's raw SQL methods; a store's SQL names only the tables it creates;
  the core's text never names an adapter's table.

Every check is a function of the repository root, and the ``test_planted_*`` tests point it
at a small tree with one violation in it: each check can fail.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tests.support import codegraph as cg
from tests.support.codegraph import Circle

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top: an import inside controller/ may only go to its own layer or one below.
# The command line sits above the composition root: `edge-station run` has to build a
# station, so cli -> assemble/registry is the downward direction.
LAYERS: list[frozenset[str]] = [
    frozenset({"ports"}),
    frozenset({"load"}),
    frozenset({"core"}),
    frozenset({"ops"}),
    frozenset({"assemble", "registry"}),
    frozenset({"cli"}),
]
ADAPTERS = ("drivers", "cloud_sync", "local_ui")
ADAPTER_MAY_USE = frozenset({"controller", "ports", "load", "core", "ops"})
OWN_TABLES = {"cloud_sync": "cloud_sync/store.py", "local_ui": "local_ui/store.py"}
# What encodes or decodes the wire: a simulator importing one would share its bugs.
DRIVER_CODECS = frozenset({"drivers.esp32.codec", "drivers.esp32.messages", "drivers.modbus.codec"})
RAW_JOURNAL = frozenset({"execute_write", "query", "transaction", "execute", "executemany"})

# --------------------------------------------------------------------------- the checks


def circles(root: Path) -> list[Circle]:
    return cg.cycles(cg.import_edges(root))


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # controller/__init__.py: the package itself, bottom
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return None


def layer_violations(root: Path) -> list[str]:
    """Upward imports inside controller/, and modules that belong to no layer."""
    out: list[str] = []
    for e in cg.import_edges(root, ["controller"]):
        src, dst = _layer(e.src), _layer(e.dst)
        if src is None or dst is None:
            unknown = e.src if src is None else e.dst
            out.append(f"{unknown} is in no layer of controller/: add it to LAYERS")
        elif dst > src:
            out.append(f"{e.src}:{e.line} imports {e.dst} (a layer above it)")
    return sorted(set(out))


def dependency_violations(root: Path) -> list[str]:
    out: list[str] = []
    for e in cg.import_edges(root):
        src_pkg, dst_pkg = e.src.split(".")[0], e.dst.split(".")[0]
        where = f"{e.src}:{e.line} imports {e.dst}"
        if dst_pkg == "simulators" and src_pkg != "simulators":
            out.append(f"{where}: nothing but tests imports simulators")
        elif src_pkg == "simulators" and any(
            e.dst == c or e.dst.startswith(c + ".") for c in DRIVER_CODECS
        ):
            out.append(f"{where}: a simulator writes its own encoder, not the driver's codec")
        elif src_pkg == "controller" and dst_pkg in ADAPTERS:
            out.append(f"{where}: the controller imports no adapter")
        elif src_pkg in ADAPTERS and dst_pkg in ADAPTERS and src_pkg != dst_pkg:
            out.append(f"{where}: adapters do not import each other")
        elif src_pkg in ADAPTERS and dst_pkg == "controller":
            part = e.dst.split(".")[1] if "." in e.dst else "controller"
            if part not in ADAPTER_MAY_USE:
                out.append(f"{where}: adapters use ports, load, core and ops only")
    return out


def _package_files(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def sql_violations(root: Path) -> list[str]:
    """SQL text in local_ui/ or cloud_sync/ outside their store module."""
    out = []
    for pkg, store in OWN_TABLES.items():
        for path in _package_files(root, pkg):
            if path == root / store:
                continue
            for lit in cg.sql_literals(path):
                first = " ".join(lit.text.split())[:70]
                out.append(f"{path.relative_to(root)}:{lit.line}: SQL outside {store}: {first!r}")
    return out


def raw_journal_violations(root: Path) -> list[str]:
    """Raw SQL entry points of the journal used in local_ui/ or cloud_sync/ outside the store."""
    out = []
    for pkg, store in OWN_TABLES.items():
        for path in _package_files(root, pkg):
            if path == root / store:
                continue
            rel = path.relative_to(root)
            for c in cg.attribute_uses(path, RAW_JOURNAL | {"_w", "_r", "_lock"}):
                if c.method == "execute_write" or "journal" in c.receiver:
                    out.append(f"{rel}:{c.line}: {c.receiver}.{c.method} outside {store}")
            for c in cg.method_calls(path, {"query"}):  # whatever holds the journal
                if "journal" not in c.receiver:
                    out.append(f"{rel}:{c.line}: {c.receiver}.query() outside {store}")
    return sorted(set(out))


def _created_tables(path: Path) -> set[str]:
    made: set[str] = set()
    for lit in cg.sql_literals(path):
        made |= set(re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", lit.text))
    return made


def table_violations(root: Path) -> list[str]:
    """A store's SQL names only the tables it creates; the core's text names none of them."""
    out = []
    adapter_tables: set[str] = set()
    for store in OWN_TABLES.values():
        path = root / store
        if not path.exists():
            out.append(f"{store} is missing: the package's SQL lives there")
            continue
        own = _created_tables(path)
        adapter_tables |= own
        for lit in cg.sql_literals(path):
            for table in cg.sql_tables(lit.text) - own:
                out.append(f"{store}:{lit.line}: names table {table!r}, not one of {sorted(own)}")
    if adapter_tables:
        named = re.compile(r"\b(" + "|".join(sorted(adapter_tables)) + r")\b")
        for path in _package_files(root, "controller"):
            for lit in cg.string_literals(path):
                m = named.search(lit.text)
                if m:
                    rel = path.relative_to(root)
                    out.append(f"{rel}:{lit.line}: the core names the adapter table {m.group(1)!r}")
    return out


# --------------------------------------------------------------------------- on the product


def _fmt(items: list[str] | list[Circle]) -> str:
    return "\n  " + "\n  ".join(str(i) for i in items)


def test_no_import_circle_in_product_code() -> None:
    found = circles(ROOT)
    assert not found, "import circles:" + _fmt(found)


def test_controller_layers_only_import_downwards() -> None:
    found = layer_violations(ROOT)
    assert not found, "upward imports:" + _fmt(found)


def test_dependency_rule() -> None:
    found = dependency_violations(ROOT)
    assert not found, "dependency rule broken:" + _fmt(found)


def test_adapters_keep_their_sql_in_their_store() -> None:
    found = sql_violations(ROOT) + raw_journal_violations(ROOT)
    assert not found, "SQL outside the store modules:" + _fmt(found)


def test_each_store_owns_its_tables_and_the_core_none_of_them() -> None:
    found = table_violations(ROOT)
    assert not found, "table ownership:" + _fmt(found)


# --------------------------------------------------------------------------- each check can fail


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for pkg in ("controller", "drivers", "cloud_sync", "local_ui", "simulators"):
        (root / pkg).mkdir(exist_ok=True)
    return root


def test_planted_circle_is_found_with_its_path(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cloud_sync/__init__.py": "",
            "cloud_sync/a.py": "from cloud_sync.b import x\n",
            "cloud_sync/b.py": "def f():\n    from cloud_sync import c\n",
            "cloud_sync/c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from cloud_sync.a import A\n"
            ),
            "cloud_sync/d.py": "from . import a\n",  # relative, into the circle: not part of it
        },
    )
    found = circles(root)
    assert [c.path for c in found] == [
        ["cloud_sync.a", "cloud_sync.b", "cloud_sync.c", "cloud_sync.a"]
    ]
    assert "cloud_sync.a -> cloud_sync.b -> cloud_sync.c -> cloud_sync.a" in str(found[0])


def test_planted_upward_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "controller/__init__.py": "",
            "controller/ports.py": "",
            "controller/load/__init__.py": "",
            "controller/load/model.py": "from controller.ports import P\n",  # down: fine
            "controller/core/__init__.py": "",
            "controller/core/bay.py": "def f():\n    from controller.ops import health\n",
            "controller/ops/__init__.py": "",
            "controller/ops/health.py": "",
            "controller/cli/__init__.py": "",
            "controller/cli/main.py": "from controller import assemble\n",  # down: fine
            "controller/assemble.py": "from controller.cli.main import main\n",
            "controller/gadgets.py": "",
        },
    )
    assert layer_violations(root) == [
        "controller.assemble:1 imports controller.cli.main (a layer above it)",
        "controller.core.bay:2 imports controller.ops.health (a layer above it)",
    ]
    (root / "controller/ports.py").write_text("from controller import gadgets\n")
    assert "controller.gadgets is in no layer of controller/: add it to LAYERS" in (
        layer_violations(root)
    )


def test_planted_dependency_rule_breaks_are_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "controller/__init__.py": "",
            "controller/cli.py": "import drivers.x\n",
            "controller/assemble.py": "",
            "drivers/__init__.py": "",
            "drivers/x.py": "from local_ui import y\n",
            "drivers/modbus/__init__.py": "",
            "drivers/modbus/codec.py": "",
            "local_ui/__init__.py": "",
            "local_ui/y.py": "from simulators.sim import S\nfrom controller import assemble\n",
            "simulators/__init__.py": "",
            "simulators/sim.py": "from drivers import x\n",  # simulators may use drivers
            "simulators/meter.py": "from drivers.modbus.codec import encode\n",  # not codecs
        },
    )
    found = dependency_violations(root)
    assert sorted(v.split(": ", 1)[1] for v in found) == [
        "a simulator writes its own encoder, not the driver's codec",
        "adapters do not import each other",
        "adapters use ports, load, core and ops only",
        "nothing but tests imports simulators",
        "the controller imports no adapter",
    ]


def test_planted_sql_and_raw_journal_calls_are_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "local_ui/store.py": 'SQL = "SELECT * FROM ui_users"\n',  # its own module: fine
            "local_ui/history.py": (
                '"""Reads SELECT x FROM sessions, in a docstring: prose, not SQL."""\n'
                "async def page(journal, where):\n"
                '    return await journal.query(f"SELECT * FROM sessions {where}")\n'
            ),
            "cloud_sync/outbox.py": (
                "async def mark(self, sid):\n"
                '    sql = "UPDATE sessions" " SET ocpp_tx_id=? WHERE id=?"\n'
                "    await self.journal.execute_write(sql, (1, sid))\n"
                "    write = self.j.execute_write\n"
                "    await self._journal._w.execute('PRAGMA x')\n"
                "    await db.query('PRAGMA y')\n"
                "    return 'Please select a bay from the list; DELETE it later'\n"
            ),
        },
    )
    assert sorted(v.split(": SQL")[0] for v in sql_violations(root)) == [
        "cloud_sync/outbox.py:2",
        "local_ui/history.py:3",
    ]
    raw = raw_journal_violations(root)
    assert sorted(r.split(" outside")[0] for r in raw) == [
        "cloud_sync/outbox.py:3: self.journal.execute_write",
        "cloud_sync/outbox.py:4: self.j.execute_write",
        "cloud_sync/outbox.py:5: self._journal._w",
        "cloud_sync/outbox.py:5: self._journal._w.execute",
        "cloud_sync/outbox.py:6: db.query()",
        "local_ui/history.py:3: journal.query",
    ]


def test_planted_foreign_tables_are_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cloud_sync/store.py": (
                'M = ["CREATE TABLE IF NOT EXISTS auth_cache (id_tag TEXT)"]\n'
                'A = "SELECT * FROM auth_cache"\n'
                '"INSERT INTO auth_cache(id_tag) VALUES (?) ON CONFLICT(id_tag) DO UPDATE SET x=1"\n'
                'B = "UPDATE sessions SET ocpp_tx_id=? WHERE id=?"\n'
            ),
            "local_ui/store.py": (
                'M = "CREATE TABLE ui_users (u TEXT); CREATE INDEX ui_x ON ui_users(u)"\n'
                'A = "SELECT u.username FROM ui_sessions s JOIN ui_users u ON u.username = s.u"\n'
            ),
            "controller/core/journal.py": 'M = ["CREATE TABLE auth_cache (id_tag TEXT)"]\n',
        },
    )
    assert sorted(table_violations(root)) == [
        "cloud_sync/store.py:4: names table 'sessions', not one of ['auth_cache']",
        "controller/core/journal.py:1: the core names the adapter table 'auth_cache'",
        "local_ui/store.py:2: names table 'ui_sessions', not one of ['ui_users']",
    ]
