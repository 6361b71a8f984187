"""A station with software bay nodes and the OCPP client, for development and crash tests.

``python -m tests.support.ocpp_station --data DIR --url ws://127.0.0.1:9000/ocpp --cp-id CP1``
runs a real :class:`Station` (journal in DIR) whose bays are fed by
:class:`tests.support.fake_nodes.FakeHub`, self-driving: every bay has a
vehicle plugged in that draws up to 10 A on three phases while the relay is on,
and its node has no pilot to report (energy counts up from the currents). The
crash test kills this process with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
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
from tests.support.fake_nodes import FakeHub, FakeNode


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
    hub = FakeHub(
        [FakeNode(b.node_id, plugged=True, ev_max_a=10.0, pilot=False) for b in cfg.bays],
        period_s=period_s,
    )
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
