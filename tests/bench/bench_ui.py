"""Browser-side figures: live event -> DOM update latency (kiosk and owner dashboard), kiosk page weight.

Latency: the station changes a bay (availability toggled, which publishes a
``bay`` message); the page records when it has rendered the change
(``window.__kioskApplied`` / ``__ownerApplied``, wall clock); the difference to
the wall time just before the change is one sample. Page weight: every
response body loaded by ``/kiosk`` (HTML, CSS, JS, bay QR), uncompressed.

Also the pause of a full garbage collection over the heap start-up built, before and
after the station freezes it (controller/ops/heap.py): the kiosk figure was held by it.

Run: ``.venv/bin/pytest -m bench tests/bench/bench_ui.py``. The page weight is measured per
language (the largest counts). Targets: p99 < 1000 ms
(the users' "within 1 s"); on the kiosk p99 < 100 ms and the page < 100 KB (it runs
on the station's own small computer, next to the controller).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Response, async_playwright, expect

from controller.ops import heap
from tests.bench.report import metric, percentile, write_report
from tests.browser.conftest import ARGS, CHROMIUM, Live, live_server

SAMPLES = 100
LANGS = ("de", "en")  # the last stays open for the latencies (English wording)


async def _kiosk_page(browser: Browser, live: Live, lang: str, sizes: dict[str, int]) -> Page:
    """The kiosk in ``lang`` at 800x480, every response it loaded counted in ``sizes``."""
    kiosk = await browser.new_page(viewport={"width": 800, "height": 480})

    async def record(resp: Response) -> None:
        try:
            body = await resp.body()
        except Exception:
            return  # a redirect or an aborted load has no body
        headers = await resp.all_headers()
        sizes[resp.url] = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())

    pending: list[asyncio.Task[None]] = []
    kiosk.on("response", lambda r: pending.append(asyncio.ensure_future(record(r))))
    await kiosk.goto(live.base + f"/kiosk?lang={lang}")
    await expect(kiosk.locator("body")).to_have_attribute("data-live", "up")
    await expect(kiosk.locator("html")).to_have_attribute("lang", lang)
    await kiosk.locator('[data-bay="bay1"]').click()  # the auth screen loads the bay QR
    await expect(kiosk.locator("#bay-qr")).to_have_js_property("complete", True)
    await asyncio.gather(*pending)
    await kiosk.locator("#s-auth .back").click()
    return kiosk


async def _latencies(live: Live, page: Page, selector: str, mark: str) -> list[float]:
    st = live.rig.station
    out: list[float] = []
    for i in range(SAMPLES):
        available = i % 2 == 1
        want = "Available" if available else ("Not available" if "kiosk" in mark else "Unavailable")
        t0 = time.time() * 1000
        await st.commands.set_availability("bay1", available, actor="bench")
        await page.wait_for_function(
            "([sel, want]) => { const e = document.querySelector(sel); return e && e.textContent.includes(want); }",
            arg=[selector, want],
            polling="raf",
        )
        applied = await page.evaluate(f"window.{mark}")
        out.append(float(applied) - t0)
    return out


def _full_gc_ms() -> float:
    t0 = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t0) * 1000


@pytest.mark.bench
async def test_bench_ui_event_to_dom_and_page_weight(tmp_path: Path) -> None:
    asyncio.get_running_loop().set_debug(False)
    async with live_server(tmp_path) as live, async_playwright() as pw:
        # A full collection over the heap start-up built, then over what is left once it is
        # frozen, as the station does when it is ready (controller/assemble.py).
        gc_pause = [_full_gc_ms() for _ in range(3)]
        heap.settle()
        gc_settled = [_full_gc_ms() for _ in range(3)]
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            weights: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for lang in LANGS:  # each language's page: its catalogue comes with it
                sizes = {}
                kiosk = await _kiosk_page(browser, live, lang, sizes)
                weights[lang] = sum(sizes.values())
                if lang != LANGS[-1]:
                    await kiosk.close()
            weight = max(weights.values())
            kiosk_lat = await _latencies(live, kiosk, '[data-bay="bay1"] .state', "__kioskApplied")

            owner = await browser.new_page(viewport={"width": 1280, "height": 800})
            ui = live.app.state.ui
            await ui.accounts.create_user("bench", "correct horse battery", "owner")
            ui.accounts.setup_code = None
            await owner.goto(live.base + "/login")
            await owner.fill('input[name="username"]', "bench")
            await owner.fill('input[name="password"]', "correct horse battery")
            await owner.click('button[type="submit"]')
            await expect(owner.locator("body")).to_have_attribute("data-live", "up")
            owner_lat = await _latencies(
                live, owner, '#dash-bays [data-bay="bay1"] .status', "__ownerApplied"
            )
        finally:
            await browser.close()
    write_report(
        "ui_live_and_weight",
        {
            "kiosk_event_to_dom_p50_ms": metric(percentile(kiosk_lat, 50), "ms"),
            "kiosk_event_to_dom_p99_ms": metric(percentile(kiosk_lat, 99), "ms", target=100.0),
            "owner_event_to_dom_p50_ms": metric(percentile(owner_lat, 50), "ms"),
            "owner_event_to_dom_p99_ms": metric(percentile(owner_lat, 99), "ms", target=1000.0),
            "full_gc_pause_ms": metric(statistics.median(gc_pause), "ms"),
            "full_gc_pause_settled_ms": metric(
                statistics.median(gc_settled), "ms", target=statistics.median(gc_pause) / 4
            ),
            "kiosk_page_bytes": metric(float(weight), "bytes", target=100_000.0),
            **{
                f"kiosk_page_bytes_{lang}": metric(float(n), "bytes", target=100_000.0)
                for lang, n in weights.items()
            },
        },
        notes={
            "samples": SAMPLES,
            "resources": {u.split("/", 3)[-1]: n for u, n in sorted(sizes.items())},
        },
    )
    assert weight < 100_000
    assert percentile(kiosk_lat, 99) < 100 and percentile(owner_lat, 99) < 1000
