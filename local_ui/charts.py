"""Inline SVG charts (no JS library, no CDN): monthly kWh bars with a trend line; QR codes."""

from __future__ import annotations

import io
from html import escape
from typing import Any

import segno


def monthly_svg(months: list[dict[str, Any]], trend_kwh: list[float]) -> str:
    w, h, left, bottom, top = 720, 260, 48, 36, 16
    n = max(1, len(months))
    peak = max([m["energy_kwh"] for m in months] + trend_kwh + [1.0])
    scale = (h - bottom - top) / peak
    slot = (w - left - 8) / n
    bar = max(4.0, slot * 0.65)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img"'
        ' aria-label="Energy per month (kWh) with trend" class="chart">',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 4}" y2="{h - bottom}" stroke="#888"/>',
    ]
    for frac in (0.5, 1.0):
        y = h - bottom - peak * frac * scale
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{w - 4}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{peak * frac:.3g}</text>"
        )
    pts = []
    for i, m in enumerate(months):
        x = left + i * slot + (slot - bar) / 2
        bh = m["energy_kwh"] * scale
        parts.append(
            f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bar:.1f}" height="{bh:.1f}"'
            f' fill="#2b6cb0"><title>{escape(m["month"])}: {m["energy_kwh"]:.1f} kWh,'
            f" {m['sessions']} sessions</title></rect>"
        )
        if n <= 13 or i % max(1, n // 12) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{h - bottom + 16}" text-anchor="middle"'
                f' font-size="11">{escape(m["month"][2:])}</text>'
            )
        if i < len(trend_kwh):
            pts.append(f"{x + bar / 2:.1f},{h - bottom - trend_kwh[i] * scale:.1f}")
    if len(pts) >= 2:
        parts.append(
            f'<polyline points="{" ".join(pts)}" fill="none" stroke="#dd6b20"'
            ' stroke-width="2.5" stroke-dasharray="6 4" class="trend"/>'
        )
    parts.append(
        f'<text x="{left}" y="{h - 4}" font-size="11">kWh per month; dashed line: trend</text></svg>'
    )
    return "".join(parts)


def qr_svg(text: str, *, scale: int = 6, dark: str = "#000", light: str = "#fff") -> str:
    """A QR code as an SVG element (generated locally with segno)."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(
        buf, kind="svg", scale=scale, border=2, dark=dark, light=light, xmldecl=False, svgns=True
    )
    return buf.getvalue().decode("utf-8")
