"""Waiting on a running station's live updates (no sleeps): a bay's snapshot until it matches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from controller.core.events import BayChanged
from controller.core.station import Station


class BayWatcher:
    def __init__(self, station: Station, timeout: float = 5.0) -> None:
        self.station = station
        self.timeout = timeout
        self.updates = station.events.subscribe(lossy=True)

    async def until(
        self, bay_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        snap: dict[str, Any] = self.station.snapshots.bay(self.station.bays[bay_id])
        async with asyncio.timeout(timeout or self.timeout):
            while not pred(snap):
                ev = await self.updates.get()
                if isinstance(ev, BayChanged) and ev.bay_id == bay_id:
                    snap = dict(ev.snapshot)
        return snap

    async def status(
        self, bay_id: str, status: str, timeout: float | None = None
    ) -> dict[str, Any]:
        return await self.until(bay_id, lambda s: s["status"] == status, timeout)

    async def energy(self, bay_id: str, wh: int) -> dict[str, Any]:
        return await self.until(
            bay_id, lambda s: bool(s["session"]) and s["session"]["energy_wh"] == wh
        )
