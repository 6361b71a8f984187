"""OCPP 1.6J core scenarios against the development CSMS on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp.v16 import call

from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(60)


async def test_boot_then_status_of_every_connector(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=3) as r:
        await r.online()
        await r.sim.wait_for(lambda: {0, 1, 2, 3} <= set(r.sim.statuses.get(CP, {})))
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
