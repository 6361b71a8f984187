"""Inline SVG charts (no JS library, no CDN): kWh bars per month or year with a trend line,
the power of the last hours as lines with a legend; QR codes."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
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


def yearly_svg(years: list[dict[str, Any]], trend_kwh: list[float]) -> str:
    """kWh per year as bars with the trend line (``years``: ``{"year", "energy_kwh", "sessions"}``)."""
    as_months = [
        {"month": f"  {y['year']}", "energy_kwh": y["energy_kwh"], "sessions": y["sessions"]}
        for y in years
    ]
    svg = monthly_svg(as_months, trend_kwh)
    return svg.replace("Energy per month (kWh)", "Energy per year (kWh)").replace(
        "kWh per month;", "kWh per year;"
    )


COLOURS = {"site": "#2b6cb0", "building": "#718096", "chargers": "#dd6b20", "pv": "#d69e2e"}
DASHES = {"site": "", "building": "4 3", "chargers": "", "pv": "8 3"}


def power_svg(
    minutes: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    labels: Mapping[str, str],
) -> str:
    """Lines of power (kW) over time, one per series, broken where a minute has no value.

    The legend names each line with its colour and dash; the x axis shows local
    hours. Each line carries ``data-series`` and its points ``data-kw`` for tests.
    """
    w, h, left, right, top, bottom = 720, 300, 52, 8, 16, 64
    vals = [v for vs in series.values() for v in vs if v is not None]
    hi = max([*vals, 1000.0]) / 1000
    lo = min([*vals, 0.0]) / 1000
    span = hi - lo or 1.0
    n = max(1, len(minutes) - 1)
    t0 = minutes[0] if minutes else 0.0
    t1 = minutes[-1] if minutes else 60.0

    def x(i: int) -> float:
        return left + (w - left - right) * i / n

    def y(kw: float) -> float:
        return top + (h - top - bottom) * (hi - kw) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img"'
        ' aria-label="Power over time (kW)" class="chart power-chart">',
    ]
    for kw in _ticks(lo, hi):
        parts.append(
            f'<line x1="{left}" y1="{y(kw):.1f}" x2="{w - right}" y2="{y(kw):.1f}"'
            f' stroke="{"#888" if kw == 0 else "#ddd"}"/>'
            f'<text x="{left - 6}" y="{y(kw) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{kw:g}</text>"
        )
    if minutes:
        step = max(1, round(3 * 3600 / max(60.0, (t1 - t0) / n)))  # a label every 3 h
        for i in range(0, len(minutes), step):
            label = dt.datetime.fromtimestamp(minutes[i]).strftime("%H:%M")
            parts.append(
                f'<text x="{x(i):.1f}" y="{h - bottom + 16}" text-anchor="middle"'
                f' font-size="11">{label}</text>'
            )
    for key, vs in series.items():
        colour, dash = COLOURS.get(key, "#000"), DASHES.get(key, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for run in _runs(vs):
            pts = " ".join(f"{x(i):.1f},{y(v / 1000):.1f}" for i, v in run)
            kws = " ".join(f"{v / 1000:.3f}" for _, v in run)
            if len(run) == 1:
                i, v = run[0]
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v / 1000):.1f}" r="1.5" fill="{colour}"'
                    f' data-series="{escape(key)}" data-kw="{kws}"/>'
                )
                continue
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8"'
                f'{dash_attr} data-series="{escape(key)}" data-kw="{kws}"/>'
            )
    lx = left
    for key in series:
        colour, dash = COLOURS.get(key, "#000"), DASHES.get(key, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        label = escape(labels.get(key, key))
        parts.append(
            f'<g class="legend-item" data-series="{escape(key)}">'
            f'<line x1="{lx}" y1="{h - 20}" x2="{lx + 24}" y2="{h - 20}" stroke="{colour}"'
            f' stroke-width="3"{dash_attr}/>'
            f'<text x="{lx + 30}" y="{h - 16}" font-size="12">{label}</text></g>'
        )
        lx += 40 + 8 * len(labels.get(key, key))
    parts.append(
        f'<text x="{left}" y="{h - 2}" font-size="11">kW, mean per minute; gaps: nothing'
        " measured</text></svg>"
    )
    return "".join(parts)


def _runs(vs: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of values, with their indexes."""
    runs: list[list[tuple[int, float]]] = []
    cur: list[tuple[int, float]] = []
    for i, v in enumerate(vs):
        if v is None:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append((i, v))
    if cur:
        runs.append(cur)
    return runs


def _ticks(lo: float, hi: float) -> list[float]:
    raw = (hi - lo) / 4
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1 if raw >= 0.1 else 0.01
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = step * int(lo / step) - (step if lo < 0 and lo % step else 0)
    out, v = [], first
    while v <= hi + 1e-9:
        out.append(round(v, 3))
        v += step
    return out


def qr_svg(text: str, *, scale: int = 6, dark: str = "#000", light: str = "#fff") -> str:
    """A QR code as an SVG element (generated locally with segno)."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(
        buf, kind="svg", scale=scale, border=2, dark=dark, light=light, xmldecl=False, svgns=True
    )
    return buf.getvalue().decode("utf-8")
