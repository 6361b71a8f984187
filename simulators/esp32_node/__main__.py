"""``python -m simulators.esp32_node --dir DIR --nodes N [--kind evse|locker]``.

Runs one simulated bus behind ``DIR/ttyBAYS`` and a control socket at
``DIR/control.sock`` (see ``control.py``); prints ``READY <port>`` when both
are up, and stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from simulators.esp32_node.bus import SimulatedBus, specs
from simulators.esp32_node.control import SOCKET_NAME, serve


async def _main(directory: Path, nodes: int, kind: str, link: str, legacy: bool) -> None:
    kinds = {"evse": "evse", "locker": "locker"}
    node_specs = specs(nodes, "evse" if kinds[kind] == "evse" else "locker", continuity=not legacy)
    async with SimulatedBus(directory, node_specs, link_name=link) as bus:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            server = tg.create_task(serve(bus, directory / SOCKET_NAME, ready))
            await ready.wait()
            print(f"READY {bus.port_path}", flush=True)
            await stop.wait()
            server.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.esp32_node")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--kind", choices=("evse", "locker"), default="evse")
    parser.add_argument("--link", default="ttyBAYS", help="symlink name inside --dir")
    parser.add_argument(
        "--legacy", action="store_true", help="old firmware: no plug/boot counters, no serial"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.dir, args.nodes, args.kind, args.link, args.legacy))


if __name__ == "__main__":
    main()
