"""Reliable delivery: offline queueing, replay in order with remapped transactionIds, CallErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.bay import StopReason
from tests.test_ocpp_support import CP, Rig, rig

pytestmark = pytest.mark.timeout(60)

OFFLINE = {"AllowOfflineTxForUnknownId": "true"}


async def _three_sessions_offline(r: Rig) -> list[str]:
    """Three sessions start, get two meter values each and stop while the CSMS is down."""
    sids = []
    for n, tag in ((1, "A"), (2, "B"), (3, "C")):
        sid = await r.start_session(n, tag)
        sids.append(sid)
    for _ in range(2):
        assert (
            await r.up.meter.sample_sessions("Sample.Periodic", ["Energy.Active.Import.Register"])
            == 3
        )
    for sid in sids:
        out = await r.station.commands.stop_session(sid, StopReason.LOCAL)
        assert out.ok
    return sids


def _check_replay(r: Rig) -> None:
    msgs = r.tx_messages()
    # Once each, in order per session: Start, MeterValues x2, Stop; transaction ids remapped.
    assert len(msgs) == 12, [a for a, _ in msgs]
    starts = [p for a, p in msgs if a == "StartTransaction"]
    assert [p["idTag"] for p in starts] == ["A", "B", "C"]
    tx_of_connector = {}
    for t in r.sim.transactions.values():
        tx_of_connector[t.connector] = t.id
    for action, p in msgs:
        if action != "StartTransaction":
            assert "transactionId" in p
    per_tx: dict[int, list[str]] = {}
    seen_start: set[int] = set()
    for action, p in msgs:
        if action == "StartTransaction":
            tx = tx_of_connector[p["connectorId"]]
            seen_start.add(tx)
            per_tx.setdefault(tx, []).append(action)
        else:
            assert p["transactionId"] in seen_start  # never before its start
            per_tx[p["transactionId"]].append(action)
    for actions in per_tx.values():
        assert actions == ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"]
    for t in r.sim.transactions.values():
        assert t.meter_values == 2 and t.meter_stop is not None


async def test_offline_sessions_delivered_once_in_order_after_reconnect(tmp_path: Path) -> None:
    async with rig(tmp_path, csms_up=False, keys=OFFLINE) as r:
        sids = await _three_sessions_offline(r)
        assert await r.up.outbox.pending() == 12
        await r.sim.start()
        await r.online()
        await r.drained()
        _check_replay(r)
        rows = await r.station.journal.query("SELECT id, ocpp_tx_id, sync_state FROM sessions")
        assert {row["id"] for row in rows} == set(sids)
        assert all(row["sync_state"] == "synced" and row["ocpp_tx_id"] for row in rows)
        assert (await r.up.outbox.counts())["done"] == 12


async def test_csms_restarts_in_the_middle_of_a_replay(tmp_path: Path) -> None:
    async with rig(tmp_path, csms_up=False, keys=OFFLINE) as r:
        await _three_sessions_offline(r)
        r.sim.silence_next("StartTransaction", after=1)  # the 2nd hangs; then the CSMS dies
        await r.sim.start()
        await r.online()
        await r.sim.wait_for(lambda: len(r.tx_messages()) >= 2)
        await r.sim.stop()
        await r.offline()
        await r.sim.start()
        await r.online()
        await r.drained()
        msgs = r.tx_messages()
        # Only the call in flight at the restart went twice (it was never answered).
        assert len(msgs) == 13
        assert msgs[1] == msgs[2] and msgs[1][0] == "StartTransaction"
        assert r.sim.connects == 2
        del r.sim.received[[x.action for x in r.sim.received].index("StartTransaction") + 1]
        _check_replay(r)


async def test_call_error_on_transaction_message_retries_then_fails(tmp_path: Path) -> None:
    keys = {**OFFLINE, "TransactionMessageAttempts": "3", "TransactionMessageRetryInterval": "0"}
    async with rig(tmp_path, keys=keys) as r:
        await r.online()
        r.sim.fail_next("StartTransaction", "InternalError", times=3)
        sid = await r.start_session(1, "A")
        await r.station.commands.stop_session(sid, StopReason.LOCAL)
        sid2 = await r.start_session(2, "B")
        await r.drained()
        starts = r.sim.actions("StartTransaction")
        assert [s.payload["idTag"] for s in starts] == ["A", "A", "A", "B"]
        rows = await r.station.journal.query(
            "SELECT action, state, attempts, last_error FROM outbox ORDER BY id"
        )
        assert rows[0]["state"] == "failed" and rows[0]["attempts"] == 3
        assert "InternalError" in rows[0]["last_error"]
        # Its StopTransaction cannot be sent without a transactionId: failed, visible, not dropped.
        assert rows[1]["action"] == "StopTransaction" and rows[1]["state"] == "failed"
        assert rows[2]["state"] == "done"
        assert (await r.up.outbox.counts()) == {"pending": 0, "failed": 2, "done": 1}
        assert not r.sim.actions("StopTransaction")
        state = await r.station.journal.query(
            "SELECT id, sync_state FROM sessions ORDER BY started_at"
        )
        assert state == [{"id": sid, "sync_state": "failed"}, {"id": sid2, "sync_state": "started"}]


async def test_retry_interval_is_honoured_and_success_after_retry(tmp_path: Path) -> None:
    keys = {"TransactionMessageAttempts": "2", "TransactionMessageRetryInterval": "1"}
    async with rig(tmp_path, keys=keys) as r:
        await r.online()
        r.sim.fail_next("StartTransaction", "GenericError")
        await r.start_session(1, "A")
        await r.sim.wait_for(lambda: len(r.sim.actions("StartTransaction")) == 2, timeout=5)
        a, b = r.sim.actions("StartTransaction")
        assert b.at - a.at >= 0.9
        await r.drained()
        assert (await r.up.outbox.counts())["done"] == 1


async def test_start_not_accepted_stops_the_session_deauthorized(tmp_path: Path) -> None:
    async with rig(tmp_path, csms_up=False, keys=OFFLINE, tag_statuses={"BAD": "Blocked"}) as r:
        sid = await r.start_session(1, "BAD")  # accepted offline as unknown
        await r.sim.start()
        await r.online()
        await r.sim.wait_for(lambda: bool(r.sim.actions("StopTransaction")))
        stop = r.sim.actions("StopTransaction")[0].payload
        assert stop["reason"] == "DeAuthorized" and stop["transactionId"] == 1
        row = await r.station.journal.session(sid)
        assert row is not None and row["stop_reason"] == "DeAuthorized"
        assert r.up.local.cache["BAD"].status == "Blocked"


async def test_cancel_cancels_a_call_whose_answer_arrives_at_once(tmp_path: Path) -> None:
    import asyncio

    async with rig(tmp_path, bays=1) as r:
        await r.online()
        link = r.up.link
        assert link is not None
        for _ in range(20):
            task = asyncio.create_task(link.call_raw("Heartbeat", {}))
            n = len(r.sim.received)

            def grew(n: int = n) -> bool:
                return len(r.sim.received) > n

            await r.sim.wait_for(grew)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert CP in r.sim.connections


def test_payload_check_raises_the_16_call_errors() -> None:
    from ocpp.exceptions import FormationViolationError, ProtocolError, TypeConstraintViolationError

    from cloud_sync.link import check_payload

    mv = {"connectorId": 1, "meterValue": [{"timestamp": "2024-01-01T00:00:00Z"}]}
    with pytest.raises(ProtocolError):  # sampledValue is required
        check_payload(2, "MeterValues", mv)
    with pytest.raises(TypeConstraintViolationError):
        check_payload(
            2,
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "x" * 21,
                "meterStart": 0,
                "timestamp": "2024-01-01T00:00:00Z",
            },
        )
    with pytest.raises(FormationViolationError):
        check_payload(3, "StartTransaction", {"transactionId": 1, "idTagInfo": {"status": "Nope"}})
    check_payload(3, "StartTransaction", {"transactionId": 1, "idTagInfo": {"status": "Accepted"}})
