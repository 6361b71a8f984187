"""The bookings week calendar: rendered by the station, free hours to tap, bookings shown
without tokens or ids (issue 16)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from tests.test_api_rig import api_client, running_station, setup_owner


async def test_week_calendar_shows_bookings_of_the_bay_and_free_hours(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await api_client(rig.station)
        await setup_owner(owner)
        now = rig.station.clock.wall()
        day = dt.date.fromtimestamp(now) + dt.timedelta(days=8)  # next week, whatever today is
        start = dt.datetime.combine(day, dt.time(10)).astimezone().timestamp()
        body = {"bay_id": "bay1", "token": "04A1B2C3", "start_at": start, "hold_s": 5400}
        r = await owner.post("/api/v1/bookings", json=body)
        assert r.status_code == 201, r.text
        r = await owner.post("/api/v1/bookings", json={**body, "bay_id": "locker1"})
        assert r.status_code == 201, r.text
        booking_id = (await owner.get("/api/v1/bookings")).json()["bookings"][0]["id"]
        r = await owner.get(f"/api/v1/bookings/calendar?bay_id=bay1&week={day.isoformat()}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        assert "<script" not in html and "http" not in html  # nothing to fetch, nothing to run
        assert html.count('class="booked"') == 2, html  # 10:00–11:30 covers two hours
        assert "04A1B2C3" not in html and booking_id not in html
        assert "Booked 10:00–11:30 for …B2C3" in html
        assert html.split("<tbody>")[1].count("<tr>") == 24
        slots = [float(x) for x in re.findall(r'data-start="(\d+)"', html)]
        assert len(slots) == 7 * 24 - 2 and all(s > now for s in slots)
        # This week: the hours gone by cannot be booked.
        r = await owner.get("/api/v1/bookings/calendar?bay_id=bay1")
        past = r.text.count('class="past"')
        hours_gone = int(
            (
                now
                - dt.datetime.combine(
                    dt.date.fromtimestamp(now)
                    - dt.timedelta(days=dt.date.fromtimestamp(now).weekday()),
                    dt.time(),
                )
                .astimezone()
                .timestamp()
            )
            // 3600
        )
        assert past == hours_gone, (past, hours_gone)
        r = await owner.get("/api/v1/bookings/calendar?bay_id=nope")
        assert r.status_code == 404
        r = await owner.get("/api/v1/bookings/calendar")
        assert r.status_code == 422 and r.json()["message"] == "Choose a bay."
