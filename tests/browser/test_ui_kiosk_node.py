"""The kiosk when a bay's node goes silent mid-session, with the real parts: ``edge-station
run`` as its own process, the ESP32 node simulator as another one (over a pseudo-terminal
through the real serial driver), and the kiosk page in Chromium served by that controller.

The driver reads a sentence about their charge, not an "Error" chip next to the last
kilowatts the node reported, and the screen is live again when the node answers again.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from simulators.esp32_node.control import arequest
from tests.support.procs import (
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
    write_station_config,
)

pytestmark = pytest.mark.browser


async def _bay1(base: str) -> dict[str, object]:
    code, state = await asyncio.to_thread(kiosk_call, "GET", f"{base}/api/v1/kiosk/state")
    assert code == 200, state
    return next(b for b in state["bays"] if b["id"] == "bay1")


async def test_kiosk_explains_a_silent_node_and_goes_live_again(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    sim_dir = tmp_path / "sim"
    sim_dir.mkdir()
    sim = await asyncio.to_thread(start_node_sim, sim_dir, 1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = write_station_config(
        tmp_path / "station.toml",
        port_path=str(sim_dir / "ttyBAYS"),
        nodes=1,
        http_port=port,
        data_dir=tmp_path / "data",
    )
    ctl = start_controller(cfg)
    try:
        await asyncio.to_thread(ctl.log.wait_for, lambda ln: ln.get("event") == "station.ready", 30)
        await arequest(sim_dir, "plug_in", "bay1", max_a=16.0, phases=3)
        page = await browser.new_page(viewport={"width": 800, "height": 480})
        page.set_default_timeout(10_000)
        await page.goto(base + "/kiosk")
        await expect(page.locator("body")).to_have_attribute("data-live", "up")
        await expect(page.locator('[data-bay="bay1"]')).to_contain_text("Available")
        await page.locator('[data-bay="bay1"]').click()
        for digit in "4242":
            await page.locator(f'#keypad [data-key="{digit}"]').click()
        await page.locator('#keypad [data-key="OK"]').click()
        await page.locator('[data-mode="standard"]').click()
        await expect(page.locator("#s-session")).to_be_visible(timeout=20_000)
        chip, notice = page.locator("#chip"), page.locator("#notice")
        await expect(chip).to_have_text("Charging", timeout=20_000)
        await expect(page.locator("#f-a")).to_have_text("16.0 A", timeout=20_000)
        await expect(page.locator("#g-kw")).to_have_text("11.0")
        await expect(notice).to_be_hidden()

        await arequest(sim_dir, "knobs", "bay1", silent=True)  # a dead node: hears and says nothing
        silent_at = time.monotonic()
        await expect(notice).to_have_text(
            "The charger is not responding — charging is paused", timeout=15_000
        )
        await expect(notice).to_be_visible()
        await expect(chip).to_have_text("Not responding")
        # No kilowatts or amperes from before the node went quiet, on screen or in the API.
        await expect(page.locator("#g-kw")).to_have_text("–")
        await expect(page.locator("#f-a")).to_have_text("–")
        await expect(page.locator("#f-age")).to_have_text(re.compile(r"^Measured \d+ (s|min) ago$"))
        await expect(page.locator("#s-session")).to_have_class(re.compile(r"\bstale\b"))
        bay = await _bay1(base)
        assert bay["node_online"] is False
        assert bay["power_w"] is None and bay["current_a"] is None
        assert isinstance(bay["measured_age_s"], float)
        assert bay["measured_age_s"] >= 0.5 * (time.monotonic() - silent_at)
        await page.screenshot(path=str(artifacts / "kiosk-node-silent-800x480.png"))

        await arequest(sim_dir, "knobs", "bay1", silent=False)
        await expect(notice).to_be_hidden(timeout=20_000)
        await expect(chip).to_have_text("Charging", timeout=30_000)
        await expect(page.locator("#f-a")).to_have_text(re.compile(r"^\d+\.\d A$"))
        await expect(page.locator("#f-age")).to_have_text("Live")
        await expect(page.locator("#s-session")).not_to_have_class(re.compile(r"\bstale\b"))
        await page.screenshot(path=str(artifacts / "kiosk-node-back-800x480.png"))
    finally:
        ctl.kill()
        sim.terminate()
