"""What every kiosk screen must satisfy, measured in the browser, and the English-text detector.

``layout_problems`` measures element boxes against the viewport: nothing outside it, no box
whose own content is clipped, no text under 16 px, no button under 56 x 56 px.
``english_words`` finds English left on a screen that should be in another language.
"""

from __future__ import annotations

import re

from playwright.async_api import Page

from local_ui import i18n
from tests.test_i18n_kiosk import kiosk_msgids

LAYOUT_JS = """() => {
  const vw = innerWidth, vh = innerHeight, out = [];
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
    (e.dataset.bay ? "[" + e.dataset.bay + "]" : "") + (e.className && typeof e.className === "string" ? "." + e.className.split(" ")[0] : "");
  const shown = (e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== "hidden" && e.checkVisibility();
  };
  for (const e of document.querySelectorAll("body *")) {
    if (e.closest("svg") || e.tagName === "SCRIPT" || !shown(e)) continue;
    const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
    if (r.left < -0.5 || r.top < -0.5 || r.right > vw + 0.5 || r.bottom > vh + 0.5)
      out.push("outside the viewport: " + name(e) + " " + JSON.stringify([r.left, r.top, r.right, r.bottom].map(Math.round)));
    if (cs.overflow !== "visible" && (e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1))
      out.push("content cut off: " + name(e) + " " + e.scrollWidth + "x" + e.scrollHeight + " in " + e.clientWidth + "x" + e.clientHeight);
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (own && parseFloat(cs.fontSize) < 16) out.push("text under 16 px: " + name(e) + " " + cs.fontSize);
    if (e.tagName === "BUTTON" && (r.width < 56 || r.height < 56))
      out.push("target under 56 px: " + name(e) + " " + Math.round(r.width) + "x" + Math.round(r.height));
  }
  return out;
}"""

TEXT_JS = """() => {
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const e = n.parentElement;
    if (!e || e.closest("script") || !e.checkVisibility() || !n.textContent.trim()) continue;
    out.push(n.textContent.trim());
  }
  return out;
}"""

_WORD = re.compile(r"[A-Za-zÀ-ÿ0-9]+")  # "bay1" is an id, not the word "bay"


async def layout_problems(page: Page) -> list[str]:
    return list(await page.evaluate(LAYOUT_JS))


def _vocabulary(lang: str) -> set[str]:
    """Words of the kiosk's English sentences that ``lang``'s own sentences do not use."""
    ids = kiosk_msgids()
    ours = {
        w.lower()
        for t in i18n.catalogue(lang).values()
        for w in _WORD.findall(re.sub(r"\{\w+\}", "", t))
    }
    english = {w.lower() for m in ids for w in _WORD.findall(re.sub(r"\{\w+\}", "", m))}
    return {w for w in english if len(w) >= 3} - ours


async def english_words(page: Page, lang: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    """English words (from the kiosk's msgids) visible on a page meant to be in ``lang``."""
    vocab = _vocabulary(lang)
    found: list[str] = []
    for text in await page.evaluate(TEXT_JS):
        for w in _WORD.findall(text):
            if w.lower() in vocab and w not in allowed:
                found.append(f"{w!r} in {text!r}")
    return found
