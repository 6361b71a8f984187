"""The idle screen from 1 to 32 bays on a 7" panel (800x480, 1024x600): every bay reachable,
nothing outside the screen or cut off, a visible cue when more bays are on a further page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import live_server
from tests.browser.kiosk_checks import layout_problems

pytestmark = pytest.mark.browser

SIZES = [(800, 480), (1024, 600)]


def bays(n: int) -> list[dict[str, Any]]:
    """``n`` bays, every fourth a single-phase e-bike locker (their cards say the most)."""
    out: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        if i % 4 == 0:
            out.append(
                {
                    "id": f"locker{i}",
                    "connector": i,
                    "kind": "locker",
                    "bus": "bus1",
                    "address": i,
                    "phases": 1,
                    "phase": "L1",
                    "max_current_a": 10,
                }
            )
        else:
            out.append({"id": f"bay{i}", "connector": i, "bus": "bus1", "address": i})
    return out


@pytest.mark.parametrize("n", [1, 4, 12, 24, 32])
async def test_every_bay_fits_or_pages(
    browser: Browser, tmp_path: Path, artifacts: Path, n: int
) -> None:
    async with live_server(tmp_path, bays=bays(n)) as live:
        ids = {b["id"] for b in bays(n)}
        for w, h in SIZES:
            page = await browser.new_page(viewport={"width": w, "height": h})
            await page.goto(live.base + "/kiosk")
            await expect(page.locator("body")).to_have_attribute("data-live", "up")
            await expect(page.locator("#bays .bay").first).to_be_visible()
            seen: list[str] = []
            pager = page.locator("#pager")
            for number in range(1, n + 2):
                await expect(page.locator("#bays .bay").first).to_be_visible()
                on_page = [
                    str(await b.get_attribute("data-bay"))
                    for b in await page.locator("#bays .bay").all()
                ]
                assert on_page and not set(on_page) & set(seen), on_page
                seen += on_page
                assert await layout_problems(page) == [], (w, h, n, number)
                await page.screenshot(path=str(artifacts / f"kiosk-{n}bays-{w}x{h}-p{number}.png"))
                if set(seen) == ids:
                    break
                # More bays than fit: the cue is on screen and says where the rest are.
                await expect(pager).to_be_visible()
                await expect(page.locator("#pg-text")).to_contain_text(f"Page {number} of ")
                await page.locator("#pg-next").click()
                await expect(page.locator("#pg-text")).to_contain_text(f"Page {number + 1} of ")
            assert sorted(seen) == sorted(ids)
            if len(seen) == len(on_page):
                await expect(pager).to_be_hidden()  # all on one screen: no pager
            else:
                await expect(page.locator("#pg-next")).to_be_disabled()
            await page.close()
