"""Shared rig for the wallbox tests (no tests here): a real station built from a config by the
composition root (so the ``ocpp`` node hub and the wallbox extension come through their entry
points), its wallbox server on a free loopback port, simulated wallboxes connecting over real
websockets, optionally the development CSMS upstream and a polled grid meter."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import registry
from controller.assemble import open_station
from controller.core.bays import BayRuntime
from controller.core.config import parse_config
from controller.core.station import Station
from controller.ports import Freshness, MeterReading, MeterSample, NodeHub
from drivers.ocpp_wallbox.hub import WallboxHub
from simulators.csms import CsmsSim
from simulators.wallbox import WallboxSim
from tests.support.fake_nodes import FakeHub, FakeNode

UP_CP = "EDGE1"


@dataclass
class WallboxRig:
    station: Station
    hub: WallboxHub
    boxes: list[WallboxSim]
    csms: CsmsSim | None
    grid_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def bay(self, bay_id: str) -> BayRuntime:
        return self.station.bays.require(bay_id)

    async def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for a condition on the station side, re-checked on every update (and 20 Hz)."""
        async with asyncio.timeout(timeout), self.station.events.subscription(lossy=True) as q:
            while not pred():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await q.get()

    async def kiosk_start(self, bay_id: str, token: str) -> str:
        out = await self.station.commands.present_token(bay_id, token, source="kiosk")
        assert out.ok, out
        assert out.session_id is not None
        return out.session_id

    def url(self) -> str:
        scheme = "wss" if self.hub.cfg.security_profile == 2 else "ws"
        return f"{scheme}://127.0.0.1:{self.hub.port}/ocpp"


def config(
    tmp: Path,
    *,
    wallboxes: int,
    esp32: int = 0,
    site: dict[str, Any] | None = None,
    ocpp_bus: dict[str, Any] | None = None,
    upstream: str | None = None,
    safe_a: float = 0.0,
) -> dict[str, Any]:
    bays: list[dict[str, Any]] = [
        {
            "id": f"wb{i}",
            "connector": i,
            "bus": "wallboxes",
            "charger_id": f"WB{i}",
            "max_current_a": 16,
            "safe_current_a": safe_a,
        }
        for i in range(1, wallboxes + 1)
    ]
    bays += [
        {"id": f"esp{i}", "connector": wallboxes + i, "bus": "esp", "address": i}
        for i in range(1, esp32 + 1)
    ]
    cfg: dict[str, Any] = {
        "station": {"id": "edge", "data_dir": str(tmp)},
        "timers": {"tick_s": 0.1, "lease_s": 3.0},
        "auth": {"local_tokens": ["CARD-1", "CARD-2", "KIOSK-1"]},
        "buses": [
            {
                "id": "wallboxes",
                "transport": "ocpp",
                "listen": "127.0.0.1:0",
                "ocpp": {"profile_validity_s": 6, "meter_interval_s": 1, **(ocpp_bus or {})},
            }
        ],
        "bays": bays,
    }
    if esp32:
        cfg["buses"].append({"id": "esp"})  # served by the fake node hub (see rig)
    if site is not None:
        cfg["site"] = site
    if upstream is not None:
        cfg["ocpp"] = {
            "url": upstream,
            "charge_point_id": UP_CP,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.2,
            "keys": {"MeterValueSampleInterval": "0", "HeartbeatInterval": "300"},
        }
    return cfg


def grid(currents: tuple[float, float, float]) -> MeterReading:
    now = time.monotonic()
    return MeterReading("grid", now, Freshness.FRESH, MeterSample(at=now, current_a=currents))


@contextlib.asynccontextmanager
async def rig(
    tmp: Path,
    *,
    wallboxes: int = 1,
    csms: bool = False,
    site: dict[str, Any] | None = None,
    ocpp_bus: dict[str, Any] | None = None,
    safe_a: float = 0.0,
    box_kwargs: dict[str, Any] | None = None,
    esp32: int = 0,
    sims: bool = True,
) -> AsyncIterator[WallboxRig]:
    """``sims=False``: the wallboxes are someone else's (a child process, say)."""
    sim = CsmsSim(log_messages=False) if csms else None
    if sim is not None:
        await sim.start()
    raw = config(
        tmp,
        wallboxes=wallboxes,
        esp32=esp32,
        site=site,
        ocpp_bus=ocpp_bus,
        upstream=sim.url if sim else None,
        safe_a=safe_a,
    )
    cfg = parse_config(raw)
    hubs: dict[str, NodeHub] | None = None
    if esp32:
        # The wallbox bus through its entry point; the ESP32 bays on the fake node hub.
        factory = registry.load(registry.NODE_HUBS, "ocpp")
        hubs = {
            "wallboxes": factory(cfg.buses[0], [b for b in cfg.bays if b.bus == "wallboxes"], cfg),
            "esp": FakeHub(
                [
                    FakeNode(b.node_id, plugged=True, ev_max_a=10.0)
                    for b in cfg.bays
                    if b.bus == "esp"
                ],
                period_s=0.5,
            ),
        }
    station = await open_station(cfg, hubs=hubs, http=False)
    hub = station.hubs["wallboxes"]
    assert isinstance(hub, WallboxHub)
    r = WallboxRig(station, hub, [], sim)
    helpers: list[asyncio.Task[None]] = []
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(station.run())
        try:
            await asyncio.wait_for(hub.wait_listening(), 10)
            if site is not None:
                helpers.append(tg.create_task(_poll_grid(r)))
            r.boxes = [
                WallboxSim(r.url(), f"WB{i}", tick_s=0.05, **(box_kwargs or {}))
                for i in range(1, wallboxes + 1 if sims else 1)
            ]
            helpers += [tg.create_task(box.run()) for box in r.boxes]
            yield r
        finally:
            for box in r.boxes:
                box.reconnect = False
            await _cancel(helpers)
            station.request_stop("test over")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)
            await station.journal.close()
            if sim is not None:
                await sim.stop()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait; again if one swallowed it (the ocpp library's wait_for on 3.11)."""
    for _ in range(5):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=2)
    raise AssertionError(f"helpers would not stop: {[t.get_name() for t in tasks if not t.done()]}")


async def _poll_grid(r: WallboxRig) -> None:
    """A grid meter read every 0.2 s: the building's load plus what the wallboxes draw."""
    while True:
        drawn = [0.0, 0.0, 0.0]
        for box in r.boxes:
            for o in box.outlets.values():
                for p in range(box.phases):
                    drawn[p] += o.current_a
        total = (
            r.grid_a[0] + drawn[0],
            r.grid_a[1] + drawn[1],
            r.grid_a[2] + drawn[2],
        )
        r.station.meters.on_reading(grid(total), role="grid")
        await asyncio.sleep(0.2)
