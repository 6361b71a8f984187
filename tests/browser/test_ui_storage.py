"""Owner UI in Chromium: the storage banner warns before the disk is full, and goes away."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from controller.core.journalguard import MB
from tests.browser.conftest import Live
from tests.browser.test_ui_owner import _setup_owner

pytestmark = pytest.mark.browser


async def test_low_space_banner_appears_and_clears(
    browser: Browser, live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = live.rig.station
    free = {"bytes": 900 * MB}

    async def disk_space() -> tuple[int, int]:  # what statvfs of the data folder would say
        return free["bytes"], 16_000 * MB

    monkeypatch.setattr(st.journal, "disk_space", disk_space)
    await st.guard.check_space()
    page = await _setup_owner(browser, live)
    banner = page.locator("#storage-banner")
    await expect(banner).to_be_hidden()
    free["bytes"] = 90 * MB  # below the default 200 MB warning
    await st.guard.check_space()  # the guard's periodic check, announced live
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("storage is almost full (90 MB free)")
    text = await banner.inner_text()
    assert "{" not in text and "_" not in text  # a sentence, not a field
    free["bytes"] = 900 * MB
    await st.guard.check_space()
    await expect(banner).to_be_hidden()
