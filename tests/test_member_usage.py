"""Usage per member: statistics, the per-member CSV, the member column of the sessions CSV,
and a member's own usage — checked against known sessions in a real journal.

The sessions are written into the station's journal (tests.support.report_data) with
energies and costs chosen so that every figure below is worked out by hand: sessions
before the period, at its exclusive end, still open, or of another member must not
count, and the rows must add up to the monthly statistics of the same period.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from controller.core.bay import StopReason
from local_ui.messages import human
from local_ui.usage import CSV_COLUMNS, NOT_A_MEMBER
from tests.support.report_data import Seeded, seed
from tests.test_api_rig import add_user, api_client, running_station, setup_owner

UNTIL = "2026-11-15T00:00:00"  # local time; the period of 2 months is 1 Oct – 15 Nov
Q = f"months=2&until={UNTIL}"


def _t(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi).timestamp()


def _s(
    sid: str, token: str, start: float, wh: int, cost: float | None, *, closed: bool = True
) -> Seeded:
    bay = "bay1" if closed else "locker1"  # bay1 stays free for a real session
    return Seeded(sid, bay, token, start, start + 3600 if closed else None, wh, cost, "Local")


SESSIONS = [
    _s("ann-oct", "A1", _t(2026, 10, 3, 10), 5000, 1.50),
    _s("ann-nov", "A2", _t(2026, 11, 2, 9), 12345, 3.70),
    _s("ann-sep", "A1", _t(2026, 9, 30, 23), 9999, 3.00),  # before the period
    _s("ann-open", "A1", _t(2026, 11, 5, 8), 3000, None, closed=False),  # still open
    _s("bob-oct", "B1", _t(2026, 10, 20, 18), 8000, None),  # no cost
    _s("bob-nov", "B1", _t(2026, 11, 14, 23, 59), 1000, 0.30),
    _s("bob-end", "B1", _t(2026, 11, 15), 7777, 2.33),  # at the period's end: out
    _s("nobody", "X9", _t(2026, 10, 10, 12), 2500, 0.75),  # a card no member holds
]


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def test_usage_per_member_adds_up_and_each_member_sees_only_their_own(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path) as rig:
        await seed(rig.journal, SESSIONS)
        owner = await api_client(rig.station)
        await setup_owner(owner)
        ann = await add_user(owner, "ann", "member")
        bob = await add_user(owner, "bob", "member")
        await add_user(owner, "carl", "member")  # a member with no card yet
        viewer = await add_user(owner, "vic", "viewer")
        for who, toks in (("ann", ["A1", "A2"]), ("bob", ["B1"])):
            r = await owner.put(f"/api/v1/members/{who}/tokens", json={"tokens": toks})
            assert r.status_code == 200, r.text

        # The owner's statistics: one row per member, then the cards of no member.
        r = await viewer.get(f"/api/v1/stats/members?{Q}")
        assert r.status_code == 200, r.text
        rows = {m["label"]: m for m in r.json()["members"]}
        assert list(rows) == ["ann", "bob", "carl", NOT_A_MEMBER]
        got = {k: (v["sessions"], v["energy_kwh"], v["cost"]) for k, v in rows.items()}
        assert got == {
            "ann": (2, 17.345, 5.20),
            "bob": (2, 9.0, 0.30),
            "carl": (0, 0.0, 0.0),
            NOT_A_MEMBER: (1, 2.5, 0.75),
        }
        assert rows["bob"]["sessions_without_cost"] == 1
        assert r.json()["since"] == _t(2026, 10, 1) and r.json()["until"] == _t(2026, 11, 15)
        # ... which add up to the monthly statistics of the same period.
        totals = (await owner.get(f"/api/v1/stats/monthly?{Q}")).json()["totals"]
        assert totals["sessions"] == sum(v[0] for v in got.values()) == 5
        assert totals["energy_kwh"] == round(sum(v[1] for v in got.values()), 3) == 28.845
        assert totals["cost"] == round(sum(v[2] for v in got.values()), 2) == 6.25

        # The same as CSV.
        r = await owner.get(f"/api/v1/stats/members.csv?{Q}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.splitlines()[0] == ",".join(CSV_COLUMNS)
        table = {row["member"]: row for row in _csv(r.text)}
        assert table["ann"]["sessions"] == "2" and table["ann"]["energy_kwh"] == "17.345"
        assert table["ann"]["cost"] == "5.2" and table["ann"]["currency"] == "EUR"
        assert table["bob"]["sessions_without_cost"] == "1"
        assert table[NOT_A_MEMBER]["energy_kwh"] == "2.5"
        assert table["ann"]["period_start"].startswith("2026-10-01T00:00:00")
        assert table["ann"]["period_end"].startswith("2026-11-15T00:00:00")

        # A member's own usage: their months and totals, nobody else's.
        r = await ann.get(f"/api/v1/me/usage?{Q}")
        assert r.status_code == 200, r.text
        mine = r.json()
        assert [
            (m["month"], m["sessions"], m["energy_kwh"], m["cost"]) for m in mine["months"]
        ] == [
            ("2026-10", 1, 5.0, 1.5),
            ("2026-11", 1, 12.345, 3.7),
        ]
        assert mine["totals"] == {
            "sessions": 2,
            "energy_kwh": 17.345,
            "cost": 5.2,
            "currency": "EUR",
        }
        bob_usage = (await bob.get(f"/api/v1/me/usage?{Q}")).json()["totals"]
        assert (bob_usage["sessions"], bob_usage["energy_kwh"]) == (2, 9.0)
        r = await ann.get(f"/api/v1/me/usage.csv?{Q}")
        assert r.status_code == 200
        # Her sessions of the period, the open one too (listed, not summed); none of Bob's.
        assert [(x["session_id"], x["member"], x["state"]) for x in _csv(r.text)] == [
            ("ann-oct", "ann", "closed"),
            ("ann-nov", "ann", "closed"),
            ("ann-open", "ann", "open"),
        ]
        # Nor the station-wide figures.
        for path in (f"/api/v1/stats/members?{Q}", f"/api/v1/stats/members.csv?{Q}"):
            r = await ann.get(path)
            assert r.status_code == 403 and human(r.json()["message"]), (path, r.text)
        assert (await owner.get(f"/api/v1/me/usage?{Q}")).status_code == 403

        # The sessions CSV names each session's member; a real session started with a
        # member's card counts as theirs too.
        out = await rig.station.commands.present_token("bay1", "A2", preauthorized="test")
        assert out.ok and out.session_id, out
        assert (await rig.station.commands.stop_session(out.session_id, StopReason.LOCAL)).ok
        r = await owner.get("/api/v1/sessions.csv")
        members = {x["session_id"]: x["member"] for x in _csv(r.text)}
        assert members == {
            "ann-sep": "ann",
            "ann-oct": "ann",
            "nobody": "",
            "bob-oct": "bob",
            "ann-nov": "ann",
            "ann-open": "ann",
            "bob-nov": "bob",
            "bob-end": "bob",
            out.session_id: "ann",
        }
        # A card handed to another member takes its sessions along.
        await owner.put("/api/v1/members/ann/tokens", json={"tokens": ["A1"]})
        await owner.put("/api/v1/members/bob/tokens", json={"tokens": ["B1", "A2"]})
        rows = {
            m["label"]: m for m in (await owner.get(f"/api/v1/stats/members?{Q}")).json()["members"]
        }
        assert (rows["ann"]["sessions"], rows["ann"]["energy_kwh"]) == (1, 5.0)
        assert (rows["bob"]["sessions"], rows["bob"]["energy_kwh"]) == (3, 21.345)
