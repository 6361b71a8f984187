"""The kiosk with the real parts as separate processes: ``edge-station run``, the ESP32 node
simulator (over a pseudo-terminal through the real serial driver), and the kiosk page in
Chromium served by that controller.

- A bay's node goes silent mid-session: the driver reads a sentence about their charge,
  not an "Error" chip next to the last kilowatts the node reported, and the screen is
  live again when the node answers again.
- The whole station hangs (SIGSTOP) for 10 s (20 s in make test-long): its connections stay open but nothing
  answers. The kiosk notices the silence, marks its figures, keeps the driver's stop
  and sends it again until the station answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from simulators.esp32_node.control import arequest
from tests.support.procs import (
    Proc,
    free_port,
    kiosk_call,
    start_controller,
    start_node_sim,
    write_station_config,
)

pytestmark = pytest.mark.browser

HANG_S = 20.0


@dataclass
class Station:
    base: str
    sim_dir: Path
    ctl: Proc


@contextlib.asynccontextmanager
async def station_processes(tmp: Path) -> AsyncIterator[Station]:
    sim_dir = tmp / "sim"
    sim_dir.mkdir()
    sim = await asyncio.to_thread(start_node_sim, sim_dir, 1)
    port = free_port()
    cfg = write_station_config(
        tmp / "station.toml",
        port_path=str(sim_dir / "ttyBAYS"),
        nodes=1,
        http_port=port,
        data_dir=tmp / "data",
    )
    ctl = start_controller(cfg)
    try:
        await asyncio.to_thread(ctl.log.wait_for, lambda ln: ln.get("event") == "station.ready", 30)
        base = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30):  # on a busy machine the first answers may be slow
            while True:
                code, state = await asyncio.to_thread(
                    kiosk_call, "GET", f"{base}/api/v1/kiosk/state", None, 30.0
                )
                if code == 200 and all(b["node_online"] for b in state["bays"]):
                    break
                await asyncio.sleep(0.1)  # polling another process: there is no event to await
        await arequest(sim_dir, "plug_in", "bay1", max_a=16.0, phases=3)
        yield Station(base, sim_dir, ctl)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ctl.pid, signal.SIGCONT)
        ctl.kill()
        sim.terminate()


async def _bay1(base: str) -> dict[str, object]:
    code, state = await asyncio.to_thread(
        kiosk_call, "GET", f"{base}/api/v1/kiosk/state", None, 30.0
    )
    assert code == 200, state
    return next(b for b in state["bays"] if b["id"] == "bay1")


def _session(tmp: Path, session_id: object) -> tuple[str, str | None]:
    con = sqlite3.connect(f"file:{tmp / 'data' / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT state, stop_reason FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0]), row[1]


async def _charging(browser: Browser, st: Station) -> Page:
    """A driver starts charging on bay1 from the kiosk (so the page holds the session's key)."""
    page = await browser.new_page(viewport={"width": 800, "height": 480})
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    setattr(page, "js_errors", errors)  # noqa: B010
    await page.goto(st.base + "/kiosk", timeout=30_000)
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    await expect(page.locator('[data-bay="bay1"]')).to_contain_text("Available")
    await page.locator('[data-bay="bay1"]').click()
    for digit in "4242":
        await page.locator(f'#keypad [data-key="{digit}"]').click()
    await page.locator('#keypad [data-key="OK"]').click()
    await page.locator('[data-mode="standard"]').click()
    await expect(page.locator("#s-session")).to_be_visible(timeout=20_000)
    await expect(page.locator("#chip")).to_have_text("Charging", timeout=20_000)
    await expect(page.locator("#f-a")).to_have_text("16.0 A", timeout=20_000)
    await expect(page.locator("#g-kw")).to_have_text("11.0")
    await expect(page.locator("#f-age")).to_have_text("Live")
    return page


async def test_kiosk_explains_a_silent_node_and_goes_live_again(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    async with station_processes(tmp_path) as st:
        page = await _charging(browser, st)
        chip, notice = page.locator("#chip"), page.locator("#notice")
        await expect(notice).to_be_hidden()

        await arequest(st.sim_dir, "knobs", "bay1", silent=True)  # a dead node: hears nothing
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
        bay = await _bay1(st.base)
        assert bay["node_online"] is False
        assert bay["power_w"] is None and bay["current_a"] is None
        assert isinstance(bay["measured_age_s"], float)
        assert bay["measured_age_s"] >= 0.5 * (time.monotonic() - silent_at)
        await page.screenshot(path=str(artifacts / "kiosk-node-silent-800x480.png"))

        await arequest(st.sim_dir, "knobs", "bay1", silent=False)
        await expect(notice).to_be_hidden(timeout=20_000)
        await expect(chip).to_have_text("Charging", timeout=30_000)
        await expect(page.locator("#f-a")).to_have_text(re.compile(r"^\d+\.\d A$"))
        await expect(page.locator("#f-age")).to_have_text("Live")
        await expect(page.locator("#s-session")).not_to_have_class(re.compile(r"\bstale\b"))
        await page.screenshot(path=str(artifacts / "kiosk-node-back-800x480.png"))
        assert not page.js_errors  # type: ignore[attr-defined]


@pytest.mark.parametrize("hang_s", [10.0, pytest.param(HANG_S, marks=pytest.mark.long)])
async def test_kiosk_through_a_station_hang(
    browser: Browser, tmp_path: Path, artifacts: Path, hang_s: float
) -> None:
    async with station_processes(tmp_path) as st:
        page = await _charging(browser, st)
        await page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        session_id = (await _bay1(st.base))["session"]["id"]  # type: ignore[index]

        os.kill(st.ctl.pid, signal.SIGSTOP)  # open sockets, no answers
        hung = time.monotonic()
        # Nothing closes the link: the kiosk must notice the silence itself.
        await expect(page.locator("#conn")).to_be_visible(timeout=20_000)
        await expect(page.locator("#conn")).to_have_text("Reconnecting… figures may be out of date")
        await expect(page.locator("#s-session")).to_have_class(re.compile(r"\bstale\b"))
        frozen = await page.locator("#f-time").text_content()
        await page.locator("#stop").click()
        await expect(page.locator("#stop")).to_have_text("Stopping…")
        note = page.locator("#stop-note")
        await expect(note).to_be_visible()
        await expect(note).to_contain_text("sent as soon as it answers")
        assert await page.locator("#f-time").text_content() == frozen
        await page.screenshot(path=str(artifacts / "kiosk-station-hung-800x480.png"))

        await asyncio.sleep(max(0.0, hang_s - (time.monotonic() - hung)))  # the hang itself
        os.kill(st.ctl.pid, signal.SIGCONT)
        await expect(page.locator("#s-receipt")).to_be_visible(timeout=30_000)
        await expect(page.locator("body")).to_have_attribute("data-live", "up", timeout=30_000)
        await expect(page.locator("#conn")).to_be_hidden()
        assert (await _bay1(st.base))["session"] is None
        assert _session(tmp_path, session_id) == ("closed", "Local")  # the driver's stop
        assert await page.evaluate("window.__sameDocument") is True
        assert not page.js_errors  # type: ignore[attr-defined]
