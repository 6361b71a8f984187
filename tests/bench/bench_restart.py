"""Restart: how soon a car charges again after the controller was SIGKILLed for 2 s, 20 s, 120 s.

Real processes (``edge-station run``, the node simulator) and the development
CSMS, as in ``tests/test_restart.py``; one charging session is interrupted again
and again. "Charging again" = the node draws current on a setpoint the restarted
controller sent (the leftover lease of the killed one does not count). The
baseline, measured in the same run, is how long the restarted process takes to
be ready at all (``station.ready``): the difference is what continuing the
session costs. Runs per outage: ``RESTART_RUNS`` (``2:5,20:3,120:2``).
Run: ``./dev.sh bench tests/bench/bench_restart.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.bench.report import median, metric, percentile, write_report
from tests.test_restart import charging_again, charging_session, journal, open_rig, until

pytestmark = pytest.mark.bench


def _runs() -> dict[float, int]:
    spec = os.environ.get("RESTART_RUNS", "2:5,20:3,120:2")
    return {float(k): int(v) for k, v in (part.split(":") for part in spec.split(","))}


@pytest.mark.timeout(3600)
async def test_bench_restart(tmp_path: Path) -> None:
    took: dict[float, list[float]] = {}
    ready: list[float] = []
    async with open_rig(tmp_path) as rig:
        sid, key = await charging_session(rig)
        for outage, runs in _runs().items():
            for _ in range(runs):
                await asyncio.sleep(1.0)
                await rig.kill()
                await asyncio.sleep(outage)
                applied = (await rig.node())["outputs_applied"]
                spawned = await rig.start()
                ready.append(time.monotonic() - spawned)
                await charging_again(rig, applied)
                took.setdefault(outage, []).append(time.monotonic() - spawned)
        code, body = await rig.kiosk(
            "POST", "/api/v1/kiosk/bays/bay1/stop", {"session_id": sid, "key": key}
        )
        assert code == 200 and body["code"] == "stopped", body
        await until(lambda: rig.tx("StopTransaction"), 20, "StopTransaction")
        sessions, events = journal(rig.db)
        assert len(sessions) == 1 and len(rig.tx("StartTransaction")) == 1
        assert len(rig.tx("StopTransaction")) == 1
        gaps = sum(1 for e in events if e["kind"] == "interruption")
    base = median(ready)
    metrics = {"ready_after_restart_median_s": metric(base, "s")}
    for outage, values in took.items():
        tag = f"{int(outage)}s"
        metrics[f"charging_again_{tag}_median_s"] = metric(median(values), "s", target=10.0)
        metrics[f"charging_again_{tag}_p99_s"] = metric(percentile(values, 99), "s", target=10.0)
        metrics[f"charging_again_{tag}_vs_ready_ratio"] = metric(median(values) / base, "x")
        assert max(values) < 10.0, (outage, values)
    write_report(
        "restart",
        metrics,
        {
            "runs": {str(k): len(v) for k, v in took.items()},
            "samples_s": {str(k): [round(x, 3) for x in v] for k, v in took.items()},
            "ready_samples_s": [round(x, 3) for x in ready],
            "interruptions_journaled": gaps,
            "sessions": 1,
        },
    )
