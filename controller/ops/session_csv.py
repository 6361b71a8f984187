"""The sessions CSV, one writer for the owner UI's download and ``edge-station journal sessions --csv``.

Whoever opens the file in a spreadsheet sees the same columns from both.
Tokens are masked: at least four characters are always hidden, so a short
PIN never appears whole, and at most the last four are shown. A text cell
that a spreadsheet would run as a formula (a leading ``= + - @``, tab or
carriage return) is defused with a leading apostrophe. Times are ISO 8601
in the station's local time with its UTC offset. ``member`` names the member
who holds the session's card or code: the owner UI fills it in from its
accounts; the command line, which has no accounts, leaves it empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from typing import Any

from controller.core.bay import StopReason

COLUMNS = (
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
    "member",
    "auth_source",
    "ocpp_tx_id",
    "sync_state",
)

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
_SUCCESS_VALUES = frozenset(r.value for r in SUCCESS_REASONS)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HIDDEN_MIN, SHOWN_MAX = 4, 4


def mask_token(token: str) -> str:
    """``…`` and the token's last characters, never more than four, never all but four."""
    if not token:
        return ""
    shown = max(0, min(SHOWN_MAX, len(token) - HIDDEN_MIN))
    return "…" + token[-shown:] if shown else "…"


def defuse(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made plain text."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def outcome_of(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return "success" if stop_reason in _SUCCESS_VALUES else "error"


def iso_local(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _kw(wh: Any) -> float:
    return round((wh or 0) / 1000, 3)


def row(r: dict[str, Any]) -> list[Any]:
    """One journal ``sessions`` row as CSV cells, in :data:`COLUMNS` order."""
    started, stopped = r.get("started_at"), r.get("stopped_at")
    duration = round((stopped - started) / 60, 1) if started and stopped else ""
    cells = (
        r["id"],
        r["bay_id"],
        r["connector"],
        iso_local(started),
        iso_local(stopped),
        duration,
        _kw(r.get("energy_wh")),
        _kw(r.get("peak_power_w")),
        _kw(r["avg_power_w"]) if r.get("avg_power_w") is not None else "",
        r.get("mode") or "",
        r.get("state") or "",
        r.get("stop_reason") or "",
        outcome_of(r.get("stop_reason")) or "",
        r.get("cost") if r.get("cost") is not None else "",
        r.get("currency") or "",
        mask_token(str(r.get("token") or "")),
        r.get("member") or "",
        r.get("auth_source") or "",
        r.get("ocpp_tx_id") if r.get("ocpp_tx_id") is not None else "",
        r.get("sync_state") or "",
    )
    return [defuse(c) for c in cells]


def writer(buf: io.StringIO) -> Any:
    """A csv writer with the file's dialect (RFC 4180 line ends)."""
    return csv.writer(buf, lineterminator="\r\n")


def text(rows: Iterable[dict[str, Any]]) -> str:
    """The whole file: the header and ``rows`` in the order given."""
    buf = io.StringIO()
    w = writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(row(r))
    return buf.getvalue()
