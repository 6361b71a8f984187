"""A station with software bay nodes and the OCPP client, for development and crash tests.

``python -m tests.support.ocpp_station --data DIR --url ws://127.0.0.1:9000/ocpp --cp-id CP1``
runs a real :class:`Station` (journal in DIR) whose bays are fed by
:class:`FakeHub`, an in-process stand-in for the node link that reports
telemetry like a node would (energy counts up while the relay is on and the
"vehicle" draws current). The crash test kills this process with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from controller.core.config import (
    BayConfig,
    BusConfig,
    StationConfig,
    StationSection,
    TimersSection,
)
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import LinkStats, NodeLink, NodeSink, NodeTelemetry


@dataclass(slots=True)
class FakeNode:
    """One simulated node: obeys set_output, draws ``ev_current_a`` while the relay is on."""

    node_id: str
    relay_on: bool = False
    setpoint_a: float = 0.0
    locked: bool | None = None
    ev_current_a: float = 10.0
    energy_wh: float = 1000.0
    soc_pct: float | None = None
    outputs: list[tuple[bool, float]] = field(default_factory=list)
    _stats: LinkStats = field(default_factory=LinkStats)
    _at: float = field(default_factory=time.monotonic)

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        self.relay_on, self.setpoint_a = relay_on, current_a
        self.outputs.append((relay_on, current_a))

    async def set_lock(self, *, locked: bool) -> None:
        self.locked = locked

    def stats(self) -> LinkStats:
        return self._stats

    def current_a(self) -> float:
        return min(self.ev_current_a, self.setpoint_a) if self.relay_on else 0.0

    def telemetry(self) -> NodeTelemetry:
        now = time.monotonic()
        amps = self.current_a()
        self.energy_wh += amps * 230 * 3 * (now - self._at) / 3600
        self._at = now
        return NodeTelemetry(
            node_id=self.node_id,
            at=now,
            current_a=(amps, amps, amps),
            voltage_v=(230.0, 230.0, 230.0),
            energy_wh=int(self.energy_wh),
            relay_on=self.relay_on,
            setpoint_a=self.setpoint_a,
            lease_remaining_s=5.0,
            locked=self.locked,
            soc_pct=self.soc_pct,
        )


class FakeHub:
    """A NodeHub whose nodes report telemetry every ``period_s`` and on :meth:`push`."""

    def __init__(self, node_ids: list[str], period_s: float = 0.2) -> None:
        self.nodes = {n: FakeNode(n) for n in node_ids}
        self.period_s = period_s
        self._sink: NodeSink | None = None

    def node(self, node_id: str) -> FakeNode:
        return self.nodes[node_id]

    def push(self, node_id: str | None = None) -> None:
        if self._sink is None:
            return
        for n in [self.nodes[node_id]] if node_id else list(self.nodes.values()):
            self._sink(n.telemetry())

    async def run(self, sink: NodeSink) -> None:
        self._sink = sink
        for n in self.nodes:
            sink(NodeLink(n, time.monotonic(), True))
        while True:
            self.push()
            await asyncio.sleep(self.period_s)


def station_config(data: Path, bays: int = 3) -> StationConfig:
    return StationConfig(
        station=StationSection(id="dev-station", data_dir=data),
        timers=TimersSection(tick_s=0.5),
        buses=[BusConfig(id="sim")],
        bays=[
            BayConfig(id=f"bay{i}", connector=i, bus="sim", address=i, max_current_a=16.0)
            for i in range(1, bays + 1)
        ],
    )


async def open_station(data: Path, bays: int = 3, period_s: float = 0.2) -> tuple[Station, FakeHub]:
    cfg = station_config(data, bays)
    journal = await Journal.open(data / "journal.sqlite3")
    hub = FakeHub([b.node_id for b in cfg.bays], period_s)
    station = Station(cfg, journal, hubs={"sim": hub})
    await station.restore()
    return station, hub


async def _main(args: argparse.Namespace) -> int:
    from cloud_sync.assemble import build
    from cloud_sync.config import OcppConfig

    station, _ = await open_station(Path(args.data), args.bays)
    cfg = OcppConfig(
        url=args.url,
        charge_point_id=args.cp_id,
        backoff_min_s=0.05,
        backoff_max_s=0.5,
        keys={"MeterValueSampleInterval": "0"},
    )
    up = build(cfg, station)
    station.add_service("ocpp", up.run)
    try:
        await station.run()
    finally:
        await station.journal.close()
    return station.exit_code


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.support.ocpp_station")
    p.add_argument("--data", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--cp-id", default="CP1")
    p.add_argument("--bays", type=int, default=3)
    raise SystemExit(asyncio.run(_main(p.parse_args())))


if __name__ == "__main__":
    main()
