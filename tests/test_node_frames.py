"""Node frames are checked, not trusted: a real station, the real serial hub, simulated nodes
on a pseudo-terminal. Forged energy, forged door events, and a second device on one address."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from controller.core.auth import free_vend_step
from controller.core.bay import StopReason
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ops.metrics import collector_for, read_samples
from controller.ports import NodeEventKind
from drivers.esp32.assemble import build_serial
from simulators.esp32_node import SimNodeSpec, SimulatedBus
from simulators.esp32_node.node import SimNode
from tests.support.watch import BayWatcher


class Rig(BayWatcher):
    def __init__(self, station: Station, bus: SimulatedBus) -> None:
        super().__init__(station, timeout=10.0)
        self.bus = bus

    def node(self, name: str = "bay1") -> SimNode:
        return self.bus.nodes[name]

    async def audit(self, kind: str) -> list[dict[str, Any]]:
        rows = await self.station.journal.query("SELECT detail FROM audit WHERE kind=?", (kind,))
        return [json.loads(r["detail"]) for r in rows]


@contextlib.asynccontextmanager
async def station_on_a_pty(
    tmp: Path, kind: str = "evse", *, continuity: bool = True, serial: str | None = None
) -> AsyncIterator[Rig]:
    cfg = parse_config(
        {
            "station": {"id": "frames", "data_dir": str(tmp)},
            "timers": {"tick_s": 0.1, "lease_s": 3.0},
            "buses": [{"id": "rs485", "port": str(tmp / "ttyBAYS"), "host_timeout_s": 10.0}],
            "bays": [
                {
                    "id": "bay1",
                    "connector": 1,
                    "kind": kind,
                    "bus": "rs485",
                    "address": 2,
                    "max_current_a": 16,
                    **({"node_serial": serial} if serial else {}),
                }
            ],
        }
    )
    spec = SimNodeSpec("bay1", 2, "evse" if kind == "evse" else "locker", continuity=continuity)
    async with SimulatedBus(tmp, [spec]) as bus:
        hub = build_serial(cfg.buses[0], cfg.bays, cfg)
        journal = await Journal.open(tmp / "journal.sqlite3")
        station = Station(cfg, journal, hubs={"rs485": hub})
        station.authorizer.add(free_vend_step())
        await station.restore()
        task = asyncio.create_task(station.run())
        try:
            yield Rig(station, bus)
        finally:
            station.request_stop("test")
            await asyncio.wait_for(task, 10)
            await journal.close()


def faulted_or_ended(snap: dict[str, Any]) -> bool:
    """What the bay did with a report it should not believe: a fault, or (wrongly) the end."""
    return snap["fault"] is not None or snap["session"] is None


async def charging(rig: Rig, token: str = "CARD-1") -> str:
    node = rig.node()
    node.plug_in(rig.bus.clock(), max_a=16.0, charger_a=5.0)
    await rig.status("bay1", "Available")
    out = await rig.station.commands.present_token("bay1", token)
    assert out.ok and out.session_id, out
    if node.kind == "locker":
        await rig.until("bay1", lambda s: s["locked"] is False)
        node.open_door()  # the driver puts the e-bike in and shuts the door: the station locks
        await rig.until("bay1", lambda s: s["door_closed"] is False)
        node.close_door()
        await rig.until("bay1", lambda s: s["locked"] is True and s["door_closed"] is True)
    await rig.until("bay1", lambda s: s["status"] == "Charging" and s["session"]["energy_wh"] > 0)
    return out.session_id


# --------------------------------------------------------------------------- energy


async def test_a_forged_5_mwh_frame_is_rejected_and_real_metering_goes_on(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        sid = await charging(rig)
        node = rig.node()
        booked = rig.station.bays["bay1"].state.session.energy_wh  # type: ignore[union-attr]
        with capture_logs() as logs:
            node.forge_telemetry(energy_wh=int(node.physics.energy_wh) + 5_000_000)
            await rig.bus.wait_until(lambda: not node.queue)
            # Real frames after it are booked again: metering is not frozen.
            snap = await rig.until("bay1", lambda s: s["session"]["energy_wh"] >= booked + 3)
        assert snap["session"]["energy_wh"] < 1000
        assert any(ln["event"] == "node.reading_rejected" for ln in logs)
        assert rig.station.nodes.rejected_readings == {("bay1", "jump"): 1}
        metrics = read_samples(await collector_for(rig.station).render())
        key = ("edge_station_node_rejected_readings_total", {"bay": "bay1", "verdict": "jump"})
        assert metrics[(key[0], frozenset(key[1].items()))] == 1
        [audit] = await rig.audit("reading_rejected")
        assert audit["verdict"] == "jump" and audit["value_wh"] > 5_000_000
        out = await rig.station.commands.stop_session(sid, StopReason.LOCAL)
        assert out.ok and out.data["energy_wh"] < 1000
        row = await rig.station.journal.session(sid)
        assert row is not None and row["energy_wh"] == out.data["energy_wh"]
        assert row["meter_stop_wh"] <= int(node.physics.energy_wh)


# --------------------------------------------------------------------------- door


async def test_a_forged_door_opened_faults_the_locker_instead_of_ending_the_session(
    tmp_path: Path,
) -> None:
    async with station_on_a_pty(tmp_path, "locker") as rig:
        sid = await charging(rig)
        rig.node().forge_event("door_opened", "forced")  # the door is shut and latched
        snap = await rig.until("bay1", faulted_or_ended)
        assert snap["fault"] == "door_contradiction" and "door" in snap["fault_message"]
        assert snap["session"] is not None and snap["session"]["id"] == sid
        rows = await rig.station.journal.sessions()
        assert [(r["state"], r["stop_reason"]) for r in rows] == [("open", None)]
        await rig.bus.wait_until(lambda: not rig.node().physics.relay_closed)  # paused, safe
        await rig.station.commands.clear_fault("bay1")
        await rig.until("bay1", lambda s: s["fault"] is None and s["status"] == "Charging")


async def test_a_forged_door_closed_does_not_lock_an_open_door(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path, "locker") as rig:
        node = rig.node()
        node.plug_in(rig.bus.clock(), charger_a=1.5)
        await rig.status("bay1", "Available")
        out = await rig.station.commands.present_token("bay1", "BIKE")
        assert out.ok
        await rig.until("bay1", lambda s: s["locked"] is False)
        node.open_door()
        await rig.until("bay1", lambda s: s["door_closed"] is False)
        node.forge_event("door_closed")  # the door still stands open
        snap = await rig.until("bay1", faulted_or_ended)
        assert snap["fault"] == "door_contradiction" and snap["door_closed"] is False
        assert not node.physics.locked
        assert NodeEventKind.LOCKED not in [e.kind for e in node.counters.events]


async def test_a_real_forced_door_still_stops_the_session_as_door_forced(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path, "locker") as rig:
        sid = await charging(rig)
        rig.node().open_door()  # crowbar: the sensors agree, open while latched
        await rig.until("bay1", lambda s: s["session"] is None)
        row = await rig.station.journal.session(sid)
        assert row is not None and row["stop_reason"] == "DoorForced"
        assert rig.station.bays["bay1"].state.fault is None


# --------------------------------------------------------------------------- two devices


async def intruder_on_address_2(
    rig: Rig, *, continuity: bool = True, serial: str = "CLONE"
) -> None:
    """A second device answers on the bay's address: other firmware, other serial, no car."""
    rig.bus.add_node(
        SimNodeSpec("intruder", 2, continuity=continuity, serial=serial, firmware="clone/6.6.6")
    )


async def test_a_second_device_on_the_address_faults_the_bay_and_never_ends_the_session(
    tmp_path: Path,
) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        sid = await charging(rig)
        with capture_logs() as logs:
            await intruder_on_address_2(rig)  # its telemetry says: no vehicle (pilot A)
            snap = await rig.until("bay1", faulted_or_ended)
            # Let the intruder talk a while: HELLO + TELEMETRY, again and again.
            await rig.bus.wait_until(lambda: rig.node("intruder").counters.tx_frames >= 15, 15)
        assert snap["fault"] == "address_conflict"
        assert snap["fault_message"] and "Two devices" in snap["fault_message"]
        assert any(ln["event"] == "node.address_conflict" for ln in logs)
        st = rig.station.bays["bay1"].state
        assert st.session is not None and st.session.session_id == sid
        rows = await rig.station.journal.sessions()
        assert [(r["state"], r["stop_reason"]) for r in rows] == [("open", None)]
        # The owner removes the second device and clears the fault: charging goes on.
        rig.bus.remove_node("intruder")
        await rig.station.commands.clear_fault("bay1")
        await rig.until("bay1", lambda s: s["fault"] is None and s["status"] == "Charging")


async def test_two_old_firmware_devices_are_told_apart_by_their_counts(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path, continuity=False) as rig:
        sid = await charging(rig)
        await intruder_on_address_2(rig, continuity=False)
        snap = await rig.until("bay1", faulted_or_ended)
        assert snap["fault"] == "address_conflict"
        await rig.bus.wait_until(lambda: rig.node("intruder").counters.tx_frames >= 15, 15)
        rows = await rig.station.journal.sessions()
        assert [(r["id"], r["state"]) for r in rows] == [(sid, "open")]


async def test_a_node_that_is_not_the_configured_one_faults_the_bay(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path, serial="A4CF12E8") as rig:
        snap = await rig.until("bay1", lambda s: s["fault"] is not None)
        assert snap["fault"] == "node_identity"  # the simulated node says SIM-bay1
        out = await rig.station.commands.present_token("bay1", "CARD")
        assert not out.ok and out.code == "bay_faulted"
