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
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError

from cloud_sync.keys import ConfigKeys
from cloud_sync.localauth import LocalAuth
from controller.core.journal import Journal
from controller.ports import Clock

log = structlog.get_logger(__name__)

TX_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})

RawCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Gate = Callable[[], Awaitable[None]]
OnRejected = Callable[[str, str], Awaitable[None]]
Enrich = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """What an answer means for its session's row: its sync state, and the CSMS's id if new."""

    session_id: str
    sync_state: str  # started / rejected:<status> / synced
    tx_id: int | None = None

    async def apply(self, journal: Journal) -> None:
        if self.tx_id is not None:
            await journal.set_session_tx_id(self.session_id, self.tx_id, self.sync_state)
        else:
            await journal.set_session_synced(self.session_id)


def session_write(action: str, session_id: str | None, resp: dict[str, Any]) -> SessionWrite | None:
    """The session row update an answer implies, if any.

    The answer itself is kept with the done mark (``outbox.response``), so the update
    can always be derived again from it (:meth:`OutboxSender.recover`).
    """
    if session_id is None:
        return None
    if action == "StartTransaction":
        info = resp.get("id_tag_info")
        status = str(info["status"]) if info else "Accepted"
        state = "started" if status == "Accepted" else f"rejected:{status}"
        return SessionWrite(session_id, state, int(resp["transaction_id"]))
    if action == "StopTransaction":
        return SessionWrite(session_id, "synced")
    return None


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
        self.idle = asyncio.Event()  # set while the outbox is empty (tests and benchmarks)
        self.read_ahead = 200  # messages read from the journal at a time
        self._copying: asyncio.Task[None] | None = None  # a session update after its mark
        # Completes a StopTransaction at send time (its transactionData, cloud_sync.txdata).
        self.enrich_stop: Enrich | None = None

    # ------------------------------------------------------------------ lookups

    async def tx_id(self, session_id: str) -> int | None:
        tx = self._tx_ids.get(session_id)
        if tx is None:
            tx = await self.journal.session_tx_id(session_id)
            if tx is not None:
                self._tx_ids[session_id] = tx
        return tx

    async def session_of(self, tx_id: int) -> str | None:
        for sid, tx in self._tx_ids.items():
            if tx == tx_id:
                return sid
        return await self.journal.session_with_tx_id(tx_id)

    async def counts(self) -> dict[str, int]:
        """Outbox messages by state (pending / failed / done) for the UI."""
        return await self.journal.outbox_counts()

    async def failed(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.journal.outbox_given_up(limit)

    async def pending(self) -> int:
        return await self.journal.outbox_depth()

    async def _read_after(self, after_id: int) -> list[dict[str, Any]]:
        """The next pending messages after ``after_id``, oldest first (payloads decoded).

        Not ``Journal.outbox_next``: it leaves its cursor open (``fetchone``), which
        can keep the reader on an old WAL snapshot and return a head already marked
        done. Ids only grow and the queue is strictly ordered, so ``id > last taken``
        is exact, and only this sender changes a pending row.
        """
        return await self.journal.outbox_after(after_id, self.read_ahead)

    # ------------------------------------------------------------------ the loop

    async def run(self, call: RawCall, gate: Gate) -> None:
        """Deliver until cancelled (connection lost); the current head stays pending.

        Between an answer and the next send there is only the done mark (one durable
        statement), which the crash contract needs there. Everything else is moved
        off that path: rows are read ahead in batches (the next batch while the last
        row of one is in flight, on the reader connection), and the session update an
        answer implies is written just after its mark, while the next call is in
        flight (the next mark waits for it, so it is never more than one behind).
        """
        ahead: collections.deque[dict[str, Any]] = collections.deque()
        taken = self._last_done  # the last id read into ``ahead``
        reading: asyncio.Task[list[dict[str, Any]]] | None = None

        def read_next() -> asyncio.Task[list[dict[str, Any]]]:
            # Cleared before the read starts: a message committed after this is seen by
            # the read or sets the event again, so an empty read never misses one.
            self.journal.outbox_changed.clear()
            return asyncio.create_task(self._read_after(taken), name="ocpp:outbox-read")

        async def settle() -> None:
            if self._copying is not None:
                await self._copying
                self._copying = None

        try:
            while True:
                if not ahead:
                    reading = reading or read_next()
                    rows = await reading
                    reading = None
                    if not rows:
                        await settle()
                        self.idle.set()
                        await self.journal.outbox_changed.wait()
                        continue
                    ahead.extend(rows)
                    taken = rows[-1]["id"]
                row = ahead.popleft()
                self.idle.clear()
                wait = float(row["next_attempt_at"]) - self.clock.wall()
                if wait > 0:
                    await self.clock.sleep(wait)
                payload = await self._prepare(row)
                if payload is None:
                    continue
                await gate()
                if not ahead and reading is None:
                    reading = read_next()  # the next batch, while this call is in flight
                try:
                    resp = await call(row["action"], payload)
                except (OCPPError, UnknownCallErrorCodeError, TimeoutError) as err:
                    await settle()
                    await self._failed(row, err)
                    # The head changed (attempts, next try) or was given up: read again.
                    if reading is not None:
                        reading.cancel()
                        await asyncio.gather(reading, return_exceptions=True)
                        reading = None
                    ahead.clear()
                    taken = self._last_done
                    continue
                await settle()
                write = await self._answered(row, payload, resp)
                self._last_done = row["id"]
                self.stats.delivered += 1
                # Durable before the next send: after a kill -9 only the call in flight repeats.
                await self._mark(row["id"], resp, write)
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            if self._copying is not None:
                await asyncio.shield(self._copying)
                self._copying = None

    async def _mark(self, msg_id: int, resp: dict[str, Any], write: SessionWrite | None) -> None:
        """The durable done mark; then start the session update (awaited before the next mark)."""
        await self.journal.outbox_done(msg_id, self.clock.wall(), resp)
        if write is not None:
            self._copying = asyncio.create_task(
                write.apply(self.journal), name="ocpp:outbox-session"
            )

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
            if row["action"] == "StopTransaction" and self.enrich_stop is not None:
                payload = await self.enrich_stop(sid, payload)
        return payload

    async def _answered(
        self, row: dict[str, Any], payload: dict[str, Any], resp: dict[str, Any]
    ) -> SessionWrite | None:
        """Act on an answer; returns the session row update still to write (after the mark)."""
        action, sid = row["action"], row["session_id"]
        info = resp.get("id_tag_info")
        if info and self.keys.get_bool("AuthorizationCacheEnabled") and payload.get("idTag"):
            await self.auth.remember(payload["idTag"], info)
        write = session_write(action, sid, resp)
        if action == "StartTransaction" and sid is not None:
            tx = int(resp["transaction_id"])
            status = str(info["status"]) if info else "Accepted"
            self._tx_ids[sid] = tx
            if status != "Accepted":
                # Rare: written before the mark and before the stop it may cause.
                if write is not None:
                    await write.apply(self.journal)
                log.warning("ocpp.start_rejected", session_id=sid, status=status, tx_id=tx)
                if self.keys.get_bool("StopTransactionOnInvalidId"):
                    await self.on_rejected(sid, status)
                return None
        return write

    async def recover(self) -> None:
        """After a restart: write the session update of the last answered message again.

        The session copy of an answer (``ocpp_tx_id``, ``sync_state``) is written just
        after its done mark, and the next mark waits for it; so after a crash at most
        the last done message can lack it, and its stored answer has what it needs.
        """
        last = await self.journal.outbox_last_done()
        if last is None or last["response"] is None:
            return
        write = session_write(last["action"], last["session_id"], last["response"])
        if write is not None:
            await write.apply(self.journal)

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
            await self.journal.set_session_sync_failed(row["session_id"])
