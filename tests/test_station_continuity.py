"""The station across restarts and node blips, with a real journal and a fake node hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from controller.core.auth import free_vend_step
from controller.core.clock import SystemClock
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import NodeLink, PilotState
from tests.support.fake_nodes import FakeHub
from tests.support.watch import BayWatcher

PLUG, BOOT = 3, 17


class ShiftedClock(SystemClock):
    """The system clock, with wall time moved on by a test (a long outage without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return super().wall() + self.offset


class Rig(BayWatcher):
    def __init__(self, station: Station, hub: FakeHub, journal: Journal) -> None:
        super().__init__(station)
        self.hub, self.journal = hub, journal

    async def events(self, kind: str) -> list[dict[str, Any]]:
        rows = await self.journal.query("SELECT data FROM events WHERE kind=? ORDER BY id", (kind,))
        return [json.loads(r["data"]) for r in rows]

    async def outbox(self) -> list[str]:
        return [r["action"] for r in await self.journal.query("SELECT action FROM outbox")]


@contextlib.asynccontextmanager
async def running(
    tmp: Path, clock: ShiftedClock | None = None, max_interruption_s: float = 900
) -> AsyncIterator[Rig]:
    cfg = parse_config(
        {
            "station": {"id": "test-1", "data_dir": str(tmp)},
            "timers": {"tick_s": 0.05, "lease_s": 1.0, "max_interruption_s": max_interruption_s},
            "buses": [{"id": "bus1", "port": "/dev/null"}],
            "bays": [{"id": "b1", "connector": 1, "bus": "bus1", "address": 1}],
        }
    )
    journal = await Journal.open(tmp / "journal.sqlite3")
    hub = FakeHub()
    station = Station(cfg, journal, hubs={"bus1": hub}, clock=clock)
    station.authorizer.add(free_vend_step())
    await station.restore()
    task = asyncio.create_task(station.run())
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        yield Rig(station, hub, journal)
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 5)
        await journal.close()


async def start_charging(tmp: Path, clock: ShiftedClock | None = None) -> str:
    async with running(tmp, clock) as rig:
        rig.hub.telemetry("b1", pilot=PilotState.B, energy_wh=100, plug_count=PLUG, boot_id=BOOT)
        await rig.status("b1", "Available")
        out = await rig.station.commands.present_token("b1", "CARD")
        assert out.ok and out.session_id
        rig.hub.telemetry(
            "b1",
            current_a=16,
            energy_wh=110,
            relay_on=True,
            pilot=PilotState.C,
            plug_count=PLUG,
            boot_id=BOOT,
        )
        await rig.status("b1", "Charging")
        return out.session_id


async def test_restart_waits_suspended_then_continues_and_re_arms(tmp_path: Path) -> None:
    sid = await start_charging(tmp_path)
    async with running(tmp_path) as rig:
        snap = rig.station.snapshots.bay(rig.station.bays["b1"])
        assert snap["status"] == "SuspendedEVSE" and snap["offline_reason"] == "controller_restart"
        assert snap["interrupted_since"] is not None and snap["session"]["id"] == sid
        node = rig.hub.nodes["b1"]
        # The node's failsafe opened the relay during the outage; same plug, same boot.
        rig.hub.telemetry(
            "b1", energy_wh=115, relay_on=False, pilot=PilotState.B, plug_count=PLUG, boot_id=BOOT
        )
        await node.wait_output(lambda o: o[0] and o[1] > 0)  # re-armed
        snap = await rig.until("b1", lambda s: s["offline_reason"] is None)
        assert snap["session"]["id"] == sid and snap["session"]["energy_wh"] == 15
        assert snap["interrupted_since"] is None
        gaps = await rig.events("interruption")
        assert [(g["cause"], g["outcome"]) for g in gaps] == [("controller_restart", "resumed")]
        assert await rig.outbox() == ["StartTransaction"]


async def test_an_outage_past_the_bound_closes_the_session(tmp_path: Path) -> None:
    clock = ShiftedClock()
    await start_charging(tmp_path, clock)
    clock.offset = 901.0  # the controller stayed down for 15 minutes
    async with running(tmp_path, clock) as rig:
        rig.hub.telemetry(
            "b1", energy_wh=115, relay_on=False, pilot=PilotState.B, plug_count=PLUG, boot_id=BOOT
        )
        await rig.until("b1", lambda s: s["session"] is None)
        rows = await rig.journal.sessions()
        assert [(r["stop_reason"], r["meter_stop_wh"]) for r in rows] == [
            ("InterruptedTooLong", 115)
        ]
        assert await rig.outbox() == ["StartTransaction", "StopTransaction"]


async def test_a_silent_node_is_given_up_on_at_the_bound(tmp_path: Path) -> None:
    await start_charging(tmp_path)
    async with running(tmp_path, max_interruption_s=0.5) as rig:
        # The node never answers: the hub declares it offline, the bound runs out.
        rig.hub.emit(NodeLink("b1", 0.0, online=False, reason="heartbeat timeout"))
        snap = await rig.until("b1", lambda s: s["session"] is None)
        assert snap["status"] == "Faulted" and snap["offline_reason"] == "node_offline"
        rows = await rig.journal.sessions()
        assert [r["stop_reason"] for r in rows] == ["InterruptedTooLong"]


async def test_a_node_without_continuity_says_so_and_keeps_the_relay_rule(tmp_path: Path) -> None:
    await start_charging(tmp_path)
    async with running(tmp_path) as rig:
        with capture_logs() as logs:
            rig.hub.telemetry("b1", energy_wh=115, relay_on=False, pilot=PilotState.B)
            await rig.until("b1", lambda s: s["session"] is None)
        assert any(ln["event"] == "recovery.no_plug_continuity" for ln in logs)
        rows = await rig.journal.sessions()
        assert [r["stop_reason"] for r in rows] == ["Reboot"]  # the previous run stopped cleanly


async def test_node_offline_mid_session_is_explained_and_recorded(tmp_path: Path) -> None:
    sid = await start_charging(tmp_path)
    async with running(tmp_path) as rig:
        rig.hub.telemetry(
            "b1", energy_wh=115, relay_on=True, pilot=PilotState.C, plug_count=PLUG, boot_id=BOOT
        )
        await rig.until("b1", lambda s: s["offline_reason"] is None and s["status"] == "Charging")
        rig.hub.emit(NodeLink("b1", 0.0, online=False, reason="heartbeat timeout"))
        snap = await rig.until("b1", lambda s: s["offline_reason"] == "node_offline")
        assert snap["interrupted_since"] is not None and snap["session"]["id"] == sid
        rig.hub.emit(NodeLink("b1", 0.0, online=True, reason="frame received"))
        rig.hub.telemetry(
            "b1", energy_wh=120, relay_on=True, pilot=PilotState.C, plug_count=PLUG, boot_id=BOOT
        )
        await rig.until("b1", lambda s: s["interrupted_since"] is None)
        gaps = await rig.events("interruption")
        assert [(g["cause"], g["outcome"]) for g in gaps] == [
            ("controller_restart", "resumed"),
            ("node_offline", "resumed"),
        ]
