"""A bay's view is plain JSON as built, in every phase: no copy through ``jsonable`` needed.

The kiosk asks for every bay's view each second (and the live stream sends them), so
``bay_view`` returns the snapshot as it is; this walks bays in each phase a station shows
(idle, offline, waiting for a plug, charging with a quota, held, faulted, unavailable,
a locker) and checks every value's exact type. The kiosk's receipt keys are remembered
per session, and made again when the secret changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from controller.core.bay import FaultRaised, Hold, HoldPlaced, Phase
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.station import Station
from controller.ports import PilotState
from local_ui.server import create_app
from local_ui.views import bay_view
from tests.support.fake_nodes import FakeHub, FakeNode
from tests.support.passive import passive_station, report

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, where: str = "view") -> list[str]:
    """Where ``value`` holds anything but JSON's own types (exact types: no tuple, no enum)."""
    if type(value) is dict:
        bad = [f"{where}: key {k!r}" for k in value if type(k) is not str]
        return bad + [p for k, v in value.items() for p in _plain(v, f"{where}.{k}")]
    if type(value) is list:
        return [p for i, v in enumerate(value) for p in _plain(v, f"{where}[{i}]")]
    return [] if type(value) in _PLAIN else [f"{where}: {type(value).__name__}"]


def test_the_walk_finds_what_is_not_plain() -> None:
    class Colour(str):
        pass

    assert _plain({"a": [1, 2.0, "x", None, True], "b": {"c": []}}) == []
    assert _plain({"a": (1, 2), "b": [Colour("red")], 3: 1}) == [
        "view: key 3",
        "view.a: tuple",
        "view.b[0]: Colour",
    ]


async def test_every_phase_shows_plain_json(tmp_path: Path) -> None:
    kinds = ["evse"] * 6 + ["locker"]
    cfg = parse_config(
        {
            "station": {"id": "plain", "data_dir": str(tmp_path)},
            "buses": [{"id": "b1"}],
            "bays": [
                {"id": f"bay{i}", "connector": i, "bus": "b1", "address": i, "kind": kind}
                for i, kind in enumerate(kinds, 1)
            ],
        }
    )
    async with passive_station(cfg, tmp_path / "journal.sqlite3") as (station, _):
        app = create_app(station)
        ctx = app.state.ui
        await ctx.ensure_ready()
        b = station.bays

        async def reports(bay_id: str, amps: float, pilot: PilotState) -> None:
            await station.nodes.take(report(bay_id, station.clock.monotonic(), amps, pilot))

        # bay1 stays offline (never reported); the others report.
        for i in range(2, 8):
            await reports(f"bay{i}", 0.0, PilotState.A)
        assert (await station.commands.present_token("bay3", "CARD3")).ok  # waits for a plug
        assert (await station.commands.present_token("bay4", "CARD4", quota_wh=5000)).ok
        await reports("bay4", 16.0, PilotState.C)  # charging with a quota
        await station.runner.apply("bay5", FaultRaised("relay_stuck", stop=True))
        assert (await station.commands.set_availability("bay6", False)).ok
        await station.runner.apply(
            "bay7", HoldPlaced(Hold("h1", "CARD7", station.clock.wall() + 600))
        )
        phases = {rt.cfg.id: rt.state.phase for rt in b.values()}
        assert phases["bay4"] is Phase.CHARGING and phases["bay7"] is Phase.HELD
        assert b["bay5"].state.fault == "relay_stuck" and not b["bay1"].state.node_online
        assert not b["bay6"].state.available
        for rt in b.values():
            for public in (False, True):
                view = bay_view(station, rt, public=public)
                view = ctx.kiosk_bay(view) if public else view
                assert _plain(view) == [], (rt.cfg.id, public)
                assert json.loads(json.dumps(view)) == view
        shown = ctx.kiosk_bay(bay_view(station, b["bay4"], public=True))["session"]
        sess = b["bay4"].state.session
        assert sess is not None and shown["receipt_key"] == ctx.receipt_key(sess.session_id)


async def test_receipt_keys_are_remembered_and_follow_the_secret(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"id": "keys", "data_dir": str(tmp_path)},
            "buses": [{"id": "b1"}],
            "bays": [{"id": "bay1", "connector": 1, "bus": "b1", "address": 1}],
        }
    )
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        ctx = create_app(Station(cfg, journal, hubs={"b1": FakeHub([FakeNode("bay1")])})).state.ui

        def made(secret: bytes, sid: str) -> str:
            return hmac.new(secret, b"receipt\0" + sid.encode(), hashlib.sha256).hexdigest()[:32]

        first = ctx.receipt_key("s1")
        assert first == made(ctx.kiosk_secret, "s1") == ctx.receipt_key("s1")
        assert ctx.check_receipt_key("s1", first)
        ctx.kiosk_secret = secrets.token_bytes(32)  # as ensure_ready loads the kept one
        assert ctx.receipt_key("s1") == made(ctx.kiosk_secret, "s1") != first
        assert not ctx.check_receipt_key("s1", first)
    finally:
        await journal.close()
