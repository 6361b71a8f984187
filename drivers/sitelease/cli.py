"""``edge-station coordinator --config coordinator.toml [--check]``: the site coordinator.

With ``--check`` it only checks the file: the proof that the stations'
guaranteed shares fit the site's guaranteed headroom on every phase, and each
station's own config against its share when the file names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from drivers.sitelease.config import read_coordinator_file

EXIT_CONFIG = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "coordinator",
        help="hand several stations their share of one site limit over the site's broker",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--check", action="store_true", help="check the file and stop")
    p.set_defaults(func=cmd_coordinator)


def cmd_coordinator(args: argparse.Namespace) -> int:
    file, problems = read_coordinator_file(args.config)
    if problems or file is None:
        print(f"{args.config}: the coordinator cannot run with this file:", file=sys.stderr)
        for pr in problems:
            print(f"  - {pr}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        n = len(file.coordinator.stations)
        print(f"{args.config}: OK ({n} stations share site {file.coordinator.site})")
        return 0
    from drivers.sitelease.coordinator import CoordinatorService

    service = CoordinatorService(file.coordinator, file.mqtt)
    return asyncio.run(_run(service))


async def _run(service: object) -> int:
    from drivers.sitelease.coordinator import CoordinatorService

    assert isinstance(service, CoordinatorService)
    task = asyncio.ensure_future(service.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0
