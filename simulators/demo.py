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
from controller.core.config import StationConfig, parse_config
from controller.core.events import BayChanged
from controller.core.station import Station
from controller.ops.logs import setup_logging
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
    p.add_argument(
        "--ocpp-wallboxes", type=int, default=0, help="add N simulated OCPP 1.6J wallboxes (0..16)"
    )
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    if not 1 <= args.bays <= 32:
        print("--bays must be 1..32")
        return 2
    setup_logging(args.log_level)
    args.data_dir = (args.data_dir or Path("data") / f"sim-{args.http_port}").resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    (args.data_dir / "camera").mkdir(exist_ok=True)
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
                **({} if kind == "evse" else {"phase": f"L{(i - 1) % 3 + 1}"}),
            }
            for i, kind in enumerate(kinds, start=1)
        ],
    }


def wiring(raw: dict[str, Any]) -> dict[str, int]:
    """Which phase each single-phase bay loads (the simulator's L1 is the wired phase)."""
    out: dict[str, int] = {}
    for b in raw["bays"]:
        phase = b.get("phase") or "L1"
        out[b["id"]] = int(phase[1]) - 1
    return out


async def grid_meter_part(
    raw: dict[str, Any], stack: contextlib.AsyncExitStack, bus: SimulatedBus
) -> None:
    """A building with a daily load curve and appliance spikes behind a 40 A main breaker."""
    from simulators.meter.profile import BuildingProfile
    from simulators.meter.server import MeterSimulator

    shift = wiring(raw)

    def charging_amps() -> tuple[float, float, float]:
        total = [0.0, 0.0, 0.0]
        for name, node in bus.nodes.items():
            c = node.physics.currents()
            k = shift.get(name, 0)
            for i in range(3):
                total[(i + k) % 3] += c[i]
        return (total[0], total[1], total[2])

    sim = await stack.enter_async_context(
        MeterSimulator(
            "sdm630",
            port=0,
            role="grid",
            speed=20.0,  # a day in 72 minutes: the evening peak shows load management at work
            start_time_of_day_s=16.5 * 3600,
            profile=BuildingProfile(),
            extra_load=charging_amps,
        )
    )
    raw["meters"] = [
        {
            "name": "grid",
            "map": "sdm630",
            "role": "grid",
            "poll_interval_s": 0.25,
            "bus": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port},
        }
    ]
    raw["site"] = {
        "main_limit_a": 40.0,
        "main_guaranteed_headroom_a": 10.0,
        "main_reserve_a": 2.0,
        "eco_current_a": 8.0,
        "min_on_time_s": 30,
        "min_off_time_s": 30,
    }
    log.info("simulate.grid_meter", port=sim.port, limit_a=40.0)


async def csms_part(
    raw: dict[str, Any], stack: contextlib.AsyncExitStack, bus: SimulatedBus
) -> None:
    """A development central system on a free port, reached through the real OCPP client."""
    from simulators.csms.server import CsmsSim

    csms = await stack.enter_async_context(CsmsSim("127.0.0.1", 0, heartbeat_interval=60))
    raw["ocpp"] = {"url": csms.url, "charge_point_id": raw["station"]["id"]}
    log.info("simulate.csms", url=csms.url)


PARTS.append(grid_meter_part)
PARTS.append(csms_part)


async def simulate(args: argparse.Namespace) -> int:
    data: Path = args.data_dir
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
        wallboxes = None
        if getattr(args, "ocpp_wallboxes", 0):
            from simulators.wallbox.demo import add_wallboxes

            wallboxes = add_wallboxes(raw, min(args.ocpp_wallboxes, 16))
        cfg = parse_config(raw, "simulate")
        drivers = None if args.no_demo_drivers else DemoDrivers(bus, cfg)
        services: list[tuple[str, Callable[[Station], Awaitable[None]]]] = [
            ("sim-control", lambda st: control.serve(bus, data / "sim" / control.SOCKET_NAME)),
        ]
        if drivers is not None:
            services.append(("demo-drivers", drivers.run))
        services.append(("sim-camera", lambda st: camera_service(st, data / "camera")))
        if wallboxes is not None:
            services.append(("sim-wallboxes", wallboxes))
        log.info(
            "simulate.started",
            data_dir=str(data),
            kiosk=f"http://{args.http_host}:{args.http_port}/kiosk",
            api=f"http://{args.http_host}:{args.http_port}/api/v1/bays",
            bays=len(kinds),
        )
        return await run_station(cfg, station_services=services)
    return 0


async def camera_service(station: Station, folder: Path) -> None:
    """A simulated QR camera, through the real capture/decode pipeline.

    Drop a file into ``folder`` to show a code to the station: ``bay2.txt``
    holding the code's text (or ``bay2.png``, an image) shows it in front of
    bay2's camera for a few seconds; ``any.txt`` lets the code (a signed token)
    name its bay.
    """
    from drivers.camera.extension import run_camera
    from drivers.camera.reader import QrCameraReader
    from simulators.camera.camera import SimulatedCamera

    cam = SimulatedCamera(fps=10)
    reader = QrCameraReader(cam, camera="sim-camera", decode_hz=5, dedup_s=5)

    def take() -> tuple[str, str | None, str | None]:
        """The next file in the folder: (name, text or None, image path or None); removed."""
        for f in sorted(folder.iterdir()):
            if f.suffix == ".txt":
                text = f.read_text(encoding="utf-8").strip()
                f.unlink(missing_ok=True)
                return f.stem, text, None
            if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                return f.stem, None, str(f)
        return "", None, None

    async def watch() -> None:
        while True:  # a development helper: polling a folder is good enough here
            await asyncio.sleep(0.5)
            stem, text, image = await asyncio.to_thread(take)
            if text is None and image is None:
                continue
            bay = stem if stem in station.bays else None
            station.commands.focus_bay(bay, seconds=5.0)
            if text is not None:
                cam.show(text, seconds=3.0)
            elif image is not None:
                cam.show_image(image, seconds=3.0)
                await asyncio.to_thread(Path(image).unlink, True)
            log.info("sim_camera.showing", file=stem, bay_id=bay)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(run_camera(station, reader, camera="sim-camera", bay=None))
        tg.create_task(watch())


class DemoDrivers:
    """People at the simulated bays: EVs parked at the chargers, e-bikes taken to lockers."""

    def __init__(self, bus: SimulatedBus, cfg: StationConfig) -> None:
        self.bus = bus
        self.cfg = cfg

    async def run(self, station: Station) -> None:
        now = self.bus.clock()
        for i, b in enumerate(self.cfg.bays):
            node = self.bus.nodes.get(b.node_id)
            if node is None:
                continue  # not on the simulated bus (an OCPP wallbox brings its own car)
            if b.kind == "evse":
                node.plug_in(
                    now,
                    max_a=16.0,
                    phases=3 if i % 2 == 0 else 1,
                    soc_pct=20.0 + 10 * i,
                    capacity_wh=40_000,
                )
        done: set[tuple[str, str]] = set()
        async with station.events.subscription(lossy=True, kinds=(BayChanged,)) as q:
            while True:
                ev = await q.get()
                if isinstance(ev, BayChanged):
                    await self._react(station, ev.bay_id, done)

    async def _react(self, station: Station, bay_id: str, done: set[tuple[str, str]]) -> None:
        rt = station.bays[bay_id]
        node = self.bus.nodes.get(rt.cfg.node_id)
        if rt.cfg.kind != "locker" or node is None:
            return
        s = rt.state
        # Read the live state (queued messages may be old) and act once per session and stage.
        if s.phase.value == "authorized" and s.session and s.locked is False and s.door_closed:
            key = (s.session.session_id, "place")
            if key in done:
                return
            done.add(key)
            # The rider opens the door, plugs the charger in and closes the door.
            await asyncio.sleep(1.0)
            node.open_door(self.bus.clock())
            node.plug_in(self.bus.clock(), charger_a=1.8)
            await asyncio.sleep(1.5)
            node.close_door(self.bus.clock())
        elif s.phase.value == "finishing" and s.locked is False and s.door_closed:
            key = (f"{bay_id}:{s.deadline}", "take")
            if key in done:
                return
            done.add(key)
            await asyncio.sleep(1.0)
            node.open_door(self.bus.clock())
            node.unplug(self.bus.clock())
            await asyncio.sleep(1.5)
            node.close_door(self.bus.clock())
