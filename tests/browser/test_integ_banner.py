"""External limits in Chromium: the owner's banner when the energy manager falls silent, and
"Limited by grid operator" on the kiosk and the owner UI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from drivers.setpoint.gate import external_gate
from tests.browser.conftest import live_server
from tests.browser.test_ui_load import Building
from tests.browser.test_ui_owner import _setup_owner
from tests.test_api_load import BAYS, SITE

pytestmark = pytest.mark.browser

LEASE_S = 5.0


async def test_lease_expiry_shows_the_fallback_banner_and_the_grid_operator_is_shown(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    external = {"lease_s": LEASE_S, "fallback_site_a": 6, "modbus": {"port": 0}}
    async with live_server(tmp_path, site=SITE, bays=BAYS, external=external) as live:
        st = live.rig.station
        Building(live, 2.0).read()
        gate = external_gate(st)  # as the setpoint extension does when the station starts
        assert gate is not None
        page = await _setup_owner(browser, live)
        banner = page.locator("#external-banner")
        # No energy manager has spoken yet: the station charges with its fallback, and says so.
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("fallback of 6 A per phase")
        assert gate.offer(scope="site", source="modbus", amps=16.0).kind == "applied"
        await expect(banner).to_be_hidden()
        t0 = time.monotonic()
        await expect(banner).to_be_visible(timeout=(LEASE_S + 3) * 1000)
        assert LEASE_S - 0.5 <= time.monotonic() - t0 <= LEASE_S + 2.0
        await expect(banner).to_contain_text("has not renewed its limit in time")
        text = await banner.inner_text()
        assert "{" not in text and "_" not in text  # a sentence, not a field
        await page.screenshot(path=str(artifacts / "owner-external-fallback.png"))

        kiosk = await browser.new_page(viewport={"width": 800, "height": 480})
        await kiosk.goto(live.base + "/kiosk")
        await expect(kiosk.locator("body")).to_have_attribute("data-live", "up")
        grid = kiosk.locator("#grid-banner")
        await expect(grid).to_be_hidden()
        gate.grid_operator("gpio", True)
        await expect(grid).to_be_visible()
        await expect(grid).to_contain_text("Limited by grid operator")
        await expect(banner).to_contain_text("Limited by grid operator")
        await kiosk.screenshot(path=str(artifacts / "kiosk-grid-operator-800x480.png"))
        gate.grid_operator("gpio", False)
        await expect(grid).to_be_hidden()
