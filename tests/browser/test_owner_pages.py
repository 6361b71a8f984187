"""Owner pages in Chromium at 1280×800 and 390×844 (issue 16).

Every page fits the screen (no sideways scrolling), navigation targets are at
least 44 px, messages are sentences (no field paths, validator wording, ids
or JSON), tokens are masked, the audit log filters by category, error banners
stay on the page they belong to, and the hold/booking bay is preselected.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from playwright.async_api import Browser, Page, expect

from controller.core.bay import StopReason
from local_ui.messages import human
from tests.browser.conftest import Live, live_server
from tests.test_api_load import BAYS, SITE, grid_meter
from tests.test_api_rig import PASSWORD

pytestmark = pytest.mark.browser

VIEWPORTS = [(1280, 800), (390, 844)]
VIEWS = ["dashboard", "sessions", "stats", "holds", "settings", "audit", "diagnostics", "users"]


@pytest.fixture
async def site_live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_server(tmp_path, site=SITE, bays=BAYS) as lv, grid_meter(lv.rig):
        yield lv


async def _owner_page(browser: Browser, live: Live, width: int, height: int) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(8000)
    await page.goto(live.base + "/setup")
    await page.fill('input[name="code"]', live.setup_code)
    await page.fill('input[name="username"]', "owner")
    await page.fill('input[name="password"]', PASSWORD)
    await page.fill('input[name="password2"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    return page


async def _login(browser: Browser, live: Live, width: int, height: int) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(8000)
    await page.goto(live.base + "/login")
    await page.fill('input[name="username"]', "owner")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await expect(page).to_have_url(live.base + "/owner")
    await expect(page.locator("body")).to_have_attribute("data-live", "up")
    return page


async def _a_session(live: Live) -> None:
    live.rig.hub.plug("bay1")
    out = await live.rig.station.commands.present_token("bay1", "1234")
    assert out.session_id
    await live.rig.until(lambda: live.rig.status("bay1") == "Charging")
    await live.rig.station.commands.stop_session(
        out.session_id, StopReason.OWNER, actor="user:owner"
    )
    for i in range(30):  # the walk's audit: automatic throttles around the owner's actions
        await live.rig.station.audit.record(
            "throttle",
            "load",
            {"bay_id": "bay1", "old_a": 16, "new_a": 6 + i % 4, "reason": "rule"},
        )


async def _visit(page: Page, view: str) -> None:
    await page.evaluate(f"location.hash = '#{view}'")
    await expect(page.locator(f"#v-{view}")).to_be_visible()
    with contextlib.suppress(Exception):  # a page with nothing to load is still fine
        await page.wait_for_load_state("networkidle", timeout=3000)


async def _fits(page: Page) -> int:
    """How far the page is wider than the screen (0: it fits)."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    inner = await page.evaluate("window.innerWidth")
    return int(width) - int(inner)


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
async def test_every_page_fits_the_screen_and_targets_are_big_enough(
    browser: Browser, site_live: Live, artifacts: Path, width: int, height: int
) -> None:
    page = await _owner_page(browser, site_live, width, height)
    await _a_session(site_live)
    r = await page.evaluate(
        "api('POST', '/api/v1/holds', {bay_id: 'locker1', token: '5678', duration_s: 600})"
    )
    assert r["status"] == 201, r
    too_wide = {}
    for view in VIEWS:
        await _visit(page, view)
        if view == "sessions":
            await page.locator("#s-rows tr").first.click()
            await expect(page.locator("#s-detail")).to_be_visible()
        over = await _fits(page)
        if over > 0:
            too_wide[view] = over
        await page.screenshot(path=str(artifacts / f"owner-{view}-{width}x{height}.png"))
    assert not too_wide, f"wider than {width} px by: {too_wide}"
    small = await page.evaluate(
        "[...document.querySelectorAll('header nav a, header button')]"
        ".filter((a) => a.offsetParent !== null)"
        ".map((a) => [a.textContent, a.getBoundingClientRect().height])"
        ".filter(([, h]) => h < 44)"
    )
    assert not small, f"navigation targets under 44 px: {small}"


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
async def test_messages_tokens_audit_and_bay_choice_read_right(
    browser: Browser, site_live: Live, artifacts: Path, width: int, height: int
) -> None:
    page = await _owner_page(browser, site_live, width, height)
    await _a_session(site_live)
    # Settings: a bad value gets a sentence next to the form, in words.
    r = await page.evaluate("api('PATCH', '/api/v1/settings/kiosk', {welcome_text: 'Hello'})")
    assert r["status"] == 200, r
    await _visit(page, "settings")
    tariff = page.locator('form[data-section="tariff"]')
    await expect(tariff).to_contain_text("Price per kWh")
    await expect(page.locator("#set-forms")).not_to_contain_text("Per Kwh")
    await expect(page.locator("#set-forms")).not_to_contain_text("Idle Timeout S")
    await tariff.locator('input[name="per_kwh"]').fill("-1")
    await tariff.locator('button[type="submit"]').click()
    err = tariff.locator(".warnings .error")
    await expect(err).to_have_text("The price per kWh cannot be negative.")
    modes = page.locator('form[data-section="load_modes"]')
    await modes.locator('input[name="min_on_time_s"]').fill("0")
    await modes.locator('button[type="submit"]').click()
    text = await modes.locator(".warnings .error").inner_text()
    assert human(text) and "minimum on time" in text and "30" in text, text
    # The message stays with its page: the next page starts clean.
    await expect(page.locator("#flash")).to_be_visible()
    await _visit(page, "holds")
    await expect(page.locator("#flash")).to_be_hidden()
    # Holds and bookings: the bay is chosen already, never blank.
    for form in ("#h-form", "#b-form"):
        assert await page.locator(f'{form} select[name="bay_id"]').input_value() == "bay1"
    await page.fill('#h-form input[name="token"]', "a b")
    await page.click('#h-form button[type="submit"]')
    flash = page.locator("#flash.bad")
    await expect(flash).to_be_visible()
    msg = await flash.inner_text()
    assert human(msg) and "card or code" in msg, msg
    await page.select_option('#h-form select[name="bay_id"]', "locker1")
    await page.fill('#h-form input[name="token"]', "5678")
    await page.click('#h-form button[type="submit"]')
    await expect(page.locator("#flash")).to_have_text("Bay held.")
    await expect(page.locator("#h-active")).to_contain_text("…")
    await expect(page.locator("#h-active")).not_to_contain_text("5678")
    # Session detail: masked token, events as sentences.
    await _visit(page, "sessions")
    await page.locator("#s-rows tr").first.click()
    detail = page.locator("#s-detail")
    await expect(detail).to_contain_text("Card or code …")
    body = await detail.inner_text()
    assert "1234" not in body and "{" not in body, body
    assert not re.search(r"\b[0-9a-f]{16}\b", body), body  # no session id
    await expect(detail.locator(".events li").first).to_be_visible()
    # Audit log: the owner's own actions first, text only; the throttles one click away.
    await _visit(page, "audit")
    await expect(page.locator("#a-rows tr").first).to_be_visible()
    rows = await page.locator("#a-rows tr").all_inner_texts()
    assert rows and all("{" not in r for r in rows), rows
    assert not any("from 16 A" in r for r in rows), rows  # no throttles under "owner"
    assert any("Changed the kiosk settings" in r for r in rows), rows
    await page.select_option("#a-filter", "load")
    await expect(page.locator("#a-rows tr").nth(29)).to_be_visible()  # the 30 planted, and more
    await expect(page.locator("#a-rows")).to_contain_text("Set bay bay1 from 16 A to")
    await page.screenshot(path=str(artifacts / f"owner-audit-load-{width}x{height}.png"))
    for text in await page.locator("#a-rows tr").all_inner_texts():
        assert "{" not in text and "_" not in text, text


def _read_qr(png: bytes) -> str:
    """What a phone's camera reads from a screenshot of a QR code."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    found = zxingcpp.read_barcodes(img)
    assert found, "no QR code on the screen"
    return str(found[0].text)


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
async def test_owner_invites_a_member_who_charges_and_sees_only_their_own(
    browser: Browser, live: Live, artifacts: Path, width: int, height: int
) -> None:
    page = await _owner_page(browser, live, width, height)
    await _visit(page, "users")
    form = page.locator("#i-form")
    await form.locator('input[name="username"]').fill("ann")
    await form.locator('button[type="submit"]').click()
    qr = page.locator("#i-qr svg")
    await expect(qr).to_be_visible()
    url = await page.locator("#i-url").inner_text()
    assert url.startswith(live.base + "/invite#"), url
    assert _read_qr(await qr.screenshot()) == url  # the QR on screen is the invitation
    await expect(page.locator('#i-rows tr[data-invite="ann"]')).to_be_visible()
    assert await _fits(page) <= 0, "the invitation with its QR code is too wide"
    await page.screenshot(path=str(artifacts / f"owner-invite-{width}x{height}.png"))
    # Ann opens it on her phone (in German), chooses a password and is logged in.
    ctx = await browser.new_context(viewport={"width": width, "height": height}, locale="de-DE")
    member = await ctx.new_page()
    member.set_default_timeout(8000)
    await member.goto(url)
    await expect(member.locator("#welcome")).to_have_text("Willkommen, ann")
    assert await _fits(member) <= 0
    await member.screenshot(path=str(artifacts / f"invite-de-{width}x{height}.png"))
    await member.fill('input[name="password"]', PASSWORD)
    await member.fill('input[name="password2"]', PASSWORD)
    await member.click('button[type="submit"]')
    await expect(member).to_have_url(live.base + "/member")
    # The owner gives her a card.
    await _visit(page, "audit")
    await _visit(page, "users")
    await expect(page.locator("#i-rows tr")).to_have_count(0)  # used: no longer open
    row = page.locator('#u-rows tr[data-user="ann"]')
    await expect(row).to_contain_text("member")
    await row.locator('input[name="tokens"]').fill("1234")
    await row.get_by_role("button", name="Give cards").click()
    await expect(page.locator("#flash")).to_have_text("Cards saved.")
    await expect(row).to_contain_text("…")
    await expect(row).not_to_contain_text("1234")
    assert await _fits(page) <= 0, "the users page with a member's cards is too wide"
    await member.reload()
    # Someone else charges at the locker; Ann must not see it as hers.
    other = await live.rig.station.commands.present_token("locker1", "5678")
    assert other.ok
    locker = member.locator('#m-bays [data-bay="locker1"]')
    await expect(locker).to_contain_text("In use")
    await expect(locker.get_by_role("button")).to_have_count(0)
    live.rig.hub.plug("bay1")
    bay = member.locator('#m-bays [data-bay="bay1"]')
    await bay.get_by_role("button", name="Start charging").click()
    await expect(member.locator("#flash")).to_have_text("Charging started: plug in now.")
    await expect(bay).to_contain_text("Your session")
    assert await _fits(member) <= 0
    await member.screenshot(path=str(artifacts / f"member-{width}x{height}.png"))
    await bay.get_by_role("button", name="Stop charging").click()
    await expect(member.locator("#flash")).to_have_text("Charging stopped.")
    await expect(member.locator("#m-rows tr")).to_have_count(1)  # hers only, not the locker's
    await expect(member.locator("#m-rows")).to_contain_text("bay1")
    await live.rig.until(lambda: live.rig.station.bays["bay1"].state.session is None)
    await member.select_option("#mu-months", "1")  # her usage of this month, read again
    await expect(member.locator("#mu-totals")).to_contain_text("Sessions: 1 ·")
    await member.goto(live.base + "/owner")
    await expect(member).to_have_url(live.base + "/member")
    await ctx.close()


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
async def test_book_by_tapping_a_free_hour_and_conflicts_say_when(
    browser: Browser, live: Live, artifacts: Path, width: int, height: int
) -> None:
    page = await _owner_page(browser, live, width, height)
    await _visit(page, "holds")
    cal = page.locator("#b-calendar table.cal")
    await expect(cal).to_have_attribute("data-bay", "bay1")  # the preselected bay
    await page.click("#cal-next")  # next week: every hour is still to come
    await expect(cal).not_to_have_attribute("data-week", re.compile(r"^$"))
    slot = cal.locator("tbody tr").nth(10).locator("button.slot").first  # Monday 10:00
    await slot.click()
    start = await page.locator('#b-form input[name="start"]').input_value()
    assert start.endswith("T10:00"), start
    await page.fill('#b-form input[name="token"]', "04A1B2C3")
    await page.fill('#b-form input[name="minutes"]', "90")
    await page.click('#b-form button[type="submit"]')
    await expect(page.locator("#flash")).to_have_text("Bay booked.")
    await expect(cal.locator("td.booked")).to_have_count(2)
    assert await _fits(page) <= 0
    await page.screenshot(path=str(artifacts / f"owner-bookings-calendar-{width}x{height}.png"))
    # The same hour again: refused with when the other booking is, and what to do.
    await cal.locator("tbody tr").nth(11).locator("td.booked").first.click()
    await expect(page.locator("#flash")).to_contain_text("Booked 10:00–11:30 for …B2C3")
    await page.fill('#b-form input[name="start"]', start.replace("T10:00", "T11:00"))
    await page.fill('#b-form input[name="token"]', "5678")
    await page.click('#b-form button[type="submit"]')
    flash = page.locator("#flash.bad")
    await expect(flash).to_contain_text("already booked from")
    msg = await flash.inner_text()
    assert human(msg) and "10:00 to 11:30" in msg and "calendar" in msg, msg
    await expect(page.locator("#b-rows")).not_to_contain_text("04A1B2C3")
