"""Owner UI in Chromium at 1280x800: first-run setup, login, live dashboard, settings, CSV export."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from controller.core.bay import StopReason
from controller.core.firmware import RUNNING_VERSION
from tests.browser.conftest import Live
from tests.test_api_rig import PASSWORD
from tests.test_firmware_force import IMAGE, NEW, NodeImages

pytestmark = pytest.mark.browser


async def _setup_owner(browser: Browser, live: Live) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.set_default_timeout(5000)
    await page.goto(live.base + "/")
    await expect(page).to_have_url(live.base + "/setup")
    await page.fill('input[name="code"]', live.setup_code.lower())  # case does not matter
    await page.fill('input[name="username"]', "owner")
    await page.fill('input[name="password"]', PASSWORD)
    await page.fill('input[name="password2"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    return page


async def test_first_run_setup_login_and_live_dashboard(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(5000)
    await page.goto(live.base + "/owner")
    await expect(page).to_have_url(live.base + "/setup")  # no owner yet: no login possible
    await page.fill('input[name="code"]', "AAAA-BBBB-CCCC")
    await page.fill('input[name="username"]', "owner")
    await page.fill('input[name="password"]', PASSWORD)
    await page.fill('input[name="password2"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page.locator("#msg")).to_contain_text("setup code is not right")
    await page.fill('input[name="code"]', live.setup_code)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    card = page.locator('#dash-bays [data-bay="bay1"]')
    await expect(card).to_contain_text("Available")
    await expect(page.locator("#load")).to_be_hidden()  # no load manager yet
    live.rig.station.load_status = lambda: {  # type: ignore[method-assign]
        "limit_a": 32,
        "building_a": [20, 31, 12],
        "chargers_a": [16, 16, 0],
        "freshness": "fresh",
    }
    await expect(page.locator("#load")).to_be_visible()  # pushed as a "load" message
    await expect(page.locator("#load .track")).to_have_count(3)
    await expect(page.locator("#load .track.lvl-high")).to_have_count(1)
    live.rig.hub.plug("bay1")
    await live.rig.station.commands.present_token("bay1", "1234")
    await expect(card).to_contain_text("Charging")  # pushed over the WebSocket
    await expect(card.locator(".sess")).to_contain_text("kWh")
    await page.screenshot(path=str(artifacts / "owner-dashboard-1280x800.png"))
    await card.get_by_role("button", name="Stop session").click()
    await expect(page.locator("#flash")).to_have_text("Session stopped.", timeout=15_000)
    await expect(card).not_to_contain_text("Charging")
    await page.click("#logout")
    await expect(page).to_have_url(live.base + "/login")
    await page.fill('input[name="username"]', "owner")
    await page.fill('input[name="password"]', "not the password")
    await page.click('button[type="submit"]')
    await expect(page.locator("#msg")).to_have_text("Wrong user name or password.")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    await expect(page.locator("#who")).to_have_text("owner (owner)")


async def test_settings_change_takes_effect(browser: Browser, live: Live, artifacts: Path) -> None:
    page = await _setup_owner(browser, live)
    kiosk = await browser.new_page(viewport={"width": 800, "height": 480})
    await kiosk.goto(live.base + "/kiosk")
    await expect(kiosk.locator("body")).to_have_attribute("data-live", "up")
    await page.click('nav a[href="#settings"]')
    form = page.locator('form[data-section="tariff"]')
    await form.locator('input[name="per_kwh"]').fill("-1")
    await form.get_by_role("button").click()
    # refused, with the reason in words (issue 16: no field names)
    await expect(page.locator("#flash")).to_have_text("The price per kWh cannot be negative.")
    assert live.rig.station.cfg.tariff.per_kwh == 0.30
    await form.locator('input[name="per_kwh"]').fill("0.45")
    await form.get_by_role("button").click()
    await expect(page.locator("#flash")).to_have_text("Tariff saved.")
    await page.screenshot(path=str(artifacts / "owner-settings-1280x800.png"))
    assert live.rig.station.cfg.tariff.per_kwh == 0.45
    # Names: two bays alike are refused in words; then the kiosk shows the new ones, live.
    names = page.locator('form[data-section="names"]')
    await names.locator('input[name="station_name"]').fill("Hofladen Nord")
    await names.locator('input[data-bay="bay1"]').fill("Platz 1")
    await names.locator('input[data-bay="locker1"]').fill("platz 1")
    await names.get_by_role("button").click()
    await expect(page.locator("#flash")).to_have_text(
        "Two bays are called “platz 1”: give each its own name."
    )
    assert live.rig.station.cfg.station.name == "Test Station"
    await names.locator('input[data-bay="locker1"]').fill("Fahrradfach")
    await names.get_by_role("button").click()
    await expect(page.locator("#flash")).to_have_text("Names saved.")
    await expect(kiosk.locator("#st-name")).to_have_text("Hofladen Nord")
    await expect(kiosk.locator('[data-bay="locker1"] .name')).to_have_text("Fahrradfach")
    await kiosk.screenshot(path=str(artifacts / "kiosk-renamed-800x480.png"))
    # The kiosk, already open, shows the new price without a reload.
    await kiosk.locator('[data-bay="bay1"]').click()
    await expect(kiosk.locator("#s-auth .bay-name")).to_have_text("Platz 1")
    for d in "1234":
        await kiosk.locator(f'#keypad [data-key="{d}"]').click()
    await kiosk.locator('#keypad [data-key="OK"]').click()
    await expect(kiosk.locator("#price")).to_contain_text("€0.45 per kWh")
    await page.click('nav a[href="#audit"]')
    await expect(page.locator("#a-rows")).to_contain_text("Changed the tariff settings")
    row = page.locator("#a-rows tr").filter(has_text="Changed the names settings")
    await expect(row).to_contain_text("Bay names: locker1 none → Fahrradfach")
    await expect(row).to_contain_text("Station name Test Station → Hofladen Nord")


async def test_sessions_filter_csv_export_and_stats(
    browser: Browser, live: Live, artifacts: Path
) -> None:
    st, hub = live.rig.station, live.rig.hub
    ids = []
    hub.plug("locker1")
    for token, mode in (("1234", "eco"), ("5678", "standard")):
        out = await st.commands.present_token(
            "bay1" if mode == "eco" else "locker1", token, mode=mode
        )
        assert out.ok and out.session_id
        ids.append(out.session_id)
    hub.plug("bay1")
    await live.rig.until(
        lambda: all(rt.state.session and rt.state.session.energy_wh > 0 for rt in st.bays.values())
    )
    for sid in ids:
        assert (await st.commands.stop_session(sid, StopReason.LOCAL)).ok
    page = await _setup_owner(browser, live)
    await page.click('nav a[href="#sessions"]')
    rows = page.locator("#s-rows tr")
    await expect(rows).to_have_count(2)
    await page.select_option('#s-filter select[name="mode"]', "eco")
    await page.click('#s-filter button[type="submit"]')
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-session", ids[0])
    await rows.first.click()
    await expect(page.locator("#s-detail")).to_contain_text("mode eco")
    await expect(page.locator("#s-detail")).not_to_contain_text(ids[0])  # no internal ids
    await page.screenshot(path=str(artifacts / "owner-sessions-1280x800.png"))
    async with page.expect_download() as info:
        await page.click("#csv")
    download = await info.value
    text = (await asyncio.to_thread(Path(await download.path()).read_bytes)).decode("utf-8")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][0] == "session_id" and "energy_kwh" in table[0]
    assert [r[0] for r in table[1:]] == [ids[0]]  # the export follows the filter
    assert table[1][table[0].index("mode")] == "eco"
    assert float(table[1][table[0].index("energy_kwh")]) > 0
    # Ann, a member, holds the card of the first session; the second card is no member's.
    for method, path, body in (
        ("POST", "/api/v1/users", {"username": "ann", "password": PASSWORD, "role": "member"}),
        ("PUT", "/api/v1/members/ann/tokens", {"tokens": ["1234"]}),
    ):
        r = await page.evaluate("([m, p, b]) => api(m, p, b)", [method, path, body])
        assert r["ok"], r
    await page.click('nav a[href="#stats"]')
    await expect(page.locator("#chart svg rect").last).to_be_visible()  # this month
    await expect(page.locator("#totals")).to_contain_text("2 sessions")
    # Usage per member: each row's figures are those of the sessions started with its cards.
    for sid, selector in ((ids[0], '[data-member="ann"]'), (ids[1], '[data-member=""]')):
        row = page.locator(f"#mu-rows tr{selector} td")
        await expect(row.nth(1)).to_have_text("1")
        s = await st.journal.session(sid)
        assert s is not None and s["energy_wh"] > 0
        shown = float(await row.nth(2).inner_text())
        assert abs(shown - s["energy_wh"] / 1000) <= 0.005, (shown, s["energy_wh"])
        cost = float((await row.nth(3).inner_text()).split()[0])
        assert abs(cost - s["cost"]) <= 0.005, (cost, s["cost"])
    await expect(page.locator("#mu-rows tr")).to_have_count(2)  # ann, cards of no member
    await page.screenshot(path=str(artifacts / "owner-stats-1280x800.png"), full_page=True)
    # A node firmware update waits: both bays have a vehicle or device still plugged in.
    nodes = NodeImages(hub)
    hub.update_firmware = nodes  # type: ignore[attr-defined]
    st.firmware.set_status("Installing", NEW)
    update = asyncio.create_task(st.firmware.install_all(IMAGE, NEW))
    await live.rig.until(lambda: all(p.waiting_since for p in st.firmware.progress.values()))
    await page.click('nav a[href="#diagnostics"]')
    await expect(page.locator("#d-nodes")).to_contain_text("fake-1.2.3")
    await expect(page.locator("#fw-software")).to_contain_text(
        f"Station software: edge-station {RUNNING_VERSION}, running since "
    )
    await expect(page.locator("#fw-status")).to_have_text(
        f"Installing the node firmware, one node at a time. Version {NEW}."
    )
    row = page.locator('#fw-nodes tr[data-bay="bay1"]')
    await expect(row).to_contain_text("waiting for the bay to be free")
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await row.get_by_role("button", name="Update now (stops any session)").click()
    await expect(row).to_have_attribute("data-state", "installed", timeout=10_000)
    await expect(row).to_contain_text(f"Updated from fake-1.2.3 to {NEW}.")
    await expect(page.locator("#flash")).to_contain_text("updated as soon as it is off")
    assert [c[0] for c in nodes.calls] == ["bay1"]
    await page.screenshot(path=str(artifacts / "owner-firmware-1280x800.png"))
    update.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await update
