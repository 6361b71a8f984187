"""Session history queries: filters, pagination, CSV rows, monthly statistics.

Reads go through the journal's reader connection (``Journal.query``); the
filters add an ``outcome`` (success / error, from the stop reason) that the
journal's own helpers do not have.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
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

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("started_at >= ?")
            params.append(_epoch(self.since))
        if self.until is not None:
            clauses.append("started_at < ?")
            params.append(_epoch(self.until))
        for col, val in (
            ("bay_id", self.bay_id),
            ("mode", self.mode),
            ("stop_reason", self.stop_reason),
            ("state", self.state),
        ):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        if self.outcome is not None:
            reasons = sorted(SUCCESS_REASONS if self.outcome == "success" else ERROR_REASONS)
            clauses.append(f"state = 'closed' AND stop_reason IN ({','.join('?' * len(reasons))})")
            params.extend(r.value for r in reasons)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _epoch(d: dt.datetime) -> float:
    if d.tzinfo is None:
        d = d.astimezone()  # naive means the station's local time
    return d.timestamp()


outcome_of = session_csv.outcome_of


async def page(
    journal: Journal, f: SessionFilter, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    where, params = f.where()
    total = (await journal.query(f"SELECT count(*) AS n FROM sessions {where}", params))[0]["n"]
    rows = await journal.query(
        f"SELECT * FROM sessions {where} ORDER BY started_at DESC, id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return int(total), rows


async def csv_chunks(journal: Journal, f: SessionFilter, batch: int = 500) -> AsyncIterator[bytes]:
    """The sessions CSV (controller.ops.session_csv), streamed a batch of rows at a time."""
    buf = io.StringIO()
    w = session_csv.writer(buf)
    w.writerow(session_csv.COLUMNS)
    where, params = f.where()
    offset = 0
    while True:
        rows = await journal.query(
            f"SELECT * FROM sessions {where} ORDER BY started_at, id LIMIT ? OFFSET ?",
            [*params, batch, offset],
        )
        for r in rows:
            w.writerow(session_csv.row(r))
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
    journal: Journal, since: dt.datetime, until: dt.datetime | None, bay_id: str | None
) -> list[dict[str, Any]]:
    # Sessions still open, or with a counter that went backwards, stay out of the aggregates.
    clauses = ["state = 'closed'", "energy_wh >= 0", "started_at >= ?"]
    params: list[Any] = [_epoch(since)]
    if until is not None:
        clauses.append("started_at < ?")
        params.append(_epoch(until))
    if bay_id is not None:
        clauses.append("bay_id = ?")
        params.append(bay_id)
    rows = await journal.query(
        "SELECT strftime('%Y-%m', started_at, 'unixepoch', 'localtime') AS month,"
        " count(*) AS sessions, sum(energy_wh) AS energy_wh, sum(cost) AS cost,"
        " sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) AS uncosted"
        f" FROM sessions WHERE {' AND '.join(clauses)} GROUP BY month ORDER BY month",
        params,
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
