"""PDF documents (fpdf2, pure Python): the session history and the pages every report shares.

A :class:`Document` has the station's name and the report's title on every
page, "Page n of N" in the footer, tables whose heading repeats on each new
page, and a legend. The history PDF lists the filtered sessions (oldest first),
the filter it applies in words, a legend of its columns and the totals; the
totals are summed from the same rows the table shows.

The PDF's built-in fonts cover Latin-1: other characters are written as their
closest plain form (an ellipsis as three dots) or a question mark.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fpdf import FPDF

from controller.core.journal import Journal
from controller.ops import session_csv
from local_ui import history

_PLAIN = {"…": "...", "–": "-", "—": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "→": "->"}


def plain(text: Any) -> str:
    """``text`` in the built-in fonts' Latin-1 (what they cannot show becomes ``?``)."""
    s = "" if text is None else str(text)
    for k, v in _PLAIN.items():
        s = s.replace(k, v)
    return s.encode("latin-1", "replace").decode("latin-1")


def local_time(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts).strftime(fmt)


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # mm
    align: str = "L"


class Document(FPDF):
    """A4 landscape or portrait, the station and title on top, page numbers at the bottom."""

    def __init__(self, station: str, title: str, *, landscape: bool = False) -> None:
        super().__init__(orientation="L" if landscape else "P", unit="mm", format="A4")
        self.station, self.title_text = plain(station), plain(title)
        self.set_title(self.title_text)
        self.set_creator("edge-station")
        self.set_auto_page_break(auto=True, margin=15)
        self._heading: Sequence[Column] | None = None
        self.add_page()

    def header(self) -> None:
        self.set_font("Helvetica", "B", 13)
        self.cell(0, 7, f"{self.station}: {self.title_text}", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)
        if self._heading is not None and self.page_no() > 1:
            self._table_heading(self._heading)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="C")

    def heading(self, text: str) -> None:
        self.ln(2)
        self.set_font("Helvetica", "B", 11)
        self.cell(0, 6, plain(text), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", "", 9)

    def paragraph(self, text: str) -> None:
        self.set_font("Helvetica", "", 9)
        self.multi_cell(0, 4.5, plain(text), new_x="LMARGIN", new_y="NEXT")

    def pairs(self, rows: Sequence[tuple[str, Any]], key_width: float = 55) -> None:
        """Two columns: what, and its value."""
        for key, value in rows:
            self.set_font("Helvetica", "B", 9)
            self.cell(key_width, 5, plain(key))
            self.set_font("Helvetica", "", 9)
            self.multi_cell(0, 5, plain(value), new_x="LMARGIN", new_y="NEXT")

    def _table_heading(self, cols: Sequence[Column]) -> None:
        self.set_font("Helvetica", "B", 8)
        self.set_fill_color(230, 236, 245)
        for c in cols:
            self.cell(c.width, 6, plain(c.title), border="B", align=c.align, fill=True)
        self.ln()
        self.set_font("Helvetica", "", 8)

    def rows_table(self, cols: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        """Rows of cells (clipped to their column); the heading repeats on every new page."""
        self._table_heading(cols)
        self._heading = cols
        for row in rows:
            for c, v in zip(cols, row, strict=True):
                text = plain(v)
                if self.get_string_width(text) > c.width - 1.5:
                    while text and self.get_string_width(text + "...") > c.width - 1.5:
                        text = text[:-1]
                    text += "..."
                self.cell(c.width, 5, text, align=c.align)
            self.ln()
        self._heading = None

    def legend(self, items: Sequence[tuple[str, str]]) -> None:
        self.heading("Legend")
        self.pairs(items, key_width=40)


HISTORY_COLUMNS = (
    Column("Start", 30),
    Column("End", 30),
    Column("Bay", 22),
    Column("Mode", 18),
    Column("Energy kWh", 22, "R"),
    Column("Duration", 20, "R"),
    Column("Cost", 20, "R"),
    Column("Card", 20),
    Column("Outcome", 22),
    Column("Reason", 40),
    Column("Session", 33),
)

HISTORY_LEGEND = (
    ("Start, End", "Local time the session began and ended; no end: still charging."),
    ("Energy kWh", "From the meter's counter at start and stop, in kilowatt hours."),
    ("Duration", "Hours and minutes from start to end."),
    ("Cost", "What the tariff at the start charged for the session."),
    ("Card", "The card or code used, masked: only its last characters are shown."),
    ("Outcome", "Completed: the driver or the owner ended it. Problem: a fault ended it."),
    ("Reason", "Why the session ended, as the station recorded it."),
    ("Totals", "Sessions, energy and cost of every row in this report."),
)


def filter_text(f: history.SessionFilter) -> str:
    """The applied filter as a sentence."""
    parts: list[str] = []
    if f.since is not None:
        parts.append(f"started on or after {f.since:%Y-%m-%d %H:%M}")
    if f.until is not None:
        parts.append(f"started before {f.until:%Y-%m-%d %H:%M}")
    if f.bay_id:
        parts.append(f"at bay {f.bay_id}")
    if f.mode:
        parts.append(f"charged in {f.mode} mode")
    if f.stop_reason:
        parts.append(f"ended with: {REASONS.get(f.stop_reason, f.stop_reason)}")
    if f.outcome:
        parts.append("ended normally" if f.outcome == "success" else "ended by a problem")
    if f.state:
        parts.append("still open" if f.state == "open" else "finished")
    if not parts:
        return "All sessions in the journal."
    return "Sessions " + ", ".join(parts) + "."


def _duration(r: dict[str, Any]) -> str:
    started, stopped = r.get("started_at"), r.get("stopped_at")
    if not started or not stopped:
        return ""
    mins = round((float(stopped) - float(started)) / 60)
    return f"{mins // 60} h {mins % 60:02d} min"


REASONS = {
    "Local": "Stopped at the station",
    "Remote": "Stopped remotely",
    "EVDisconnected": "Vehicle unplugged",
    "EmergencyStop": "Emergency stop",
    "PowerLoss": "Power loss",
    "Reboot": "Station restarted",
    "SoftReset": "Station reset",
    "HardReset": "Station reset",
    "UnlockCommand": "Unlocked remotely",
    "DeAuthorized": "Card refused",
    "Other": "Other",
    "QuotaReached": "Quota reached",
    "ConnectionTimeout": "Vehicle did not arrive",
    "Owner": "Stopped by the owner",
}


def _outcome(r: dict[str, Any]) -> str:
    o = history.outcome_of(r.get("stop_reason"))
    return {"success": "Completed", "error": "Problem"}.get(o or "", "Charging")


def history_row(r: dict[str, Any]) -> list[Any]:
    energy = int(r.get("energy_wh") or 0)
    cost = r.get("cost")
    return [
        local_time(r.get("started_at")),
        local_time(r.get("stopped_at")),
        r.get("bay_id", ""),
        r.get("mode") or "",
        f"{max(0, energy) / 1000:.3f}",
        _duration(r),
        "" if cost is None else f"{float(cost):.2f} {r.get('currency') or ''}".strip(),
        session_csv.mask_token(str(r.get("token") or "")),
        _outcome(r),
        REASONS.get(str(r.get("stop_reason") or ""), str(r.get("stop_reason") or "")),
        r.get("id", ""),
    ]


@dataclass
class Totals:
    sessions: int = 0
    energy_wh: int = 0
    cost: float = 0.0
    uncosted: int = 0

    def add(self, r: dict[str, Any]) -> None:
        self.sessions += 1
        self.energy_wh += max(0, int(r.get("energy_wh") or 0))
        if r.get("cost") is None:
            self.uncosted += 1
        else:
            self.cost += float(r["cost"])


MAX_PDF_ROWS = 20_000
"""A history PDF lists at most this many sessions (the totals still cover all of them)."""


async def history_pdf(
    journal: Journal,
    f: history.SessionFilter,
    *,
    station: str,
    currency: str,
    now: float,
    batch: int = 500,
) -> tuple[bytes, Totals]:
    """The filtered sessions as a PDF (oldest first), and the totals it prints.

    The rows are read here; the PDF is laid out in a thread (it is CPU work).
    """
    totals = Totals()
    rows: list[list[Any]] = []
    kw = f.journal_filter()
    offset = 0
    while True:
        got = await journal.sessions(**kw, limit=batch, offset=offset, newest_first=False)
        for r in got:
            totals.add(r)
            if len(rows) < MAX_PDF_ROWS:
                rows.append(history_row(r))
        if len(got) < batch:
            break
        offset += batch
    pdf = await asyncio.to_thread(_history_doc, rows, totals, f, station, currency, now)
    return pdf, totals


def _history_doc(
    rows: list[list[Any]],
    totals: Totals,
    f: history.SessionFilter,
    station: str,
    currency: str,
    now: float,
) -> bytes:
    doc = Document(station, "Charging history", landscape=True)
    doc.pairs([("Filter", filter_text(f)), ("Created", local_time(now, "%Y-%m-%d %H:%M:%S"))])
    doc.legend(HISTORY_LEGEND)
    doc.heading("Sessions")
    if rows:
        doc.rows_table(HISTORY_COLUMNS, rows)
    else:
        doc.paragraph("No session matches this filter.")
    if totals.sessions > len(rows):
        doc.paragraph(
            f"Only the first {len(rows)} of {totals.sessions} sessions are listed: narrow"
            " the filter (for example to one month) to see the others. The totals cover all."
        )
    doc.heading("Totals")
    uncosted = f" ({totals.uncosted} without a cost)" if totals.uncosted else ""
    doc.pairs(
        [
            ("Sessions", str(totals.sessions)),
            ("Energy", f"{totals.energy_wh / 1000:.3f} kWh"),
            ("Cost", f"{totals.cost:.2f} {currency}{uncosted}"),
        ]
    )
    return bytes(doc.output())
