"""Report figures: the dashboard (figures + 24 h power chart; warm, and cold: nothing settled read yet) and a 1,000-session history PDF.

A real station and journal, filled with 24 h of 1 Hz samples of the grid meter
and every bay node (today's sample storage) and 1,000 closed sessions; every
request goes through the FastAPI app (in-process ASGI). Baselines measured in
the same run: the monthly statistics chart (an existing SVG endpoint) for the
dashboard, the CSV export of the same sessions for the PDF. While the PDF is
built, a ticker measures the event loop's lag (the PDF is laid out in a thread).

Run: ``./dev.sh bench tests/bench/bench_reports.py``.
Targets: dashboard p99 < 1000 ms; 1,000-session PDF p99 < 5000 ms; loop lag p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time
from pathlib import Path

import httpx
import pypdf
import pytest

from local_ui import dashboard
from tests.bench.report import median, metric, percentile, write_report
from tests.support.report_data import many, seed
from tests.test_api_rig import api_client, running_station, setup_owner

SESSIONS = 1000
DASH_RUNS = 20
PDF_RUNS = 10


async def _timed(client: httpx.AsyncClient, paths: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for p in paths:
            r = await client.get(p)
            assert r.status_code == 200, (p, r.text[:200])
            assert r.content
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _lag_while(work: asyncio.Future[list[float]]) -> list[float]:
    lags = []
    while not work.done():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(max(0.0, (time.perf_counter() - t0) * 1000 - 5))
    return lags


@pytest.mark.bench
async def test_bench_reports(tmp_path: Path) -> None:
    asyncio.get_running_loop().set_debug(False)
    async with running_station(tmp_path) as rig:
        st, journal = rig.station, rig.journal
        now = st.clock.wall()
        sources = ["grid", *(f"node:{rt.cfg.node_id}" for rt in st.bays.values())]
        t_seed = time.perf_counter()
        batch = []
        for i in range(24 * 3600):
            t = now - 24 * 3600 + i
            for s in sources:
                batch.append((t, s, None, float(i), 1000.0 + (i % 600), json.dumps([5, 5, 5])))
            if len(batch) >= 20_000:
                await journal.add_meter_samples(batch)
                batch = []
        await journal.add_meter_samples(batch)
        start = dt.datetime.fromtimestamp(now - SESSIONS * 1800).timestamp()
        await seed(journal, many(SESSIONS, start, span_s=1800))
        seeded_s = time.perf_counter() - t_seed
        client = await api_client(st)
        await setup_owner(client)

        query = []
        for _ in range(DASH_RUNS):
            t0 = time.perf_counter()
            rows = await journal.power_per_minute(sources, now - 24 * 3600, now)
            query.append((time.perf_counter() - t0) * 1000)
        assert len(rows) >= 1439 * len(sources)
        base_dash = await _timed(client, ["/api/v1/stats/monthly.svg?months=12"], DASH_RUNS)
        cold = []
        for _ in range(5):
            dashboard._settled.clear()  # as after a restart: every minute read from the journal
            cold += await _timed(client, ["/api/v1/dashboard/power.svg?hours=24"], 1)
        dash = await _timed(
            client, ["/api/v1/dashboard", "/api/v1/dashboard/power.svg?hours=24"], DASH_RUNS
        )
        csv = await _timed(client, ["/api/v1/sessions.csv"], PDF_RUNS)
        pdf_task = asyncio.ensure_future(_timed(client, ["/api/v1/sessions.pdf"], PDF_RUNS))
        lags = await _lag_while(pdf_task)
        pdf = await pdf_task
        body = (await client.get("/api/v1/sessions.pdf")).content
        size = len(body)
        pages = len(pypdf.PdfReader(io.BytesIO(body)).pages)

    metrics = {
        "dashboard_median_ms": metric(median(dash), "ms"),
        "dashboard_chart_cold_median_ms": metric(median(cold), "ms"),
        "dashboard_chart_cold_max_ms": metric(max(cold), "ms"),
        "dashboard_p99_ms": metric(percentile(dash, 99), "ms", target=1000),
        "power_per_minute_24h_median_ms": metric(median(query), "ms"),
        "power_per_minute_24h_p99_ms": metric(percentile(query, 99), "ms"),
        "baseline_monthly_svg_median_ms": metric(median(base_dash), "ms"),
        "dashboard_vs_monthly_svg": metric(median(dash) / median(base_dash), "x"),
        "pdf_1000_median_ms": metric(median(pdf), "ms"),
        "pdf_1000_p99_ms": metric(percentile(pdf, 99), "ms", target=5000),
        "baseline_csv_1000_median_ms": metric(median(csv), "ms"),
        "pdf_vs_csv": metric(median(pdf) / median(csv), "x"),
        "loop_lag_during_pdf_p99_ms": metric(percentile(lags, 99), "ms", target=50),
        "pdf_1000_bytes": metric(size, "B"),
    }
    write_report(
        "reports",
        metrics,
        {
            "samples": f"24 h at 1 Hz of {len(sources)} sources ({24 * 3600 * len(sources)} rows)",
            "sessions": SESSIONS,
            "runs": {"dashboard": DASH_RUNS, "pdf": PDF_RUNS},
            "seed_s": round(seeded_s, 1),
            "pdf_1000_pages": pages,
        },
    )
    assert percentile(dash, 99) < 5000 and percentile(pdf, 99) < 30000
