"""The station supervisor with a real journal and a fake node hub: flows, recovery, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.core.auth import free_vend_step
from controller.core.bay import StopReason
from controller.core.bays import UnknownBay
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.outcome import UnknownSession
from controller.core.station import Station
from controller.ports import NodeLink, PilotState
from tests.support.fake_nodes import FakeHub
from tests.support.watch import BayWatcher


def make_cfg(tmp: Path, kinds: tuple[str, ...] = ("evse", "locker")) -> StationConfig:
    return parse_config(
        {
            "station": {"id": "test-1", "data_dir": str(tmp)},
            "timers": {"tick_s": 0.05, "lease_s": 1.0},
            "tariff": {"per_kwh": 0.5, "per_session": 1.0},
            "buses": [{"id": "bus1", "port": "/dev/null"}],
            "bays": [
                {"id": f"b{i + 1}", "connector": i + 1, "kind": k, "bus": "bus1", "address": i + 1}
                for i, k in enumerate(kinds)
            ],
        }
    )


class Rig(BayWatcher):
    def __init__(self, station: Station, hub: FakeHub, journal: Journal) -> None:
        super().__init__(station)
        self.hub, self.journal = hub, journal


@contextlib.asynccontextmanager
async def running(tmp: Path, kinds: tuple[str, ...] = ("evse", "locker")) -> AsyncIterator[Rig]:
    cfg = make_cfg(tmp, kinds)
    journal = await Journal.open(tmp / "journal.sqlite3")
    hub = FakeHub()
    station = Station(cfg, journal, hubs={"bus1": hub})
    station.authorizer.add(free_vend_step())
    await station.restore()
    task = asyncio.create_task(station.run())
    try:
        await asyncio.wait_for(hub.running.wait(), 5)
        yield Rig(station, hub, journal)
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 5)
        await journal.close()


async def test_evse_session_end_to_end(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        hub, st = rig.hub, rig.station
        hub.telemetry("b1", energy_wh=1000, pilot=PilotState.B)
        await rig.status("b1", "Available")
        out = await st.commands.present_token("b1", "CARD-1")
        assert out.ok and out.session_id
        relay, amps, lease = await hub.nodes["b1"].wait_output(lambda o: o[0])
        assert (relay, amps, lease) == (True, 16.0, 1.0)
        hub.telemetry("b1", current_a=16, energy_wh=1000, relay_on=True, pilot=PilotState.C)
        await rig.status("b1", "Charging")
        # (Counter steps within what 16 A on three phases can deliver meanwhile: a few Wh.)
        hub.telemetry("b1", current_a=16, energy_wh=1010, relay_on=True, pilot=PilotState.C)
        await rig.energy("b1", 10)
        stop = await st.commands.present_token("b1", "CARD-1")  # same card again stops it
        assert stop.ok and stop.code == "stopped"
        await hub.nodes["b1"].wait_output(lambda o: not o[0])
        row = await rig.journal.session(out.session_id)
        assert row is not None
        assert row["state"] == "closed" and row["energy_wh"] == 10
        assert row["meter_start_wh"] == 1000 and row["meter_stop_wh"] == 1010
        assert row["stop_reason"] == "Local"
        assert row["cost"] == pytest.approx(1.0 + 0.5 * 0.010, abs=0.01)
        outbox = await rig.journal.query("SELECT action, payload FROM outbox ORDER BY id")
        assert [o["action"] for o in outbox] == ["StartTransaction", "StopTransaction"]
        assert json.loads(outbox[1]["payload"])["meterStop"] == 1010


async def test_refusals_are_clear(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st = rig.station
        out = await st.commands.present_token("b1", "X")  # node never spoke: faulted
        assert not out.ok and out.code == "bay_faulted"
        with pytest.raises(UnknownBay):
            await st.commands.present_token("nope", "X")
        with pytest.raises(UnknownSession):
            await st.commands.stop_session("does-not-exist", StopReason.LOCAL)
        rig.hub.telemetry("unknown-node", energy_wh=5)  # logged, ignored
        rig.hub.telemetry("b1")
        await rig.status("b1", "Available")
        assert (await st.commands.present_token("b1", "A")).ok
        busy = await st.commands.present_token("b1", "B")
        assert not busy.ok and busy.code == "bay_in_use"


async def test_journal_unwritable_refuses_new_sessions_keeps_running_one(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1")
        hub.telemetry("b2", door_closed=True)
        await rig.status("b1", "Available")
        await rig.status("b2", "Available")
        first = await st.commands.present_token("b1", "A")
        assert first.ok
        await rig.journal._w.execute("PRAGMA query_only=ON")  # the disk turned read-only
        out = await st.commands.present_token("b2", "B")
        assert not out.ok
        assert "journal" in st.safety.blockers
        assert st.bays["b1"].state.session is not None  # the running session is kept
        await rig.journal._w.execute("PRAGMA query_only=OFF")


async def test_node_offline_faults_bay_and_keeps_session(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", pilot=PilotState.B)
        await rig.status("b1", "Available")
        out = await st.commands.present_token("b1", "A")
        hub.emit(NodeLink("b1", 0.0, online=False, reason="heartbeat lost"))
        await rig.status("b1", "Faulted")
        assert st.bays["b1"].state.session is not None
        hub.telemetry("b1", current_a=10, energy_wh=10, relay_on=True, pilot=PilotState.C)
        await rig.status("b1", "Charging")
        row = await rig.journal.session(out.session_id or "")
        assert row is not None and row["state"] == "open"


async def test_locker_flow_commands_lock(tmp_path: Path) -> None:
    async with running(tmp_path, ("locker",)) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", door_closed=True, locked=True)
        await rig.status("b1", "Available")
        out = await st.commands.present_token("b1", "BIKE")
        assert out.ok
        node = hub.nodes["b1"]
        async with asyncio.timeout(5):
            while not node.locks:
                node.changed.clear()
                await node.changed.wait()
        assert node.locks[-1] is False


@pytest.mark.parametrize(("relay_on", "expected"), [(True, "open"), (False, "closed")])
async def test_recovery_resumes_or_closes(tmp_path: Path, relay_on: bool, expected: str) -> None:
    async with running(tmp_path) as rig:
        rig.hub.telemetry("b1", pilot=PilotState.C, energy_wh=100)
        await rig.status("b1", "Available")
        out = await rig.station.commands.present_token("b1", "A")
        rig.hub.telemetry("b1", current_a=10, energy_wh=110, relay_on=True, pilot=PilotState.C)
        await rig.energy("b1", 10)
    sid = out.session_id
    assert sid
    # Restart on the same journal: the node reports whether it kept charging.
    async with running(tmp_path) as rig:
        assert rig.station.bays["b1"].state.session is not None
        rig.hub.telemetry(
            "b1",
            current_a=10 if relay_on else 0,
            energy_wh=120,
            relay_on=relay_on,
            pilot=PilotState.C,
        )
        await rig.status("b1", "Charging" if relay_on else "Finishing")
        row = await rig.journal.session(sid)
        assert row is not None and row["state"] == expected
        if not relay_on:
            assert row["stop_reason"] == "Reboot"  # the previous stop was clean
            assert row["meter_stop_wh"] == 120 and row["energy_wh"] == 20
        sessions = await rig.journal.sessions()
        assert len(sessions) == 1


async def test_emergency_stop_latched_until_owner_clears(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", pilot=PilotState.C)
        hub.telemetry("b2", door_closed=True)
        await rig.status("b1", "Available")
        await rig.status("b2", "Available")
        out = await st.commands.present_token("b1", "A")
        await st.safety.emergency_stop(True)
        row = await rig.journal.session(out.session_id or "")
        assert row is not None and row["stop_reason"] == "EmergencyStop"
        await hub.nodes["b1"].wait_output(lambda o: not o[0])
        refused = await st.commands.present_token("b2", "B")
        assert not refused.ok and refused.code == "blocked_emergency_stop"
        assert (await st.safety.clear_emergency_stop(actor="owner")).code == "still_pressed"
        await st.safety.emergency_stop(False)
        assert "emergency_stop" in st.safety.blockers  # latched after release
        assert (await st.safety.clear_emergency_stop(actor="owner")).ok
        await rig.status("b2", "Available")
        assert (await st.commands.present_token("b2", "B")).ok
        await st.settle()
        audit = await rig.journal.audit_log()
        kinds = [a["kind"] for a in audit]
        assert "safe_mode_entered" in kinds and "safe_mode_left" in kinds


async def test_signed_qr_tokens_through_the_station(tmp_path: Path) -> None:
    import time

    from controller.core import tokens

    secret = b"k" * 32
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        st.commands.token_keys = tokens.TokenKeys.build("test-1", hmac_keys=[secret])
        signer = tokens.HmacSigner(secret)
        now = int(time.time())
        good = tokens.mint(
            signer,
            station_id="test-1",
            bay=1,
            not_before=now - 5,
            expires=now + 600,
            id_tag="BOOK-1",
        )
        hub.telemetry("b1", pilot=PilotState.B)
        hub.telemetry("b2", door_closed=True)
        await rig.status("b1", "Available")
        await rig.status("b2", "Available")
        wrong_bay = await st.commands.present_token("b2", good)
        assert (wrong_bay.ok, wrong_bay.code) == (False, "wrong_bay")
        started = await st.commands.present_token("b1", good)
        assert started.ok
        row = await rig.journal.session(started.session_id or "")
        assert row is not None and (row["token"], row["auth_source"]) == ("BOOK-1", "qr_token")
        again = await st.commands.present_token("b1", good)  # the same code shown again stops it
        assert again.code == "stopped"
        rig.hub.telemetry("b1", pilot=PilotState.A)
        await rig.status("b1", "Available")
        replay = await st.commands.present_token("b1", good)
        assert (replay.ok, replay.code) == (False, "replayed")
        expired = tokens.mint(
            signer,
            station_id="test-1",
            bay=None,
            not_before=now - 900,
            expires=now - 300,
            id_tag="OLD",
        )
        for text, code in [
            (expired, "expired"),
            ("https://example.com/pay?x=1", "unrecognized"),
            ("WIFI:S:guest;T:WPA;P:secret;;", "unrecognized"),
            ("\x00\xff" * 1500, "unrecognized"),
            (good[:-3] + "AAA", "bad_signature"),
        ]:
            out = await st.commands.present_token("b2", text)
            assert (out.ok, out.code) == (False, code), text[:40]
        audit = await rig.journal.audit_log(kind="token_rejected")
        assert len(audit) == 7
        assert st.bays["b2"].state.session is None


async def test_bookings_become_holds_at_their_time(tmp_path: Path) -> None:
    import time

    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", pilot=PilotState.A)
        hub.telemetry("b2", door_closed=True)
        await rig.status("b1", "Available")
        await rig.status("b2", "Available")
        now = time.time()
        booked = await st.bookings.add("b2", "RIDER-9", now + 0.3, 600, reservation_id=42)
        assert booked.ok
        clash = await st.bookings.add("b2", "OTHER", now + 100, 600)
        assert (clash.ok, clash.code) == (False, "booking_overlap")
        past = await st.bookings.add("b1", "LATE", now - 1000, 60)
        assert (past.ok, past.code) == (False, "booking_in_past")
        # b1 is busy when its booking comes due: it waits, and is missed once its window ends.
        assert (await st.commands.present_token("b1", "BUSY")).ok
        short = await st.bookings.add("b1", "SHORT", now + 0.1, 0.6)
        assert short.ok
        snap = await rig.status("b2", "Reserved")
        assert snap["hold"]["reservation_id"] == 42
        refused = await st.commands.present_token("b2", "SOMEONE")
        assert refused.code == "bay_reserved"
        assert (await st.commands.present_token("b2", "RIDER-9")).ok  # the booked rider arrives

        async def state_of(bid: str) -> str:
            rows = await rig.journal.query("SELECT state FROM bookings WHERE id=?", (bid,))
            return str(rows[0]["state"])

        async with asyncio.timeout(5):
            while await state_of(short.data["booking_id"]) != "missed":
                await rig.updates.get()
        assert await state_of(booked.data["booking_id"]) == "placed"
        later = await st.bookings.add("b1", "TOMORROW", now + 86400, 600)
        assert (await st.bookings.cancel(later.data["booking_id"])).ok
        assert await state_of(later.data["booking_id"]) == "cancelled"


# --------------------------------------------------------------------------- journal full


async def _read_only(rig: Rig, on: bool) -> None:
    """The journal's disk turns read-only (or back): every write fails until it is undone."""
    await rig.journal._w.execute(f"PRAGMA query_only={'ON' if on else 'OFF'}")


async def _charging(rig: Rig, bay: str, token: str, wh: int) -> str:
    """A session from 1000 Wh to ``wh`` (a step the bay can deliver at once: up to 1013 Wh)."""
    rig.hub.telemetry(bay, energy_wh=1000, pilot=PilotState.C)
    await rig.status(bay, "Available")
    out = await rig.station.commands.present_token(bay, token)
    assert out.ok and out.session_id
    await rig.hub.nodes[bay].wait_output(lambda o: o[0])
    rig.hub.telemetry(bay, current_a=16, energy_wh=wh, relay_on=True, pilot=PilotState.C)
    await rig.energy(bay, wh - 1000)
    return out.session_id


async def _unblocked(rig: Rig, timeout: float = 10.0) -> None:
    """Until the station accepts sessions again (it announces leaving safe mode)."""
    async with asyncio.timeout(timeout):
        while "journal" in rig.station.safety.blockers:
            await rig.updates.get()


async def test_stop_not_recorded_turns_relay_off_and_is_written_later_at_its_time(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        sid = await _charging(rig, "b1", "CARD-1", 1010)
        await _read_only(rig, True)
        before = time.time()
        out = await st.commands.stop_session(sid, StopReason.LOCAL, actor="kiosk")
        after = time.time()
        # Not acknowledged: the driver is told in a sentence; charging stops at once anyway.
        assert not out.ok and out.code == "not_recorded"
        assert "could not record" in out.message and "stopped" in out.message
        await hub.nodes["b1"].wait_output(lambda o: not o[0])
        row = await rig.journal.session(sid)
        assert row is not None and row["state"] == "open"  # nothing durable yet
        # The meter moves on a little after the relay opened; the stop keeps its own figures.
        hub.telemetry("b1", current_a=0, energy_wh=1012, relay_on=False, pilot=PilotState.C)
        await asyncio.sleep(0.3)  # several ticks pass while the journal stays read-only
        assert "journal" in st.safety.blockers
        fixed_at = time.time()
        await _read_only(rig, False)
        await _unblocked(rig)  # by the station itself: nobody else writes
        row = await rig.journal.session(sid)
        assert row is not None
        assert before <= row["stopped_at"] <= after < fixed_at
        assert row["stop_reason"] == "Local"
        assert row["meter_stop_wh"] == 1010 and row["energy_wh"] == 10
        closes = await rig.journal.query(
            "SELECT count(*) AS n FROM events WHERE kind='session_closed' AND session_id=?", (sid,)
        )
        stops = await rig.journal.query(
            "SELECT count(*) AS n FROM outbox WHERE action='StopTransaction' AND session_id=?",
            (sid,),
        )
        assert closes[0]["n"] == 1 and stops[0]["n"] == 1
        assert not st.safety.blockers
        hub.telemetry("b1", energy_wh=1012, pilot=PilotState.A)
        await rig.status("b1", "Available")
        assert (await st.commands.present_token("b1", "CARD-2")).ok


async def test_start_not_recorded_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", energy_wh=1000, pilot=PilotState.B)
        await rig.status("b1", "Available")
        await _read_only(rig, True)
        out = await st.commands.present_token("b1", "CARD-1")
        assert not out.ok and out.code == "not_recorded"
        assert "could not record" in out.message and "not started" in out.message
        assert st.bays["b1"].state.session is None
        assert not any(o[0] for o in hub.nodes["b1"].outputs)
        again = await st.commands.present_token(
            "b1", "CARD-1"
        )  # blocked now: refused before any write
        assert not again.ok and again.code == "blocked_journal"
        assert "{" not in again.message and "journal" not in again.message.lower()
        await _read_only(rig, False)
        assert await rig.journal.sessions() == []


async def test_journal_unblocks_by_itself_once_it_can_write(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        st, hub = rig.station, rig.hub
        hub.telemetry("b1", energy_wh=1000, pilot=PilotState.B)
        await rig.status("b1", "Available")
        await _read_only(rig, True)
        assert not (await st.commands.present_token("b1", "CARD-1")).ok
        assert "journal" in st.safety.blockers
        await _read_only(rig, False)
        # Nothing else writes: the station must find out by itself (a probe write).
        await _unblocked(rig)
        assert st.journal.writable
        assert (await st.commands.present_token("b1", "CARD-1")).ok


async def test_restart_with_an_unrecorded_stop_leaves_a_consistent_journal(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        sid = await _charging(rig, "b1", "CARD-1", 1010)
        await _read_only(rig, True)
        out = await rig.station.commands.stop_session(sid, StopReason.LOCAL)
        assert not out.ok
        await rig.hub.nodes["b1"].wait_output(lambda o: not o[0])
        # The station stops while the journal still cannot write (the record could not be made).
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        rows = await journal.sessions()
        states = await journal.bay_states()
        assert [(r["id"], r["state"]) for r in rows] == [(sid, "open")]
        assert states["b1"]["session"]["session_id"] == sid  # its bay still holds it
        stops = await journal.query("SELECT * FROM outbox WHERE action='StopTransaction'")
        assert stops == []
    finally:
        await journal.close()


async def test_mode_change_not_recorded_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        sid = await _charging(rig, "b1", "CARD-1", 1010)
        await _read_only(rig, True)
        out = await rig.station.commands.set_mode(sid, "eco")
        assert not out.ok and out.code == "not_recorded"
        sess = rig.station.bays["b1"].state.session
        assert sess is not None and sess.mode == "standard"
        assert rig.hub.nodes["b1"].outputs[-1][0]  # still charging: nothing changed
        await _read_only(rig, False)
