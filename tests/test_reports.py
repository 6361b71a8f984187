"""Dashboard figures, power history, yearly statistics and the history PDF, checked against a
journal filled with known samples and sessions (a real SQLite journal; PDFs read back with pypdf).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pypdf
import pytest

from controller.core.journal import Journal
from controller.ports import Freshness, MeterReading, MeterSample
from local_ui import dashboard, history
from local_ui.charts import power_svg, yearly_svg
from local_ui.reports_pdf import history_pdf, plain
from tests.support.report_data import Seeded, many, seed
from tests.test_api_rig import api_client, running_station, setup_owner

T0 = dt.datetime(2026, 11, 30, 12, 0, 0).astimezone().timestamp()  # a whole minute


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "journal.sqlite3", synchronous="NORMAL")
    yield j
    await j.close()


def _sample(at: float, source: str, power_w: float | None) -> tuple[object, ...]:
    return (at, source, None, 0.0, power_w, json.dumps([0, 0, 0]))


def _pdf_text(data: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


# ---------------------------------------------------------------------- the journal's contract


async def test_power_per_minute_means_per_source_and_minute(journal: Journal) -> None:
    await journal.add_meter_samples(
        [
            _sample(T0 + 1, "grid", 1000),
            _sample(T0 + 31, "grid", 3000),  # minute T0: mean 2000 of 2
            _sample(T0 + 59.9, "grid", None),  # no power value: not counted
            _sample(T0 + 61, "grid", 500),
            _sample(T0 + 5, "node:a", 7000),
            # T0+120 … T0+180: nothing measured (a gap, never a zero)
            _sample(T0 + 185, "grid", -1200),  # export stays negative
            _sample(T0 + 185, "other", 99),  # a source not asked for
            _sample(T0 + 240, "grid", 42),  # in the minute that starts at ``until``: out
        ]
    )
    rows = await journal.power_per_minute(["grid", "node:a"], T0 + 10, T0 + 240)
    got = [(r["minute"] - T0, r["source"], r["power_w"], r["samples"]) for r in rows]
    assert got == [
        (0, "grid", 2000.0, 2),
        (0, "node:a", 7000.0, 1),
        (60, "grid", 500.0, 1),
        (180, "grid", -1200.0, 1),
    ]
    # ``until`` inside a minute takes that minute whole; nothing before the first minute.
    rows = await journal.power_per_minute(["grid"], T0 + 60, T0 + 200)
    assert [r["minute"] - T0 for r in rows] == [60, 180]
    assert await journal.power_per_minute([], T0, T0 + 600) == []
    assert await journal.power_per_minute(["grid"], T0 + 600, T0) == []


async def test_session_energy_counts_sessions_started_in_the_range(journal: Journal) -> None:
    await seed(
        journal,
        [
            Seeded("a", "bay1", "1", T0 - 10, T0 + 100, 5000, 1.5, "Local"),  # before
            Seeded("b", "bay1", "1", T0, T0 + 100, 7000, 2.1, "Local"),
            Seeded("c", "bay1", "1", T0 + 500, None, 1234, None, None),  # open: its checkpoint
            Seeded("d", "locker1", "1", T0 + 600, T0 + 700, -50, 0.0, "Local"),  # counter back
        ],
    )
    got = await journal.session_energy(T0, T0 + 3600)
    assert got == {"sessions": 3, "energy_wh": 7000 + 1234}


# ---------------------------------------------------------------------- dashboard


async def test_power_history_derives_building_and_keeps_gaps(journal: Journal) -> None:
    rows = []
    for m in range(3):
        t = T0 + 60 * m + 10
        if m != 1:  # minute 1: the grid meter was silent
            rows.append(_sample(t, "grid", 5000 + m))
        rows += [
            _sample(t, "pv", -2000),  # a PV meter that counts production negative
            _sample(t, "node:n1", 3000),
            _sample(t + 20, "node:n1", 3000),
            _sample(t, "node:n2", 1000),
        ]
    await journal.add_meter_samples(rows)
    h = await dashboard.power_history(journal, ["n1", "n2"], T0, T0 + 180, pv=True)
    assert [m - T0 for m in h.minutes] == [0, 60, 120]
    assert h.series["site"] == [5000, None, 5002]
    assert h.series["pv"] == [2000, 2000, 2000]
    assert h.series["chargers"] == [4000, 4000, 4000]
    # building = site + PV − chargers; unknown where the site is unknown
    assert h.series["building"] == [3000, None, 3002]
    no_pv = await dashboard.power_history(journal, ["n1"], T0, T0 + 180, pv=False)
    assert "pv" not in no_pv.series and no_pv.series["chargers"] == [3000, 3000, 3000]
    svg = power_svg(h.minutes, h.series, h.view()["labels"])
    # The site line is broken at the gap: two pieces, each with its own values (kW).
    site = re.findall(r'data-series="site" data-kw="([^"]*)"', svg)
    assert site == ["5.000", "5.002"]
    assert re.findall(r'data-series="building" data-kw="([^"]*)"', svg) == ["3.000", "3.002"]
    assert re.findall(r'data-series="chargers" data-kw="([^"]*)"', svg) == ["4.000 4.000 4.000"]
    for label in ("Site (grid)", "Building", "Chargers", "Solar (PV)"):
        assert f">{label}</text>" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


async def test_dashboard_api_shows_site_power_energy_and_the_chart(tmp_path: Path) -> None:
    """Grid readings go through the station's meter intake into the journal and back out."""
    async with running_station(tmp_path) as rig:
        st = rig.station
        now = st.clock.wall()
        day0 = dashboard.day_start(now)
        month0 = dashboard.month_start(now)
        sessions = [
            Seeded("today1", "bay1", "1111", day0 + 1, day0 + 60, 4200, 1.26, "Local"),
            Seeded("month1", "bay1", "1111", month0 + 1, month0 + 60, 10_000, 3.0, "Local"),
            Seeded("before", "bay1", "1111", month0 - 3600, month0 - 60, 99_000, 9.9, "Local"),
        ]
        if day0 == month0:  # the first day of a month: both land today
            sessions[1] = Seeded("month1", "bay1", "1111", day0 + 2, day0 + 60, 10_000, 3, "Local")
        await seed(rig.journal, sessions)
        mono = time.monotonic()
        reading = MeterReading(
            "grid",
            mono,
            Freshness.FRESH,
            MeterSample(
                at=mono,
                current_a=(10.0, 8.0, 6.0),
                voltage_v=(230.0, 230.0, 230.0),
                power_w=(2300.0, 1840.0, 1380.0),
                power_total_w=5520.0,
            ),
        )
        st.meters.on_reading(reading, role="grid")
        st.meters.on_reading(reading, role="grid")  # the same sample again: journaled once
        await st.samples.flush()
        client = await api_client(st)
        await setup_owner(client)
        d = (await client.get("/api/v1/dashboard")).json()
        assert d["power"]["site_kw"] == 5.52
        assert [p["power_kw"] for p in d["power"]["phases"]] == [2.3, 1.84, 1.38]
        assert [p["current_a"] for p in d["power"]["phases"]] == [10.0, 8.0, 6.0]
        assert d["power"]["note"] == ""
        today = 4.2 + (10.0 if day0 == month0 else 0.0)
        assert d["energy"]["today_kwh"] == pytest.approx(today)
        assert d["energy"]["month_kwh"] == pytest.approx(14.2)
        assert d["energy"]["month_sessions"] == 2
        p = (await client.get("/api/v1/dashboard/power", params={"hours": 1})).json()
        assert len(p["minutes"]) in (60, 61)
        site = [v for v in p["series"]["site"] if v is not None]
        assert site == [5520.0]  # one sample, once
        assert "pv" not in p["series"]
        svg = (await client.get("/api/v1/dashboard/power.svg", params={"hours": 1})).text
        assert 'data-series="site" data-kw="5.520"' in svg
        bad = await client.get("/api/v1/dashboard/power", params={"hours": 0})
        assert bad.status_code == 422


async def test_dashboard_without_a_grid_meter_says_so(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        d = dashboard.power_now(rig.station)
        assert d["site_kw"] is None and d["phases"] == []
        assert d["note"].startswith("There is no grid meter")


# ---------------------------------------------------------------------- statistics


async def test_yearly_statistics_sum_the_journal(journal: Journal) -> None:
    this = dt.date.today().year
    rows = []
    expect: dict[int, tuple[int, int]] = {}
    for k, year in enumerate((this - 2, this - 1, this)):
        n = 3 + k
        for i in range(n):
            start = dt.datetime(year, 1 + i, 3, 10).astimezone().timestamp()
            wh = 1000 * (k + 1) * (i + 1)
            rows.append(Seeded(f"{year}-{i}", "bay1", "1", start, start + 60, wh, 0.5, "Local"))
            got = expect.get(year, (0, 0))
            expect[year] = (got[0] + 1, got[1] + wh)
    rows.append(Seeded("open", "bay1", "1", rows[-1].started_at + 5, None, 777, None, None))
    await seed(journal, rows)
    years = await history.yearly(journal, 3)
    assert [y["year"] for y in years] == [this - 2, this - 1, this]
    for y in years:
        n, wh = expect[y["year"]]
        assert (y["sessions"], y["energy_kwh"]) == (n, wh / 1000)  # the open one stays out
    trend = history.trend([y["energy_kwh"] for y in years])
    assert trend[0] < trend[-1]
    svg = yearly_svg(years, trend)
    assert svg.count("<rect") == 3 and 'class="trend"' in svg
    for y in years:
        assert f"{y['year']}: {y['energy_kwh']:.1f} kWh, {y['sessions']} sessions" in svg


# ---------------------------------------------------------------------- the history PDF


async def test_history_pdf_pages_legend_filter_and_totals(journal: Journal) -> None:
    start = dt.datetime(2026, 3, 1, 8).astimezone().timestamp()
    sessions = many(150, start)
    await seed(journal, sessions)
    f = history.SessionFilter()
    data, totals = await history_pdf(journal, f, station="Hof Süd", currency="EUR", now=start)
    pages, text = _pdf_text(data)
    assert pages >= 4
    assert f"Page 1 of {pages}" in text and f"Page {pages} of {pages}" in text
    assert "Legend" in text and "Energy kWh" in text and "All sessions in the journal." in text
    assert "Hof Süd: Charging history" in text
    want_wh = sum(max(0, s.energy_wh) for s in sessions)
    want_cost = sum(s.cost for s in sessions if s.cost is not None)
    assert totals.sessions == 150 and totals.energy_wh == want_wh
    assert "Sessions150" in text.replace(" ", "")
    assert f"{want_wh / 1000:.3f} kWh" in text
    uncosted = sum(1 for s in sessions if s.cost is None)
    assert f"{want_cost:.2f} EUR ({uncosted} without a cost)" in text
    # Every session is listed, once; tokens only masked.
    assert all(text.count(s.id) == 1 for s in sessions)
    assert not any(s.token in text for s in sessions)
    assert "Emergency stop" in text and "Problem" in text

    # A filter: its words on the first page, its totals those of the filtered rows.
    since = dt.datetime.fromtimestamp(start + 50 * 3600)
    f2 = history.SessionFilter(since=since, bay_id="locker1", outcome="error")
    data, totals = await history_pdf(journal, f2, station="Hof", currency="EUR", now=start)
    _, text = _pdf_text(data)
    chosen = [
        s
        for s in sessions
        if s.started_at >= since.timestamp()
        and s.bay_id == "locker1"
        and s.stop_reason == "EmergencyStop"
    ]
    assert chosen and totals.sessions == len(chosen)
    assert f"{sum(s.energy_wh for s in chosen) / 1000:.3f} kWh" in text
    assert "at bay locker1" in text and "ended by a problem" in text
    assert {s.id for s in sessions if s.id in text} == {s.id for s in chosen}


async def test_history_pdf_of_nothing_says_so(journal: Journal) -> None:
    data, totals = await history_pdf(
        journal, history.SessionFilter(bay_id="none"), station="S", currency="EUR", now=T0
    )
    pages, text = _pdf_text(data)
    assert pages == 1 and totals.sessions == 0
    assert "No session matches this filter." in text and "0.000 kWh" in text


async def test_history_pdf_through_the_api(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        start = dt.datetime(2026, 5, 1, 8).astimezone().timestamp()
        sessions = many(40, start)
        await seed(rig.journal, sessions)
        client = await api_client(rig.station)
        await setup_owner(client)
        r = await client.get("/api/v1/sessions.pdf", params={"bay_id": "bay1"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert "attachment" in r.headers["content-disposition"]
        _, text = _pdf_text(r.content)
        mine = [s for s in sessions if s.bay_id == "bay1"]
        assert f"{sum(s.energy_wh for s in mine) / 1000:.3f} kWh" in text
        bad = await client.get("/api/v1/sessions.pdf", params={"since": "0001-01-01"})
        assert bad.status_code == 422 and "between" in bad.json()["message"]
        anon = await api_client(rig.station)
        assert (await anon.get("/api/v1/sessions.pdf")).status_code == 401


def test_plain_text_for_the_pdf_fonts() -> None:
    assert plain("…1234 – ok") == "...1234 - ok"
    assert plain("Süd") == "Süd" and plain("東京") == "??"


async def test_power_history_reads_settled_minutes_once(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = T0 + 3600
    await journal.add_meter_samples(
        [_sample(T0 + 60 * m + 5, "grid", 1000.0 + m) for m in range(60)]
    )
    asked: list[float] = []
    real = journal.power_per_minute

    async def spy(sources: list[str], since: float, until: float) -> list[dict[str, object]]:
        asked.append(since)
        return await real(sources, since, until)

    monkeypatch.setattr(journal, "power_per_minute", spy)
    first = await dashboard.power_history(journal, [], T0, now, pv=False)
    assert first.series["site"] == [1000.0 + m for m in range(60)]
    # Thirty seconds on: a new sample in the newest minute, and the settled ones not read again.
    await journal.add_meter_samples([_sample(now + 10, "grid", 5000.0)])
    later = await dashboard.power_history(journal, [], T0 + 30, now + 30, pv=False)
    assert asked[0] == T0 and asked[1] == now - dashboard.SETTLED_S
    assert later.series["site"] == [*first.series["site"], 5000.0]
    direct = await real(["grid"], T0, now + 30)
    assert [r["power_w"] for r in direct] == later.series["site"]


async def test_grid_samples_reach_the_journal_at_most_once_a_second(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        base = time.monotonic()
        for k, dt_s in enumerate((0.0, 0.5, 1.0, 1.2, 2.1)):
            at = base + dt_s
            sample = MeterSample(at=at, current_a=(1.0, 1.0, 1.0), power_total_w=100.0 * (k + 1))
            st.meters.on_reading(MeterReading("grid", at, Freshness.FRESH, sample), role="grid")
        stale = MeterSample(at=base + 9, power_total_w=999.0)
        st.meters.on_reading(MeterReading("grid", base + 9, Freshness.STALE, stale), role="grid")
        await st.samples.flush()
        now = st.clock.wall()
        rows = await rig.journal.power_per_minute(["grid"], now - 120, now + 60)
        assert sum(r["samples"] for r in rows) == 3  # at 0, 1.0 and 2.1 s; never the stale one
        got = sum(r["power_w"] * r["samples"] for r in rows)
        assert got == pytest.approx(100 + 300 + 500)
