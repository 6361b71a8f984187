"""``python -m simulators.meter --map sdm630 --port 5020``: run one simulated meter until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from drivers.modbus.maps import available_maps

from .profile import BuildingProfile
from .server import MeterSimulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m simulators.meter", description=__doc__)
    p.add_argument(
        "--map",
        default="sdm630",
        help=f"bundled map ({', '.join(available_maps())}) or a .toml path",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020, help="TCP port (0: any free port)")
    p.add_argument(
        "--serial", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP"
    )
    p.add_argument("--baudrate", type=int)
    p.add_argument("--parity", choices=["N", "E", "O"])
    p.add_argument("--unit-id", type=int, default=1)
    p.add_argument("--role", choices=["grid", "pv", "bay"], default="grid")
    p.add_argument(
        "--speed", type=float, default=1.0, help="time acceleration (60: an hour a minute)"
    )
    p.add_argument(
        "--pv-peak-w", type=float, default=0.0, help="PV peak production in W (0: no PV)"
    )
    p.add_argument(
        "--start-hour", type=float, help="simulated time of day to start at (default: now)"
    )
    p.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="answer every request after this many seconds (a slow meter: EM24 documents 0.5)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    sim = MeterSimulator(
        args.map,
        host=args.host,
        port=args.port,
        unit_id=args.unit_id,
        role=args.role,
        profile=BuildingProfile(pv_peak_w=args.pv_peak_w),
        speed=args.speed,
        start_time_of_day_s=None if args.start_hour is None else args.start_hour * 3600,
        serial_port=args.serial,
        baudrate=args.baudrate,
        parity=args.parity,
        answer_delay_s=args.answer_delay,
    )
    async with sim:
        print(
            f"meter simulator: {sim.map.model} ({args.role}) unit {args.unit_id} on {sim.address}",
            flush=True,
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
