"""``edge-station sim-nodes``: simulated bay nodes as their own long-running process.

Like real ESP32s, the nodes outlive the controller: ``edge-station run`` can be
killed, restarted or upgraded while the bays keep their plug, energy and boot
counters and fall to their safe share by themselves. Serial: one bus behind a
pseudo-terminal with a stable symlink ``DIR/ttyBAYS`` (what the station's
``[[buses]] port`` names). MQTT: one broker connection per node. Either way a
control socket ``DIR/control.sock`` takes requests (``edge-station sim --dir DIR``).
Prints ``READY <port or broker>`` once everything is up; stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from simulators.esp32_node.bus import SimNodeSpec

log = structlog.get_logger(__name__)
MAX_BAYS = 32


def kinds_for(n: int, kind: str) -> list[str]:
    """``mixed``: the first half EV chargers (at least one), the rest e-bike lockers."""
    if kind != "mixed":
        return [kind] * n
    return ["evse" if i < max(1, (n + 1) // 2) else "locker" for i in range(n)]


def node_specs(n: int, kind: str, *, legacy: bool = False) -> list[SimNodeSpec]:
    from simulators.esp32_node.bus import SimNodeSpec

    return [
        SimNodeSpec(f"bay{i}", i, "evse" if k == "evse" else "locker", continuity=not legacy)
        for i, k in enumerate(kinds_for(n, kind), start=1)
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir", type=Path, required=True, help="folder for the port link and control socket"
    )
    p.add_argument("--bays", type=int, default=2, help="number of nodes, bay1..bayN (1..32)")
    p.add_argument(
        "--kind",
        choices=["evse", "locker", "mixed"],
        default="evse",
        help="evse: EV chargers; locker: e-bike lockers; mixed: half each",
    )
    p.add_argument("--transport", choices=["serial", "mqtt"], default="serial")
    p.add_argument("--link", default="ttyBAYS", help="serial: the port's symlink name in --dir")
    p.add_argument("--broker", default="127.0.0.1:1883", help="mqtt: HOST:PORT of the broker")
    p.add_argument("--station", default="edge-station-1", help="mqtt: the station id in topics")
    p.add_argument("--prefix", default="edge", help="mqtt: the topic prefix")
    p.add_argument(
        "--password-format",
        default="pw-{name}",
        help="mqtt: each node's password; {name} is its name (bay1)",
    )
    p.add_argument(
        "--legacy", action="store_true", help="old firmware: no plug/boot counters, no serial"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim-nodes",
        help="run simulated bay nodes as their own process (they outlive the controller)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=cmd_sim_nodes)


def problems(args: argparse.Namespace) -> list[str]:
    out = []
    if not 1 <= args.bays <= MAX_BAYS:
        out.append(f"--bays must be between 1 and {MAX_BAYS}, not {args.bays}.")
    if args.transport == "mqtt":
        host, _, port = str(args.broker).rpartition(":")
        if not host or not port.isdigit():
            out.append(
                f"--broker must be HOST:PORT (for example 127.0.0.1:1883), not {args.broker!r}."
            )
    return out


def cmd_sim_nodes(args: argparse.Namespace) -> int:
    errors = problems(args)
    if errors:
        for e in errors:
            print(e)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_nodes(args))
    return 0


async def run_nodes(args: argparse.Namespace) -> None:
    # Imported here: building the edge-station parser must not load the simulators.
    from simulators.esp32_node.bus import SimulatedBus
    from simulators.esp32_node.control import SOCKET_NAME, NodeGroup, serve
    from simulators.esp32_node.mqtt_front import MqttSimNodes

    directory: Path = args.dir.resolve()
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    specs = node_specs(args.bays, args.kind, legacy=args.legacy)
    async with contextlib.AsyncExitStack() as stack:
        group: NodeGroup
        if args.transport == "serial":
            bus = await stack.enter_async_context(
                SimulatedBus(directory, specs, link_name=args.link)
            )
            group, where = bus, bus.port_path
        else:
            host, _, port = str(args.broker).rpartition(":")
            mqtt = MqttSimNodes(
                host,
                int(port),
                args.station,
                specs,
                passwords=lambda name: str(args.password_format).format(name=name),
                prefix=args.prefix,
            )
            await stack.enter_async_context(mqtt)
            await mqtt.wait_connected(limit_s=60.0)
            group, where = mqtt, f"mqtt://{args.broker}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            server = tg.create_task(serve(group, directory / SOCKET_NAME, ready))
            await ready.wait()
            log.info(
                "sim_nodes.ready",
                bays=len(specs),
                transport=args.transport,
                port=where,
                control=str(directory / SOCKET_NAME),
            )
            print(f"READY {where}", flush=True)
            await stop.wait()
            server.cancel()
