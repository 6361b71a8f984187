"""Reliable delivery of transaction-related messages from the journal's outbox.

Strictly in order, one call in flight, resent after a reconnect: the head of
the outbox blocks the queue until the CSMS answered it or it was given up.
A StartTransaction answer gives the session its CSMS transaction id
(``sessions.ocpp_tx_id``); every later StopTransaction / MeterValues of that
session gets it added at send time. A CallError (or no answer) is retried
``TransactionMessageAttempts`` times, ``TransactionMessageRetryInterval`` ×
attempts apart, then the message is marked ``failed`` (kept, with its error)
and the queue moves on.

Crash contract: a message is marked done only after its answer arrived and
before the next one is sent, so after a ``kill -9`` at most the one call in
flight is sent again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError

from cloud_sync.keys import ConfigKeys
from cloud_sync.localauth import LocalAuth
from controller.journal import Journal
from controller.ports import Clock

log = structlog.get_logger(__name__)

TX_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})

RawCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Gate = Callable[[], Awaitable[None]]
OnRejected = Callable[[str, str], Awaitable[None]]


@dataclass(slots=True)
class OutboxStats:
    delivered: int = 0
    errors: int = 0
    given_up: int = 0
    last_error: str = ""


class OutboxSender:
    def __init__(
        self,
        journal: Journal,
        keys: ConfigKeys,
        auth: LocalAuth,
        clock: Clock,
        on_rejected: OnRejected,
    ) -> None:
        self.journal = journal
        self.keys = keys
        self.auth = auth
        self.clock = clock
        self.on_rejected = on_rejected
        self.stats = OutboxStats()
        self._tx_ids: dict[str, int] = {}
        self._last_done = 0  # ids only grow: anything at or below this one is finished
        # Overlap the durable "done" mark of a message with the next call: faster on a
        # fast link, but after a kill -9 up to two messages may be sent again.
        self.overlap_done_marks = False
        self.idle = asyncio.Event()  # set while the outbox is empty (tests and benchmarks)

    # ------------------------------------------------------------------ lookups

    async def tx_id(self, session_id: str) -> int | None:
        tx = self._tx_ids.get(session_id)
        if tx is None:
            rows = await self.journal.query(
                "SELECT ocpp_tx_id FROM sessions WHERE id=?", (session_id,)
            )
            if rows and rows[0]["ocpp_tx_id"] is not None:
                tx = int(rows[0]["ocpp_tx_id"])
                self._tx_ids[session_id] = tx
        return tx

    async def session_of(self, tx_id: int) -> str | None:
        for sid, tx in self._tx_ids.items():
            if tx == tx_id:
                return sid
        rows = await self.journal.query(
            "SELECT id FROM sessions WHERE ocpp_tx_id=? ORDER BY started_at DESC LIMIT 1", (tx_id,)
        )
        return str(rows[0]["id"]) if rows else None

    async def counts(self) -> dict[str, int]:
        """Outbox messages by state (pending / failed / done) for the UI."""
        rows = await self.journal.query("SELECT state, count(*) AS n FROM outbox GROUP BY state")
        out = {"pending": 0, "failed": 0, "done": 0}
        out.update({r["state"]: int(r["n"]) for r in rows})
        return out

    async def failed(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.journal.query(
            "SELECT id, created_at, session_id, action, attempts, last_error, done_at"
            " FROM outbox WHERE state='failed' ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    async def pending(self) -> int:
        rows = await self.journal.query("SELECT count(*) AS n FROM outbox WHERE state='pending'")
        return int(rows[0]["n"])

    async def _head(self) -> dict[str, Any] | None:
        """The oldest pending message after the last one finished.

        Not ``Journal.outbox_next``: it leaves its cursor open (``fetchone``), which
        can keep the reader on an old WAL snapshot and return a head already marked
        done. Ids only grow and the queue is strictly ordered, so ``id > last done``
        is exact.
        """
        rows = await self.journal.query(
            "SELECT * FROM outbox WHERE state='pending' AND id > ? ORDER BY id LIMIT 1",
            (self._last_done,),
        )
        if not rows:
            return None
        row = rows[0]
        row["payload"] = json.loads(row["payload"])
        return row

    # ------------------------------------------------------------------ the loop

    async def run(self, call: RawCall, gate: Gate) -> None:
        """Deliver until cancelled (connection lost); the current head stays pending."""
        marking: asyncio.Task[None] | None = None
        try:
            while True:
                self.journal.outbox_changed.clear()
                row = await self._head()
                if row is None:
                    if marking is not None:
                        await marking
                        marking = None
                    self.idle.set()
                    await self.journal.outbox_changed.wait()
                    continue
                self.idle.clear()
                wait = float(row["next_attempt_at"]) - self.clock.wall()
                if wait > 0:
                    await self.clock.sleep(wait)
                payload = await self._prepare(row)
                if payload is None:
                    continue
                await gate()
                try:
                    resp = await call(row["action"], payload)
                except (OCPPError, UnknownCallErrorCodeError, TimeoutError) as err:
                    if marking is not None:
                        await marking
                        marking = None
                    await self._failed(row, err)
                    continue
                if marking is not None:
                    await marking
                    marking = None
                await self._answered(row, payload, resp)
                self._last_done = row["id"]
                self.stats.delivered += 1
                done = self.journal.outbox_done(row["id"], self.clock.wall(), resp)
                if self.overlap_done_marks:
                    marking = asyncio.create_task(done)
                else:
                    await done
        finally:
            if marking is not None:
                await asyncio.shield(marking)

    async def _prepare(self, row: dict[str, Any]) -> dict[str, Any] | None:
        payload: dict[str, Any] = dict(row["payload"])
        sid = row["session_id"]
        if row["action"] in ("StopTransaction", "MeterValues") and sid is not None:
            tx = await self.tx_id(sid)
            if tx is None:
                # Strict order: its StartTransaction was answered or given up before this
                # one; without the CSMS's id it cannot be sent (never invent one).
                await self._give_up(row, "no transactionId: StartTransaction was not accepted")
                return None
            payload["transactionId"] = tx
        return payload

    async def _answered(
        self, row: dict[str, Any], payload: dict[str, Any], resp: dict[str, Any]
    ) -> None:
        action, sid = row["action"], row["session_id"]
        info = resp.get("id_tag_info")
        if info and self.keys.get_bool("AuthorizationCacheEnabled") and payload.get("idTag"):
            await self.auth.remember(payload["idTag"], info)
        if action == "StartTransaction" and sid is not None:
            tx = int(resp["transaction_id"])
            status = str(info["status"]) if info else "Accepted"
            self._tx_ids[sid] = tx
            await self.journal.execute_write(
                "UPDATE sessions SET ocpp_tx_id=?, sync_state=? WHERE id=?",
                (tx, "started" if status == "Accepted" else f"rejected:{status}", sid),
            )
            if status != "Accepted":
                log.warning("ocpp.start_rejected", session_id=sid, status=status, tx_id=tx)
                if self.keys.get_bool("StopTransactionOnInvalidId"):
                    await self.on_rejected(sid, status)
        elif action == "StopTransaction" and sid is not None:
            await self.journal.execute_write(
                "UPDATE sessions SET sync_state='synced' WHERE id=? AND sync_state NOT LIKE 'rejected%'",
                (sid,),
            )

    async def _failed(self, row: dict[str, Any], err: BaseException) -> None:
        text = f"{type(err).__name__}: {err}"[:500]
        attempts = int(row["attempts"]) + 1
        limit = max(1, self.keys.get_int("TransactionMessageAttempts"))
        self.stats.errors += 1
        self.stats.last_error = text
        if attempts >= limit:
            await self._give_up(row, text)
            return
        retry_at = (
            self.clock.wall() + self.keys.get_int("TransactionMessageRetryInterval") * attempts
        )
        log.warning(
            "ocpp.tx_message_error",
            id=row["id"],
            action=row["action"],
            attempts=attempts,
            error=text,
        )
        await self.journal.outbox_failed(
            row["id"], self.clock.wall(), text, give_up=False, retry_at=retry_at
        )

    async def _give_up(self, row: dict[str, Any], text: str) -> None:
        log.error("ocpp.tx_message_failed", id=row["id"], action=row["action"], error=text)
        self.stats.given_up += 1
        self.stats.last_error = text
        await self.journal.outbox_failed(
            row["id"], self.clock.wall(), text, give_up=True, retry_at=0.0
        )
        self._last_done = max(self._last_done, row["id"])
        if row["action"] == "StartTransaction" and row["session_id"] is not None:
            await self.journal.execute_write(
                "UPDATE sessions SET sync_state='failed' WHERE id=?", (row["session_id"],)
            )
