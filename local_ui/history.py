"""Session history queries: filters, pagination, CSV rows, monthly statistics.

Reads go through the journal's reader connection (``Journal.query``); the
filters add an ``outcome`` (success / error, from the stop reason) that the
journal's own helpers do not have.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from controller.bay import StopReason
from controller.journal import Journal
from local_ui.views import iso_local

# The dates a filter may name: local-time arithmetic fails near year 1 and 9999.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2100

SUCCESS_REASONS = frozenset(
    {
        StopReason.LOCAL,
        StopReason.REMOTE,
        StopReason.EV_DISCONNECTED,
        StopReason.QUOTA,
        StopReason.OWNER,
        StopReason.UNLOCK_COMMAND,
        StopReason.DEAUTHORIZED,
    }
)
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


def outcome_of(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return "success" if stop_reason in {r.value for r in SUCCESS_REASONS} else "error"


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


CSV_COLUMNS = (
    "session_id",
    "bay_id",
    "connector",
    "started_at",
    "stopped_at",
    "duration_min",
    "energy_kwh",
    "peak_power_kw",
    "avg_power_kw",
    "mode",
    "state",
    "stop_reason",
    "outcome",
    "cost",
    "currency",
    "token",
    "auth_source",
    "ocpp_tx_id",
    "sync_state",
)


def _cell(v: Any) -> Any:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: neutralise it.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def csv_row(r: dict[str, Any]) -> list[Any]:
    started, stopped = r.get("started_at"), r.get("stopped_at")
    duration = round((stopped - started) / 60, 1) if started and stopped else ""
    tok = str(r.get("token") or "")
    return [
        _cell(v)
        for v in (
            r["id"],
            r["bay_id"],
            r["connector"],
            iso_local(started),
            iso_local(stopped),
            duration,
            round((r.get("energy_wh") or 0) / 1000, 3),
            round((r.get("peak_power_w") or 0) / 1000, 3),
            round((r.get("avg_power_w") or 0) / 1000, 3)
            if r.get("avg_power_w") is not None
            else "",
            r.get("mode") or "",
            r.get("state") or "",
            r.get("stop_reason") or "",
            outcome_of(r.get("stop_reason")) or "",
            r.get("cost") if r.get("cost") is not None else "",
            r.get("currency") or "",
            tok if len(tok) <= 4 else "…" + tok[-4:],
            r.get("auth_source") or "",
            r.get("ocpp_tx_id") if r.get("ocpp_tx_id") is not None else "",
            r.get("sync_state") or "",
        )
    ]


async def csv_chunks(journal: Journal, f: SessionFilter, batch: int = 500) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    where, params = f.where()
    offset = 0
    while True:
        rows = await journal.query(
            f"SELECT * FROM sessions {where} ORDER BY started_at, id LIMIT ? OFFSET ?",
            [*params, batch, offset],
        )
        for r in rows:
            w.writerow(csv_row(r))
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
