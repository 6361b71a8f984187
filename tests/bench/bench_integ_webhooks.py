"""Notification → webhook received: a safe-mode change until a real local HTTP server has it.

Path: safety supervisor → event bus (lossless) → notifier → journal outbox row →
sender → HTTP POST. Baseline in the same run: a bare httpx POST to the same
receiver. Target: well within the 30 s the owners were promised.
Run: ``./dev.sh bench tests/bench/bench_integ_webhooks.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.bench.report import median, metric, percentile, write_report
from tests.support.integ import running_station
from tests.test_integ_webhooks import Receiver, free_port, webhooks

pytestmark = pytest.mark.bench
ROUNDS = 50


async def test_bench_webhook_delivery(tmp_path: Path) -> None:
    port = free_port()
    lat: list[float] = []
    base: list[float] = []
    async with (
        Receiver(port).serving() as rx,
        running_station(tmp_path, start=False, webhooks=webhooks(tmp_path, port)) as (st, _hub),
        httpx.AsyncClient() as http,
    ):
        for i in range(ROUNDS):
            n = len(rx.got)
            t0 = time.perf_counter()
            st.safety.block(f"bench_{i}", "A benchmark cause.")
            async with asyncio.timeout(30):
                while len(rx.got) == n:
                    rx.arrived.clear()
                    await rx.arrived.wait()
            lat.append((time.perf_counter() - t0) * 1000)
            st.safety.unblock(f"bench_{i}")
            n = len(rx.got)
            t0 = time.perf_counter()
            r = await http.post(f"http://127.0.0.1:{port}/hook", json={"kind": "baseline"})
            assert r.status_code == 200
            base.append((time.perf_counter() - t0) * 1000)
    assert [b["kind"] for _h, b in rx.got].count("safe_mode") == ROUNDS
    write_report(
        "integ_webhook_delivery",
        {
            "p50": metric(median(lat), "ms", "lower"),
            "p99": metric(percentile(lat, 99), "ms", "lower", target=30000),
            "bare_post_p50": metric(median(base), "ms", "lower"),
            "vs_bare_post": metric(median(lat) / median(base), "x", "lower"),
        },
        notes={"rounds": ROUNDS, "path": "safety -> bus -> notifier -> journal -> POST"},
    )
    assert percentile(lat, 99) < 30000
