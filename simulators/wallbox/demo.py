"""``simulate --ocpp-wallboxes N``: N simulated wallboxes as bays behind the station's OCPP server.

Adds a ``transport = "ocpp"`` bus on a free loopback port and one bay per
wallbox to the simulated station's config, and returns the station service
that runs the wallboxes (each with a car plugged in, so a session can be
started at the kiosk right away).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from controller.core.station import Station
from simulators.wallbox.wallbox import WallboxSim


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def add_wallboxes(raw: dict[str, Any], n: int) -> Callable[[Station], Awaitable[None]]:
    port = _free_port()
    raw["buses"].append({"id": "wallboxes", "transport": "ocpp", "listen": f"127.0.0.1:{port}"})
    first = max((b["connector"] for b in raw["bays"]), default=0) + 1
    ids = [f"SIM-WB{i}" for i in range(1, n + 1)]
    for k, cp in enumerate(ids):
        raw["bays"].append(
            {
                "id": f"wallbox{k + 1}",
                "connector": first + k,
                "bus": "wallboxes",
                "charger_id": cp,
                "max_current_a": 16.0,
            }
        )

    async def run(station: Station) -> None:
        boxes = [WallboxSim(f"ws://127.0.0.1:{port}/ocpp", cp) for cp in ids]
        for box in boxes:
            box.plug()
        async with asyncio.TaskGroup() as tg:
            for box in boxes:
                tg.create_task(box.run(), name=f"sim-wallbox:{box.cp_id}")

    return run
