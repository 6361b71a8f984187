"""The kiosk when the station's web server goes away: stale figures say so, Stop stays
reachable and is sent again until the station answers, the page recovers by itself, and
a kiosk started while the station is down (the offline page of the kiosk unit) opens the
station's page as soon as it answers.

The station itself keeps running (a real Station and journal); only its web server is
stopped and started again on the same port, as a restarting UI service would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from local_ui.server import create_app, serve_app
from tests.browser.conftest import _wait_up, free_port
from tests.test_api_rig import Rig, running_station

pytestmark = pytest.mark.browser

OFFLINE_PAGE = Path(__file__).resolve().parents[2] / "systemd" / "kiosk-offline.html"
OUTAGE_S = 20.0


@dataclass
class Ui:
    """The station's web server, which a test can stop and start again on the same port."""

    rig: Rig
    port: int
    task: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(
            serve_app(create_app(self.rig.station), "127.0.0.1", self.port)
        )
        await _wait_up(self.base)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@contextlib.asynccontextmanager
async def station_ui(tmp: Path, *, start: bool = True) -> AsyncIterator[Ui]:
    async with running_station(tmp) as rig:
        ui = Ui(rig, free_port())
        try:
            if start:
                await ui.start()
            yield ui
        finally:
            await ui.stop()


async def _page(browser: Browser, width: int, height: int) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(5000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    setattr(page, "js_errors", errors)  # noqa: B010
    return page


async def _start_session(page: Page, ui: Ui) -> None:
    """A driver starts charging on bay1 from the kiosk (so the page holds the session's key)."""
    await page.goto(ui.base + "/kiosk")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await page.locator('[data-bay="bay1"]').click()
    for digit in "1234":
        await page.locator(f'#keypad [data-key="{digit}"]').click()
    await page.locator('#keypad [data-key="OK"]').click()
    await page.locator('[data-mode="standard"]').click()
    await expect(page.locator("#s-instr")).to_be_visible()
    ui.rig.hub.plug("bay1")
    await expect(page.locator("#s-session")).to_be_visible()
    await expect(page.locator("#chip")).to_have_text("Charging")
    await expect(page.locator("#g-kw")).not_to_have_text("0.0")
    await expect(page.locator("#f-age")).to_have_text("Live")
    await expect(page.locator("#s-session")).not_to_have_class(re.compile(r"\bstale\b"))


async def _stop_is_reachable(page: Page) -> None:
    """The Stop button is on screen, whole, and the topmost element at its centre and corners."""
    box = await page.locator("#stop").bounding_box()
    view = page.viewport_size
    assert box is not None and view is not None
    assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], (box, view)
    assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], (box, view)
    assert box["height"] >= 48
    points = [
        (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2),
        (box["x"] + 4, box["y"] + 4),
        (box["x"] + box["width"] - 4, box["y"] + box["height"] - 4),
    ]
    for x, y in points:
        top = await page.evaluate(
            "([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.closest('#stop') !== null; }",
            [x, y],
        )
        assert top, f"something covers Stop at {(x, y)}"


async def _session_row(rig: Rig) -> dict[str, object]:
    rows = await rig.journal.query("SELECT state, stop_reason FROM sessions")
    assert len(rows) == 1, rows
    return dict(rows[0])


@pytest.mark.parametrize("outage_s", [10.0, pytest.param(OUTAGE_S, marks=pytest.mark.long)])
async def test_kiosk_through_a_server_stop(
    browser: Browser, tmp_path: Path, artifacts: Path, outage_s: float
) -> None:
    async with station_ui(tmp_path) as ui:
        page = await _page(browser, 800, 480)
        await _start_session(page, ui)
        await page.evaluate("window.__sameDocument = true")  # gone if the page reloads

        outage = time.monotonic()
        await ui.stop()
        body = page.locator("body")
        await expect(body).to_have_attribute("data-live", "down")
        conn = page.locator("#conn")
        await expect(conn).to_have_text("Reconnecting… figures may be out of date")
        await expect(conn).to_be_visible()
        session = page.locator("#s-session")
        await expect(session).to_have_class(re.compile(r"\bstale\b"))
        frozen = await page.locator("#f-time").text_content()
        # The figures grow older on screen; the session timer does not run on as if live.
        await expect(page.locator("#f-age")).to_have_text(
            re.compile(r"^Measured ([3-9]|\d\d+) s ago$"), timeout=15_000
        )
        assert await page.locator("#f-time").text_content() == frozen
        await _stop_is_reachable(page)
        await page.screenshot(path=str(artifacts / "kiosk-outage-800x480.png"))

        await page.locator("#stop").click()  # fails if anything covers it
        await expect(page.locator("#stop")).to_have_text("Stopping…")
        note = page.locator("#stop-note")
        await expect(note).to_be_visible()
        await expect(note).to_contain_text("sent as soon as it answers")
        # Sent again, not given up: at least two more attempts while the server is away.
        await expect(page.locator("#stop")).to_have_attribute("data-tries", re.compile(r"^[2-9]"))
        await expect(page.locator("#s-session")).to_be_visible()  # no error screen
        await _stop_is_reachable(page)
        await page.screenshot(path=str(artifacts / "kiosk-outage-stop-pending-800x480.png"))
        assert await _session_row(ui.rig) == {"state": "open", "stop_reason": None}

        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - outage)))  # the outage itself
        await ui.start()
        # The stop goes through when the station answers, and its outcome is shown.
        await expect(page.locator("#s-receipt")).to_be_visible(timeout=15_000)
        await expect(page.locator("#r-kwh")).to_have_text(re.compile(r"^\d+\.\d\d kWh$"))
        assert await _session_row(ui.rig) == {"state": "closed", "stop_reason": "Local"}
        await expect(body).to_have_attribute("data-live", "up", timeout=15_000)
        await expect(conn).to_be_hidden()
        assert await page.evaluate("window.__sameDocument") is True  # recovered without reload
        await page.screenshot(path=str(artifacts / "kiosk-outage-recovered-800x480.png"))
        assert not page.js_errors  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [(800, 480), (1024, 600)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_nothing_covers_stop_and_the_page_recovers(
    browser: Browser, tmp_path: Path, artifacts: Path, size: tuple[int, int]
) -> None:
    width, height = size
    async with station_ui(tmp_path) as ui:
        page = await _page(browser, width, height)
        await _start_session(page, ui)
        await _stop_is_reachable(page)
        await page.evaluate("window.__sameDocument = true")
        await ui.stop()
        await expect(page.locator("body")).to_have_attribute("data-live", "down")
        await expect(page.locator("#conn")).to_be_visible()
        await expect(page.locator("#s-session")).to_have_class(re.compile(r"\bstale\b"))
        await _stop_is_reachable(page)
        await page.screenshot(path=str(artifacts / f"kiosk-outage-{width}x{height}.png"))
        await ui.start()
        await expect(page.locator("body")).to_have_attribute("data-live", "up", timeout=15_000)
        await expect(page.locator("#conn")).to_be_hidden()
        await expect(page.locator("#f-age")).to_have_text("Live")
        await expect(page.locator("#s-session")).not_to_have_class(re.compile(r"\bstale\b"))
        await expect(page.locator("#chip")).to_have_text("Charging")
        assert await page.evaluate("window.__sameDocument") is True


async def test_unanswered_code_screen_leaves_by_itself(browser: Browser, tmp_path: Path) -> None:
    """A code typed while the station is away: said plainly, never sent later, and the
    screen goes back by itself once the station answers again."""
    async with station_ui(tmp_path) as ui:
        page = await _page(browser, 800, 480)
        await page.goto(ui.base + "/kiosk")
        await expect(page.locator("body")).to_have_attribute("data-live", "up")
        await page.locator('[data-bay="bay1"]').click()
        for digit in "1234":
            await page.locator(f'#keypad [data-key="{digit}"]').click()
        await page.locator('#keypad [data-key="OK"]').click()
        await ui.stop()
        await expect(page.locator("body")).to_have_attribute("data-live", "down")
        await page.locator('[data-mode="standard"]').click()
        await expect(page.locator("#s-error")).to_be_visible(timeout=15_000)
        await expect(page.locator("#err-title")).to_have_text("The station does not answer")
        await expect(page.locator("#err-text")).to_contain_text("Nothing was started")
        await ui.start()
        await expect(page.locator("#s-auth")).to_be_visible(timeout=15_000)
        assert await ui.rig.journal.query("SELECT id FROM sessions") == []


async def test_kiosk_started_while_the_station_is_down_opens_by_itself(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    """The kiosk unit opens the offline page first; it keeps asking and opens the kiosk."""
    async with station_ui(tmp_path, start=False) as ui:
        page = await _page(browser, 800, 480)
        target = ui.base + "/kiosk"
        await page.goto(OFFLINE_PAGE.as_uri() + "#" + target)
        await expect(page.locator("h1")).to_have_text("Connecting to the station…")
        await expect(page.locator("#text")).to_contain_text("opens by itself")
        await page.wait_for_function("window.__probes >= 3", timeout=15_000)  # still trying
        assert page.url.startswith("file://")
        entries = await page.evaluate("history.length")
        await page.screenshot(path=str(artifacts / "kiosk-offline-page-800x480.png"))
        await ui.start()
        await page.wait_for_url(target, timeout=15_000)
        await expect(page.locator("body")).to_have_attribute("data-live", "up")
        await expect(page.locator('[data-bay="bay1"]')).to_contain_text("Available")
        # The offline page replaced itself: "back" cannot lead to it.
        assert await page.evaluate("history.length") == entries
        assert not page.js_errors  # type: ignore[attr-defined]


@pytest.mark.parametrize("target", ["", "javascript:alert(1)", "file:///etc/passwd"])
async def test_offline_page_without_a_station_address_says_so(
    browser: Browser, target: str
) -> None:
    page = await _page(browser, 800, 480)
    await page.goto(OFFLINE_PAGE.as_uri() + "#" + target)
    await expect(page.locator("#text")).to_contain_text("not set up")
    assert await page.evaluate("window.__probes") is None  # never asked anything
    assert page.url.startswith("file://")
