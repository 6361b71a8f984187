"""Shared rig for the OCPP tests: a real Station (journal in tmp_path, fake node hub), the real
OCPP client and the development CSMS on loopback. (No tests here.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloud_sync.assemble import build
from cloud_sync.config import OcppConfig
from cloud_sync.link import check_payload
from cloud_sync.upstream import OcppUpstream
from controller.core.station import Station
from simulators.csms import CsmsSim
from tests.support.fake_nodes import FakeHub
from tests.support.ocpp_station import open_station

CP = "CP1"


class Csms(Protocol):
    """What the rig needs of a central system: an address, up and down (in-process or not)."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Rig:
    station: Station
    hub: FakeHub
    up: OcppUpstream
    sim: CsmsSim
    task: asyncio.Task[None]

    async def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for a condition on the station side, re-checked on every station update."""
        async with asyncio.timeout(timeout), self.station.events.subscription(lossy=True) as q:
            while not pred():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await q.get()

    async def online(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.up.online:
                await self.up.changed.wait()

    async def offline(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.up.online:
                await self.up.changed.wait()

    async def upstream(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for a condition on the upstream's link / boot state."""
        async with asyncio.timeout(timeout):
            while not pred():
                await self.up.changed.wait()

    async def drained(self, timeout: float = 15.0) -> None:
        """Until the outbox holds no pending message (and the CSMS answered the last one) and
        the sender is idle (the session update of the last answer is written too)."""
        idle = self.up.outbox.idle
        async with asyncio.timeout(timeout):
            while not (idle.is_set() and not await self.up.outbox.pending()):
                if idle.is_set():
                    await asyncio.sleep(0.01)  # a new message the sender has yet to take
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await idle.wait()

    def bay(self, n: int) -> Any:
        return self.station.bays.by_connector(n)

    async def start_session(self, connector: int, tag: str) -> str:
        rt = self.bay(connector)
        out = await self.station.commands.present_token(rt.cfg.id, tag, source="kiosk")
        assert out.ok, out
        assert out.session_id is not None
        return out.session_id

    def tx_messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (r.action, r.payload)
            for r in self.sim.received
            if r.action in ("StartTransaction", "StopTransaction", "MeterValues")
        ]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    bays: int = 3,
    keys: dict[str, str] | None = None,
    csms_up: bool = True,
    sim: CsmsSim | None = None,
    cfg: dict[str, Any] | None = None,
    csms: Csms | None = None,
    **sim_kwargs: Any,
) -> AsyncIterator[Rig]:
    """``csms``: another central system to run instead of ``sim`` (a child process, say);
    ``Rig.sim`` then stays an idle, never started simulator."""
    sim = sim or CsmsSim(**sim_kwargs)
    server: Csms = csms or sim
    if csms_up:
        await server.start()
    else:
        await server.start()  # learn a free port, then go down
        await server.stop()
    station, hub = await open_station(tmp_path, bays, period_s=0.05)
    base: dict[str, Any] = {
        "url": server.url,
        "charge_point_id": CP,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.2,
        "response_timeout_s": 5.0,
        "keys": {"MeterValueSampleInterval": "0", "HeartbeatInterval": "300", **(keys or {})},
    }
    base.update(cfg or {})
    up = build(OcppConfig.model_validate(base), station)
    station.add_service("ocpp", up.run)
    task = asyncio.create_task(station.run())
    r = Rig(station, hub, up, sim, task)
    try:
        await r.until(lambda: all(b.state.node_online for b in station.bays.values()))
        yield r
        # The client sends its own payloads unchecked (cloud_sync/link.py): every call
        # the station made in any OCPP test must match its OCPP 1.6 schema.
        for call in sim.received:
            check_payload(2, call.action, call.payload)
    finally:
        if not task.done():
            station.request_stop("test over")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await station.journal.close()
        await server.stop()
