"""``python -m tests.bench.scale_nodes serial|mqtt --bus B --count N ...``: one bus of nodes for the scale bench.

Nodes ``<bus>-<a>`` at addresses 1..N, each with an EV plugged in (16 A,
three phases), in their own process so their cost is not the controller's.
Serial: a pseudo-terminal at ``--dir``/tty<bus>. MQTT: one broker account per
node (password ``pw-<name>``). Prints ``READY`` once the nodes are up, runs
until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus
from simulators.esp32_node.mqtt_front import MqttSimNodes


def names(bus: str, count: int) -> list[str]:
    return [f"{bus}-{a}" for a in range(1, count + 1)]


async def _main(args: argparse.Namespace) -> None:
    specs = [
        SimNodeSpec(name, a, "evse", 16.0) for a, name in enumerate(names(args.bus, args.count), 1)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.transport == "serial":
        async with SimulatedBus(args.dir, specs, link_name=f"tty{args.bus}", tick_s=0.05) as bus:
            for node in bus.nodes.values():
                node.plug_in(bus.clock(), max_a=16.0, phases=3)
            print("READY", flush=True)
            await stop.wait()
        return
    sim = MqttSimNodes(
        args.host,
        args.port,
        args.station,
        specs,
        passwords=lambda name: f"pw-{name}",
        tick_s=0.1,
        backoff_max_s=5.0,
    )
    async with sim:
        await sim.wait_connected(limit_s=120.0)
        for node in sim.nodes.values():
            node.plug_in(sim.clock(), max_a=16.0, phases=3)
        print("READY", flush=True)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench.scale_nodes")
    p.add_argument("transport", choices=("serial", "mqtt"))
    p.add_argument("--bus", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--dir", type=Path, default=Path("."))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--station", default="scale")
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
