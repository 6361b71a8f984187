"""Journal benchmarks: commit latency of one transition, meter-sample ingest, recovery time.

Run: ``./dev.sh bench tests/bench/bench_journal.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.core.bay import BayKind, BayState, Phase, Session, StopReason
from controller.core.config import parse_config
from controller.core.journal import Commit, EventRow, Journal, OutboxRow
from controller.core.persist import state_to_dict
from controller.core.station import Station
from tests.bench.report import median, metric, percentile, write_report

pytestmark = pytest.mark.bench


def _transition_commit(i: int) -> Commit:
    sess = Session(f"s{i}", "TOKEN", "local", 1000.0 + i, 0, i)
    state = BayState("b1", BayKind.EVSE, Phase.CHARGING, sess, node_online=True)
    return Commit(
        events=[EventRow("telemetry", 1000.0 + i, "b1", f"s{i}", {"energy_wh": i})],
        bay_states={"b1": state_to_dict(state)},
        outbox=[OutboxRow("MeterValues", {"connectorId": 1, "value": i}, f"s{i}")],
    )


async def test_bench_journal(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.sqlite3", synchronous="FULL")
    try:
        # 1. commit latency of one transition (event + state + outbox), synchronous=FULL
        lat: list[float] = []
        for i in range(1500):
            c = _transition_commit(i)
            t0 = time.perf_counter()
            await journal.commit(c)
            lat.append((time.perf_counter() - t0) * 1000)
        # baseline in the same run: a bare SELECT round trip through aiosqlite
        base: list[float] = []
        for _ in range(500):
            t0 = time.perf_counter()
            await journal.query("SELECT 1")
            base.append((time.perf_counter() - t0) * 1000)

        # 2. batched meter-sample ingest
        total = 100_000
        batch = 1000
        rows = [(float(i), "node:b1", "s1", float(i), 2300.0, "[10,10,10]") for i in range(batch)]
        t0 = time.perf_counter()
        for _ in range(total // batch):
            await journal.add_meter_samples(rows)
        ingest = total / (time.perf_counter() - t0)
    finally:
        await journal.close()

    # 3. recovery time with 10,000 sessions in the journal
    path = tmp_path / "recovery.sqlite3"
    j = await Journal.open(path, synchronous="OFF")
    now = time.time()
    for chunk in range(10):
        c = Commit()
        for k in range(1000):
            i = chunk * 1000 + k
            c.session_open.append(
                {
                    "id": f"s{i}",
                    "bay_id": f"b{i % 16 + 1}",
                    "connector": i % 16 + 1,
                    "token": "T",
                    "auth_source": "local",
                    "mode": "standard",
                    "state": "closed",
                    "started_at": now - 10_000 + i,
                    "stopped_at": now - 9_000 + i,
                    "meter_start_wh": i,
                    "meter_wh": i + 500,
                    "meter_stop_wh": i + 500,
                    "energy_wh": 500,
                    "tariff": {"per_kwh": 0.3},
                    "stop_reason": StopReason.LOCAL.value,
                }
            )
            c.events.append(EventRow("session_closed", now, f"b{i % 16 + 1}", f"s{i}", {}))
        await j.commit(c)
    await j.close()
    cfg = parse_config(
        {
            "station": {"data_dir": str(tmp_path)},
            "buses": [{"id": "bus1"}],
            "bays": [
                {"id": f"b{i}", "connector": i, "bus": "bus1", "address": i} for i in range(1, 17)
            ],
        }
    )
    rec: list[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        j = await Journal.open(path)
        st = Station(cfg, j)
        await st.restore()
        rec.append((time.perf_counter() - t0) * 1000)
        await j.close()

    write_report(
        "journal",
        {
            "commit_p50": metric(median(lat), "ms", "lower"),
            "commit_p99": metric(percentile(lat, 99), "ms", "lower"),
            "select_roundtrip_p50_baseline": metric(median(base), "ms", "lower"),
            "commit_to_roundtrip_ratio": metric(median(lat) / median(base), "x", "lower"),
            "sample_ingest_rate": metric(ingest, "samples/s", "higher", target=5000),
            "recovery_10k_sessions_median": metric(median(rec), "ms", "lower", target=1000),
            "recovery_10k_sessions_max": metric(max(rec), "ms", "lower", target=1000),
        },
        notes={"synchronous": "FULL", "commits": len(lat), "samples": total},
    )
    assert ingest >= 5000
    assert median(rec) < 1000
