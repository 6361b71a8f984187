"""kill -9 of the controller during a replay: after restart nothing is lost, and nothing is sent
twice except the one call that was in flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.core.bay import StopReason
from simulators.csms import CsmsSim
from tests.support.ocpp_station import open_station

ROOT = Path(__file__).resolve().parents[1]


async def _fill(data: Path, sessions: int) -> list[tuple[str, str]]:
    """Run the station without OCPP: ``sessions`` sessions with 2 meter values each."""
    station, _hub = await open_station(data, bays=3, period_s=0.02)
    task = asyncio.create_task(station.run())
    try:
        async with asyncio.timeout(10), station.events.subscription(lossy=True) as q:
            while not all(b.state.node_online for b in station.bays.values()):
                await q.get()
        for i in range(sessions):
            bay = f"bay{i % 3 + 1}"
            out = await station.commands.present_token(bay, f"T{i}", preauthorized="test")
            assert out.ok and out.session_id
            for _ in range(2):
                mv = {
                    "connectorId": i % 3 + 1,
                    "meterValue": [
                        {"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": str(i)}]}
                    ],
                }
                await station.commands.enqueue_for_session(bay, "MeterValues", mv)
            await station.commands.stop_session(out.session_id, StopReason.LOCAL)
            async with asyncio.timeout(5), station.events.subscription(lossy=True) as q:
                while station.bays[bay].state.phase.value != "idle":
                    await q.get()
        rows = await station.journal.query("SELECT action, session_id FROM outbox ORDER BY id")
    finally:
        station.request_stop("filled")
        await task
        await station.journal.close()
    return [(r["action"], r["session_id"]) for r in rows]


async def _spawn(data: Path, url: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.ocpp_station",
        "--data",
        str(data),
        "--url",
        url,
        "--bays",
        "3",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _tx(sim: CsmsSim) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.action, r.payload)
        for r in sim.received
        if r.action in ("StartTransaction", "StopTransaction", "MeterValues")
    ]


async def _kill_during_replay(tmp_path: Path, sessions: int, kills: list[int]) -> None:
    expected = await _fill(tmp_path, sessions)
    sim = CsmsSim(log_messages=False)
    sim.answer_delay_s = 0.005
    await sim.start()
    boundaries = []
    try:
        for at in kills:
            proc = await _spawn(tmp_path, sim.url)

            def reached(at: int = at) -> bool:
                return len(_tx(sim)) >= at

            await sim.wait_for(reached, timeout=30)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            boundaries.append(len(_tx(sim)))
        proc = await _spawn(tmp_path, sim.url)
        try:
            last_tag = f"T{sessions - 1}"

            def finished() -> bool:
                # Strict order: the last session's StopTransaction is the last message.
                return any(a == "StopTransaction" and p["idTag"] == last_tag for a, p in _tx(sim))

            await sim.wait_for(finished, timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
    finally:
        await sim.stop()
    got = _tx(sim)
    # Remove the at-most-one repeat at each kill: the call in flight may go again.
    deduped: list[tuple[str, dict[str, Any]]] = []
    repeats = 0
    for i, m in enumerate(got):
        if deduped and m == deduped[-1] and i in boundaries:
            repeats += 1
            continue
        deduped.append(m)
    assert repeats <= len(kills)
    assert [a for a, _ in deduped] == [a for a, _ in expected]
    # transactionIds: every later message of a session carries the id of its latest Start answer.
    tx_by_start: list[int] = sorted(sim.transactions)
    start_idx = 0
    current = None
    for i, (action, p) in enumerate(got):
        if action == "StartTransaction":
            current = tx_by_start[start_idx] if start_idx < len(tx_by_start) else None
            start_idx += 1
        else:
            assert p["transactionId"] == current, (i, action, p, current)
    journal_sessions = sessions
    assert len({t.id_tag for t in sim.transactions.values()}) == journal_sessions


@pytest.mark.timeout(120)
async def test_sigkill_during_replay_loses_nothing_and_repeats_at_most_one(tmp_path: Path) -> None:
    await _kill_during_replay(tmp_path, sessions=12, kills=[23])


@pytest.mark.long
@pytest.mark.timeout(600)
async def test_many_sigkills_during_a_long_replay(tmp_path: Path) -> None:
    await _kill_during_replay(tmp_path, sessions=60, kills=[17, 61, 62, 140, 211])
