"""OCPP 1.6J core scenarios against the development CSMS on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp.v16 import call

from controller.core.station import EXIT_RESTART
from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(60)


async def test_boot_then_status_of_every_connector(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=3) as r:
        await r.online()
        everything = {0: "Available", 1: "Available", 2: "Available", 3: "Available"}
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP) == everything)
        actions = [x.action for x in r.sim.received]
        assert actions[0] == "BootNotification"
        assert r.sim.statuses[CP] == {
            0: "Available",
            1: "Available",
            2: "Available",
            3: "Available",
        }
        assert r.up.keys.get("HeartbeatInterval") == "300"


async def test_remote_start_and_stop(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        resp = await r.sim.call(CP, call.RemoteStartTransaction(id_tag="TAG1", connector_id=2))
        assert resp.status == "Accepted"
        await r.sim.wait_for(lambda: bool(r.sim.actions("StartTransaction")))
        start = r.sim.actions("StartTransaction")[0].payload
        assert start["connectorId"] == 2 and start["idTag"] == "TAG1"
        assert [x.payload["idTag"] for x in r.sim.actions("Authorize")] == ["TAG1"]
        await r.drained()
        rows = await r.station.journal.query("SELECT ocpp_tx_id, sync_state FROM sessions")
        assert rows == [{"ocpp_tx_id": 1, "sync_state": "started"}]
        resp = await r.sim.call(CP, call.RemoteStopTransaction(transaction_id=1))
        assert resp.status == "Accepted"
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")))
        stop = r.sim.actions("StopTransaction")[0].payload
        assert stop["transactionId"] == 1 and stop["reason"] == "Remote"
        resp = await r.sim.call(CP, call.RemoteStopTransaction(transaction_id=99))
        assert resp.status == "Rejected"
        # A busy connector refuses a remote start.
        await r.start_session(1, "LOCAL")
        resp = await r.sim.call(CP, call.RemoteStartTransaction(id_tag="TAG2", connector_id=1))
        assert resp.status == "Rejected"


async def test_status_changes_are_pushed_live_and_resent_after_reconnect(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        await r.start_session(1, "T1")
        await r.sim.wait_for(lambda: r.sim.statuses.get(CP, {}).get(1) == "Preparing")
        n_before = len(r.sim.actions("StatusNotification"))
        await r.sim.stop()
        await r.offline()
        await r.sim.start()
        await r.online()
        # After the reconnect: a new boot and the status of every connector 0..2 again.
        await r.sim.wait_for(lambda: len(r.sim.actions("StatusNotification")) >= n_before + 3)
        after = [x.payload["connectorId"] for x in r.sim.actions("StatusNotification")[n_before:]]
        assert sorted(after[:3]) == [0, 1, 2]
        assert [x.action for x in r.sim.received].count("BootNotification") == 2


async def test_boot_pending_then_accepted_sends_nothing_before(tmp_path: Path) -> None:
    from simulators.csms import CsmsSim

    sim = CsmsSim(boot_interval=1)
    sim.boot_statuses = ["Pending"]
    async with rig(tmp_path, bays=1, sim=sim, keys={"AllowOfflineTxForUnknownId": "true"}) as r:
        # While Pending the CSMS may talk to us, and we answer.
        await r.sim.wait_for(lambda: r.sim.boots.get(CP) == "Pending")
        resp = await r.sim.call(CP, call.GetConfiguration(key=["HeartbeatInterval"]))
        assert resp.configuration_key[0]["key"] == "HeartbeatInterval"
        await r.start_session(1, "T1")  # a transaction offline-before-accept is queued
        assert [x.action for x in r.sim.received] == ["BootNotification"]
        await r.online(timeout=5)
        actions = [x.action for x in r.sim.received]
        assert actions[:2] == ["BootNotification", "BootNotification"]
        await r.sim.wait_for(lambda: bool(r.sim.actions("StartTransaction")))


async def test_boot_rejected_answers_nothing_until_interval(tmp_path: Path) -> None:
    from simulators.csms import CsmsSim

    sim = CsmsSim(boot_interval=1)
    sim.boot_statuses = ["Rejected"]
    async with rig(tmp_path, bays=1, sim=sim) as r:
        await r.upstream(lambda: r.up.rejected)
        with pytest.raises(TimeoutError):
            await r.sim.send_frame(CP, '[2,"q1","GetLocalListVersion",{}]', "q1", timeout=0.3)
        await r.online(timeout=5)
        assert r.up.boot_status == "Accepted"
        frame = await r.sim.send_frame(CP, '[2,"q2","GetLocalListVersion",{}]', "q2")
        assert frame[0] == 3


async def test_heartbeat_at_the_interval_the_csms_gives(tmp_path: Path) -> None:
    from simulators.csms import CsmsSim

    async with rig(tmp_path, bays=1, sim=CsmsSim(heartbeat_interval=1)) as r:
        await r.online()
        assert r.up.keys.get("HeartbeatInterval") == "1"
        await r.sim.wait_for(lambda: len(r.sim.actions("Heartbeat")) >= 2, timeout=5)


async def test_malformed_and_unknown_calls_get_call_errors_and_link_stays(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        connects = r.sim.connects
        f = await r.sim.send_frame(CP, '[2,"m1","Reset",{"type":"Sideways"}]', "m1")
        assert f[0] == 4 and f[2] == "FormationViolation"
        f = await r.sim.send_frame(CP, '[2,"m2","Reset",{}]', "m2")
        assert f[0] == 4 and f[2] in ("ProtocolError", "OccurenceConstraintViolation")
        f = await r.sim.send_frame(CP, '[2,"m3","FlyToTheMoon",{}]', "m3")
        assert f[0] == 4 and f[2] == "NotImplemented"
        f = await r.sim.send_frame(
            CP,
            '[2,"m4","SignedUpdateFirmware",{"requestId":1}]',
            "m4",
        )
        assert f[0] == 4 and f[2] == "NotSupported"
        f = await r.sim.send_frame(CP, '[2,"m5","Reset",{"type":"Soft","extra":1}]', "m5")
        assert f[0] == 4 and f[2] == "FormationViolation"
        f = await r.sim.send_frame(CP, '[2,"m6","Reset"]', "m6")
        assert f[0] == 4
        await r.sim.connection(CP)._send("this is not json")
        resp = await r.sim.call(CP, call.GetLocalListVersion())
        assert resp.list_version == 0
        assert r.sim.connects == connects and r.up.online


async def test_data_transfer_and_configuration(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        resp = await r.sim.call(CP, call.DataTransfer(vendor_id="someone-else"))
        assert resp.status == "UnknownVendorId"
        resp = await r.sim.call(CP, call.DataTransfer(vendor_id="edge-station", message_id="Nope"))
        assert resp.status == "UnknownMessageId"
        resp = await r.sim.call(
            CP, call.DataTransfer(vendor_id="edge-station", message_id="Ping", data="x")
        )
        assert resp.status == "Accepted" and resp.data == "x"
        resp = await r.sim.call(CP, call.GetConfiguration(key=["NumberOfConnectors", "Bogus"]))
        assert resp.configuration_key == [
            {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
        ]
        assert resp.unknown_key == ["Bogus"]
        resp = await r.sim.call(CP, call.GetConfiguration())
        assert len(resp.configuration_key) > 30
        for key, value, status in [
            ("NumberOfConnectors", "5", "Rejected"),
            ("Bogus", "1", "NotSupported"),
            ("MeterValueSampleInterval", "-3", "Rejected"),
            ("MeterValuesSampledData", "Energy.Active.Import.Register,Nonsense", "Rejected"),
            ("StopTransactionOnInvalidId", "maybe", "Rejected"),
            ("MeterValueSampleInterval", "15", "Accepted"),
            ("LocalPreAuthorize", "TRUE", "Accepted"),
        ]:
            resp = await r.sim.call(CP, call.ChangeConfiguration(key=key, value=value))
            assert resp.status == status, key
        assert await r.station.journal.kv_get("ocpp.keys") == {
            "MeterValueSampleInterval": "15",
            "LocalPreAuthorize": "true",
        }


async def test_change_availability_unlock_and_reset(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=2) as r:
        await r.online()
        await r.start_session(1, "T1")
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert resp.status == "Scheduled"  # bay 1 is busy
        await r.sim.wait_for(lambda: r.sim.statuses[CP].get(2) == "Unavailable")
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=9, type="Inoperative"))
        assert resp.status == "Rejected"
        resp = await r.sim.call(CP, call.UnlockConnector(connector_id=1))
        assert resp.status == "Unlocked"
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")))
        assert r.sim.actions("StopTransaction")[0].payload["reason"] == "UnlockCommand"
        await r.sim.wait_for(
            lambda: r.sim.statuses[CP] == {0: "Unavailable", 1: "Unavailable", 2: "Unavailable"}
        )
        resp = await r.sim.call(CP, call.ChangeAvailability(connector_id=0, type="Operative"))
        assert resp.status == "Accepted"
        await r.start_session(2, "T2")
        resp = await r.sim.call(CP, call.Reset(type="Soft"))
        assert resp.status == "Accepted"
        await r.task  # the station stops itself
        assert r.station.exit_code == EXIT_RESTART
        stops = r.sim.actions("StopTransaction")
        assert stops[-1].payload["reason"] == "SoftReset"
