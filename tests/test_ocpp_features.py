"""Authorization (online, local list, cache, offline rules), reservations, smart charging, meter values."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp.v16 import call

from controller.core.auth import AuthRequest
from controller.core.bay import StopReason
from controller.core.persist import iso
from controller.ports import AuthStatus
from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(60)


def _req(tag: str) -> AuthRequest:
    return AuthRequest(tag, "bay1", 1, "kiosk")


async def test_authorize_online_then_offline_with_list_and_cache(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1, accept_tags={"GOOD", "LISTED"}) as r:
        await r.online()
        assert (await r.up.authorize("GOOD")).status is AuthStatus.ACCEPTED
        assert (await r.up.authorize("NOPE")).status is AuthStatus.INVALID
        assert r.up.local.cache["GOOD"].status == "Accepted"
        resp = await r.sim.call(
            CP,
            call.SendLocalList(
                list_version=3,
                update_type="Full",
                local_authorization_list=[
                    {"idTag": "LISTED", "idTagInfo": {"status": "Accepted"}},
                    {
                        "idTag": "OLD",
                        "idTagInfo": {"status": "Accepted", "expiryDate": "2001-01-01T00:00:00Z"},
                    },
                    {"idTag": "BLOCKED", "idTagInfo": {"status": "Blocked"}},
                ],
            ),
        )
        assert resp.status == "Accepted"
        resp = await r.sim.call(CP, call.SendLocalList(list_version=3, update_type="Differential"))
        assert resp.status == "VersionMismatch"
        resp = await r.sim.call(
            CP,
            call.SendLocalList(
                list_version=4,
                update_type="Differential",
                local_authorization_list=[{"idTag": "BLOCKED"}],
            ),
        )
        assert resp.status == "Accepted"
        assert (await r.sim.call(CP, call.GetLocalListVersion())).list_version == 4
        await r.sim.stop()
        await r.offline()
        # Offline: list first, then cache; expired and unknown refused.
        assert (await r.up.auth_step(_req("LISTED"))).source == "local_list"  # type: ignore[union-attr]
        assert (await r.up.auth_step(_req("GOOD"))).source == "cache"  # type: ignore[union-attr]
        assert (await r.up.auth_step(_req("OLD"))).status is AuthStatus.EXPIRED  # type: ignore[union-attr]
        assert await r.up.auth_step(_req("BLOCKED")) is None  # removed from the list
        assert await r.up.auth_step(_req("STRANGER")) is None
        await r.up.keys.change("AllowOfflineTxForUnknownId", "true")
        assert (await r.up.auth_step(_req("STRANGER"))).source == "offline_unknown"  # type: ignore[union-attr]
        await r.up.keys.change("LocalAuthorizeOffline", "false")
        assert await r.up.auth_step(_req("LISTED")) is None
        await r.sim.start()
        await r.online()
        assert (await r.sim.call(CP, call.ClearCache())).status == "Accepted"
        assert r.up.local.cache == {} and "LISTED" in r.up.local.entries


async def test_local_pre_authorize_skips_the_csms(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1, keys={"LocalPreAuthorize": "true"}) as r:
        await r.online()
        await r.up.authorize("T1")
        n = len(r.sim.actions("Authorize"))
        assert (await r.up.authorize("T1")).source == "cache"
        assert len(r.sim.actions("Authorize")) == n == 1


async def test_remote_start_authorizes_unless_told_not_to(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1, accept_tags=set()) as r:
        await r.online()
        resp = await r.sim.call(CP, call.RemoteStartTransaction(id_tag="X"))
        assert resp.status == "Accepted"  # then refused by Authorize
        await r.sim.wait_for(lambda: bool(r.sim.actions("Authorize")))
        assert r.bay(1).state.session is None
        assert (
            await r.sim.call(
                CP, call.ChangeConfiguration(key="AuthorizeRemoteTxRequests", value="false")
            )
        ).status == "Accepted"
        await r.sim.call(CP, call.RemoteStartTransaction(id_tag="X"))
        await r.sim.wait_for(lambda: bool(r.sim.actions("StartTransaction")))
        assert len(r.sim.actions("Authorize")) == 1


async def test_reserve_now_and_cancel(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        later = iso(r.station.clock.wall() + 600)
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=1, expiry_date=later, id_tag="R1", reservation_id=7)
        )
        assert resp.status == "Accepted"
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Reserved")
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=1, expiry_date=later, id_tag="R2", reservation_id=8)
        )
        assert resp.status == "Occupied"
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=0, expiry_date=later, id_tag="R2", reservation_id=9)
        )
        assert resp.status == "Rejected"
        await r.sim.call(CP, call.ChangeAvailability(connector_id=2, type="Inoperative"))
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=2, expiry_date=later, id_tag="R2", reservation_id=9)
        )
        assert resp.status == "Unavailable"
        await r.sim.call(CP, call.ChangeAvailability(connector_id=2, type="Operative"))
        await r.station.commands.raise_fault("bay2", "test")
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=2, expiry_date=later, id_tag="R2", reservation_id=9)
        )
        assert resp.status == "Faulted"
        # Same reservationId again replaces the old one.
        resp = await r.sim.call(
            CP, call.ReserveNow(connector_id=1, expiry_date=later, id_tag="R3", reservation_id=7)
        )
        assert resp.status == "Accepted" and r.bay(1).state.hold.token == "R3"
        assert (await r.sim.call(CP, call.CancelReservation(reservation_id=7))).status == "Accepted"
        assert (await r.sim.call(CP, call.CancelReservation(reservation_id=7))).status == "Rejected"
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(1) == "Available")
        await r.sim.call(
            CP, call.ReserveNow(connector_id=1, expiry_date=later, id_tag="R4", reservation_id=11)
        )
        await r.start_session(1, "R4")
        await r.sim.wait_for(lambda: bool(r.sim.actions("StartTransaction")))
        assert r.sim.actions("StartTransaction")[0].payload["reservationId"] == 11


def _profile(
    pid: int, purpose: str, limit: float, unit: str = "A", level: int = 0, **extra: object
) -> dict[str, object]:
    return {
        "chargingProfileId": pid,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative" if purpose == "TxProfile" else "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            **({"startSchedule": "2020-01-01T00:00:00Z"} if purpose != "TxProfile" else {}),
        },
        **extra,
    }


async def test_charging_profiles_set_clear_and_composite(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        now = r.station.clock.wall()

        async def set_(connector: int, prof: dict[str, object]) -> str:
            resp = await r.sim.call(
                CP, call.SetChargingProfile(connector_id=connector, cs_charging_profiles=prof)
            )
            return str(resp.status)

        assert await set_(1, _profile(1, "ChargePointMaxProfile", 32)) == "Rejected"
        assert await set_(0, _profile(1, "ChargePointMaxProfile", 22080, "W")) == "Accepted"
        assert await set_(1, _profile(2, "TxProfile", 8)) == "Rejected"  # no transaction
        assert await set_(0, _profile(3, "TxDefaultProfile", 13)) == "Accepted"
        assert await set_(2, _profile(4, "TxDefaultProfile", 10, level=1)) == "Accepted"
        assert await set_(9, _profile(5, "TxDefaultProfile", 10)) == "Rejected"
        limits = r.up.current_limits_a(now)
        assert limits == {0: 32.0, 1: 13.0, 2: 10.0}
        await r.start_session(1, "T1")
        await r.drained()
        assert await set_(1, _profile(6, "TxProfile", 8, transactionId=99)) == "Rejected"
        assert await set_(1, _profile(6, "TxProfile", 8, transactionId=1)) == "Accepted"
        assert r.up.current_limits_a(r.station.clock.wall())[1] == 8.0
        resp = await r.sim.call(CP, call.GetCompositeSchedule(connector_id=1, duration=3600))
        assert resp.status == "Accepted"
        assert resp.charging_schedule["charging_schedule_period"] == [
            {"start_period": 0, "limit": 8.0}
        ]
        resp = await r.sim.call(CP, call.GetCompositeSchedule(connector_id=7, duration=60))
        assert resp.status == "Rejected"
        # The TxProfile ends with its transaction.
        await r.station.commands.stop_session(
            r.bay(1).state.session.session_id,
            StopReason.LOCAL,
        )
        await r.until(lambda: 6 not in r.up.profiles.profiles)
        assert r.up.current_limits_a(r.station.clock.wall())[1] == 13.0
        resp = await r.sim.call(CP, call.ClearChargingProfile(id=3))
        assert resp.status == "Accepted"
        resp = await r.sim.call(CP, call.ClearChargingProfile(id=3))
        assert resp.status == "Unknown"
        resp = await r.sim.call(
            CP, call.ClearChargingProfile(charging_profile_purpose="ChargePointMaxProfile")
        )
        assert resp.status == "Accepted"
        assert r.up.current_limits_a(r.station.clock.wall()) == {0: None, 1: None, 2: 10.0}
        stored = await r.station.journal.query("SELECT id FROM charging_profiles")
        assert stored == [{"id": 4}]


async def test_meter_values_periodic_clock_and_triggered(tmp_path: Path) -> None:
    keys = {
        "MeterValueSampleInterval": "1",
        "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import,SoC",
    }
    async with rig(tmp_path, bays=2, keys=keys) as r:
        await r.online()
        r.hub.nodes["bay1"].soc_pct = 42.0
        await r.start_session(1, "T1")
        await r.sim.wait_for(lambda: bool(r.sim.actions("MeterValues")), timeout=5)
        mv = r.sim.actions("MeterValues")[0].payload
        assert mv["transactionId"] == 1 and mv["connectorId"] == 1
        values = mv["meterValue"][0]["sampledValue"]
        measurands = [(v["measurand"], v.get("phase")) for v in values]
        assert measurands == [
            ("Energy.Active.Import.Register", None),
            ("Power.Active.Import", None),
            ("Current.Import", "L1"),
            ("Current.Import", "L2"),
            ("Current.Import", "L3"),
            ("SoC", None),
        ]
        assert all(
            v["context"] == "Sample.Periodic" and isinstance(v["value"], str) for v in values
        )
        # Clock-aligned values of idle connectors and of connector 0 are sent directly.
        n = len(r.sim.actions("MeterValues"))
        await r.up.meter.aligned_idle(["Energy.Active.Import.Register", "Power.Active.Import"])
        direct = r.sim.actions("MeterValues")[n:]
        assert sorted(x.payload["connectorId"] for x in direct) == [0, 2]
        assert all("transactionId" not in x.payload for x in direct)
        resp = await r.sim.call(
            CP, call.TriggerMessage(requested_message="MeterValues", connector_id=1)
        )
        assert resp.status == "Accepted"
        await r.sim.wait_for(
            lambda: any(
                v["sampledValue"][0]["context"] == "Trigger"
                for x in r.sim.actions("MeterValues")
                for v in x.payload["meterValue"]
            )
        )
        resp = await r.sim.call(
            CP, call.TriggerMessage(requested_message="StatusNotification", connector_id=5)
        )
        assert resp.status == "Rejected"
        n = len(r.sim.actions("Heartbeat"))
        resp = await r.sim.call(CP, call.TriggerMessage(requested_message="Heartbeat"))
        assert resp.status == "Accepted"
        await r.sim.wait_for(lambda: len(r.sim.actions("Heartbeat")) == n + 1)
        resp = await r.sim.call(CP, call.TriggerMessage(requested_message="BootNotification"))
        await r.sim.wait_for(lambda: len(r.sim.actions("BootNotification")) == 2)
