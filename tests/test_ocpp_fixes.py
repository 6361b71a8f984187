"""Deviations from OCPP 1.6 that a strict independent CSMS found (issue 19), each against the
development CSMS over a real websocket."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from controller.core.bay import StopReason
from simulators.csms import CsmsSim
from tests.test_ocpp_support import CP, Rig, rig

pytestmark = pytest.mark.timeout(90)

OFFLINE = {"AllowOfflineTxForUnknownId": "true"}


def _profile(pid: int, purpose: str, limit: float, **extra: Any) -> dict[str, Any]:
    return {
        "chargingProfileId": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute" if purpose != "TxProfile" else "Relative",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            **({"startSchedule": "2020-01-01T00:00:00Z"} if purpose != "TxProfile" else {}),
        },
        **extra,
    }


def _statuses(r: Rig, connector: int) -> list[str]:
    return [
        x.payload["status"]
        for x in r.sim.actions("StatusNotification")
        if x.payload["connectorId"] == connector
    ]


async def test_change_availability_after_a_transaction_ended_is_accepted(tmp_path: Path) -> None:
    """Finishing (vehicle still plugged, no transaction): the change applies now: Accepted."""
    async with rig(tmp_path, bays=2) as r:
        node = r.hub.node(r.bay(1).cfg.node_id)
        node.pilot = True  # the vehicle stays plugged and says so: Finishing after the stop
        r.hub.push()
        await r.online()
        sid = await r.start_session(1, "T1")
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Charging")
        await r.station.commands.stop_session(sid, StopReason.LOCAL)
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Finishing")
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert resp.status == "Accepted"
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert resp.status == "Accepted"
        await r.sim.wait_for(
            lambda: r.sim.statuses[CP] == {0: "Unavailable", 1: "Unavailable", 2: "Unavailable"}
        )
        assert not r.bay(1).state.available and not r.bay(1).state.pending_unavailable
        # A running transaction still makes it Scheduled.
        await r.sim.call(CP, call.ChangeAvailability(connector_id=0, type="Operative"))
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(2) == "Available")
        await r.start_session(2, "T2")
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert resp.status == "Scheduled"


async def test_clearing_the_station_maximum_applies_the_remaining_profiles_at_once(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        node = r.hub.node(r.bay(1).cfg.node_id)
        await r.start_session(1, "T1")
        await r.drained()

        async def set_(connector: int, prof: dict[str, Any]) -> None:
            resp = await r.sim.call(
                CP, call.SetChargingProfile(connector_id=connector, cs_charging_profiles=prof)
            )
            assert resp.status == "Accepted"

        await set_(0, _profile(1, "ChargePointMaxProfile", 7.0))
        await r.until(lambda: (node.relay_on, node.setpoint_a) == (True, 7.0))
        await set_(1, _profile(2, "TxProfile", 8.0, transactionId=1))
        resp = await r.sim.call(CP, call.ClearChargingProfile(id=1))
        assert resp.status == "Accepted"
        await r.until(lambda: node.setpoint_a == 8.0, timeout=3.0)
        # By purpose too.
        await set_(0, _profile(3, "ChargePointMaxProfile", 6.0))
        await r.until(lambda: node.setpoint_a == 6.0)
        resp = await r.sim.call(
            CP,
            call.ClearChargingProfile(
                connector_id=0, charging_profile_purpose="ChargePointMaxProfile"
            ),
        )
        assert resp.status == "Accepted"
        await r.until(lambda: node.setpoint_a == 8.0, timeout=3.0)


async def test_connection_timeout_is_read_write_and_used(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        resp = await r.sim.call(CP, call.GetConfiguration(key=["ConnectionTimeOut"]))
        assert resp.configuration_key == [
            {"key": "ConnectionTimeOut", "readonly": False, "value": "120"}
        ]
        for value, status in (("-1", "Rejected"), ("soon", "Rejected"), ("1", "Accepted")):
            resp = await r.sim.call(
                CP, call.ChangeConfiguration(key="ConnectionTimeOut", value=value)
            )
            assert resp.status == status, value
        assert (await r.station.journal.kv_get("ocpp.keys"))["ConnectionTimeOut"] == "1"
        # Nobody plugs in: the authorization lapses after the new timeout, not after 120 s.
        r.hub.plug(r.bay(1).cfg.node_id, False)
        await r.start_session(1, "T1")
        await r.until(lambda: r.bay(1).state.session is None, timeout=10.0)
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")))


async def test_connection_timeout_changed_before_survives_a_restart(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        await r.sim.call(CP, call.ChangeConfiguration(key="ConnectionTimeOut", value="45"))
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        resp = await r.sim.call(CP, call.GetConfiguration(key=["ConnectionTimeOut"]))
        assert resp.configuration_key[0]["value"] == "45"
        assert r.station.runner.timers.connection_timeout_s == 45.0


async def test_max_energy_on_invalid_id_lets_that_much_through_then_stops(
    tmp_path: Path,
) -> None:
    keys = {**OFFLINE, "MaxEnergyOnInvalidId": "4"}
    async with rig(
        tmp_path, bays=1, csms_up=False, keys=keys, tag_statuses={"BAD": "Invalid"}
    ) as r:
        sid = await r.start_session(1, "BAD")  # accepted offline as unknown
        await r.sim.start()
        await r.online()
        await r.sim.wait_for(lambda: bool(r.sim.actions("StartTransaction")))
        start = r.sim.actions("StartTransaction")[0].payload
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")), timeout=30)
        stop = r.sim.actions("StopTransaction")[0].payload
        assert stop["reason"] == "DeAuthorized"
        assert stop["meterStop"] - start["meterStart"] >= 4
        row = await r.station.journal.session(sid)
        assert row is not None and row["stop_reason"] == "DeAuthorized"


async def test_new_keys_are_listed_and_validated(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        resp = await r.sim.call(
            CP, call.GetConfiguration(key=["MaxEnergyOnInvalidId", "MinimumStatusDuration"])
        )
        assert {k["key"]: (k["value"], k["readonly"]) for k in resp.configuration_key} == {
            "MaxEnergyOnInvalidId": ("0", False),
            "MinimumStatusDuration": ("0", False),
        }
        for key in ("MaxEnergyOnInvalidId", "MinimumStatusDuration"):
            bad = await r.sim.call(CP, call.ChangeConfiguration(key=key, value="-5"))
            good = await r.sim.call(CP, call.ChangeConfiguration(key=key, value="7"))
            assert (bad.status, good.status) == ("Rejected", "Accepted")


async def test_minimum_status_duration_holds_back_a_short_flap(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2, keys={"MinimumStatusDuration": "2"}) as r:
        await r.online()
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP, {}).get(2) == "Available")
        before = len(r.sim.actions("StatusNotification"))
        await r.sim.call(CP, call.ChangeAvailability(connector_id=2, type="Inoperative"))
        await r.sim.call(CP, call.ChangeAvailability(connector_id=2, type="Operative"))
        # A lasting change is sent once it held for the minimum duration.
        t0 = asyncio.get_running_loop().time()
        await r.sim.call(CP, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Unavailable", timeout=10)
        assert asyncio.get_running_loop().time() - t0 >= 1.9
        sent = [
            (x.payload["connectorId"], x.payload["status"])
            for x in r.sim.actions("StatusNotification")[before:]
        ]
        assert sent == [(1, "Unavailable")]


async def test_a_triggered_status_is_not_followed_by_older_or_repeated_ones(
    tmp_path: Path,
) -> None:
    """A TriggerMessage(StatusNotification) answered while changes wait to be sent (a slow
    CSMS holds the one call in flight): the triggered status is the newest, so the queued
    changes it covers must not follow it (a repeated Charging before the fix)."""
    sim = CsmsSim()
    async with rig(tmp_path, bays=1, sim=sim) as r:
        await r.online()
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP, {}).get(1) == "Available")
        link = r.up.link
        assert link is not None
        sim.answer_delay_s = 0.5
        beat = asyncio.create_task(link.call_raw("Heartbeat", {}))
        await r.sim.wait_for(lambda: bool(r.sim.actions("Heartbeat")))
        await r.start_session(1, "T1")  # Preparing, then Charging: queued behind the heartbeat
        await r.until(lambda: r.bay(1).state.phase.value == "charging")
        await r.sim.call(
            CP, call.TriggerMessage(requested_message="StatusNotification", connector_id=1)
        )
        await beat
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Charging")
        await r.drained()
        sim.answer_delay_s = 0.0
        seq = _statuses(r, 1)
        assert all(a != b for a, b in itertools.pairwise(seq)), seq
        assert "Preparing" not in seq[seq.index("Charging") :], seq


async def test_stop_transaction_carries_the_sessions_samples(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        sid = await r.start_session(1, "T1")
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Charging")
        # Figures of a few minutes' worth of frames (the node reports every 50 ms).
        await r.until(lambda: sum(m.samples for m in r.station.samples._open.values()) >= 20)
        await r.station.samples.flush()
        await r.station.commands.stop_session(sid, StopReason.LOCAL)
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")))
        start = r.sim.actions("StartTransaction")[0].payload
        stop = r.sim.actions("StopTransaction")[0].payload
        data = stop["transactionData"]
        contexts = [mv["sampledValue"][0]["context"] for mv in data]
        assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
        assert "Sample.Periodic" in contexts
        assert 3 <= len(data) <= 14  # bounded, however long the session
        times = [mv["timestamp"] for mv in data]
        assert times == sorted(times) and times[0] == start["timestamp"]
        energy = [
            float(sv["value"])
            for mv in data
            for sv in mv["sampledValue"]
            if sv.get("measurand", "Energy.Active.Import.Register")
            == "Energy.Active.Import.Register"
        ]
        assert energy[0] == start["meterStart"] and energy[-1] == stop["meterStop"]
        assert energy == sorted(energy) and energy[-1] > energy[0]
