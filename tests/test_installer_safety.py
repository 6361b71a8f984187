"""Installer tests against safety, through the real serial driver and the node simulator on a pty.

The station, its journal, the serial hub and the installer's test runner are
the real ones; the node is the simulator behind a pseudo-terminal, so what is
asserted is what the node's relay did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from drivers.esp32.assemble import build_serial
from local_ui.installer import InstallerTests, TestRun
from simulators.esp32_node import SimulatedBus, specs
from simulators.esp32_node.node import SimNode
from tests.support.watch import BayWatcher

LEASE_S = 3.0
PERIOD_S = LEASE_S / 3  # the output loop renews the lease every third of it


@dataclass
class Rig:
    station: Station
    bus: SimulatedBus
    sim: SimNode
    tests: InstallerTests
    watch: BayWatcher

    async def ramp(self, hold_s: float = 4.0) -> TestRun:
        run = await self.tests.start(
            self.station, "bay1", "ramp", actor="user:ian", current_a=16, step_a=10, hold_s=hold_s
        )
        assert run.state == "running" and run.plan == [6, 16], run.view()
        await self.bus.wait_until(lambda: self.sim.physics.relay_closed)
        assert self.sim.physics.setpoint_a == 6.0
        return run


@contextlib.asynccontextmanager
async def station_on_a_pty(tmp: Path) -> AsyncIterator[Rig]:
    async with SimulatedBus(tmp / "bus", specs(1)) as bus:
        cfg = parse_config(
            {
                "station": {"id": "pty-1", "data_dir": str(tmp)},
                "timers": {"tick_s": 0.05, "lease_s": LEASE_S, "node_offline_s": 1.2},
                "buses": [{"id": "bus1", "port": bus.port_path, "host_timeout_s": 5}],
                "bays": [
                    {"id": "bay1", "connector": 1, "bus": "bus1", "address": 1},
                ],
            }
        )
        journal = await Journal.open(tmp / "journal.sqlite3")
        station = Station(cfg, journal, hubs={"bus1": build_serial(cfg.buses[0], cfg.bays, cfg)})
        await station.restore()
        task = asyncio.create_task(station.run())
        try:
            watch = BayWatcher(station, timeout=10)
            await watch.status("bay1", "Available")
            yield Rig(station, bus, bus.nodes["bay1"], InstallerTests(), watch)
        finally:
            station.request_stop("test")
            await asyncio.wait_for(task, 10)
            await journal.close()


async def test_emergency_stop_switches_an_installer_ramp_off_at_the_node(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        run = await rig.ramp()
        await rig.station.safety.emergency_stop(True)
        # The node's relay opens within one output-loop period, not at the lease's end.
        await rig.bus.wait_until(lambda: not rig.sim.physics.relay_closed, limit_s=PERIOD_S)
        applied = rig.sim.counters.commands_applied
        assert run.task is not None
        await asyncio.wait_for(asyncio.shield(run.task), 10)
        view = run.view()
        assert view["state"] == "aborted", view
        assert view["message"] == "The emergency stop ended the test output: the relay is off."
        # The clean-up ran and its outcome is part of the result: accepted, and confirmed by
        # the node's own telemetry.
        assert view["cleanup"]["ok"] is True, view["cleanup"]
        assert view["cleanup"]["telemetry"]["relay_on"] is False
        # It stays off: every lease renewal after the stop keeps the relay open.
        await rig.bus.wait_until(
            lambda: rig.sim.counters.commands_applied >= applied + 2, limit_s=10
        )
        assert not rig.sim.physics.relay_closed and rig.sim.physics.setpoint_a == 0.0
        assert rig.station.bays["bay1"].test_output is None
        # A new test waits until the owner clears the emergency stop.
        again = await rig.station.commands.installer_test_output(
            "bay1", relay_on=True, current_a=6, hold_s=5, actor="user:ian"
        )
        assert not again.ok and again.code == "safe_mode"
        await rig.station.settle()
        audit = await rig.station.journal.audit_log()
        reasons = [json.loads(a["detail"]) for a in audit if a["kind"] == "installer_test_ended"]
        assert reasons == [{"bay_id": "bay1", "reason": "emergency_stop"}]
        ends = [
            json.loads(a["detail"])
            for a in audit
            if a["kind"] == "installer_test" and json.loads(a["detail"]).get("action") == "end"
        ]
        assert ends and all(a["bay_id"] == "bay1" for a in ends)


async def test_a_clean_up_the_node_cannot_confirm_is_reported(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        run = await rig.ramp(hold_s=6.0)
        rig.sim.set_knobs(silent=True)  # the cable is cut in the middle of the test
        assert run.task is not None
        await asyncio.wait_for(asyncio.shield(run.task), 15)
        view = run.view()
        assert view["state"] == "failed", view
        assert view["cleanup"]["ok"] is False and view["cleanup"]["code"] == "not_confirmed"
        assert view["message"] == (
            "The bay's node went offline, so the test output ended. "
            "The node did not confirm that the relay is off."
        )
        # The node's own lease is what switches it off while the host cannot reach it.
        await rig.bus.wait_until(lambda: not rig.sim.physics.relay_closed, limit_s=LEASE_S + 1)


async def test_stopping_the_station_ends_a_running_ramp(tmp_path: Path) -> None:
    async with station_on_a_pty(tmp_path) as rig:
        run = await rig.ramp(hold_s=30.0)
        station = rig.station
    # The ramp was a job of the station's TaskGroup: the station's stop ended it.
    assert run.task is not None and run.task.done()
    assert run.state == "stopped" and run.message == "The station stopped, so the test ended."
    assert station.bays["bay1"].test_output is None
