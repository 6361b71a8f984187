"""``python -m simulators.esp32_node.mqtt_main --port P --station ID --nodes N [--kind evse|locker]``.

Runs N simulated nodes (``bay1``..``bayN``, addresses 1..N) against a broker,
each logging in as itself with the password ``--password-format`` gives
(``{name}`` is replaced). ``--plug-in`` plugs an EV / a charger into every
bay. Prints ``READY`` once every node is connected; stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from simulators.esp32_node.bus import specs
from simulators.esp32_node.mqtt_front import MqttSimNodes


async def _main(args: argparse.Namespace) -> None:
    kind = "evse" if args.kind == "evse" else "locker"
    sim = MqttSimNodes(
        args.host,
        args.port,
        args.station,
        specs(args.nodes, kind),
        passwords=lambda name: str(args.password_format).format(name=name),
        prefix=args.prefix,
        tick_s=args.tick_s,
    )
    async with sim:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sim.wait_connected(limit_s=60.0)
        if args.plug_in:
            now = sim.clock()
            for node in sim.nodes.values():
                node.plug_in(now)
        print("READY", flush=True)
        await stop.wait()
        published = sum(link.published for link in sim.links.values())
        print(f"PUBLISHED {published}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m simulators.esp32_node.mqtt_main")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--station", required=True)
    p.add_argument("--prefix", default="edge")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--kind", choices=("evse", "locker"), default="evse")
    p.add_argument("--password-format", default="pw-{name}")
    p.add_argument("--tick-s", type=float, default=0.1)
    p.add_argument("--plug-in", action="store_true")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
