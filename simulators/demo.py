"""``edge-station simulate``: the whole station on simulated hardware, through the real adapters.

Nodes run on pseudo-terminals behind the real serial driver; the grid meter is
a Modbus TCP server behind the real Modbus driver; a development CSMS sits
behind the real OCPP client. Simulated drivers park EVs at the EVSE bays and
use the lockers like people do, so a newcomer sees the whole flow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from controller.assemble import run_station
from controller.config import StationConfig, parse_config
from controller.logs import setup_logging
from controller.station import Station
from simulators.esp32_node import control
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus

log = structlog.get_logger(__name__)

# A demo extension hooks in here: (config dict, exit stack, simulated bus) -> awaitable.
DemoPart = Callable[[dict[str, Any], contextlib.AsyncExitStack, SimulatedBus], Awaitable[None]]
PARTS: list[DemoPart] = []


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="run the station on simulated hardware")
    p.add_argument("--bays", type=int, default=4, help="number of bays (1..32)")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--data-dir", type=Path, default=None, help="default: data/sim-<http port>")
    p.add_argument("--kind", choices=["mixed", "evse", "locker"], default="mixed")
    p.add_argument("--no-demo-drivers", action="store_true", help="leave the bays empty")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    if not 1 <= args.bays <= 32:
        print("--bays must be 1..32")
        return 2
    setup_logging(args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(simulate(args))
    return 0


def kinds_for(n: int, kind: str) -> list[str]:
    if kind != "mixed":
        return [kind] * n
    # Half EV chargers, half e-bike lockers (at least one EVSE).
    return ["evse" if i < max(1, (n + 1) // 2) else "locker" for i in range(n)]


def sim_config(
    data: Path, port_path: str, kinds: list[str], host: str, http_port: int
) -> dict[str, Any]:
    return {
        "station": {
            "id": f"sim-{http_port}",
            "name": "edge-station (simulated)",
            "data_dir": str(data),
        },
        "http": {"host": host, "port": http_port},
        "auth": {"free_vend": True},
        "timers": {"connection_timeout_s": 300, "exit_grace_s": 60},
        "buses": [{"id": "bays", "transport": "serial", "port": port_path, "host_timeout_s": 10}],
        "bays": [
            {
                "id": f"bay{i}",
                "connector": i,
                "kind": kind,
                "bus": "bays",
                "address": i,
                "max_current_a": 16.0 if kind == "evse" else 4.0,
                "min_current_a": 6.0 if kind == "evse" else 0.5,
                "phases": 3 if kind == "evse" else 1,
            }
            for i, kind in enumerate(kinds, start=1)
        ],
    }


async def simulate(args: argparse.Namespace) -> int:
    data: Path = (args.data_dir or Path("data") / f"sim-{args.http_port}").resolve()
    data.mkdir(parents=True, exist_ok=True)
    kinds = kinds_for(args.bays, args.kind)
    specs = [
        SimNodeSpec(f"bay{i}", i, "evse" if k == "evse" else "locker", 32.0, 2.0)
        for i, k in enumerate(kinds, start=1)
    ]
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(SimulatedBus(data / "sim", specs))
        raw = sim_config(data, bus.port_path, kinds, args.http_host, args.http_port)
        for part in PARTS:
            await part(raw, stack, bus)
        cfg = parse_config(raw, "simulate")
        drivers = None if args.no_demo_drivers else DemoDrivers(bus, cfg)
        services: list[tuple[str, Callable[[Station], Awaitable[None]]]] = [
            ("sim-control", lambda st: control.serve(bus, data / "sim" / control.SOCKET_NAME)),
        ]
        if drivers is not None:
            services.append(("demo-drivers", drivers.run))
        log.info(
            "simulate.started",
            data_dir=str(data),
            kiosk=f"http://{args.http_host}:{args.http_port}/kiosk",
            api=f"http://{args.http_host}:{args.http_port}/api/v1/bays",
            bays=len(kinds),
        )
        return await run_station(cfg, station_services=services)
    return 0


class DemoDrivers:
    """People at the simulated bays: EVs parked at the chargers, e-bikes taken to lockers."""

    def __init__(self, bus: SimulatedBus, cfg: StationConfig) -> None:
        self.bus = bus
        self.cfg = cfg

    async def run(self, station: Station) -> None:
        now = self.bus.clock()
        for i, b in enumerate(self.cfg.bays):
            node = self.bus.nodes[b.node_id]
            if b.kind == "evse":
                node.plug_in(
                    now,
                    max_a=16.0,
                    phases=3 if i % 2 == 0 else 1,
                    soc_pct=20.0 + 10 * i,
                    capacity_wh=40_000,
                )
        async with station.updates() as q:
            while True:
                msg = await q.get()
                if msg.get("type") != "bay":
                    continue
                await self._react(msg["bay"])

    async def _react(self, bay: dict[str, Any]) -> None:
        if bay["kind"] != "locker":
            return
        node = self.bus.nodes.get(bay["id"])
        if node is None:
            return
        phase, locked, door_closed = bay["phase"], bay["locked"], bay["door_closed"]
        if phase == "authorized" and locked is False and door_closed:
            # The rider opens the door, plugs the charger in and closes the door.
            await asyncio.sleep(1.0)
            node.open_door(self.bus.clock())
            node.plug_in(self.bus.clock(), charger_a=1.8)
            await asyncio.sleep(1.5)
            node.close_door(self.bus.clock())
        elif phase == "finishing" and locked is False and door_closed:
            await asyncio.sleep(1.0)
            node.open_door(self.bus.clock())
            node.unplug(self.bus.clock())
            await asyncio.sleep(1.5)
            node.close_door(self.bus.clock())
