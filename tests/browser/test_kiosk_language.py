"""The whole driver flow in German (no English left on any screen, nothing cut off), the
language button on every screen, and the station's language back for the next driver."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from local_ui import i18n
from tests.browser.conftest import Live, live_server
from tests.browser.kiosk_checks import english_words, layout_problems

pytestmark = pytest.mark.browser

GERMAN = {
    "id": "ui-test",
    "name": "Hofladen Müller",
    "language": "de",
    "contact": "Tel. 030 1234567",
    "opening_hours": "Mo–Sa 7–20 Uhr",
}


def _bays() -> list[dict[str, Any]]:
    return [
        {"id": "bay1", "connector": 1, "bus": "bus1", "address": 1, "name": "Platz 1"},
        {
            "id": "locker1",
            "connector": 2,
            "kind": "locker",
            "bus": "bus1",
            "address": 2,
            "phases": 1,
            "phase": "L1",
            "max_current_a": 10,
            "name": "Fach A",
        },
    ]


async def _open(browser: Browser, live: Live, w: int, h: int) -> Page:
    page = await browser.new_page(viewport={"width": w, "height": h})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    setattr(page, "js_errors", errors)  # noqa: B010
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    page.set_default_timeout(8000)
    return page


async def _screen(page: Page, name: str, shot: Path, lang: str = "de") -> None:
    """On ``name``: in ``lang`` only, nothing cut off, the language button there; a screenshot."""
    await expect(page.locator(f"#s-{name}")).to_be_visible()
    await expect(page.locator("#lang")).to_be_visible()
    await expect(page.locator("#lang")).to_have_text(i18n.native_name(lang))
    assert await english_words(page, lang) == [], name
    assert await layout_problems(page) == [], name
    await page.screenshot(path=str(shot))


async def _type(page: Page, code: str) -> None:
    for d in code:
        await page.locator(f'#keypad [data-key="{d}"]').click()
    await page.locator('#keypad [data-key="OK"]').click()


@pytest.mark.parametrize("size", [(800, 480), (1024, 600)])
async def test_german_walk_without_english(
    browser: Browser, tmp_path: Path, artifacts: Path, size: tuple[int, int]
) -> None:
    w, h = size

    def shot(name: str) -> Path:
        return artifacts / f"kiosk-de-{name}-{w}x{h}.png"

    async with live_server(
        tmp_path, station={**GERMAN, "data_dir": str(tmp_path)}, bays=_bays()
    ) as live:
        rig = live.rig
        page = await _open(browser, live, w, h)
        await expect(page.locator("#welcome")).to_contain_text("Tippen Sie auf einen Ladeplatz")
        await expect(page.locator("#idle-price")).to_have_text("Preis: 0,30\xa0€ pro kWh")
        await expect(page.locator("#idle-hours")).to_have_text("Geöffnet: Mo–Sa 7–20 Uhr")
        await expect(page.locator("#idle-contact")).to_have_text("Hilfe: Tel. 030 1234567")
        await expect(page.locator('[data-bay="locker1"]')).to_contain_text("Fach A")
        await _screen(page, "idle", shot("idle"))
        await page.locator('[data-bay="locker1"]').click()
        await expect(page.locator("#s-auth .bay-name")).to_have_text("Fach A")
        await _screen(page, "auth", shot("auth"))
        await _type(page, "0000")
        await _screen(page, "mode", shot("mode"))
        await page.locator('[data-mode="eco"]').click()
        await expect(page.locator("#err-title")).to_have_text("Code nicht akzeptiert")
        await _screen(page, "error", shot("refused"))
        await page.locator("#err-retry").click()
        await _type(page, "1234")
        await page.locator('[data-mode="boost"]').click()
        await expect(page.locator("#boost")).to_be_visible()
        assert await english_words(page, "de") == []
        await page.screenshot(path=str(shot("boost")))
        await page.locator("#boost-ok").click()
        await expect(page.locator("#instr-title")).to_have_text("Tür offen")
        await _screen(page, "instr", shot("instr"))
        rig.hub.plug("locker1")
        await expect(page.locator("#chip")).to_have_text("Lädt")
        await expect(page.locator("#mode-chip")).to_contain_text("Ladeart: Schnell")
        await expect(page.locator("#f-kwh")).to_have_text(
            re.compile(r"^[1-9][\d.]* Wh$"), timeout=20_000
        )
        await expect(page.locator("#f-a")).to_have_text("10,0 A")  # German decimals
        await _screen(page, "session", shot("session"))
        await page.locator("#stop").click()
        await expect(page.locator("#r-title")).to_have_text("Vielen Dank!")
        await expect(page.locator("#r-cost")).to_have_text(re.compile(r"^\d+,\d\d\xa0€$"))
        await expect(page.locator("#r-tariff")).to_have_text("0,30\xa0€ pro kWh")
        await expect(page.locator("#r-meta")).to_contain_text("Hofladen Müller, Fach A")
        await expect(page.locator("#r-meta")).to_contain_text("Betreiber: Tel. 030 1234567")
        await _screen(page, "receipt", shot("receipt"))
        await page.locator("#r-done").click()
        await rig.station.safety.emergency_stop(True)
        await expect(page.locator("#safe-banner")).to_contain_text("Not-Halt")
        await _screen(page, "idle", shot("estop-idle"))
        await page.locator('[data-bay="bay1"]').click()
        await expect(page.locator("#safe-title")).to_have_text("Not-Halt")
        await _screen(page, "safe", shot("estop"))
        assert not page.js_errors  # type: ignore[attr-defined]


async def test_language_button_and_back_to_the_station_language(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    await page.clock.install()
    await page.goto(live.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await expect(page.locator("#lang")).to_have_text("English")
    await page.locator('[data-bay="bay1"]').click()
    await expect(page.locator("#auth-hint")).to_contain_text("Show your QR code")
    await page.locator("#lang").click()  # on the code screen: the driver's language, there
    await expect(page.locator("#langs")).to_be_visible()
    await page.screenshot(path=str(artifacts / "kiosk-languages-800x480.png"))
    assert await layout_problems(page) == []
    await page.locator('#lang-list [data-lang="de"]').click()
    await expect(page.locator("#s-auth")).to_be_visible()  # the driver stays where they were
    await expect(page.locator("#auth-hint")).to_contain_text("Zeigen Sie Ihren QR-Code")
    await expect(page.locator("#s-auth .bay-name")).to_have_text("Ladeplatz bay1")
    await expect(page.locator("#s-auth .back")).to_have_text("Abbrechen")
    assert await english_words(page, "de") == []
    await page.clock.run_for(65_000)  # nobody touches it: idle, and the station's language
    await expect(page.locator("#s-idle")).to_be_visible()
    await expect(page.locator("#lang")).to_have_text("English")
    await expect(page.locator("#welcome")).to_contain_text("Tap a bay")


@pytest.mark.long  # German walks in the default run; the other languages in make test-long
@pytest.mark.parametrize("lang", ["fr", "nl"])
async def test_other_languages_walk_without_english(
    browser: Browser, tmp_path: Path, artifacts: Path, lang: str
) -> None:
    """French and Dutch: the same flow at 800x480, every screen without English."""

    def shot(name: str) -> Path:
        return artifacts / f"kiosk-{lang}-{name}-800x480.png"

    station = {**GERMAN, "language": lang, "data_dir": str(tmp_path)}
    async with live_server(tmp_path, station=station, bays=_bays()) as live:
        page = await _open(browser, live, 800, 480)
        await _screen(page, "idle", shot("idle"), lang)
        await page.locator('[data-bay="bay1"]').click()
        await _screen(page, "auth", shot("auth"), lang)
        await _type(page, "0000")
        await _screen(page, "mode", shot("mode"), lang)
        await page.locator('[data-mode="standard"]').click()
        await _screen(page, "error", shot("refused"), lang)
        await page.locator("#err-retry").click()
        await _type(page, "1234")
        await page.locator('[data-mode="standard"]').click()
        await _screen(page, "instr", shot("instr"), lang)
        live.rig.hub.plug("bay1")
        await _screen(page, "session", shot("session"), lang)
        await page.locator("#stop").click()
        await _screen(page, "receipt", shot("receipt"), lang)
        assert not page.js_errors  # type: ignore[attr-defined]
