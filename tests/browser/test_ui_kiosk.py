"""The driver's whole flow on the kiosk, in Chromium at 800x480 (and a Boost confirmation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from controller.core.bay_model import StopReason
from tests.browser.conftest import Live

pytestmark = pytest.mark.browser


async def _kiosk(browser: Browser, live: Live, width: int = 800, height: int = 480) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    page.set_default_timeout(5000)
    setattr(page, "js_errors", errors)  # noqa: B010
    return page


async def _type_code(page: Page, code: str) -> None:
    for digit in code:
        await page.locator(f'#keypad [data-key="{digit}"]').click()
    await expect(page.locator("#code")).to_have_text("•" * len(code))
    await page.locator('#keypad [data-key="OK"]').click()


async def test_driver_flow_locker(browser: Browser, live: Live, artifacts: Path) -> None:
    page = await _kiosk(browser, live)
    bay = page.locator('[data-bay="locker1"]')
    await expect(bay).to_contain_text("Available")
    await page.screenshot(path=str(artifacts / "kiosk-idle-800x480.png"))
    box = await bay.bounding_box()
    assert box and box["height"] >= 48 and box["width"] >= 48
    await bay.click()
    await expect(page.locator("#s-auth")).to_be_visible()
    for key in await page.locator("#keypad button").all():
        kb = await key.bounding_box()
        assert kb and kb["height"] >= 48 and kb["width"] >= 48  # large touch targets
    await page.locator('#keypad [data-key="9"]').click()
    await page.screenshot(path=str(artifacts / "kiosk-keypad-800x480.png"))
    await page.locator('#keypad [data-key="⌫"]').click()
    await _type_code(page, "1234")
    await expect(page.locator("#s-mode")).to_be_visible()
    await expect(page.locator('[data-mode="solar"]')).to_be_hidden()  # no PV meter here
    await expect(page.locator("#price")).to_contain_text("€0.30 per kWh")
    await page.screenshot(path=str(artifacts / "kiosk-mode-800x480.png"))
    await page.locator('[data-mode="standard"]').click()
    await expect(page.locator("#s-instr")).to_be_visible()
    await expect(page.locator("#instr-title")).to_have_text("Door open")
    live.rig.hub.plug("locker1")  # the driver plugs the e-bike in
    await expect(page.locator("#s-session")).to_be_visible()
    await expect(page.locator("#chip")).to_have_text("Charging")
    # 2.3 kW in real time (the station books no more than the bay can deliver): 5 Wh take 8 s.
    await expect(page.locator("#f-kwh")).not_to_have_text("0 Wh", timeout=20_000)  # Wh: an e-bike
    await expect(page.locator("#f-a")).to_have_text("10.0 A")
    await expect(page.locator("#g-kw")).to_have_text("2.3")
    await page.screenshot(path=str(artifacts / "kiosk-session-800x480.png"))
    await page.locator("#stop").click()
    await expect(page.locator("#s-receipt")).to_be_visible()
    await expect(page.locator("#r-kwh")).to_have_text(re.compile(r"^\d+ Wh$"))
    await expect(page.locator("#r-cost")).to_have_text(re.compile(r"^€\d+\.\d\d$"))
    await expect(page.locator("#r-qr svg")).to_be_visible()
    await expect(page.locator("#r-exit")).to_contain_text("take your device and close the door")
    await page.screenshot(path=str(artifacts / "kiosk-receipt-800x480.png"))
    rows = await live.rig.journal.query("SELECT state, stop_reason, energy_wh FROM sessions")
    assert rows == [{"state": "closed", "stop_reason": "Local", "energy_wh": rows[0]["energy_wh"]}]
    assert rows[0]["energy_wh"] > 0
    await page.locator("#r-done").click()
    await expect(page.locator("#s-idle")).to_be_visible()
    assert not page.js_errors  # type: ignore[attr-defined]


async def test_boost_needs_confirmation(browser: Browser, live: Live, artifacts: Path) -> None:
    page = await _kiosk(browser, live, 1024, 600)
    await page.locator('[data-bay="bay1"]').click()
    await _type_code(page, "5678")
    await page.locator('[data-mode="boost"]').click()
    await expect(page.locator("#boost")).to_be_visible()
    await expect(page.locator("#boost-msg")).to_contain_text("peak demand")
    await page.screenshot(path=str(artifacts / "kiosk-boost-1024x600.png"))
    assert await live.rig.journal.query("SELECT id FROM sessions") == []  # nothing yet
    await page.locator("#boost-ok").click()
    await expect(page.locator("#s-instr")).to_be_visible()
    await expect(page.locator("#instr-title")).to_have_text("Plug in your vehicle")
    await expect(page.locator("#instr-chip")).to_have_text("Waiting for vehicle")
    rows = await live.rig.journal.query("SELECT id, mode FROM sessions")
    assert [r["mode"] for r in rows] == ["boost"]
    # Stopped remotely before anything was plugged in: the driver reads what happened.
    await live.rig.station.commands.stop_session(rows[0]["id"], StopReason.REMOTE, actor="csms")
    await expect(page.locator("#s-receipt")).to_be_visible()
    await expect(page.locator("#r-title")).to_have_text("Charging stopped")
    await expect(page.locator("#r-sub")).to_have_text(
        "Stopped remotely, by the app or the operator."
    )


async def test_refusals_and_safe_mode(browser: Browser, live: Live, artifacts: Path) -> None:
    page = await _kiosk(browser, live)
    await page.locator('[data-bay="bay1"]').click()
    await _type_code(page, "0000")
    await page.locator('[data-mode="eco"]').click()
    await expect(page.locator("#s-error")).to_be_visible()
    await expect(page.locator("#err-title")).to_have_text("Code not accepted")
    await page.locator("#s-error .back").click()
    await live.rig.station.safety.emergency_stop(True)
    await expect(page.locator("#safe-banner")).to_be_visible()
    await expect(page.locator('[data-bay="bay1"]')).to_contain_text("Emergency stop")
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#s-safe")).to_be_visible()
    await page.screenshot(path=str(artifacts / "kiosk-safe-800x480.png"))


async def test_kiosk_returns_to_idle_after_inactivity(browser: Browser, live: Live) -> None:
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    await page.clock.install()
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#s-auth")).to_be_visible()
    await page.clock.run_for(30_000)
    await expect(page.locator("#s-auth")).to_be_visible()  # not yet (60 s by default)
    await page.clock.run_for(35_000)
    await expect(page.locator("#s-idle")).to_be_visible()


async def test_kiosk_reconnects_after_controller_restart(browser: Browser, tmp_path: Path) -> None:
    import asyncio
    import contextlib

    from local_ui.server import create_app, serve_app
    from tests.browser.conftest import _wait_up, free_port
    from tests.test_api_rig import running_station

    async with running_station(tmp_path) as rig:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        task = asyncio.create_task(serve_app(create_app(rig.station), "127.0.0.1", port))
        await _wait_up(base)
        page = await browser.new_page(viewport={"width": 800, "height": 480})
        await page.goto(base + "/kiosk")
        body = page.locator("body")
        await expect(body).to_have_attribute("data-live", "up")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await expect(body).to_have_attribute("data-live", "down")
        await expect(page.locator("#conn")).to_be_visible()
        task = asyncio.create_task(serve_app(create_app(rig.station), "127.0.0.1", port))
        try:
            await expect(body).to_have_attribute("data-live", "up", timeout=10_000)
            await expect(page.locator("#conn")).to_be_hidden()
            rig.hub.plug("bay1")
            await rig.station.commands.present_token("bay1", "1234")
            await expect(page.locator('[data-bay="bay1"]')).to_contain_text("Charging")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
