"""The webhooks' own table in the journal (store namespace ``webhooks``): all of its SQL.

``webhook_outbox``: one row per notification and target, kept until the target
took it (2xx) or it is older than the target's ``max_age_s``; so a station
restart loses nothing that was recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.core.journal import Journal
from controller.core.store import Store

NAMESPACE = "webhooks"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox(next_at);
    """,
]


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    target: int
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int


class WebhookStore:
    def __init__(self, journal: Journal) -> None:
        self._store = Store(journal, NAMESPACE, MIGRATIONS)

    async def open(self) -> None:
        await self._store.open()

    async def add(self, rows: list[tuple[int, str, dict[str, Any], float]]) -> None:
        """(target, kind, payload, now) per row, in one transaction."""
        await self._store.executemany(
            "INSERT INTO webhook_outbox (target, kind, payload, created_at, next_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(t, k, json.dumps(p, sort_keys=True), now, now) for t, k, p, now in rows],
        )

    async def due(self, now: float, limit: int = 20) -> list[Pending]:
        rows = await self._store.query(
            "SELECT id, target, kind, payload, created_at, attempts FROM webhook_outbox "
            "WHERE next_at <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [
            Pending(
                r["id"],
                r["target"],
                r["kind"],
                json.loads(r["payload"]),
                r["created_at"],
                r["attempts"],
            )
            for r in rows
        ]

    async def next_due(self) -> float | None:
        rows = await self._store.query("SELECT MIN(next_at) AS t FROM webhook_outbox")
        t = rows[0]["t"] if rows else None
        return float(t) if t is not None else None

    async def delivered(self, row_id: int) -> None:
        await self._store.execute("DELETE FROM webhook_outbox WHERE id = ?", (row_id,))

    async def failed(self, row_id: int, next_at: float, error: str) -> None:
        await self._store.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
            "WHERE id = ?",
            (next_at, error[:200], row_id),
        )

    async def pending(self) -> int:
        rows = await self._store.query("SELECT COUNT(*) AS n FROM webhook_outbox")
        return int(rows[0]["n"])
