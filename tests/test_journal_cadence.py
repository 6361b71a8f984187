"""The journal's write cadence and its pages on flash (issue 20: ≤ 1 MB per bay per day).

- The interval of the minute rows' writes: chosen by the station's size unless
  ``[journal] checkpoint_s`` is set; check-config says which.
- A crash in the middle of an interval loses no session and no more than that
  interval's progress, and the restart continues each session from its node's register.
- A minute write costs one page of the write-ahead log (two OS pages) unless the table
  grows: minute rows are appended, not balanced into their neighbours (schema 8); a
  journal of schema 7 keeps its minute rows.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.cli.main import main
from controller.core import samples
from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import MINUTE_KEY, Journal, MinuteRow, minute_id
from controller.core.schema import MIGRATIONS
from controller.core.station import Station
from controller.ports import NodeTelemetry, PilotState
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.support.passive import report

T0 = 1_800_000_000.0  # a whole minute, and a whole 10 minutes


def _cfg(
    tmp: Path, bays: int, journal: dict[str, float] | None = None, **extra: object
) -> dict[str, Any]:
    return {
        "station": {"id": "cadence", "data_dir": str(tmp)},
        "timers": {"lease_s": 5.0, "connection_timeout_s": 3600},
        "journal": journal or {},
        "buses": [{"id": "bus"}],
        "bays": [
            {"id": f"b{i + 1}", "connector": i + 1, "bus": "bus", "address": i + 1}
            for i in range(bays)
        ],
        **extra,
    }


# --------------------------------------------------------------------------- the interval


@pytest.mark.parametrize(
    ("sources", "minutes"),
    [(1, 10), (4, 10), (5, 8), (8, 5), (10, 4), (16, 3), (20, 2), (39, 2), (40, 1), (256, 1)],
)
def test_the_default_interval_gives_each_write_enough_rows(sources: int, minutes: int) -> None:
    assert samples.default_interval_s(sources) == minutes * 60.0


def test_the_station_counts_bays_and_grid_and_pv_meters(tmp_path: Path) -> None:
    meters = [
        {"name": "g", "role": "grid"},
        {"name": "g2", "role": "grid"},  # one "grid" row a minute however many meters
        {"name": "p", "role": "pv"},
        {"name": "m", "role": "bay", "bay": "b1"},
    ]
    cadence = samples.journal_interval(parse_config(_cfg(tmp_path, 8, meters=meters)))
    assert cadence.sources == 10 and not cadence.configured
    assert cadence.interval_s == 240.0


@pytest.mark.parametrize("bays", [4, 16, 64])
def test_an_explicit_checkpoint_s_wins(tmp_path: Path, bays: int) -> None:
    cadence = samples.journal_interval(
        parse_config(_cfg(tmp_path, bays, journal={"checkpoint_s": 60}))
    )
    assert cadence.interval_s == 60.0 and cadence.configured
    assert "journal.checkpoint_s" in cadence.describe()


async def test_the_station_writes_at_the_interval_it_chose(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path, 4))
    j = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        clock = _Clock(T0 + 42.5)
        st = Station(cfg, j, hubs={"bus": FakeHub([FakeNode("b1")])}, clock=clock)
        assert st.samples.interval_s == 600.0
        assert st.samples.cadence.describe() == (
            "The journal writes the meter figures every 10 minutes, chosen for 4 meter sources "
            "(bays, grid and PV meters); set journal.checkpoint_s to choose."
        )
        # Just after the tenth minute turns, and every 10 minutes from then on.
        assert abs(st.samples._next_wait() - (600.0 - 42.5 + samples.FLUSH_LAG_S)) < 1e-6
        clock.at = T0 + 600.0 + samples.FLUSH_LAG_S
        assert abs(st.samples._next_wait() - 600.0) < 1e-6
    finally:
        await j.close()


async def test_the_start_up_log_says_which_interval(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with _station(tmp_path, 16, T0 + 5.0):
            for _ in range(100):  # the writer's task says it as it starts: let it run
                if any(e["event"] == "journal.cadence" for e in logs):
                    break
                await asyncio.sleep(0)
    said = [e for e in logs if e["event"] == "journal.cadence"]
    assert len(said) == 1 and said[0]["interval_s"] == 180.0 and not said[0]["configured"]
    assert said[0]["message"].startswith("The journal writes the meter figures every 3 minutes")


def test_check_config_says_which_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bays = "".join(
        f'[[bays]]\nid = "b{i}"\nconnector = {i}\nbus = "bus"\naddress = {i}\n'
        for i in range(1, 17)
    )
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\ndata_dir = "{tmp_path}"\n[[buses]]\nid = "bus"\n{bays}')
    assert main(["check-config", str(path)]) == 0
    assert "every 3 minutes, chosen for 16 meter sources" in capsys.readouterr().out
    path.write_text(path.read_text() + "[journal]\ncheckpoint_s = 60\n")
    assert main(["check-config", str(path)]) == 0
    assert "every minute (journal.checkpoint_s)" in capsys.readouterr().out


# --------------------------------------------------------------------------- a crash mid-interval


class _Clock:
    """Simulated time the test moves; the station's own timers never fire (the test writes
    the minute rows at the times its writer would)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def monotonic(self) -> float:
        return self.at - T0

    def wall(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


class _Rig:
    def __init__(self, station: Station, clock: _Clock) -> None:
        self.station = station
        self.clock = clock
        self.energy = {bay: 1000 for bay in station.bays}

    def frame(self, bay: str, amps: float, pilot: PilotState = PilotState.C) -> NodeTelemetry:
        at = self.clock.monotonic()
        return report(bay, at, amps, pilot, energy_wh=self.energy[bay], lease_remaining_s=60.0)

    async def charge(self, seconds: int) -> int:
        """``seconds`` of charging at 16 A (3 Wh a second each), a frame every 10 s, with the
        minute rows written when the station's writer would; returns how many writes."""
        writes = 0
        due = self.clock.wall() + self.station.samples._next_wait()
        for _ in range(seconds // 10):
            step_end = self.clock.wall() + 10
            while due <= step_end:
                self.clock.at = due
                await self.station.samples.flush(final=False)
                writes += 1
                due = self.clock.wall() + self.station.samples._next_wait()
            self.clock.at = step_end
            for bay in self.station.bays:
                self.energy[bay] += 30
                await self.station.nodes.take(self.frame(bay, 16.0))
        return writes


@asynccontextmanager
async def _station(tmp: Path, bays: int, at: float) -> AsyncIterator[_Rig]:
    cfg = parse_config(_cfg(tmp, bays))
    j = await Journal.open(tmp / "journal.sqlite3")
    clock = _Clock(at)
    hub = FakeHub([FakeNode(f"b{i + 1}") for i in range(bays)])
    st = Station(cfg, j, hubs={"bus": hub}, clock=clock)
    st.authorizer.add(free_vend_step())
    await st.restore()
    task = asyncio.create_task(st.run())
    try:
        await hub.running.wait()
        yield _Rig(st, clock)
    finally:
        st.request_stop("test")
        await asyncio.wait_for(task, 10)
        await j.close()


def _crash_image(data: Path, to: Path) -> None:
    """What a ``kill -9`` leaves: the journal's files as they are (every commit is in them)."""
    to.mkdir()
    for f in data.iterdir():
        if f.name.startswith("journal.sqlite3"):
            shutil.copyfile(f, to / f.name)


async def test_a_crash_mid_interval_loses_no_session_and_at_most_the_interval(
    tmp_path: Path,
) -> None:
    data, image = tmp_path / "data", tmp_path / "crash"
    async with _station(data, 4, T0 + 5.0) as r:
        st = r.station
        assert st.samples.interval_s == 600.0  # 4 bays: a write every 10 minutes
        for bay in st.bays:
            await st.nodes.take(r.frame(bay, 0.0, PilotState.B))
            assert (await st.commands.present_token(bay, f"T-{bay}")).ok
        sids = {bay: rt.state.session.session_id for bay, rt in st.bays.items() if rt.state.session}
        assert len(sids) == 4
        writes = await r.charge(25 * 60)  # writes at T0+10 min and T0+20 min
        assert writes == 2
        live = {bay: rt.state.session.meter_wh for bay, rt in st.bays.items() if rt.state.session}
        _crash_image(data, image)  # 5 minutes into the third interval
        registers = dict(r.energy)
    assert all(live[bay] == registers[bay] for bay in live)

    # The image: every session open, its figures at the last write (T0+20 min + 1 s).
    con = sqlite3.connect(image / "journal.sqlite3")
    try:
        open_ids = {row[0] for row in con.execute("SELECT id FROM sessions WHERE state='open'")}
        last_minute = con.execute("SELECT max(minute) FROM meter_minutes").fetchone()[0]
    finally:
        con.close()
    assert open_ids == set(sids.values())
    assert last_minute == T0 + 19 * 60  # the minutes that had ended at the last write

    async with _station(image, 4, T0 + 26 * 60) as r2:
        st2 = r2.station
        for bay, sid in sids.items():
            sess = st2.bays[bay].state.session
            assert sess is not None and sess.session_id == sid
            lost_wh = registers[bay] - sess.meter_wh
            # At most one interval (and the last frame before it) of progress: 3 Wh a second.
            assert 0 <= lost_wh <= 3 * (600 + 10 + samples.FLUSH_LAG_S), (bay, lost_wh)
            assert lost_wh > 0  # the crash did lose the interval's progress (in the journal)
        # The nodes kept counting: the restart continues each session from its register.
        r2.energy = {bay: registers[bay] + 60 for bay in registers}
        for bay in st2.bays:
            await st2.nodes.take(r2.frame(bay, 16.0))
        for bay, sid in sids.items():
            sess = st2.bays[bay].state.session
            assert sess is not None and sess.session_id == sid
            assert sess.meter_wh == registers[bay] + 60
            assert sess.energy_wh == registers[bay] + 60 - 1000


# --------------------------------------------------------------------------- pages per write


def _wal_commits(wal: Path) -> list[tuple[list[int], int]]:
    """The valid transactions of a WAL file: (page numbers, database size in pages)."""
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    out: list[tuple[list[int], int]] = []
    pages: list[int] = []
    off = 32
    while off + 24 + page_size <= len(data) and data[off + 8 : off + 16] == salts:
        page, db_size = struct.unpack(">II", data[off : off + 8])
        pages.append(page)
        if db_size:
            out.append((pages, db_size))
            pages = []
        off += 24 + page_size
    return out


def _rows(minute: float, sources: int) -> list[MinuteRow]:
    return [
        MinuteRow(
            minute=minute,
            source=f"node:bay{i}",
            session_id=f"{i:016x}",
            samples=60,
            energy_wh=1000.0 + minute / 20,
            power_w=11040.0,
            power_max_w=11040.0,
            current_a=[16.0, 16.0, 16.0],
            last_at=minute + 59.7,
        )
        for i in range(sources)
    ]


async def test_a_minute_write_costs_one_page_unless_the_table_grows(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    j = await Journal.open(db)
    try:
        # Some hours first, so the table has its interior page and leaves to append to.
        for m in range(200):
            await j.write_minutes(_rows(T0 + 60 * m, 4), [])
        await j.checkpoint_wal()
        start = T0 + 60 * 200
        for m in range(120):
            await j.write_minutes(_rows(start + 60 * m, 4), [])
        commits = _wal_commits(Path(f"{db}-wal"))
        pages = {
            int(r["pageno"]): (r["name"], r["pagetype"])
            for r in await j.query("SELECT name, pageno, pagetype FROM dbstat")
        }
    finally:
        await j.close()
    assert len(commits) == 120
    size = None
    grew = 0
    for written, db_size in commits:
        kinds = [pages.get(p, ("?", "?")) for p in written]
        leaves = [k for k in kinds if k == ("meter_minutes", "leaf")]
        if size is not None and db_size == size:
            assert kinds == [("meter_minutes", "leaf")], kinds  # just the last leaf
        else:  # a new leaf: the old and the new one, their parent, page 1 (the file's size)
            grew += 1
            assert len(written) <= 4 and len(leaves) <= 2, kinds
        size = db_size
    # 480 rows of ~75 bytes: about ten new leaves, not one a write.
    assert 5 <= grew <= 15, grew


async def test_a_journal_of_schema_7_keeps_its_minute_rows(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    con = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:7]:
        con.executescript(script)
    con.execute("PRAGMA user_version=7")
    con.executemany(
        "INSERT INTO meter_minutes(minute, source, session_id, samples, energy_wh, power_w,"
        " power_max_w, current_a, last_at) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (T0 + 60 * m, src, None, 60, 100.0 + m, p, p, "[1,1,1]", T0 + 60 * m + 59)
            for m in range(3)
            for src, p in (("node:b1", 1000.0), ("grid", 5000.0))
        ],
    )
    con.close()
    j = await Journal.open(db)
    try:
        assert await j.schema_version() == len(MIGRATIONS)
        rows = await j.query("SELECT id, minute, source FROM meter_minutes ORDER BY id")
        assert len(rows) == 6
        assert [r["minute"] for r in rows] == sorted(r["minute"] for r in rows)
        assert all(r["id"] - minute_id(r["minute"]) in range(MINUTE_KEY) for r in rows)
        site = await j.site_power_per_minute(T0, T0 + 180)
        assert [(s["minute"], s["power_w"]) for s in site] == [
            (T0 + 60 * m, 6000.0) for m in range(3)
        ]
        # A source keeps its slot: the same minute written again replaces its row.
        again = _rows(T0 + 60, 1)
        again[0].source = "node:b1"
        await j.write_minutes(again, [])
        one = await j.power_per_minute(["node:b1"], T0, T0 + 180)
        assert [(o["minute"], o["power_w"]) for o in one] == [
            (T0, 1000.0),
            (T0 + 60, 11040.0),
            (T0 + 120, 1000.0),
        ]
        n = await j.query("SELECT count(*) AS n FROM meter_minutes")
        assert n[0]["n"] == 6
    finally:
        await j.close()


def test_ids_keep_minutes_in_order() -> None:
    assert minute_id(T0) < minute_id(T0) + MINUTE_KEY - 1 < minute_id(T0 + 60)
    assert minute_id(T0 + 59.999) == minute_id(T0)
    assert time.time() < 2**63 / MINUTE_KEY * 60  # ids fit SQLite's integers for ages


# --------------------------------------------------------------------------- reads between writes


async def test_readers_see_the_minutes_not_written_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 10 minutes a write: the charts, the statistics and a StopTransaction's data
    still see every minute that has ended, from memory until it is written (and while it
    is), then from the journal: the same figures, never twice, never missing."""
    async with _station(tmp_path, 4, T0 + 5.0) as r:
        st, j = r.station, r.station.journal
        await st.nodes.take(r.frame("b1", 0.0, PilotState.B))
        out = await st.commands.present_token("b1", "T-b1")
        assert out.ok and out.session_id
        assert await r.charge(5 * 60) == 0  # T0+305: minutes 0-4 have ended, none written
        assert (await j.query("SELECT count(*) AS n FROM meter_minutes"))[0]["n"] == 0
        before = await j.power_per_minute(["node:b1"], T0, T0 + 3600)
        assert [b["minute"] for b in before] == [T0 + 60 * m for m in range(5)]
        assert all(abs(b["power_w"] - 11040) < 1 for b in before[1:])
        site = await j.site_power_per_minute(T0, T0 + 3600)
        assert [(s["minute"], s["sources"]) for s in site] == [(T0 + 60 * m, 4) for m in range(5)]
        summary = await j.session_samples("node:b1", out.session_id, T0, T0 + 305, 12)
        assert len(summary) == 5 and summary[-1]["energy_wh"] == 1000 + 3 * 290

        # While the write is under way its minutes are still there.
        real_write = j.write_minutes
        during: list[list[dict[str, Any]]] = []

        async def write_minutes(minutes: list[MinuteRow], progress: list[dict[str, Any]]) -> None:
            during.append(await j.power_per_minute(["node:b1"], T0, T0 + 3600))
            await real_write(minutes, progress)

        monkeypatch.setattr(j, "write_minutes", write_minutes)
        assert await r.charge(6 * 60) == 1  # the write at T0+601
        assert [d["minute"] for d in during[0]] == [T0 + 60 * m for m in range(10)]
        written = (await j.query("SELECT count(*) AS n FROM meter_minutes"))[0]["n"]
        assert written == 40  # minutes 0-9 of 4 bays
        # T0+665: minutes 0-9 from the journal, minute 10 (ended) from memory.
        after = await j.power_per_minute(["node:b1"], T0, T0 + 3600)
        assert [a["minute"] for a in after] == [T0 + 60 * m for m in range(11)]
        assert after[:5] == before  # the same figures from the journal
        assert after[:10] == during[0]
