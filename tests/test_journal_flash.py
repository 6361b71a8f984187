"""The journal kind to flash: per-minute meter figures, batched session checkpoints, crash safety.

The live figures stay in memory; every interval (``[journal] checkpoint_s``, or chosen
by the station's size: tests/test_journal_cadence.py) one transaction writes every
node's minutes and the open sessions' energy. A
``kill -9`` in the middle of charging loses at most one checkpoint of a
session's progress, and the restart continues it from the node's register.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from controller.core import samples
from controller.core.auth import free_vend_step
from controller.core.bay import StopReason
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import NodeTelemetry, PilotState
from simulators.esp32_node.control import request as sim_request
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.support.passive import report
from tests.support.procs import (
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
    write_station_config,
)


class SteppedClock:
    """Real time plus an offset the test moves on."""

    def __init__(self, start: float) -> None:
        self.offset = start - time.time()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Rig:
    def __init__(self, station: Station, clock: SteppedClock) -> None:
        self.station = station
        self.clock = clock
        self.energy = 1000

    def frame(self, amps: float, pilot: PilotState = PilotState.C) -> NodeTelemetry:
        return report("b1", self.clock.monotonic(), amps, pilot, energy_wh=self.energy)

    async def second(self, amps: float, wh: int) -> None:
        """One simulated second: the node counts ``wh`` and reports ``amps``."""
        self.clock.offset += 1.0
        self.energy += wh
        await self.station.nodes.take(self.frame(amps))


@asynccontextmanager
async def rig(tmp: Path, start: float, journal: Journal | None = None) -> AsyncIterator[Rig]:
    cfg = parse_config(
        {
            "station": {"id": "flash", "data_dir": str(tmp)},
            "buses": [{"id": "bus"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus", "address": 1}],
        }
    )
    own = journal is None
    j = journal or await Journal.open(tmp / "journal.sqlite3")
    clock = SteppedClock(start)
    station = Station(cfg, j, hubs={"bus": FakeHub([FakeNode("b1")])}, clock=clock)
    station.authorizer.add(free_vend_step())
    await station.restore()
    task = asyncio.create_task(station.run())
    try:
        yield Rig(station, clock)
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 10)
        if own:
            await j.close()


async def test_frames_become_one_row_per_node_and_minute(tmp_path: Path) -> None:
    start = 1_800_000_000.0  # a minute boundary
    async with rig(tmp_path, start) as r:
        st = r.station
        await st.nodes.take(r.frame(0.0, PilotState.B))
        assert (await st.commands.present_token("b1", "T-1")).ok
        # 130 s of charging: 10 A then 16 A; 3 Wh a second.
        for i in range(130):
            await r.second(10.0 if i < 59 else 16.0, 3)
        sid = st.bays["b1"].state.session.session_id  # type: ignore[union-attr]
        await st.samples.flush()
        rows = await st.journal.query("SELECT * FROM meter_minutes ORDER BY minute")
        samples = await st.journal.query("SELECT count(*) AS n FROM meter_samples")
        per_minute = await st.journal.site_power_per_minute(start, start + 3600)
    assert samples[0]["n"] == 0  # no 1 Hz rows any more
    # 1 frame at the start, then one a second at start+1 .. start+130: minutes 0, 1 and 2.
    assert [row["minute"] for row in rows] == [start, start + 60, start + 120]
    assert [row["samples"] for row in rows] == [60, 60, 11]
    first, second = rows[0], rows[1]
    assert first["session_id"] is None or first["session_id"] == sid
    assert second["session_id"] == sid
    assert abs(second["power_w"] - 16 * 230 * 3) < 1  # seconds 60..119 were all at 16 A
    assert second["power_max_w"] == 16 * 230 * 3
    assert second["energy_wh"] == 1000 + 3 * 119  # the register at its last frame
    assert [m["minute"] for m in per_minute] == [start, start + 60, start + 120]
    assert abs(per_minute[1]["power_w"] - 11040) < 1 and per_minute[1]["sources"] == 1


async def test_power_per_minute_reads_old_1hz_rows_the_same_way(tmp_path: Path) -> None:
    """A journal of an older release keeps its 1 Hz rows: they are averaged per minute."""
    start = 1_800_000_000.0
    j = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await j.add_meter_samples(
            (start + s, "node:b1", None, 1000 + s, 1000.0 + 10 * (s % 60), "[1,1,1]")
            for s in range(120)
        )
        await j.add_meter_samples(
            (start + s, "node:b2", None, 1000 + s, 500.0, "[1,1,1]") for s in range(60)
        )
        rows = await j.site_power_per_minute(start, start + 120)
        one = await j.site_power_per_minute(start, start + 120, source="node:b2")
    finally:
        await j.close()
    mean_b1 = 1000.0 + 10 * sum(range(60)) / 60
    assert [r["minute"] for r in rows] == [start, start + 60]
    assert abs(rows[0]["power_w"] - (mean_b1 + 500.0)) < 1e-6 and rows[0]["sources"] == 2
    assert abs(rows[1]["power_w"] - mean_b1) < 1e-6 and rows[1]["sources"] == 1
    assert rows[0]["power_max_w"] == 1590.0 + 500.0
    assert [(r["minute"], r["power_w"]) for r in one] == [(start, 500.0)]


async def test_a_checkpoint_never_rewrites_a_closed_session(tmp_path: Path) -> None:
    start = 1_800_000_000.0
    async with rig(tmp_path, start) as r:
        st = r.station
        await st.nodes.take(r.frame(0.0, PilotState.B))
        out = await st.commands.present_token("b1", "T-1")
        assert out.ok and out.session_id
        for _ in range(10):
            await r.second(16.0, 3)
        await st.samples.flush()
        carried = await st.journal.query(
            "SELECT energy_wh FROM meter_minutes WHERE session_id = ?", (out.session_id,)
        )
        assert [r["energy_wh"] for r in carried] == [1030]  # the minute row is the checkpoint
        stale = {
            "id": out.session_id,
            "meter_wh": 1010,
            "energy_wh": 10,
            "peak_power_w": 0.0,
            "plug_count": 1,
            "node_boot_id": 1,
            "checkpoint_at": r.clock.wall(),
        }
        await r.second(16.0, 3)
        assert (await st.commands.stop_session(out.session_id, StopReason.LOCAL)).ok
        # A checkpoint taken before the stop and written after it changes nothing.
        await st.journal.write_minutes([], [stale])
        row = await st.journal.session(out.session_id)
    assert row is not None and row["state"] == "closed"
    assert row["energy_wh"] == 33 and row["meter_stop_wh"] == 1033


async def test_a_restart_takes_the_sessions_last_checkpoint(tmp_path: Path) -> None:
    """Between transitions only the checkpoint (the node's minute row) has the session's
    energy: the restore uses it, though the session's own row was not rewritten."""
    start = 1_800_000_000.0
    j = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        async with rig(tmp_path, start, j) as r:
            st = r.station
            await st.nodes.take(r.frame(0.0, PilotState.B))
            out = await st.commands.present_token("b1", "T-1")
            assert out.ok and out.session_id
            for _ in range(100):
                await r.second(16.0, 3)
            await st.samples.flush()
            sid = out.session_id
        row = await j.session(sid)
        assert row is not None and row["checkpoint_at"] is None  # its row was not rewritten
        saved = await j.bay_states()
        # The bay's saved state dates from the last transition (charging began) ...
        assert saved["b1"]["session"]["meter_wh"] < 1300
        async with rig(tmp_path, start + 200, j) as r2:
            sess = r2.station.bays["b1"].state.session
            # ... the restored session stands at its checkpoint, and goes on from there.
            assert sess is not None and sess.session_id == sid
            assert sess.meter_wh == 1300 and sess.energy_wh == 300
            assert r2.station.bays["b1"].state.meter_wh == 1300
    finally:
        await j.close()


async def test_the_sessions_row_is_written_when_no_minute_row_carries_it(tmp_path: Path) -> None:
    """Mid-minute (no minute has ended) the session's own row takes its figures; then, with
    minute rows carrying them, only every ROW_CHECKPOINT_S."""
    start = 1_800_000_000.0  # a whole minute
    async with rig(tmp_path, start + 20) as r:
        st = r.station
        await st.nodes.take(r.frame(0.0, PilotState.B))
        out = await st.commands.present_token("b1", "T-1")
        assert out.ok and out.session_id
        sid = out.session_id
        for _ in range(10):
            await r.second(16.0, 3)
        await st.samples.flush(final=False)  # 20-30 s into the minute: no minute has ended
        row = await st.journal.session(sid)
        assert row is not None and row["meter_wh"] == 1030 and row["checkpoint_at"] is not None
        first = row["checkpoint_at"]
        rewrites = []
        for minute in range(1, 17):
            for _ in range(60):
                await r.second(16.0, 3)
            await st.samples.flush(final=False)
            row = await st.journal.session(sid)
            assert row is not None
            if row["checkpoint_at"] != first:
                rewrites.append((minute, row["meter_wh"]))
                first = row["checkpoint_at"]
        # Minute rows carried the figures; the row itself once, after ROW_CHECKPOINT_S.
        assert len(rewrites) == 1, rewrites
        assert rewrites[0][0] * 60 >= samples.ROW_CHECKPOINT_S
        assert rewrites[0][1] == 1030 + 180 * rewrites[0][0]  # the figures of that moment
        minutes = await st.journal.query(
            "SELECT count(*) AS n FROM meter_minutes WHERE session_id = ?", (sid,)
        )
        assert minutes[0]["n"] >= 16


async def test_the_minute_write_waits_for_the_minute_to_turn(tmp_path: Path) -> None:
    async with rig(tmp_path, 1_800_000_000.0 + 42.5) as r:
        w = r.station.samples
        w.interval_s = 60.0
        assert abs(w._next_wait() - (60.0 - 42.5 + samples.FLUSH_LAG_S)) < 0.05
        r.clock.offset += 60.0 - 42.5 + samples.FLUSH_LAG_S  # just after its write time
        assert abs(w._next_wait() - 60.0) < 0.05
        w.interval_s = 5.0  # shorter than a minute: every interval, wherever the minute is
        assert w._next_wait() == 5.0


# --------------------------------------------------------------------------- a real kill -9


def _session_row(db: Path) -> dict[str, Any] | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM sessions ORDER BY started_at DESC LIMIT 1").fetchone()
        return dict(row) if row else None
    finally:
        con.close()


def _kiosk_bay(base: str, bay: str) -> dict[str, Any]:
    code, body = kiosk_call("GET", f"{base}/api/v1/kiosk/state")
    if code != 200:
        return {"node_online": False, "session": None}  # not listening yet
    return next(b for b in body["bays"] if b["id"] == bay)


def _until(pred: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)  # another process: nothing here to await
    raise TimeoutError(what)


def test_kill_9_mid_charge_keeps_the_energy_within_one_checkpoint(tmp_path: Path) -> None:
    checkpoint_s = 5.0
    sim = start_node_sim(tmp_path / "sim", 1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    cfg = write_station_config(
        tmp_path / "station.toml",
        port_path=str(tmp_path / "sim" / "ttyBAYS"),
        nodes=1,
        http_port=port,
        data_dir=data,
        extra=f"[journal]\ncheckpoint_s = {checkpoint_s}\n",
    )
    db = data / "journal.sqlite3"
    sim_request(tmp_path / "sim", "plug_in", "bay1", max_a=16.0, phases=3)
    ctl = start_controller(cfg)
    try:
        ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready", 30)
        _until(lambda: _kiosk_bay(base, "bay1")["node_online"], "bay1 online")
        code, body = kiosk_call("POST", f"{base}/api/v1/kiosk/bays/bay1/token", {"token": "K1"})
        assert code == 200 and body["code"] == "started", (body, ctl.log.raw[-15:])
        sid = body["session_id"]
        # Charging, and at least two checkpoints in the journal.
        first = _until(
            lambda: (r := _session_row(db)) and r["checkpoint_at"] is not None and r,
            "a first checkpoint",
        )
        _until(
            lambda: (r := _session_row(db)) and r["checkpoint_at"] > first["checkpoint_at"],
            "a second checkpoint",
        )
        snap = _kiosk_bay(base, "bay1")
        live_wh = snap["session"]["energy_wh"]
        power_w = snap["power_w"]
        assert power_w > 5000, snap  # 16 A on three phases
        ctl.kill()
        counters = sim_request(tmp_path / "sim", "state")["bay1"]
        row = _session_row(db)
        assert row is not None and row["id"] == sid and row["state"] == "open"
        # What the journal holds: never ahead of what was live, behind by one checkpoint at most.
        one_checkpoint_wh = power_w * (checkpoint_s + 1.0) / 3600
        assert row["energy_wh"] <= live_wh
        assert live_wh - row["energy_wh"] <= one_checkpoint_wh + 1, (row, live_wh, power_w)

        # The restart continues the session from the node's own register: nothing is lost.
        ctl = start_controller(cfg)
        ctl.log.wait_for(lambda ln: ln.get("event") == "station.ready", 30)
        after = _until(
            lambda: (
                (b := _kiosk_bay(base, "bay1"))["session"]
                and b["session"]["energy_wh"] >= live_wh
                and b
            ),
            "the session continued",
        )
        assert after["session"]["id"] == sid
        stop_at = sim_request(tmp_path / "sim", "state")["bay1"]["energy_wh"]
        assert counters["energy_wh"] <= stop_at
    finally:
        ctl.kill()
        sim.kill()
