"""Load management in Chromium: "Limited by site" on the kiosk, load settings, installer tests.

A running station with a LoadLoop (``[site]`` in the config); the grid meter is
fed with ``station.meters.on_reading`` and always sees the building plus what
the chargers draw, like a real meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from controller.ports import Freshness, MeterReading, MeterSample
from tests.browser.conftest import Live, live_server
from tests.browser.test_ui_owner import _setup_owner
from tests.test_api_load import BAYS, SITE
from tests.test_api_rig import PASSWORD

pytestmark = pytest.mark.browser


class Building:
    """A grid meter reading the building's own load plus the chargers' draw, every 50 ms."""

    def __init__(self, live: Live, amps: float) -> None:
        self.live, self.amps = live, amps

    def read(self) -> None:
        st = self.live.rig.station
        ev = sum(rt.telemetry.current_a[0] for rt in st.bays.values() if rt.telemetry)
        now = time.monotonic()
        total = (self.amps + ev,) * 3
        st.meters.on_reading(
            MeterReading("grid", now, Freshness.FRESH, MeterSample(at=now, current_a=total)),
            role="grid",
        )

    async def run(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(0.05)  # the meter's poll period


@contextlib.asynccontextmanager
async def site_station(tmp: Path, building_a: float) -> AsyncIterator[tuple[Live, Building]]:
    async with live_server(tmp, site=SITE, bays=BAYS) as lv:
        meter = Building(lv, building_a)
        task = asyncio.create_task(meter.run())
        try:
            yield lv, meter
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _kiosk_session(browser: Browser, live: Live) -> Page:
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    page.set_default_timeout(5000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    setattr(page, "js_errors", errors)  # noqa: B010
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await page.locator('[data-bay="bay1"]').click()
    for d in "1234":
        await page.locator(f'#keypad [data-key="{d}"]').click()
    await page.locator('#keypad [data-key="OK"]').click()
    await page.locator('[data-mode="standard"]').click()
    await expect(page.locator("#instr-title")).to_have_text("Plug in your vehicle")
    live.rig.hub.plug("bay1")
    await expect(page.locator("#s-session")).to_be_visible()
    return page


async def test_kiosk_shows_limited_by_site(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    async with site_station(tmp_path, building_a=2.0) as (live, building):
        page = await _kiosk_session(browser, live)
        node = live.rig.hub.nodes["bay1"]
        await live.rig.until(lambda: node.setpoint_a == 16.0)  # 2 A of building: the full 16 A
        await expect(page.locator("#chip")).to_have_text("Charging")
        await expect(page.locator("#limited")).to_be_hidden()
        building.amps = 22.0  # a heat pump starts: 32 - 22 leaves 10 A for the charger
        await live.rig.until(lambda: 0 < node.setpoint_a <= 10.0)
        limited = page.locator("#limited")
        await expect(limited).to_be_visible()
        await expect(limited).to_contain_text("Limited by site")
        await expect(limited).to_contain_text("of 16 A")
        await page.screenshot(path=str(artifacts / "kiosk-limited-by-site-800x480.png"))
        building.amps = 2.0  # it stops: the charger ramps back up and the notice goes
        await expect(limited).to_be_hidden()
        assert not page.js_errors  # type: ignore[attr-defined]


async def test_owner_edits_limits_and_rules_with_conflict_warnings(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    async with site_station(tmp_path, building_a=2.0) as (live, _building):
        page = await _setup_owner(browser, live)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.click('nav a[href="#settings"]')
        site = page.locator('form[data-section="site"]')
        limit = site.locator('input[name="main_limit_a"]')
        await expect(limit).to_have_value("32")
        await limit.fill("5, 5, 5")
        warn = site.locator('[data-warnings="site"]')
        # checked before saving, and said in words (issue 16)
        await expect(warn).to_contain_text("cannot be more than the main breaker limit (5.0 A)")
        await limit.fill("25")
        await expect(warn).to_be_hidden()
        await site.locator('button[type="submit"]').click()
        await expect(page.locator("#flash")).to_have_text("Site limits and circuits saved.")
        load = live.rig.station.load
        assert load is not None and load.config.site.main_limit_a == (25, 25, 25)
        # Rules: "limit to 10 A after 18:00" plus a higher-priority rule that allows more.
        rules = page.locator('form[data-section="load_rules"]')
        await rules.get_by_role("button", name="Add rule").click()
        await rules.get_by_role("button", name="Add rule").click()
        second = rules.locator("tr.rule").nth(1)
        await second.locator('[name="id"]').fill("vip")
        await second.locator('[name="limit"]').fill("14")
        await second.locator('[name="bays"]').fill("bay1")
        await second.locator('[name="from"]').fill("20:00")
        await second.locator('[name="to"]').fill("22:00")
        await second.locator('[name="priority"]').fill("5")
        rwarn = rules.locator('[data-warnings="load_rules"]')
        await expect(rwarn.locator('[data-kind="contradiction"]')).to_contain_text("“vip”")
        await rules.locator('button[type="submit"]').click()
        await expect(page.locator("#flash")).to_contain_text("saved with 1 warning")
        assert [r.id for r in load.config.rules] == ["rule1", "vip"]
        await expect(
            page.locator('form[data-section="load_rules"] [data-kind="contradiction"]')
        ).to_be_visible()
        await page.screenshot(path=str(artifacts / "owner-load-rules-1280x800.png"), full_page=True)
        assert not errors


async def test_installer_runs_a_ramp_from_diagnostics(browser: Browser, tmp_path: Path) -> None:
    async with site_station(tmp_path, building_a=2.0) as (live, _building):
        page = await _setup_owner(browser, live)
        await live.app.state.ui.accounts.create_user("ian", PASSWORD, "installer")
        await page.click("#logout")
        await expect(page).to_have_url(live.base + "/login")
        await page.fill('input[name="username"]', "ian")
        await page.fill('input[name="password"]', PASSWORD)
        await page.click('button[type="submit"]')
        await expect(page.locator("#who")).to_contain_text("installer")
        await page.click('nav a[href="#diagnostics"]')
        await page.locator("#d-hold").fill("0.2")
        ramp = page.locator("#d-nodes tr", has_text="bay1").get_by_role("button", name="ramp")
        state = page.locator("#d-test [data-state]")
        # Nothing draws current: the ramp fails at its first step and says why.
        await ramp.click()
        await expect(state).to_have_attribute("data-state", "failed", timeout=30000)
        await expect(state).to_contain_text("measured 0.0 A: no current flowed")
        await expect(page.locator("#d-test tbody tr")).to_have_count(1)
        live.rig.hub.plug("bay1")  # a test load that draws what it is offered
        await ramp.click()
        await expect(state).to_have_attribute("data-state", "running")
        await expect(state).to_have_attribute("data-state", "passed", timeout=30000)
        await expect(page.locator("#d-test tbody tr")).to_have_count(6)  # 6 → 16 A in 2 A steps
