"""The dashboard's figures and 24 h power chart, yearly statistics, the history PDF and the
installer's checklist in Chromium, at 1280x800 and 390x844, from a journal with known data."""

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
from playwright.async_api import Browser, Page, expect

from controller.ports import Freshness, MeterReading, MeterSample
from local_ui import dashboard
from tests.browser.conftest import Live
from tests.support.report_data import Seeded, many, seed
from tests.test_api_rig import PASSWORD

pytestmark = pytest.mark.browser

SIZES = ((1280, 800), (390, 844))


async def _login(browser: Browser, live: Live, user: str, size: tuple[int, int]) -> Page:
    page = await browser.new_page(
        viewport={"width": size[0], "height": size[1]}, accept_downloads=True
    )
    page.set_default_timeout(8000)
    await page.goto(live.base + "/login")
    await page.fill('input[name="username"]', user)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    return page


async def _fits(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width  # type: ignore[index]


async def test_dashboard_figures_chart_stats_pdf_and_checklist(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    st, journal = live.rig.station, live.rig.journal
    now = st.clock.wall()
    day0 = dashboard.day_start(now)
    await seed(
        journal,
        [Seeded("today", "bay1", "99887766", day0 + 5, day0 + 65, 12_345, 3.7, "Local")],
    )
    # Two hours of grid and charger power, one sample every 30 s (known values).
    rows = []
    for i in range(240):
        t = now - 7200 + 30 * i
        rows.append((t, "grid", None, 0.0, 6000.0, json.dumps([9, 9, 8])))
        rows.append((t, f"node:{st.bays['bay1'].cfg.node_id}", None, 0.0, 4000.0, "[]"))
    await journal.add_meter_samples(rows)
    mono = time.monotonic()
    st.meters.on_reading(
        MeterReading(
            "grid",
            mono,
            Freshness.FRESH,
            MeterSample(
                at=mono,
                current_a=(10.0, 8.0, 6.0),
                power_w=(2300.0, 1840.0, 1380.0),
                power_total_w=5520.0,
            ),
        ),
        role="grid",
    )
    async with httpx.AsyncClient(base_url=live.base) as owner:
        await owner.get("/api/v1/auth/csrf")
        owner.headers["X-CSRF-Token"] = owner.cookies["es_csrf"]
        body = {"code": live.setup_code, "username": "owner", "password": PASSWORD}
        assert (await owner.post("/api/v1/auth/setup", json=body)).status_code == 201
        body = {"username": "ian", "password": PASSWORD, "role": "installer"}
        assert (await owner.post("/api/v1/users", json=body)).status_code == 201

    for size in SIZES:
        tag = f"{size[0]}x{size[1]}"
        page = await _login(browser, live, "owner", size)
        await expect(page.locator("#dash-site-kw")).to_have_text("5.52 kW")
        await expect(page.locator("#dash-today")).to_contain_text("12.35 kWh")
        await expect(page.locator("#dash-power .phase").first).to_have_text("L1: 2.30 kW · 10.0 A")
        chart = page.locator("#dash-chart svg")
        await expect(chart.locator('polyline[data-series="site"]')).to_have_count(1)
        kws = await chart.locator('polyline[data-series="site"]').get_attribute("data-kw")
        # Two hours of 6 kW; the newest minute may also hold the live reading (5.52 kW).
        assert kws is not None and len(kws.split()) >= 120
        assert set(kws.split()[:-1]) == {"6.000"}, kws
        building = await chart.locator('polyline[data-series="building"]').get_attribute("data-kw")
        assert building is not None and set(building.split()[:-1]) == {"2.000"}, building
        await expect(chart.locator(".legend-item")).to_have_count(3)
        await _fits(page)
        await page.screenshot(path=str(artifacts / f"owner-dashboard-power-{tag}.png"))
        await page.goto(live.base + "/owner#stats")
        await expect(page.locator("#chart-years svg rect")).to_have_count(5)
        await _fits(page)
        await page.screenshot(path=str(artifacts / f"owner-stats-years-{tag}.png"))
        await page.close()

    # The history PDF follows the sessions filter.
    await seed(journal, many(60, dt.datetime(2026, 6, 1, 8).astimezone().timestamp()))
    page = await _login(browser, live, "owner", SIZES[0])
    await page.click('nav a[href="#sessions"]')
    await page.select_option('#s-filter select[name="bay_id"]', "locker1")
    await page.click('#s-filter button[type="submit"]')
    await expect(page.locator("#pdf")).to_have_attribute(
        "href", "/api/v1/sessions.pdf?bay_id=locker1"
    )
    async with page.expect_download() as info:
        await page.click("#pdf")
    data = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert "at bay locker1" in text and f"Page 1 of {len(reader.pages)}" in text
    total = await journal.count_sessions(bay_id="locker1")
    assert "Sessions" + str(total) in text.replace(" ", "")
    (artifacts / "history-locker1.pdf").write_bytes(data)
    await page.close()

    # The installer's checklist, and a viewer does not see it.
    for size in SIZES:
        tag = f"{size[0]}x{size[1]}"
        page = await _login(browser, live, "ian", size)
        await expect(page.locator("#nav-installer")).to_be_visible()
        await page.click('nav a[href="#installer"]')
        steps = page.locator("#inst-steps .step")
        await expect(steps).to_have_count(5)
        await expect(steps.nth(0)).to_have_attribute("data-state", "passed")
        await expect(steps.nth(2)).to_contain_text("Still to run: current ramp on bay1")
        await _fits(page)
        await page.screenshot(path=str(artifacts / f"installer-checklist-{tag}.png"))
        async with page.expect_download() as info:
            await page.click("#inst-pdf")
        report = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
        rtext = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(report)).pages)
        assert "Commissioning report" in rtext and "ian" in rtext
        (artifacts / "commissioning-report.pdf").write_bytes(report)
        await page.close()
