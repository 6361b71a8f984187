"""Session history queries: filters, pagination, CSV rows, monthly statistics.

The rows come from the journal's session queries (``Journal.sessions``,
``count_sessions``, ``monthly_totals``); a filter here speaks the UI's terms
(local dates, an ``outcome`` of success or error from the stop reason) and
hands the journal its own.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.core.bay import StopReason
from controller.core.journal import Journal
from controller.ops import session_csv

# The dates a filter may name: local-time arithmetic fails near year 1 and 9999.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2100

SUCCESS_REASONS = session_csv.SUCCESS_REASONS
ERROR_REASONS = frozenset(StopReason) - SUCCESS_REASONS


@dataclass(frozen=True)
class SessionFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    bay_id: str | None = None
    mode: str | None = None
    stop_reason: str | None = None
    outcome: Literal["success", "error"] | None = None
    state: Literal["open", "closed"] | None = None

    def journal_filter(self) -> dict[str, Any]:
        """The journal's keyword arguments for this filter (``Journal.sessions``)."""
        closed_with = None
        if self.outcome is not None:
            reasons = SUCCESS_REASONS if self.outcome == "success" else ERROR_REASONS
            closed_with = frozenset(r.value for r in reasons)
        return {
            "since": None if self.since is None else _epoch(self.since),
            "until": None if self.until is None else _epoch(self.until),
            "bay_id": self.bay_id,
            "mode": self.mode,
            "stop_reason": self.stop_reason,
            "state": self.state,
            "closed_with": closed_with,
        }


def _epoch(d: dt.datetime) -> float:
    if d.tzinfo is None:
        d = d.astimezone()  # naive means the station's local time
    return d.timestamp()


outcome_of = session_csv.outcome_of


async def page(
    journal: Journal, f: SessionFilter, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    kw = f.journal_filter()
    total = await journal.count_sessions(**kw)
    rows = await journal.sessions(**kw, limit=limit, offset=offset, newest_first=True)
    return total, rows


async def csv_chunks(
    journal: Journal,
    f: SessionFilter,
    batch: int = 500,
    *,
    members: Mapping[str, str] | None = None,
    tokens: Collection[str] | None = None,
) -> AsyncIterator[bytes]:
    """The sessions CSV (controller.ops.session_csv), streamed a batch of rows at a time.

    ``members``: card or code -> the member who holds it (the ``member`` column);
    ``tokens``: only the sessions started with one of these (a member's own).
    """
    buf = io.StringIO()
    w = session_csv.writer(buf)
    w.writerow(session_csv.COLUMNS)
    kw = f.journal_filter()
    if tokens is not None:
        kw["tokens"] = tokens
    owners = members or {}
    offset = 0
    while True:
        rows = await journal.sessions(**kw, limit=batch, offset=offset, newest_first=False)
        for r in rows:
            w.writerow(session_csv.row({**r, "member": owners.get(str(r.get("token")))}))
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
        if len(rows) < batch:
            return
        offset += batch


def month_start(d: dt.date, back: int) -> dt.date:
    """The first day of the month ``back`` months before ``d`` (negative: after)."""
    y, m = divmod(d.year * 12 + d.month - 1 - back, 12)
    return dt.date(y, m + 1, 1)


async def monthly(
    journal: Journal,
    since: dt.datetime,
    until: dt.datetime | None,
    bay_id: str | None,
    tokens: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    # Sessions still open, or with a counter that went backwards, stay out of the aggregates.
    rows = await journal.monthly_totals(
        _epoch(since), None if until is None else _epoch(until), bay_id, tokens
    )
    by_month = {r["month"]: r for r in rows}
    out: list[dict[str, Any]] = []
    cur = dt.date(since.year, since.month, 1)
    end = (until or dt.datetime.now()).date()
    while cur <= end and len(out) < 240:
        key = cur.strftime("%Y-%m")
        r = by_month.get(key, {})
        out.append(
            {
                "month": key,
                "sessions": int(r.get("sessions") or 0),
                "energy_kwh": round((r.get("energy_wh") or 0) / 1000, 3),
                "cost": round(float(r.get("cost") or 0), 2),
            }
        )
        cur = month_start(cur, -1)
    return out


def trend(values: list[float]) -> list[float]:
    """Least-squares line through the points (what the chart's trend line shows)."""
    n = len(values)
    if n < 2:
        return list(values)
    mx = (n - 1) / 2
    my = sum(values) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    slope = sum((i - mx) * (v - my) for i, v in enumerate(values)) / sxx
    return [round(my + slope * (i - mx), 3) for i in range(n)]


async def yearly(
    journal: Journal, years: int, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """kWh, sessions and cost per calendar year, the last ``years`` years up to ``until`` (now).

    Summed from the same per-month totals as :func:`monthly` (closed sessions by start).
    """
    end = until or dt.datetime.now()
    first = end.year - years + 1
    rows = await journal.monthly_totals(
        _epoch(dt.datetime(first, 1, 1)), None if until is None else _epoch(until), None
    )
    out = {
        y: {"year": y, "sessions": 0, "energy_wh": 0, "cost": 0.0}
        for y in range(first, end.year + 1)
    }
    for r in rows:
        y = int(str(r["month"])[:4])
        if y in out:
            out[y]["sessions"] += int(r.get("sessions") or 0)
            out[y]["energy_wh"] += int(r.get("energy_wh") or 0)
            out[y]["cost"] += float(r.get("cost") or 0)
    return [
        {
            "year": y["year"],
            "sessions": y["sessions"],
            "energy_kwh": round(int(y["energy_wh"]) / 1000, 3),
            "cost": round(float(y["cost"]), 2),
        }
        for y in out.values()
    ]
