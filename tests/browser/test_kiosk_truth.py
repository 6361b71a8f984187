"""The kiosk tells the driver the truth: safety screens (emergency stop, safe mode, a blocked
journal, a fault: one name each), the running session (its mode, changeable; a gauge for the
car's real phases), every refusal, every stop's receipt, and readable confirmations."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from controller.core.bay_model import FaultRaised
from drivers.camera.extension import run_camera
from drivers.camera.reader import QrCameraReader
from simulators.camera import SimulatedCamera
from tests.browser.conftest import Live, live_server
from tests.browser.kiosk_checks import layout_problems

pytestmark = pytest.mark.browser


async def _kiosk(browser: Browser, live: Live) -> Page:
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    page.set_default_timeout(8000)
    return page


async def _type(page: Page, code: str) -> None:
    for d in code:
        await page.locator(f'#keypad [data-key="{d}"]').click()
    await page.locator('#keypad [data-key="OK"]').click()


async def _charging(page: Page, live: Live, bay: str = "bay1", mode: str = "standard") -> None:
    """Start a session on ``bay`` from the kiosk and plug in: the session screen shows it."""
    await page.locator(f'[data-bay="{bay}"]').click()
    await _type(page, "1234")
    await page.locator(f'[data-mode="{mode}"]').click()
    await expect(page.locator("#s-instr")).to_be_visible()
    live.rig.hub.plug(bay)
    await expect(page.locator("#s-session")).to_be_visible()
    await expect(page.locator("#chip")).to_have_text("Charging")


async def test_emergency_stop_is_not_a_thank_you(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    page = await _kiosk(browser, live)
    await _charging(page, live)
    await live.rig.station.safety.emergency_stop(True)
    await expect(page.locator("#s-receipt")).to_be_visible()
    await expect(page.locator("#r-title")).to_have_text("Emergency stop")
    await expect(page.locator("#r-sub")).to_have_text("Charging stopped; staff have been notified.")
    await page.screenshot(path=str(artifacts / "kiosk-estop-receipt-800x480.png"))
    assert "Thank you" not in await page.locator("#s-receipt").inner_text()
    await page.locator("#r-done").click()
    await expect(page.locator("#safe-banner")).to_have_text(
        "Emergency stop — charging stopped; staff have been notified"
    )
    for bay in ("bay1", "locker1"):  # one name for the state, on every card
        await expect(page.locator(f'[data-bay="{bay}"] .state')).to_have_text("Emergency stop")
    await page.locator('[data-bay="locker1"]').click()
    await expect(page.locator("#safe-title")).to_have_text("Emergency stop")
    await expect(page.locator("#safe-msg")).to_have_text(
        "Charging stopped; staff have been notified."
    )
    # Every session was stopped: the screen must not say running ones are kept.
    await expect(page.locator("#safe-cons")).to_have_text("No session is running.")
    assert "kept safe" not in await page.locator("#s-safe").inner_text()
    assert await layout_problems(page) == []
    await page.screenshot(path=str(artifacts / "kiosk-estop-safe-800x480.png"))


async def test_blocked_journal_shows_bays_that_cannot_start(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    page = await _kiosk(browser, live)
    await expect(page.locator('[data-bay="bay1"] .state')).to_have_text("Available")
    live.rig.station.safety.block("journal", "the disk is full")
    card = page.locator('[data-bay="bay1"]')
    await expect(card.locator(".state")).to_have_text("Not accepting new sessions")
    assert "s-ok" not in str(await card.get_attribute("class"))  # not green
    await expect(page.locator("#safe-banner")).to_contain_text("Not accepting new sessions")
    await page.screenshot(path=str(artifacts / "kiosk-journal-blocked-800x480.png"))
    await card.click()
    await expect(page.locator("#safe-title")).to_have_text("Not accepting new sessions")
    await expect(page.locator("#safe-msg")).to_contain_text("cannot record new sessions")
    out = await live.rig.station.commands.present_token("bay1", "1234")
    assert not out.ok and out.code == "blocked_journal"  # what the card said is what happens


async def test_a_fault_has_one_name(browser: Browser, live: Live) -> None:
    page = await _kiosk(browser, live)
    await live.rig.station.runner.apply("bay1", FaultRaised("overtemperature"), actor="test")
    await expect(page.locator('[data-bay="bay1"] .state')).to_have_text("Out of order")
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#msg-title")).to_have_text("Out of order")
    await expect(page.locator("#msg-text")).to_have_text(
        "This bay is out of order. Please use another bay."
    )


async def test_session_mode_is_shown_and_changed(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    page = await _kiosk(browser, live)
    await _charging(page, live, mode="eco")
    chip = page.locator("#mode-chip")
    await expect(chip).to_contain_text("Mode: Eco")
    await page.screenshot(path=str(artifacts / "kiosk-session-mode-800x480.png"))
    await chip.click()
    await expect(page.locator("#s-mode")).to_be_visible()
    await expect(page.locator('[data-mode="eco"]')).to_have_class("mode current")
    await page.locator('[data-mode="boost"]').click()
    await expect(page.locator("#boost")).to_be_visible()  # Boost is still confirmed
    sess = live.rig.station.bays["bay1"].state.session
    assert sess is not None and sess.mode == "eco"
    await page.locator("#boost-ok").click()
    await expect(page.locator("#s-session")).to_be_visible()
    await expect(chip).to_contain_text("Mode: Boost")
    sess = live.rig.station.bays["bay1"].state.session
    assert sess is not None and sess.mode == "boost"
    # Cancel on the mode screen goes back to the session, not to idle.
    await chip.click()
    await page.locator("#mode-cancel").click()
    await expect(page.locator("#s-session")).to_be_visible()


async def test_gauge_is_scaled_to_the_phases_the_car_uses(browser: Browser, live: Live) -> None:
    live.rig.hub.nodes["bay1"].phases = 1  # a one-phase car on the three-phase bay1 (16 A)
    page = await _kiosk(browser, live)
    await _charging(page, live)
    await expect(page.locator("#g-kw")).to_have_text("3.7")  # 16 A x 230 V on one phase
    dash = str(await page.locator("#g-val").get_attribute("stroke-dasharray"))
    assert float(dash.split()[0]) >= 95  # full current: a full arc, not a third of it


async def test_a_wrong_code_when_stopping_says_so(browser: Browser, live: Live) -> None:
    out = await live.rig.station.commands.present_token("bay1", "1234")
    assert out.ok
    page = await _kiosk(browser, live)
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#msg-title")).to_have_text("In use")
    await page.locator("#msg-code").click()
    await _type(page, "5678")
    await expect(page.locator("#err-title")).to_have_text("Cannot stop")
    await expect(page.locator("#err-text")).to_have_text(
        "This code did not start the session on this bay. Use the code you started it with."
    )
    await page.locator("#err-retry").click()  # the right code: stopped, with a receipt
    await _type(page, "1234")
    await expect(page.locator("#s-receipt")).to_be_visible()
    await expect(page.locator("#r-title")).to_have_text("Thank you!")


async def test_showing_the_code_again_stops_with_a_receipt(browser: Browser, live: Live) -> None:
    page = await _kiosk(browser, live)
    await _charging(page, live)
    await live.rig.station.commands.code_scanned("1234")  # the camera, the bay on screen
    await expect(page.locator("#s-receipt")).to_be_visible()
    await expect(page.locator("#r-title")).to_have_text("Thank you!")
    await expect(page.locator("#r-meta")).to_contain_text("Test Station, Bay bay1")
    await page.wait_for_timeout(500)  # what arrives after the receipt must not replace it
    await expect(page.locator("#s-receipt")).to_be_visible()


async def test_a_session_started_elsewhere_stopped_at_the_camera_shows_its_receipt(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    """Started by the central system (an app); the rider taps the locker on the kiosk and
    shows their QR code to the camera (simulated, decoded by the real reader): the receipt
    of that session, in Wh, with a QR link to it at the station's public address."""
    http = {"host": "127.0.0.1", "port": 0, "public_url": "http://192.168.1.20:8080"}
    async with live_server(tmp_path, http=http) as live:
        rig = live.rig
        out = await rig.station.commands.present_token(
            "locker1", "1234", source="csms", preauthorized="csms"
        )
        assert out.ok and out.session_id
        rig.hub.plug("locker1")
        cam = SimulatedCamera(fps=20)
        reader = QrCameraReader(cam, camera="cam", decode_hz=10, dedup_s=2)
        camera = asyncio.create_task(run_camera(rig.station, reader, camera="cam", bay=None))
        try:
            page = await _kiosk(browser, live)
            bay = rig.station.bays["locker1"]  # the e-bike charged a few Wh meanwhile
            await rig.until(
                lambda: bay.state.session is not None and bay.state.session.energy_wh > 0
            )
            await page.locator('[data-bay="locker1"]').click()
            await expect(page.locator("#msg-title")).to_have_text("In use")
            async with page.expect_response(lambda r: r.url.endswith("/focus")):
                await page.locator("#msg-code").click()  # the screen now shows this bay
            cam.show("1234", seconds=3.0)
            await expect(page.locator("#s-receipt")).to_be_visible()
        finally:
            camera.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await camera
        row = await rig.journal.session(out.session_id)
        assert row is not None and row["state"] == "closed" and row["stop_reason"] == "Local"
        await expect(page.locator("#r-title")).to_have_text("Thank you!")
        await expect(page.locator("#r-kwh")).to_have_text(f"{row['energy_wh']} Wh")
        await expect(page.locator("#r-cost")).to_have_text(f"€{row['cost']:.2f}")
        await expect(page.locator("#r-tariff")).to_have_text("€0.30 per kWh")
        meta = page.locator("#r-meta")
        await expect(meta).to_contain_text(f"Test Station, Bay locker1 · Session {out.session_id}")
        await expect(page.locator("#r-qr-cap")).to_have_text("Your receipt on your phone")
        await expect(page.locator("#r-qr svg")).to_be_visible()
        await expect(page.locator("#r-exit")).to_contain_text("take your device")
        assert await layout_problems(page) == []
        await page.screenshot(path=str(artifacts / "kiosk-camera-stop-receipt-800x480.png"))


async def test_code_accepted_stays_readable(browser: Browser, live: Live) -> None:
    page = await _kiosk(browser, live)
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#s-auth")).to_be_visible()
    await live.rig.station.commands.code_scanned("1234")
    await expect(page.locator("#msg-title")).to_have_text("Code accepted")
    shown = time.monotonic()
    await expect(page.locator("#s-instr")).to_be_visible(timeout=10_000)
    assert time.monotonic() - shown >= 2.0  # readable, then the next step by itself
    await expect(page.locator("#instr-title")).to_have_text("Plug in your vehicle")


async def test_the_session_screen_stays_for_its_driver(browser: Browser, live: Live) -> None:
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    await page.clock.install()
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await _charging(page, live)
    await page.clock.run_for(180_000)  # three minutes untouched
    await expect(page.locator("#s-session")).to_be_visible()  # no code needed to stop
    await page.locator("#s-back").click()  # the driver leaves it: the next one sees idle
    await expect(page.locator("#s-idle")).to_be_visible()


async def test_waiting_out_the_relay_off_time_counts_down(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    from tests.browser.test_ui_load import site_station

    async with site_station(tmp_path, building_a=2.0) as (live, _building):
        rig = live.rig
        node = rig.hub.nodes["bay1"]
        rig.hub.plug("bay1")
        assert (await rig.station.commands.present_token("bay1", "2468")).ok
        await rig.until(lambda: node.relay_on, 10)
        assert (await rig.station.commands.present_token("bay1", "2468")).ok  # stopped
        await rig.until(lambda: not node.relay_on and rig.status("bay1") != "Charging", 10)
        rig.hub.plug("bay1", False)
        await rig.until(lambda: rig.status("bay1") == "Available", 10)
        page = await _kiosk(browser, live)
        await page.locator('[data-bay="bay1"]').click()
        await _type(page, "1234")
        await page.locator('[data-mode="standard"]').click()
        await expect(page.locator("#s-instr")).to_be_visible()
        rig.hub.plug("bay1")  # the relay was off for less than min_off_time_s (30 s)
        chip = page.locator("#instr-chip")
        await expect(chip).to_have_text(re.compile(r"^Starting in \d+ s$"))
        first = int(str(await chip.text_content()).split()[2])
        assert 0 < first <= 30
        await page.screenshot(path=str(artifacts / "kiosk-starting-in-800x480.png"))
        await expect(chip).not_to_have_text(f"Starting in {first} s", timeout=3000)  # it counts
        later = int(str(await chip.text_content()).split()[2])
        assert later < first
        await expect(page.locator("#s-session")).to_be_visible(timeout=40_000)  # then it starts
        await expect(page.locator("#chip")).to_have_text("Charging")
