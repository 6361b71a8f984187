"""A station with load management, fake nodes and a grid meter, for the integration tests.

Built through ``open_station`` (so the extensions attach from their entry points,
as in production), with one or more 16 A bays behind a :class:`FakeHub` whose
nodes draw what they are given, and a grid meter read every 0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from controller.assemble import open_station
from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.station import Station
from controller.ports import Freshness, MeterReading, MeterSample, PilotState
from tests.support.fake_nodes import FakeHub

LIMIT_A = 32.0


def grid(currents: tuple[float, float, float]) -> MeterReading:
    now = time.monotonic()
    return MeterReading("grid", now, Freshness.FRESH, MeterSample(at=now, current_a=currents), "")


def config(tmp: Path, n: int, **sections: Any) -> dict[str, Any]:
    return {
        "station": {"id": "integ", "data_dir": str(tmp / "data")},
        "timers": {"tick_s": 0.1, "lease_s": 3.0},
        "buses": [{"id": "bus"}],
        "bays": [
            {"id": f"b{i}", "connector": i, "bus": "bus", "address": i, "max_current_a": 16}
            for i in range(1, n + 1)
        ],
        "site": {
            "main_limit_a": LIMIT_A,
            "min_on_time_s": 30,
            "min_off_time_s": 30,
            "increase_delay_s": 1,
            "ramp_step_a": 16,
        },
        **sections,
    }


@contextlib.asynccontextmanager
async def running_station(
    tmp: Path, *, n: int = 1, http: bool = False, start: bool = True, **sections: Any
) -> AsyncIterator[tuple[Station, FakeHub]]:
    """A running station whose bays all charge (a vehicle on each, drawing its setpoint);
    ``start=False``: no session is started."""
    cfg = parse_config(config(tmp, n, **sections))
    hub = FakeHub()
    st = await open_station(cfg, hubs={"bus": hub}, http=http)
    st.authorizer.add(free_vend_step())

    async def site() -> None:
        while True:
            total = 0.0
            for b in st.bays:
                node = hub.nodes.get(b)
                a = node.setpoint_a if node is not None and node.relay_on else 0.0
                total += a
                hub.telemetry(
                    b, current_a=a, relay_on=a > 0, pilot=PilotState.C if a > 0 else PilotState.B
                )
            st.meters.on_reading(grid((2.0 + total,) * 3), role="grid")
            await asyncio.sleep(0.1)

    task = asyncio.create_task(st.run())
    feeder: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(hub.running.wait(), 10)
        feeder = asyncio.create_task(site())
        for b in st.bays:
            await until(st, lambda b=b: st.bays[b].state.node_online)  # type: ignore[misc]
            if start:
                assert (await st.commands.present_token(b, f"T-{b}")).ok
        yield st, hub
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        st.request_stop("test")
        await asyncio.wait_for(task, 10)
        await st.journal.close()


async def until(st: Station, pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async with st.events.subscription(lossy=True) as q, asyncio.timeout(timeout):
        while not pred():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await q.get()


async def load_settled(st: Station) -> None:
    """Wait until the load loop has finished a whole step begun after this call (its audit
    rows are written by then)."""
    assert st.load is not None
    target = st.load.steps + 2
    st.load.wake()
    await until(st, lambda: st.load is not None and st.load.steps >= target)


async def audit_rows(st: Station, actor: str) -> list[dict[str, Any]]:
    """The audit rows of ``actor``, newest first (call inside the running station)."""
    await load_settled(st)
    await st.settle()
    rows = await st.journal.audit_log(limit=500)
    return [r for r in rows if r.get("actor") == actor]
