"""Usage per member: the sessions, energy and cost of each member in a period.

A session is a member's when it was started with one of the cards or codes the
member holds now (their tokens in the UI's accounts): a card handed to another
member takes its history along. Sessions started with a card no member holds
are counted together, so the rows add up to the station's totals for the same
period — the same sessions as the monthly statistics (closed, counter not gone
backwards, by start time).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.core.journal import Journal
from controller.ops import session_csv

NOT_A_MEMBER = "Cards of no member"
CSV_COLUMNS = (
    "member",
    "sessions",
    "energy_kwh",
    "cost",
    "currency",
    "sessions_without_cost",
    "period_start",
    "period_end",
)


@dataclass
class MemberUsage:
    member: str | None
    """The member's user name; None for the sessions of cards no member holds."""
    sessions: int = 0
    energy_wh: int = 0
    cost: float = 0.0
    uncosted: int = 0

    def view(self, currency: str) -> dict[str, Any]:
        return {
            "member": self.member,
            "label": self.member if self.member is not None else NOT_A_MEMBER,
            "sessions": self.sessions,
            "energy_kwh": round(self.energy_wh / 1000, 3),
            "cost": round(self.cost, 2),
            "currency": currency,
            "sessions_without_cost": self.uncosted,
        }


async def per_member(
    journal: Journal,
    token_members: Mapping[str, str],
    members: Iterable[str],
    since: float,
    until: float | None,
) -> list[MemberUsage]:
    """One row per member (those without sessions too), by name, then the cards of no member."""
    rows = {m: MemberUsage(m) for m in sorted(members)}
    others = MemberUsage(None)
    for r in await journal.token_totals(since, until):
        who = token_members.get(str(r["token"]))
        u = rows.setdefault(who, MemberUsage(who)) if who is not None else others
        u.sessions += int(r["sessions"] or 0)
        u.energy_wh += int(r["energy_wh"] or 0)
        u.cost += float(r["cost"] or 0)
        u.uncosted += int(r["uncosted"] or 0)
    return [*sorted(rows.values(), key=lambda u: str(u.member)), others]


def csv_text(rows: list[MemberUsage], currency: str, since: float, until: float | None) -> str:
    """The usage per member as CSV (the sessions CSV's dialect, cells defused)."""
    buf = io.StringIO()
    w = session_csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    start, end = session_csv.iso_local(since), session_csv.iso_local(until)
    for u in rows:
        v = u.view(currency)
        cells = [
            v["label"],
            v["sessions"],
            v["energy_kwh"],
            v["cost"],
            currency,
            v["sessions_without_cost"],
            start,
            end,
        ]
        w.writerow([session_csv.defuse(c) for c in cells])
    return buf.getvalue()
