"""The journal's bytes on flash per bay per day, over simulated hours of charging.

A Station with its real Journal on disk and a passive fake hub (no transport) runs on
a stepped clock: every bay charging, a frame per bay every ``FRAME_EVERY_S`` simulated
seconds (the journal keeps per-minute figures, so how many frames a minute brings does
not change what is written), and the station's own minute-row writes when its writer
would make them (its interval, just after the minute turns: ``SampleWriter._next_wait``).
``write_bytes`` of /proc/self/io (every thread: the journal's writer included) counts
from the first charging minute to the end, SQLite's own WAL checkpoints included and one
more at the end, so the WAL's copy into the database counts too.

Points: 4, 16, 64 and 256 bays (two buses) at the default ``[journal]`` (the interval
chosen by the station's size, controller.core.samples.journal_interval), and 4 and 16
bays at an explicit ``checkpoint_s = 60`` (a write every minute) as the baseline.
Target ≤ 1 MB per bay per day (issue 20). The floor of one write is one 4 KiB page of
the WAL and the OS page its frame header pushes it into (8 KiB), whatever the station's
size: hence fewer, fuller writes for small stations.

    ./dev.sh bench tests/bench/bench_journal_day.py
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import NodeTelemetry, PilotState
from tests.bench.bench_scale import _SteppedClock, _write_bytes
from tests.bench.report import metric, write_report
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.support.passive import report

FRAME_EVERY_S = 10
HOURS = float(os.environ.get("BENCH_JOURNAL_HOURS", "6"))
PER_BUS = 128


class _Clock(_SteppedClock):
    """Simulated time: the bench moves it; the station's own timers never fire (the bench
    calls the minute write itself, at the times the station's writer would)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def run_day(
    tmp: Path, bays: int, hours: float, checkpoint_s: float | None = None
) -> dict[str, Any]:
    """``checkpoint_s`` None: the default ``[journal]`` (the station chooses its interval)."""
    buses = [f"b{i + 1}" for i in range((bays + PER_BUS - 1) // PER_BUS)]
    cfg = parse_config(
        {
            "station": {"id": "day", "data_dir": str(tmp)},
            "timers": {"lease_s": 5.0, "connection_timeout_s": 600},
            "journal": {} if checkpoint_s is None else {"checkpoint_s": checkpoint_s},
            "buses": [{"id": b} for b in buses],
            "bays": [
                {
                    "id": f"bay{i}",
                    "connector": i + 1,
                    "bus": buses[i // PER_BUS],
                    "address": i % PER_BUS + 1,
                }
                for i in range(bays)
            ],
        }
    )
    clock = _Clock()
    hubs = {b: FakeHub([FakeNode(c.node_id) for c in cfg.bays if c.bus == b]) for b in buses}
    journal = await Journal.open(tmp / "journal.sqlite3")
    station = Station(cfg, journal, hubs=dict(hubs), clock=clock)
    station.authorizer.add(free_vend_step())
    await station.restore()
    run = asyncio.create_task(station.run())
    energy = dict.fromkeys(station.bays, 1000)

    def frame(bay_id: str, amps: float, pilot: PilotState) -> NodeTelemetry:
        node_id = station.bays[bay_id].cfg.node_id
        at = clock.monotonic()
        return report(node_id, at, amps, pilot, energy_wh=energy[bay_id], lease_remaining_s=60.0)

    try:
        for hub in hubs.values():
            await hub.running.wait()
        for bay_id in station.bays:
            await station.nodes.take(frame(bay_id, 0.0, PilotState.B))
        for bay_id in station.bays:
            assert (await station.commands.present_token(bay_id, f"T-{bay_id}")).ok
            await station.nodes.take(frame(bay_id, 16.0, PilotState.C))
        await station.samples.flush()
        await journal.checkpoint_wal()  # start-up's writes are not the day's
        b0 = _write_bytes()
        steps = int(hours * 3600 / FRAME_EVERY_S)
        writes = 0
        due = clock.wall() + station.samples._next_wait()
        for _ in range(steps):
            next_frame = clock.wall() + FRAME_EVERY_S
            while due <= next_frame:  # the writer's own time: just after the minute turns
                clock.offset += due - clock.wall()
                await station.samples.flush(final=False)
                writes += 1
                due = clock.wall() + station.samples._next_wait()
            clock.offset += next_frame - clock.wall()
            for bay_id in station.bays:
                energy[bay_id] += 3 * FRAME_EVERY_S
                await station.nodes.take(frame(bay_id, 16.0, PilotState.C))
        await journal.checkpoint_wal()
        written = _write_bytes() - b0
        await station.samples.flush(final=False)  # the minutes of the last, unfinished interval
        rows = await journal.query("SELECT count(*) AS n FROM meter_minutes")
        charging = sum(1 for rt in station.bays.values() if rt.state.phase.value == "charging")
    finally:
        station.request_stop("bench")
        await asyncio.wait_for(run, 60)
        await journal.close()
    simulated_s = steps * FRAME_EVERY_S
    return {
        "bays": bays,
        "checkpoint_s": checkpoint_s,
        "interval_s": station.samples.interval_s,
        "writes": writes,
        "hours": simulated_s / 3600,
        "charging": charging,
        "written_b": written,
        "minute_rows": int(rows[0]["n"]),
        "bytes_per_bay_day": written / bays / simulated_s * 86400,
    }


@pytest.mark.bench
@pytest.mark.parametrize(
    ("bays", "checkpoint_s"), [(4, None), (16, None), (64, None), (256, None), (4, 60), (16, 60)]
)
async def test_bench_journal_day(tmp_path: Path, bays: int, checkpoint_s: float | None) -> None:
    asyncio.get_running_loop().set_debug(False)
    r = await run_day(tmp_path, bays, HOURS, checkpoint_s)
    write_report(
        f"journal_day_{bays}" + ("" if checkpoint_s is None else f"_checkpoint_{checkpoint_s}s"),
        {"bytes_per_bay_day": metric(r["bytes_per_bay_day"], "B", target=1_000_000)},
        notes=r,
    )
    assert r["charging"] == bays
    # Every simulated minute became one row per bay (give or take the first and last).
    assert r["minute_rows"] >= bays * (r["hours"] * 60 - 2)
    # The writes came at the interval (give or take the first and last).
    assert abs(r["writes"] - r["hours"] * 3600 / r["interval_s"]) <= 2
