"""The owner's dashboard figures: site power now (total and per phase), energy today and this
month, and the power history of the last hours (site, building, chargers, PV).

The history is read from the journal's per-minute power
(:meth:`Journal.power_per_minute`), whatever the samples' storage; the energy
from its session totals (:meth:`Journal.session_energy`): the energy of the
sessions started today / this month (local time), open ones with their last
checkpoint, the same attribution as the monthly statistics. The figures now
come from the latest meter readings and node telemetry.

What the series mean (W, per minute):
- **site**: the grid meter at the connection point (import positive, export negative);
- **PV**: the PV meter's production (its magnitude, whatever the meter's sign convention);
- **chargers**: the sum of every bay node's measured power;
- **building**: everything else behind the connection point: site + PV − chargers.
A minute without a grid value has no site or building value (a gap, never a zero).

Minutes that ended more than :data:`SETTLED_S` ago no longer change (samples
reach the journal within seconds), so their rows are kept per journal and only
the newer minutes are read again on the next refresh.
"""

from __future__ import annotations

import datetime as dt
import weakref
from dataclasses import dataclass, field
from typing import Any

from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import Freshness

SERIES = ("site", "building", "chargers", "pv")
LABELS = {"site": "Site (grid)", "building": "Building", "chargers": "Chargers", "pv": "Solar (PV)"}


@dataclass(frozen=True)
class PowerHistory:
    """Per-minute power (W) from ``since``; ``None`` where nothing was measured."""

    since: float
    until: float
    minutes: list[float]
    series: dict[str, list[float | None]]

    def view(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "minutes": self.minutes,
            "series": {
                k: [None if v is None else round(v, 1) for v in vals]
                for k, vals in self.series.items()
            },
            "labels": {k: LABELS[k] for k in self.series},
        }


SETTLED_S = 180.0
"""A minute that ended this long ago has all its samples in the journal (they flush every 2 s)."""


@dataclass
class _Settled:
    sources: frozenset[str] = frozenset()
    lo: float = 0.0  # the settled rows cover the minutes [lo, hi)
    hi: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


_settled: weakref.WeakKeyDictionary[Journal, _Settled] = weakref.WeakKeyDictionary()


async def _minute_rows(
    journal: Journal, sources: list[str], since: float, until: float
) -> list[dict[str, Any]]:
    """:meth:`Journal.power_per_minute`, with the settled minutes read once."""
    lo = since - since % 60
    edge = until - SETTLED_S
    edge -= edge % 60
    c = _settled.get(journal)
    if c is None or c.sources != frozenset(sources) or not c.lo <= lo <= c.hi:
        c = _Settled(frozenset(sources), lo, lo, [])
        _settled[journal] = c
    fresh = await journal.power_per_minute(sources, c.hi, until) if c.hi < until else []
    if edge > c.hi:
        c.rows += [r for r in fresh if r["minute"] < edge]
        c.hi = edge
    c.rows = [r for r in c.rows if r["minute"] >= lo]
    c.lo = lo
    return [*c.rows, *(r for r in fresh if r["minute"] >= c.hi)]


async def power_history(
    journal: Journal, node_ids: list[str], since: float, until: float, *, pv: bool
) -> PowerHistory:
    """The four series per minute over ``[since, until)`` (PV only when the site has a PV meter)."""
    nodes = [f"node:{n}" for n in node_ids]
    rows = await _minute_rows(journal, ["grid", "pv", *nodes], since, until)
    grid: dict[float, float] = {}
    solar: dict[float, float] = {}
    chargers: dict[float, float] = {}
    for r in rows:
        m, w = float(r["minute"]), float(r["power_w"])
        if r["source"] == "grid":
            grid[m] = w
        elif r["source"] == "pv":
            solar[m] = abs(w)
        else:
            chargers[m] = chargers.get(m, 0.0) + w
    first = since - since % 60
    minutes = [first + 60 * i for i in range(int((until - first + 59) // 60))]
    series: dict[str, list[float | None]] = {k: [] for k in SERIES if pv or k != "pv"}
    for m in minutes:
        site = grid.get(m)
        ev = chargers.get(m)
        sun = solar.get(m)
        series["site"].append(site)
        series["chargers"].append(ev)
        if pv:
            series["pv"].append(sun)
        series["building"].append(None if site is None else site + (sun or 0.0) - (ev or 0.0))
    return PowerHistory(since, until, minutes, series)


def day_start(now: float) -> float:
    d = dt.datetime.fromtimestamp(now).astimezone()
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(now: float) -> float:
    d = dt.datetime.fromtimestamp(now).astimezone()
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


async def energy(journal: Journal, now: float) -> dict[str, Any]:
    today = await journal.session_energy(day_start(now), now + 1)
    month = await journal.session_energy(month_start(now), now + 1)
    return {
        "today_kwh": round(today["energy_wh"] / 1000, 3),
        "today_sessions": today["sessions"],
        "month_kwh": round(month["energy_wh"] / 1000, 3),
        "month_sessions": month["sessions"],
    }


def _kw(w: float | None) -> float | None:
    return None if w is None else round(w / 1000, 2)


def power_now(station: Station) -> dict[str, Any]:
    """Site power now from the grid meter (total and per phase), the chargers', the PV's."""
    chargers_w = sum(rt.telemetry.power_w for rt in station.bays.values() if rt.telemetry)
    grid = station.meters.of_role("grid")
    sample = grid.reading.sample if grid is not None else None
    fresh = grid is not None and grid.reading.freshness is Freshness.FRESH and sample is not None
    site_w: float | None = None
    phases: list[dict[str, Any]] = []
    if fresh and sample is not None:
        site_w = sample.power_total_w
        if site_w is None and any(p is not None for p in sample.power_w):
            site_w = sum(p for p in sample.power_w if p is not None)
        for i in range(3):
            p_w, amps = sample.power_w[i], sample.current_a[i]
            phases.append(
                {
                    "phase": f"L{i + 1}",
                    "power_kw": _kw(p_w),
                    "current_a": None if amps is None else round(amps, 1),
                }
            )
    pv = station.meters.of_role("pv")
    pv_sample = pv.reading.sample if pv is not None else None
    pv_w = None
    if pv is not None and pv.reading.freshness is Freshness.FRESH and pv_sample is not None:
        pv_w = None if pv_sample.power_total_w is None else abs(pv_sample.power_total_w)
    if grid is None:
        note = "There is no grid meter: the site's power is not measured, only the chargers'."
    elif not fresh:
        note = "The grid meter has no fresh reading: the site's power is not known right now."
    else:
        note = ""
    return {
        "site_kw": _kw(site_w),
        "phases": phases,
        "chargers_kw": _kw(chargers_w),
        "pv_kw": _kw(pv_w),
        "building_kw": _kw(
            None if site_w is None else site_w + (pv_w or 0.0) - chargers_w,
        ),
        "note": note,
    }


async def dashboard(station: Station) -> dict[str, Any]:
    now = station.clock.wall()
    return {
        "now": now,
        "power": power_now(station),
        "energy": await energy(station.journal, now),
    }
