"""``python -m simulators.wallbox --url ws://host:port/ocpp --count N [--plug]``: N wallboxes.

Ids are ``<prefix>1`` … ``<prefix>N``; prints ``READY`` once all have booted.
"""

from __future__ import annotations

import argparse
import asyncio

from simulators.wallbox.wallbox import WallboxSim


async def _main(args: argparse.Namespace) -> None:
    boxes = [
        WallboxSim(args.url, f"{args.prefix}{i}", tick_s=args.tick_s)
        for i in range(1, args.count + 1)
    ]
    if args.plug:
        for box in boxes:
            box.plug()
    async with asyncio.TaskGroup() as tg:
        for box in boxes:
            tg.create_task(box.run())
        for box in boxes:
            await box.connected.wait()
        print("READY", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m simulators.wallbox")
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="WB")
    p.add_argument("--tick-s", type=float, default=0.1)
    p.add_argument("--plug", action="store_true", help="a car is plugged into each")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
