"""Backlog replay: 10,000 queued transaction messages delivered after a reconnect.

The bound is one call in flight: 1 / round-trip time, measured with Heartbeat
calls on the same connection right after the replay. Target: ≥ 80 % of it.
The development CSMS runs in its own process (:class:`CsmsProcess`), as a real
central system would: in-process it shares the station's event loop and core,
and its work per message would queue behind the station's. The round trips of
the bound go through that process too.
Run: ``.venv/bin/pytest -m bench tests/bench/bench_ocpp_backlog.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.core.journal import Commit, EventRow, OutboxRow
from simulators.csms import CsmsProcess
from tests.bench.report import metric, percentile, write_report
from tests.test_ocpp_support import rig

MESSAGES = 10_000
PER_SESSION = 5  # Start, 3 x MeterValues, Stop


async def _queue(journal: object, sessions: int) -> None:
    from controller.core.journal import Journal

    assert isinstance(journal, Journal)
    for i in range(sessions):
        sid = f"bench{i:05d}"
        mv = {
            "connectorId": 1,
            "meterValue": [
                {"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": str(i)}]}
            ],
        }
        await journal.commit(
            Commit(
                events=[EventRow("bench", 0.0, "bay1", sid)],
                session_open=[
                    {
                        "id": sid,
                        "bay_id": f"hist{i}",
                        "connector": 1,
                        "token": "T",
                        "auth_source": "bench",
                        "mode": "standard",
                        "state": "closed",
                        "started_at": float(i),
                        "meter_start_wh": 0,
                        "meter_wh": 10,
                        "tariff": {},
                    }
                ],
                outbox=[
                    OutboxRow(
                        "StartTransaction",
                        {
                            "connectorId": 1,
                            "idTag": "T",
                            "meterStart": 0,
                            "timestamp": "2024-01-01T00:00:00Z",
                        },
                        sid,
                    ),
                    *[OutboxRow("MeterValues", mv, sid) for _ in range(3)],
                    OutboxRow(
                        "StopTransaction",
                        {"meterStop": 10, "timestamp": "2024-01-01T00:00:01Z", "reason": "Local"},
                        sid,
                    ),
                ],
            )
        )


@pytest.mark.bench
@pytest.mark.timeout(900)
@pytest.mark.parametrize("latency_ms", [0.0, 10.0], ids=["loopback", "rtt10ms"])
async def test_backlog_replay_throughput(tmp_path: Path, latency_ms: float) -> None:
    """Loopback (RTT ~0.7 ms: the durable done mark per message dominates) and a CSMS that
    answers 10 ms later (a near cloud), the bound measured on the same connection either way."""
    csms = CsmsProcess(answer_delay_ms=latency_ms)
    async with rig(tmp_path, bays=1, csms=csms, csms_up=False) as r:
        await _queue(r.station.journal, MESSAGES // PER_SESSION)
        assert await r.up.outbox.pending() == MESSAGES
        await csms.start()
        await r.online()
        t0 = time.perf_counter()
        await r.drained(timeout=600)
        elapsed = time.perf_counter() - t0
        link = r.up.link
        assert link is not None
        rtts = []
        for _ in range(500):
            t = time.perf_counter()
            await link.call_raw("Heartbeat", {})
            rtts.append(time.perf_counter() - t)
        counts = await r.up.outbox.counts()
        retried = await r.station.journal.query(
            "SELECT id, action, attempts, last_error FROM outbox WHERE attempts > 0"
        )
        received: dict[str, int] = (await csms.stats())["received"]
    assert counts == {"pending": 0, "failed": 0, "done": MESSAGES}
    tx = sum(received.get(a, 0) for a in ("StartTransaction", "MeterValues", "StopTransaction"))
    assert tx == MESSAGES, (received, retried)
    rate = MESSAGES / elapsed
    rtt = sum(rtts) / len(rtts)
    bound = 1 / rtt
    ratio = rate / bound
    write_report(
        f"ocpp_backlog_{'loopback' if not latency_ms else f'rtt{latency_ms:g}ms'}",
        {
            "messages_per_s": metric(rate, "msg/s", "higher"),
            "bound_msg_per_s": metric(bound, "msg/s", "higher"),
            "ratio_of_bound": metric(ratio * 100, "%", "higher", target=80.0),
            "heartbeat_rtt_mean": metric(rtt * 1000, "ms"),
            "heartbeat_rtt_p99": metric(percentile(rtts, 99) * 1000, "ms"),
            "replay_s": metric(elapsed, "s"),
        },
        {
            "messages": MESSAGES,
            "csms_answer_delay_ms": latency_ms,
            "journal": "SQLite WAL synchronous=FULL in tmp_path",
            "loopback": True,
            "csms": "simulators.csms in its own process",
        },
    )
    # On loopback a durable write per message (required: kill -9 or power loss must not
    # duplicate anything but the call in flight) costs about half a round trip; reported.
    if latency_ms:
        assert ratio >= 0.8, f"{rate:.0f} msg/s is {ratio:.0%} of the bound {bound:.0f} msg/s"
