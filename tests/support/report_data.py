"""Known sessions and meter samples written into a real journal, for the report and chart tests."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from controller.core.journal import Commit, EventRow, Journal


@dataclass(frozen=True)
class Seeded:
    id: str
    bay_id: str
    token: str
    started_at: float
    stopped_at: float | None
    energy_wh: int
    cost: float | None
    stop_reason: str | None


def session_row(s: Seeded) -> dict[str, Any]:
    closed = s.stopped_at is not None
    return {
        "id": s.id,
        "bay_id": s.bay_id,
        "connector": 1 if s.bay_id == "bay1" else 2,
        "token": s.token,
        "auth_source": "local_list",
        "mode": "standard",
        "state": "closed" if closed else "open",
        "started_at": s.started_at,
        "stopped_at": s.stopped_at,
        "meter_start_wh": 1000,
        "meter_stop_wh": 1000 + s.energy_wh if closed else None,
        "meter_wh": 1000 + s.energy_wh,
        "energy_wh": s.energy_wh,
        "peak_power_w": 7000.0,
        "avg_power_w": 3500.0 if closed else None,
        "tariff": json.dumps({"per_kwh": 0.3}),
        "cost": s.cost,
        "currency": "EUR" if s.cost is not None else None,
        "stop_reason": s.stop_reason,
        "sync_state": "synced",
    }


async def seed(journal: Journal, sessions: list[Seeded]) -> None:
    for i in range(0, len(sessions), 200):
        chunk = sessions[i : i + 200]
        await journal.commit(
            Commit(
                session_open=[session_row(s) for s in chunk],
                events=[EventRow("seeded", chunk[0].started_at)],
            )
        )


def many(n: int, start: float, *, seed_: int = 7, span_s: float = 3600.0) -> list[Seeded]:
    """``n`` closed sessions, one every ``span_s`` from ``start``, energies and costs random."""
    rnd = random.Random(seed_)
    out = []
    for i in range(n):
        t = start + i * span_s
        wh = rnd.randint(0, 40_000)
        out.append(
            Seeded(
                id=f"s{i:05d}",
                bay_id="bay1" if i % 3 else "locker1",
                token=f"CARD{rnd.randint(100000, 999999)}",
                started_at=t,
                stopped_at=t + rnd.uniform(600, span_s - 1),
                energy_wh=wh,
                cost=None if i % 17 == 0 else round(wh / 1000 * 0.3, 2),
                stop_reason="Local" if i % 5 else "EmergencyStop",
            )
        )
    return out
