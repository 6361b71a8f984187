"""The event-loop lag monitor: its statistics, a real blocked loop, and its place in the station."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controller.assemble import open_station
from controller.ops.looplag import LoopLagMonitor, monitor_of, percentile
from tests.test_api_rig import make_cfg


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 201)], 99, 198.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_window_latest_max_p99() -> None:
    t = [0.0]
    mon = LoopLagMonitor(period_s=0.25, window=4, clock=lambda: t[0])
    assert mon.stats().latest_s is None and mon.silent_for() is None
    for i, lag in enumerate([0.5, 0.01, -0.002, 0.02, 0.03]):
        t[0] = i * 0.25
        mon.record(lag, t[0])
    s = mon.stats()
    # 0.5 fell out of the 4-sample window; the negative one counts as 0.
    assert s.latest_s == 0.03 and s.max_s == 0.03 and s.p99_s == 0.03
    assert s.max_ever_s == 0.5 and s.samples == 4 and s.total_samples == 5
    t[0] = 1.0 + 3.0
    assert mon.silent_for() == pytest.approx(3.0)
    assert mon.stale_after_s == 2.0


async def test_a_blocked_loop_shows_as_lag() -> None:
    mon = LoopLagMonitor(period_s=0.02)
    task = asyncio.create_task(mon.run())
    try:
        first = await mon.next_sample()
        assert first.latest_s is not None and first.latest_s < 0.15
        time.sleep(0.2)  # noqa: ASYNC251 - the offence being measured: the loop is blocked
        blocked = await mon.next_sample()
        assert blocked.latest_s is not None and blocked.latest_s >= 0.15
        assert blocked.max_s is not None and blocked.max_s >= 0.15
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_open_station_runs_the_monitor_as_a_service(tmp_path: Path) -> None:
    station = await open_station(make_cfg(tmp_path), hubs={}, http=False)
    try:
        mon = monitor_of(station)
        assert mon is not None and station.loop_lag is mon  # type: ignore[attr-defined]
        run = asyncio.create_task(station.run())
        stats = await asyncio.wait_for(mon.next_sample(), 5)
        assert stats.total_samples >= 1
        station.request_stop("test")
        await asyncio.wait_for(run, 5)
    finally:
        await station.journal.close()
