"""A real Station on passive fake hubs, and the node reports the tests hand it.

Many core tests and benchmarks drive a station by handing it node reports themselves
(``station.nodes.take``) on a clock they move: :func:`passive_station` builds it (real
journal on disk, free vend, restored and running, one passive :class:`FakeHub` per bus)
and stops it; :func:`report` is a three-phase node's telemetry at 230 V.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from controller.core.auth import free_vend_step
from controller.core.config import StationConfig
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import Clock, NodeTelemetry, PilotState
from tests.support.fake_nodes import FakeHub, FakeNode


def report(
    node_id: str,
    at: float,
    amps: float,
    pilot: PilotState,
    *,
    energy_wh: int = 1000,
    lease_remaining_s: float = 5.0,
) -> NodeTelemetry:
    """What a node reports: ``amps`` on each of three phases at 230 V, its relay on while it
    draws, the setpoint 16 A, the first plug of its first boot."""
    return NodeTelemetry(
        node_id=node_id,
        at=at,
        current_a=(amps, amps, amps),
        voltage_v=(230.0, 230.0, 230.0),
        energy_wh=energy_wh,
        relay_on=amps > 0,
        setpoint_a=16.0,
        lease_remaining_s=lease_remaining_s,
        pilot=pilot,
        plug_count=1,
        boot_id=1,
    )


@contextlib.asynccontextmanager
async def passive_station(
    cfg: StationConfig, journal_path: Path, *, clock: Clock | None = None
) -> AsyncIterator[tuple[Station, dict[str, FakeHub]]]:
    """The station running on passive hubs (one per bus), its hubs ready; stopped after."""
    hubs = {
        bus.id: FakeHub([FakeNode(b.node_id) for b in cfg.bays if b.bus == bus.id])
        for bus in cfg.buses
    }
    journal = await Journal.open(journal_path)
    station = Station(cfg, journal, hubs=dict(hubs), clock=clock)
    station.authorizer.add(free_vend_step())
    await station.restore()
    run = asyncio.create_task(station.run())
    try:
        for hub in hubs.values():
            await hub.running.wait()
        yield station, hubs
    finally:
        station.request_stop("test")
        await asyncio.wait_for(run, 30)
        await journal.close()
