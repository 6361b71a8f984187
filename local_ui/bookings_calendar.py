"""The week calendar of one bay's bookings, rendered on the station as an HTML fragment.

Seven days from a Monday, one row per hour in the station's local time. A free
hour still to come is a button carrying its start (Unix seconds) for the page to
book; an hour a booking covers shows that it is booked (the token masked, no
ids); hours gone by are greyed. No script, no CDN: the page inserts the
fragment as it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from controller.ops.session_csv import mask_token

ACTIVE = ("scheduled", "placed")


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _ts(d: dt.datetime) -> float:
    return d.astimezone().timestamp()


def calendar_html(
    bay_id: str, monday: dt.date, bookings: Iterable[Mapping[str, Any]], now: float
) -> str:
    """The week from ``monday`` for ``bay_id``; ``bookings`` may hold other bays' and states."""
    days = [monday + dt.timedelta(days=i) for i in range(7)]
    week_from = _ts(dt.datetime.combine(monday, dt.time()))
    week_to = _ts(dt.datetime.combine(monday + dt.timedelta(days=7), dt.time()))
    mine = [
        b
        for b in bookings
        if b.get("bay_id") == bay_id
        and b.get("state") in ACTIVE
        and float(b["start_at"]) < week_to
        and float(b["start_at"]) + float(b["hold_s"]) > week_from
    ]
    head = "".join(f'<th scope="col">{d:%a}<br>{d.day} {d:%b}</th>' for d in days)
    rows = []
    for hour in range(24):
        cells = [f'<th scope="row">{hour:02d}:00</th>']
        for d in days:
            start = _ts(dt.datetime.combine(d, dt.time(hour)))
            end = start + 3600
            taken = next(
                (
                    b
                    for b in mine
                    if float(b["start_at"]) < end
                    and float(b["start_at"]) + float(b["hold_s"]) > start
                ),
                None,
            )
            if taken is not None:
                b_from = dt.datetime.fromtimestamp(float(taken["start_at"]))
                b_to = dt.datetime.fromtimestamp(float(taken["start_at"]) + float(taken["hold_s"]))
                tip = f"Booked {b_from:%H:%M}–{b_to:%H:%M} for {mask_token(str(taken['token']))}"
                cells.append(
                    f'<td class="booked" title="{escape(tip)}" data-booked="{escape(tip)}">'
                    "Booked</td>"
                )
            elif end <= now:
                cells.append('<td class="past"></td>')
            else:
                label = f"Book {d:%a} {d.day} {d:%b} {hour:02d}:00"
                cells.append(
                    f'<td><button type="button" class="slot" data-start="{max(start, now):.0f}"'
                    f' aria-label="{escape(label)}">+</button></td>'
                )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    title = f"Bay {bay_id}, week of {monday.day} {monday:%B %Y}"
    return (
        f'<table class="cal" data-bay="{escape(bay_id)}" data-week="{monday.isoformat()}">'
        f"<caption>{escape(title)}</caption>"
        f'<thead><tr><th scope="col">Time</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
