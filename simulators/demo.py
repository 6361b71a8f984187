"""``edge-station simulate``: the whole station on simulated hardware, through the real adapters.

Nodes run on pseudo-terminals behind the real serial driver (or through a
private mosquitto behind the real MQTT driver); the grid meter (and a PV meter)
are Modbus TCP servers behind the real Modbus driver; a development CSMS sits
behind the real OCPP client (or the one ``--csms-url`` names); the emergency
stop is a mock GPIO pin read by the real GPIO driver. Simulated drivers park
EVs at the EVSE bays and use the lockers like people do, so a newcomer sees
the whole flow. ``edge-station sim`` talks to it through ``DATA/sim/control.sock``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import structlog

from controller.assemble import run_station
from controller.core.config import ConfigError, StationConfig, load_config, parse_config
from controller.core.events import BayChanged
from controller.core.station import Station
from controller.ops.logs import setup_logging
from simulators.broker import BrokerError
from simulators.esp32_node import control
from simulators.esp32_node.bus import SimulatedBus
from simulators.esp32_node.control import NodeGroup
from simulators.hardware import Wiring, estop_from, one_group, start_nodes
from simulators.nodes_main import kinds_for
from simulators.sim_control import EstopPin, SimControl
from simulators.site import SimSite, default_site_section

log = structlog.get_logger(__name__)

# A demo extension hooks in here: (config dict, exit stack, simulated nodes) -> awaitable.
DemoPart = Callable[[dict[str, Any], contextlib.AsyncExitStack, SimulatedBus], Awaitable[None]]
PARTS: list[DemoPart] = []

__all__ = ["PARTS", "kinds_for", "run_simulation"]


def run_simulation(args: argparse.Namespace) -> int:
    """Run ``simulate`` with checked arguments (``simulate_cli.cmd_simulate``)."""
    setup_logging(args.log_level)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(simulate(args))
    except (ConfigError, BrokerError, SimSetupError) as err:
        print(_sentence(err))
        return 2
    return 0


class SimSetupError(Exception):
    """The simulation cannot start as asked; the message is a sentence."""


def _sentence(err: Exception) -> str:
    if isinstance(err, ConfigError):
        return f"{err.source}: invalid configuration:\n" + "\n".join(
            f"  - {p}" for p in err.problems
        )
    return str(err)


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
    return Wiring.of(raw).shift


def base_config(args: argparse.Namespace, journal_dir: Path) -> dict[str, Any]:
    """The station's config before the hardware is simulated: built in, or a real file."""
    if args.config is None:
        host = args.http_host or "127.0.0.1"
        raw = sim_config(journal_dir, "", kinds_for(args.bays, args.kind), host, args.http_port)
        raw["site"] = default_site_section()
        return raw
    load_config(args.config)  # every problem of the file, named, before anything starts
    raw = tomllib.loads(args.config.read_text(encoding="utf-8"))
    tokens = raw.get("tokens") or {}
    for key in ("hmac_key_files", "ed25519_public_key_files"):
        if key in tokens:
            tokens[key] = [str((args.config.parent / f).resolve()) for f in tokens[key]]
    raw.setdefault("station", {})["data_dir"] = str(journal_dir)
    http = raw.setdefault("http", {})
    if args.http_port is not None:
        http["port"] = args.http_port
    if args.http_host is not None:
        http["host"] = args.http_host
    raw.pop("camera", None)  # the simulated camera takes its place (a folder, `sim camera`)
    return raw


def _tokens(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in str(args.tokens).split(",") if t.strip()]


def apply_auth(raw: dict[str, Any], args: argparse.Namespace) -> None:
    if args.auth is None and args.config is not None:
        return  # the file's own [auth]
    auth = raw.setdefault("auth", {})
    if args.auth == "tokens":
        auth["free_vend"] = False
        auth["local_tokens"] = _tokens(args)
    else:
        auth["free_vend"] = True


async def csms_part(
    raw: dict[str, Any], stack: contextlib.AsyncExitStack, args: argparse.Namespace
) -> str | None:
    """The central system: the built-in development CSMS on a free port, another, or none."""
    if args.no_csms:
        raw.pop("ocpp", None)
        return None
    station_id = str(raw.get("station", {}).get("id", "edge-station-1"))
    ocpp = dict(raw.get("ocpp") or {})
    ocpp.setdefault("charge_point_id", station_id)
    if args.csms_url is not None:
        ocpp["url"] = str(args.csms_url)
    else:
        from simulators.csms.server import CsmsSim

        # With a token list the development CSMS knows the same list: a stranger stays out
        # whether the station asks it or decides offline.
        accept = set(_tokens(args)) if args.auth == "tokens" else None
        csms = await stack.enter_async_context(
            CsmsSim("127.0.0.1", 0, heartbeat_interval=60, accept_tags=accept)
        )
        # A real site's credentials and TLS do not apply to the development CSMS.
        for key in ("security_profile", "password", "ca_bundle"):
            ocpp.pop(key, None)
        ocpp["url"] = csms.url
    raw["ocpp"] = ocpp
    log.info("simulate.csms", url=ocpp["url"], builtin=args.csms_url is None)
    return str(ocpp["url"])


async def simulate(args: argparse.Namespace) -> int:
    data: Path = args.data_dir
    journal_dir = data / "journal" if args.small_disk else data
    raw = base_config(args, journal_dir)
    if args.small_disk and "journal" not in raw:
        # Thresholds scaled to the small disk, so it runs normally until it is filled.
        raw["journal"] = {
            "low_space_mb": max(1, args.small_disk // 4),
            "samples_min_free_mb": 1,
            "emergency_reserve_mb": 1,
        }
    async with contextlib.AsyncExitStack() as stack:
        groups = await start_nodes(stack, raw, data / "sim", args.transport)
        if not groups:
            raise SimSetupError("The config names no serial or MQTT bus with bays to simulate.")
        nodes: NodeGroup = one_group(groups)
        wired = Wiring.of(raw)
        start_hour = (
            args.start_hour if args.start_hour is not None else (10.0 if args.pv_kw else 16.5)
        )
        site = SimSite(
            lambda: wired.amps(nodes.nodes),
            pv_kw=args.pv_kw,
            speed=args.speed,
            start_hour=start_hour,
        )
        if args.config is None or raw.get("meters"):
            await site.start(stack, raw, lambda bay: wired.amps(nodes.nodes, only=bay))
        url = await csms_part(raw, stack, args)
        apply_auth(raw, args)
        pin = estop_from(raw, default=args.config is None)
        for part in PARTS:
            await part(raw, stack, cast(SimulatedBus, nodes))
        wallboxes = None
        if getattr(args, "ocpp_wallboxes", 0):
            from simulators.wallbox.demo import add_wallboxes

            wallboxes = add_wallboxes(raw, min(args.ocpp_wallboxes, 16))
        cfg = parse_config(raw, "simulate")
        from controller.cli.main import check

        found = check(cfg)
        if found:
            raise ConfigError(str(args.config or "simulate"), found)
        ctl = SimControl(
            nodes,
            journal_dir,
            site=site if site.meters else None,
            estop=None if pin is None else EstopPin(pin[0], pin[1]),
            info={"station": cfg.station.id, "csms": url, "data_dir": str(data)},
        )
        drivers = None if args.no_demo_drivers else DemoDrivers(nodes, cfg)
        services: list[tuple[str, Callable[[Station], Awaitable[None]]]] = [
            (
                "sim-control",
                lambda st: control.serve(ctl.handle, data / "sim" / control.SOCKET_NAME),
            ),
        ]
        if drivers is not None:
            services.append(("demo-drivers", drivers.run))
        services.append(("sim-camera", lambda st: camera_service(st, data / "camera", ctl)))
        if wallboxes is not None:
            services.append(("sim-wallboxes", wallboxes))
        log.info(
            "simulate.started",
            data_dir=str(data),
            kiosk=f"http://{cfg.http.host}:{cfg.http.port}/kiosk",
            api=f"http://{cfg.http.host}:{cfg.http.port}/api/v1/bays",
            bays=len(cfg.bays),
            transport=args.transport or "serial",
            control=str(data / "sim" / control.SOCKET_NAME),
        )
        return await run_station(cfg, station_services=services)
    return 0


async def camera_service(station: Station, folder: Path, ctl: SimControl | None = None) -> None:
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
    if ctl is not None:
        ctl.camera, ctl.station = cam, station

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

    def __init__(self, bus: NodeGroup, cfg: StationConfig) -> None:
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
