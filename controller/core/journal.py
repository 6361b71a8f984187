"""The journal: SQLite (WAL, synchronous=FULL), the station's memory and the truth after a crash.

It owns the schema and its migrations, and the one writer. Every state
change of a bay is one transaction (:meth:`Journal.commit`) that writes the
event, the bay's state snapshot, the session and hold rows it touched, and the
outbox messages for the central system. A ``kill -9`` at any instant leaves
either all of it or none of it.

Reads for the UI go through a second connection (WAL lets them run beside the
writer). Kind to flash: the meter figures go in as one row per node and minute,
a few minutes' rows per transaction (:meth:`Journal.write_minutes`, with the open
sessions' energy checkpoints in the same transaction; the cadence is
controller.core.samples'), not once per telemetry frame. Minute rows are appended
in (minute, source) order under an id that encodes both (:func:`minute_id`), so a
write rewrites the table's last leaf and, when it is full, adds one beside it.

A failed write (a full disk, a read-only card) marks the journal unwritable and
sets :attr:`Journal.failed`; it never leaves a transaction open, so the next
write (or :meth:`Journal.probe`) finds out by itself whether it can write again.

The schema is :mod:`controller.core.schema`. Adapters never write SQL into these
tables: what they read or change here has a method with a name (a session's
CSMS transaction id, outbox counts, history pages, monthly totals). Their own
tables go through :meth:`Journal.transaction` by way of their
:class:`controller.core.store.Store`, under the same writer and the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from controller.core.schema import MIGRATIONS

log = structlog.get_logger(__name__)


class JournalError(Exception):
    """The journal cannot be written: the station must refuse new sessions."""


class Transaction:
    """The statements of one write transaction on the journal's writer (:meth:`Journal.transaction`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """One statement; returns how many rows it changed."""
        async with self._conn.execute(sql, params) as cur:
            return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        async with self._conn.executemany(sql, rows) as cur:
            return cur.rowcount

    async def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """A read inside the transaction (sees its own writes; rows as dicts)."""
        async with self._conn.execute(sql, params) as cur:
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]

    async def script(self, script: str) -> None:
        """Several statements separated by ``;`` (no ``;`` inside one: no triggers)."""
        await _run_script(self._conn, script)


@dataclass(slots=True)
class EventRow:
    kind: str
    at: float
    bay_id: str | None = None
    session_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OutboxRow:
    action: str
    payload: dict[str, Any]
    session_id: str | None = None


@dataclass(slots=True)
class MinuteRow:
    """One node's figures over one minute (``minute``: its start, wall seconds)."""

    minute: float
    source: str
    session_id: str | None
    samples: int
    energy_wh: float | None  # the register at the minute's last sample
    power_w: float  # mean
    power_max_w: float
    current_a: list[float]  # mean per phase
    last_at: float  # the minute's last sample


@dataclass(slots=True)
class Commit:
    """Everything one state change writes, applied in one transaction."""

    events: list[EventRow] = field(default_factory=list)
    bay_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_open: list[dict[str, Any]] = field(default_factory=list)
    session_update: list[dict[str, Any]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    audit: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    bookings: list[dict[str, Any]] = field(default_factory=list)
    booking_states: list[tuple[str, str, str]] = field(default_factory=list)  # id, state, detail

    def empty(self) -> bool:
        return not (
            self.bookings
            or self.booking_states
            or self.events
            or self.bay_states
            or self.session_open
            or self.session_update
            or self.holds
            or self.outbox
            or self.audit
        )


_SESSION_COLS = (
    "id",
    "bay_id",
    "connector",
    "token",
    "auth_source",
    "reservation_id",
    "mode",
    "state",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "meter_wh",
    "energy_wh",
    "peak_power_w",
    "avg_power_w",
    "tariff",
    "cost",
    "currency",
    "stop_reason",
    "quota_wh",
    "quota_s",
    "ocpp_tx_id",
    "sync_state",
    "plug_count",
    "node_boot_id",
)
_UPDATABLE = frozenset(_SESSION_COLS) - {
    "id",
    "bay_id",
    "connector",
    "started_at",
    "meter_start_wh",
}


MINUTE_KEY = 1 << 20
"""A minute row's id is ``minute_id(minute) + slot``: its source's slot is below this."""


def minute_id(minute: float) -> int:
    """The first id of a wall-clock minute's rows in ``meter_minutes`` (any second of it).

    Ids grow with the minute, so a minute range is an id range (the table's only key).
    """
    return math.floor(minute / 60.0) * MINUTE_KEY


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class Journal:
    """One writer connection, one reader connection, both on the same file."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._w = writer
        self._r = reader
        self._lock = asyncio.Lock()
        self.outbox_changed = asyncio.Event()
        self.writable = True
        self.failed = asyncio.Event()  # set on every failed write; whoever watches clears it
        self._inflight: set[asyncio.Future[None]] = set()
        self._slot_cache: dict[str, int] = {}  # meter source -> its slot (see minute_id)
        self._pending: Callable[[], Sequence[MinuteRow]] | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute(f"PRAGMA synchronous={synchronous}")
            await writer.execute("PRAGMA foreign_keys=ON")
            await writer.execute("PRAGMA busy_timeout=5000")
            await _migrate(writer)
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("PRAGMA busy_timeout=5000")
            reader.row_factory = aiosqlite.Row
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        async with self._lock:
            await self._r.close()
            await self._w.close()

    async def checkpoint_wal(self) -> int:
        """Copy what the write-ahead log holds into the database file, as far as no reader
        still needs it (``PASSIVE``: it never waits); returns how many pages the log held.

        SQLite does this by itself every 1000 pages; a benchmark calls it to count the
        copy of what it wrote as written.
        """
        async with self._lock:
            try:
                rows = list(await self._w.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)"))
            except sqlite3.Error as err:
                raise JournalError(str(err)) from err
        return int(rows[0][1]) if rows else 0

    async def schema_version(self) -> int:
        rows = await self._r.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0]) if rows else 0

    # ------------------------------------------------------------------ writing

    async def commit(self, c: Commit) -> None:
        """Write ``c`` atomically; raises :class:`JournalError` (and marks the journal unwritable)."""
        if c.empty():
            return
        # A transaction is never abandoned half-way: cancelling the caller lets the commit
        # finish (or roll back) on its own; the task is kept until it is done.
        task = asyncio.ensure_future(self._commit(c))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _commit(self, c: Commit) -> None:
        async with self._lock:
            try:
                await self._w.execute("BEGIN IMMEDIATE")
                try:
                    await self._write(c)
                    await self._w.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
            except sqlite3.Error as err:
                self._failed(err)
                raise JournalError(str(err)) from err
        self.writable = True
        if c.outbox:
            self.outbox_changed.set()

    async def _rollback(self) -> None:
        # After SQLITE_FULL or an I/O error SQLite may have rolled back already, or may
        # keep the transaction open (a failed COMMIT does): end it either way, or every
        # later BEGIN fails with "cannot start a transaction within a transaction".
        if self._w.in_transaction:
            try:
                await self._w.execute("ROLLBACK")
            except sqlite3.Error as err:
                log.error("journal.rollback_failed", error=str(err))

    def _failed(self, err: BaseException) -> None:
        if self.writable:
            log.error("journal.write_failed", error=str(err))
        self.writable = False
        self.failed.set()

    async def probe(self, at: float) -> None:
        """One small write transaction: does the journal accept writes now? Raises JournalError."""
        async with self._lock:
            try:
                await self._w.execute("BEGIN IMMEDIATE")
                try:
                    await self._w.execute(
                        "INSERT INTO kv(key, value) VALUES ('journal.probe', ?)"
                        " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (_dumps(at),),
                    )
                    await self._w.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
            except sqlite3.Error as err:
                self._failed(err)
                raise JournalError(str(err)) from err
        self.writable = True

    async def disk_space(self) -> tuple[int, int]:
        """Bytes free (for an unprivileged writer) and in total on the journal's file system."""
        st = await asyncio.to_thread(os.statvfs, self.path.parent)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    async def _write(self, c: Commit) -> None:
        w = self._w
        if c.events:
            await w.executemany(
                "INSERT INTO events(at, bay_id, session_id, kind, data) VALUES (?,?,?,?,?)",
                [(e.at, e.bay_id, e.session_id, e.kind, _dumps(e.data)) for e in c.events],
            )
        for row in c.session_open:
            cols = [k for k in _SESSION_COLS if k in row]
            await w.execute(
                f"INSERT INTO sessions({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                [_col(row[k]) for k in cols],
            )
        for row in c.session_update:
            cols = [k for k in row if k in _UPDATABLE]
            sets = ",".join(f"{k}=?" for k in cols)
            await w.execute(
                f"UPDATE sessions SET {sets} WHERE id=?",
                [*(_col(row[k]) for k in cols), row["id"]],
            )
        for h in c.holds:
            await w.execute(
                "INSERT INTO holds(id, bay_id, token, reservation_id, created_at, expires_at, state)"
                " VALUES (:id,:bay_id,:token,:reservation_id,:created_at,:expires_at,:state)"
                " ON CONFLICT(id) DO UPDATE SET state=excluded.state, expires_at=excluded.expires_at",
                h,
            )
        if c.bay_states:
            now = max((e.at for e in c.events), default=0.0)
            await w.executemany(
                "INSERT INTO bay_state(bay_id, data, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(bay_id) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
                [(b, _dumps(d), now) for b, d in c.bay_states.items()],
            )
        if c.outbox:
            now = max((e.at for e in c.events), default=0.0)
            await w.executemany(
                "INSERT INTO outbox(created_at, session_id, action, payload) VALUES (?,?,?,?)",
                [(now, o.session_id, o.action, _dumps(o.payload)) for o in c.outbox],
            )
        if c.bookings:
            await w.executemany(
                "INSERT INTO bookings(id, bay_id, token, start_at, hold_s, reservation_id, state,"
                " created_at, detail) VALUES (:id,:bay_id,:token,:start_at,:hold_s,:reservation_id,"
                ":state,:created_at,:detail)",
                c.bookings,
            )
        if c.booking_states:
            await w.executemany(
                "UPDATE bookings SET state=?, detail=? WHERE id=?",
                [(state, detail, bid) for bid, state, detail in c.booking_states],
            )
        if c.audit:
            now = max((e.at for e in c.events), default=0.0)
            await w.executemany(
                "INSERT INTO audit(at, actor, kind, detail) VALUES (?,?,?,?)",
                [(now, actor, kind, _dumps(d)) for actor, kind, d in c.audit],
            )

    async def execute_write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """One statement in its own transaction (for small owner changes); returns rowcount."""
        async with self._lock:
            try:
                cur = await self._w.execute(sql, params)
            except sqlite3.Error as err:
                await self._rollback()
                self._failed(err)
                raise JournalError(str(err)) from err
            self.writable = True
            return cur.rowcount

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction on the one writer (``BEGIN IMMEDIATE`` … ``COMMIT``).

        For the stores of adapters (:class:`controller.core.store.Store`): the body runs
        only statements, since it holds the writer. An exception in it rolls everything
        back; an SQLite error becomes :class:`JournalError` and marks the journal
        unwritable, like every failed write. A cancelled COMMIT is waited for (the lock
        is kept until SQLite has decided), so the transaction is never left half-way.
        """
        async with self._lock:
            try:
                await self._w.execute("BEGIN IMMEDIATE")
                try:
                    yield Transaction(self._w)
                    await self._commit_now()
                except BaseException:
                    await self._rollback()
                    raise
            except sqlite3.Error as err:
                self._failed(err)
                raise JournalError(str(err)) from err
        self.writable = True

    async def _commit_now(self) -> None:
        async def commit() -> None:
            await self._w.execute("COMMIT")

        task = asyncio.ensure_future(commit())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # its outcome decides whether the rollback has work
            if not task.cancelled() and task.exception() is not None:
                log.error("journal.commit_failed", error=str(task.exception()))
            raise

    async def add_meter_samples(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Batched insert of ``(at, source, session_id, energy_wh, power_w, current_a_json)``."""
        batch = list(rows)
        if not batch:
            return 0
        async with self._lock:
            try:
                await self._w.execute("BEGIN")
                await self._w.executemany(
                    "INSERT INTO meter_samples(at, source, session_id, energy_wh, power_w, current_a)"
                    " VALUES (?,?,?,?,?,?)",
                    batch,
                )
                await self._w.execute("COMMIT")
            except sqlite3.Error as err:
                await self._rollback()
                self._failed(err)
                raise JournalError(str(err)) from err
        self.writable = True
        return len(batch)

    async def write_minutes(
        self, minutes: Sequence[MinuteRow], progress: Sequence[dict[str, Any]]
    ) -> None:
        """Per-minute meter figures and sessions' energy checkpoints, in one transaction.

        A checkpoint (``id``, ``meter_wh``, ``energy_wh``, ``peak_power_w``, ``plug_count``,
        ``node_boot_id``, ``checkpoint_at``) only ever moves an open session forward: a
        session closed meanwhile keeps the figures its close wrote.
        """
        if not minutes and not progress:
            return
        async with self._lock:
            try:
                await self._w.execute("BEGIN IMMEDIATE")
                try:
                    slots = await self._slots({m.source for m in minutes}) if minutes else {}
                    if minutes:
                        # In (minute, source) order: appended at the end of the table.
                        ordered = sorted(minutes, key=lambda m: (m.minute, slots[m.source]))
                        await self._w.executemany(
                            "INSERT OR REPLACE INTO meter_minutes(id, minute, source, session_id,"
                            " samples, energy_wh, power_w, power_max_w, current_a, last_at)"
                            " VALUES (?,?,?,?,?,?,?,?,?,?)",
                            [
                                (
                                    minute_id(m.minute) + slots[m.source],
                                    m.minute,
                                    m.source,
                                    m.session_id,
                                    m.samples,
                                    m.energy_wh,
                                    m.power_w,
                                    m.power_max_w,
                                    _dumps(m.current_a),
                                    m.last_at,
                                )
                                for m in ordered
                            ],
                        )
                    if progress:
                        await self._w.executemany(
                            "UPDATE sessions SET meter_wh=:meter_wh, energy_wh=:energy_wh,"
                            " peak_power_w=:peak_power_w, plug_count=:plug_count,"
                            " node_boot_id=:node_boot_id, checkpoint_at=:checkpoint_at"
                            " WHERE id=:id AND state='open'",
                            progress,
                        )
                    await self._w.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    self._slot_cache = {}  # slots given in the rolled-back transaction are gone
                    raise
            except sqlite3.Error as err:
                self._failed(err)
                raise JournalError(str(err)) from err
        self.writable = True

    def set_pending_minutes(self, pending: Callable[[], Sequence[MinuteRow]]) -> None:
        """Where the minute rows not written yet are: the sample writer's memory, whose
        ended minutes wait for its next write (every few minutes on a small station).

        The readers of minute figures (:meth:`power_per_minute`,
        :meth:`site_power_per_minute`, :meth:`session_samples`) add them, so what they
        answer does not depend on when the last write was.
        """
        self._pending = pending

    def _unwritten(self, lo: float, hi: float, source: str | None) -> list[MinuteRow]:
        """The unwritten minute rows of ``[lo, hi)`` (``source``: its own only).

        Taken before the journal is read: a write in between puts a minute in both (the
        readers keep the journal's), never in neither.
        """
        if self._pending is None:
            return []
        return [
            m
            for m in self._pending()
            if lo <= m.minute < hi and (source is None or m.source == source)
        ]

    async def _slots(self, sources: Collection[str]) -> dict[str, int]:
        """Each source's slot in ``meter_sources``, given (in this transaction) to new ones."""
        missing = sorted(s for s in sources if s not in self._slot_cache)
        if missing:
            marks = ",".join("?" * len(missing))
            sql = f"SELECT source, slot FROM meter_sources WHERE source IN ({marks})"
            async with self._w.execute(sql, missing) as cur:
                self._slot_cache.update({str(r[0]): int(r[1]) for r in await cur.fetchall()})
            for source in missing:
                if source in self._slot_cache:
                    continue
                async with self._w.execute(
                    "INSERT INTO meter_sources(source) VALUES (?) RETURNING slot", (source,)
                ) as cur:
                    row = await cur.fetchone()
                assert row is not None
                if int(row[0]) >= MINUTE_KEY:
                    raise sqlite3.DataError(f"no slot left for meter source {source!r}")
                self._slot_cache[source] = int(row[0])
        return {s: self._slot_cache[s] for s in sources}

    async def site_power_per_minute(
        self, since: float, until: float, *, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Power per minute in ``[since, until)`` (wall seconds), oldest first.

        Each row: ``minute`` (its start), ``power_w`` (the sum over the nodes of each
        node's mean power in that minute), ``power_max_w`` (the sum of their peaks) and
        ``sources`` (how many nodes reported). ``source`` (``node:<node id>``): one node only.
        Minutes of older releases (1 Hz rows in ``meter_samples``) are averaged the same way.
        """
        lo, hi = math.floor(since / 60) * 60, until
        where = " AND source = ?" if source is not None else ""
        extra: tuple[Any, ...] = (source,) if source is not None else ()
        # The minutes that start before ``until``: up to the one ``until`` falls in.
        last = minute_id(hi) + (MINUTE_KEY if hi % 60 else 0)
        unwritten = self._unwritten(lo, hi, source)
        rows = await self.query(
            "SELECT minute, sum(power_w) AS power_w, sum(power_max_w) AS power_max_w,"
            " count(*) AS sources FROM ("
            "  SELECT minute, source, power_w, power_max_w FROM meter_minutes"
            f"  WHERE id >= ? AND id < ?{where}"
            "  UNION ALL"
            "  SELECT CAST(at / 60 AS INTEGER) * 60.0 AS minute, source,"
            "   avg(power_w) AS power_w, max(power_w) AS power_max_w FROM meter_samples"
            f"  WHERE at >= ? AND at < ?{where} GROUP BY 1, source"
            ") GROUP BY minute ORDER BY minute",
            (minute_id(lo), last, *extra, lo, hi, *extra),
        )
        have = {float(r["minute"]) for r in rows}
        added: dict[float, dict[str, Any]] = {}
        for m in unwritten:  # a minute is written whole (all its sources in one write)
            if m.minute in have:
                continue
            r = added.setdefault(
                m.minute, {"minute": m.minute, "power_w": 0.0, "power_max_w": 0.0, "sources": 0}
            )
            r["power_w"] += m.power_w
            r["power_max_w"] += m.power_max_w
            r["sources"] += 1
        if added:
            rows = sorted([*rows, *added.values()], key=lambda r: float(r["minute"]))
        return rows

    async def audit(self, at: float, actor: str, kind: str, detail: dict[str, Any]) -> None:
        await self.commit(Commit(audit=[(actor, kind, detail)], events=[EventRow("audit", at)]))

    async def kv_set(self, key: str, value: Any) -> None:
        await self.execute_write(
            "INSERT INTO kv(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, _dumps(value)),
        )

    async def kv_get(self, key: str, default: Any = None) -> Any:
        # Read every row (closing the statement): an open statement would pin the
        # reader to an old WAL snapshot and later reads would miss new commits.
        rows = list(await self._r.execute_fetchall("SELECT value FROM kv WHERE key=?", (key,)))
        return json.loads(rows[0][0]) if rows else default

    async def nonce_seen_or_add(self, nonce: str, expires_at: float, now: float) -> bool:
        """True if ``nonce`` was already used (a replay); otherwise remember it until it expires."""
        async with self._lock:
            try:
                await self._w.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
                cur = await self._w.execute(
                    "INSERT OR IGNORE INTO nonces(nonce, expires_at) VALUES (?,?)",
                    (nonce, expires_at),
                )
            except sqlite3.Error as err:
                await self._rollback()
                self._failed(err)
                raise JournalError(str(err)) from err
            return cur.rowcount == 0

    # ------------------------------------------------------------------ outbox

    async def outbox_next(self, now: float) -> dict[str, Any] | None:
        """The oldest undelivered message (strict order: the head blocks the queue until done)."""
        rows = await self.query("SELECT * FROM outbox WHERE state='pending' ORDER BY id LIMIT 1")
        if not rows:
            return None
        d = rows[0]
        d["payload"] = json.loads(d["payload"])
        return d

    async def outbox_done(self, msg_id: int, at: float, response: dict[str, Any] | None) -> None:
        await self.execute_write(
            "UPDATE outbox SET state='done', done_at=?, response=? WHERE id=?",
            (at, _dumps(response or {}), msg_id),
        )

    async def outbox_failed(
        self, msg_id: int, at: float, error: str, *, give_up: bool, retry_at: float
    ) -> None:
        await self.execute_write(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=?,"
            " state=CASE WHEN ? THEN 'failed' ELSE state END, done_at=CASE WHEN ? THEN ? END"
            " WHERE id=?",
            (error, retry_at, give_up, give_up, at, msg_id),
        )

    async def outbox_depth(self) -> int:
        rows = await self.query("SELECT count(*) AS n FROM outbox WHERE state='pending'")
        return int(rows[0]["n"])

    async def outbox_after(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        """Pending messages after ``after_id``, oldest first, payloads decoded.

        Ids only grow and the queue is strictly ordered, so a sender that remembers the
        last id it took reads exactly what is left.
        """
        rows = await self.query(
            "SELECT * FROM outbox WHERE state='pending' AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        return rows

    async def outbox_counts(self) -> dict[str, int]:
        """Messages by state: pending, failed (given up, kept with their error), done."""
        rows = await self.query("SELECT state, count(*) AS n FROM outbox GROUP BY state")
        out = {"pending": 0, "failed": 0, "done": 0}
        out.update({r["state"]: int(r["n"]) for r in rows})
        return out

    async def outbox_given_up(self, limit: int = 100) -> list[dict[str, Any]]:
        """The messages given up on, newest first (without their payloads)."""
        return await self.query(
            "SELECT id, created_at, session_id, action, attempts, last_error, done_at"
            " FROM outbox WHERE state='failed' ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    async def outbox_last_done(self) -> dict[str, Any] | None:
        """The last delivered message: action, session id and the answer (decoded), or None."""
        rows = await self.query(
            "SELECT action, session_id, response FROM outbox WHERE state='done'"
            " ORDER BY id DESC LIMIT 1"
        )
        if not rows:
            return None
        row = rows[0]
        row["response"] = json.loads(row["response"]) if row["response"] else None
        return row

    # ------------------------------------------------------------------ a session and the CSMS

    async def set_session_tx_id(self, session_id: str, tx_id: int, sync_state: str) -> None:
        """The CSMS's transaction id of a session and its sync state (a StartTransaction answer)."""
        await self.execute_write(
            "UPDATE sessions SET ocpp_tx_id=?, sync_state=? WHERE id=?",
            (tx_id, sync_state, session_id),
        )

    async def set_session_synced(self, session_id: str) -> None:
        """The CSMS has the session's end; a session it rejected stays marked rejected."""
        await self.execute_write(
            "UPDATE sessions SET sync_state='synced' WHERE id=? AND sync_state NOT LIKE 'rejected%'",
            (session_id,),
        )

    async def set_session_sync_failed(self, session_id: str) -> None:
        """The session's StartTransaction was given up: the CSMS will never know it."""
        await self.execute_write(
            "UPDATE sessions SET sync_state='failed' WHERE id=?", (session_id,)
        )

    async def session_tx_id(self, session_id: str) -> int | None:
        rows = await self.query("SELECT ocpp_tx_id FROM sessions WHERE id=?", (session_id,))
        return int(rows[0]["ocpp_tx_id"]) if rows and rows[0]["ocpp_tx_id"] is not None else None

    async def session_with_tx_id(self, tx_id: int) -> str | None:
        """The newest session the CSMS knows under ``tx_id``."""
        rows = await self.query(
            "SELECT id FROM sessions WHERE ocpp_tx_id=? ORDER BY started_at DESC LIMIT 1", (tx_id,)
        )
        return str(rows[0]["id"]) if rows else None

    # ------------------------------------------------------------------ reading

    async def bay_states(self) -> dict[str, dict[str, Any]]:
        rows = await self.query("SELECT bay_id, data FROM bay_state")
        return {r["bay_id"]: json.loads(r["data"]) for r in rows}

    async def open_sessions(self) -> list[dict[str, Any]]:
        return await self.query("SELECT * FROM sessions WHERE state='open' ORDER BY started_at")

    async def session(self, session_id: str) -> dict[str, Any] | None:
        rows = await self.query("SELECT * FROM sessions WHERE id=?", (session_id,))
        return rows[0] if rows else None

    async def session_samples(
        self, source: str, session_id: str, since: float, until: float, buckets: int
    ) -> list[dict[str, Any]]:
        """At most ``buckets`` of the session's meter samples, the last of each equal slice
        of [since, until] (a bounded summary however long the session ran), oldest first."""
        width = max((until - since) / max(1, buckets), 1e-6)
        # Per-minute rows (a minute's figures stand at its last sample) and, from
        # journals of older releases, 1 Hz rows: one summary over both.
        # A minute's last sample lies in the minute: the minutes from the one before
        # ``since`` to the one of ``until`` (an id range).
        ids = (minute_id(since - 60.0), minute_id(until) + MINUTE_KEY)
        unwritten = [
            m
            for m in self._unwritten(since - 60.0, until + 60.0, source)
            if m.session_id == session_id and since <= m.last_at <= until
        ]
        rows = await self.query(
            "SELECT MAX(at) AS at, energy_wh, power_w, current_a FROM ("
            "  SELECT last_at AS at, energy_wh, power_w, current_a FROM meter_minutes"
            "  WHERE id>=? AND id<? AND source=? AND last_at>=? AND last_at<=? AND session_id=?"
            "  UNION ALL"
            "  SELECT at, energy_wh, power_w, current_a FROM meter_samples"
            "  WHERE source=? AND at>=? AND at<=? AND session_id=?"
            ") GROUP BY CAST((at - ?) / ? AS INTEGER) ORDER BY at",
            (*ids, *(source, since, until, session_id) * 2, since, width),
        )
        if not unwritten:
            return rows
        seen = {r["at"] for r in rows}
        rows += [
            {
                "at": m.last_at,
                "energy_wh": m.energy_wh,
                "power_w": m.power_w,
                "current_a": _dumps(m.current_a),
            }
            for m in unwritten
            if m.last_at not in seen
        ]
        last: dict[int, dict[str, Any]] = {}  # the same slices as the query's
        for r in rows:
            key = int((r["at"] - since) / width)
            if key not in last or r["at"] > last[key]["at"]:
                last[key] = r
        return sorted(last.values(), key=lambda r: float(r["at"]))

    async def sessions(
        self,
        *,
        bay_id: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        mode: str | None = None,
        stop_reason: str | None = None,
        closed_with: Collection[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
        tokens: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Sessions by start time (ties by id); ``closed_with``: closed for one of these reasons;
        ``tokens``: started with one of these (a member's own)."""
        where, params = _session_filter(
            bay_id, state, since, until, mode, stop_reason, closed_with, tokens
        )
        order = "DESC" if newest_first else "ASC"
        return await self.query(
            f"SELECT * FROM sessions {where} ORDER BY started_at {order}, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    async def count_sessions(
        self,
        *,
        bay_id: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        mode: str | None = None,
        stop_reason: str | None = None,
        closed_with: Collection[str] | None = None,
        tokens: Collection[str] | None = None,
    ) -> int:
        where, params = _session_filter(
            bay_id, state, since, until, mode, stop_reason, closed_with, tokens
        )
        rows = await self.query(f"SELECT count(*) AS n FROM sessions {where}", params)
        return int(rows[0]["n"])

    async def monthly_totals(
        self,
        since: float,
        until: float | None = None,
        bay_id: str | None = None,
        tokens: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Per local calendar month with sessions: count, energy (Wh), cost, how many lack a cost.

        Sessions still open, or with a counter that went backwards, stay out.
        ``tokens``: only sessions started with one of these (a member's own).
        """
        clauses = ["state = 'closed'", "energy_wh >= 0", "started_at >= ?"]
        params: list[Any] = [since]
        if until is not None:
            clauses.append("started_at < ?")
            params.append(until)
        if bay_id is not None:
            clauses.append("bay_id = ?")
            params.append(bay_id)
        if tokens is not None:
            toks = sorted(tokens)
            clauses.append(f"token IN ({','.join('?' * len(toks))})" if toks else "0")
            params.extend(toks)
        return await self.query(
            "SELECT strftime('%Y-%m', started_at, 'unixepoch', 'localtime') AS month,"
            " count(*) AS sessions, sum(energy_wh) AS energy_wh, sum(cost) AS cost,"
            " sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) AS uncosted"
            f" FROM sessions WHERE {' AND '.join(clauses)} GROUP BY month ORDER BY month",
            params,
        )

    async def token_totals(self, since: float, until: float | None = None) -> list[dict[str, Any]]:
        """Per token that started sessions in ``[since, until)``: count, energy (Wh), cost,
        how many lack a cost. The same sessions as :meth:`monthly_totals` count (closed ones
        whose counter did not go backwards), so the two add up to the same totals."""
        clauses = ["state = 'closed'", "energy_wh >= 0", "started_at >= ?"]
        params: list[Any] = [since]
        if until is not None:
            clauses.append("started_at < ?")
            params.append(until)
        return await self.query(
            "SELECT token, count(*) AS sessions, sum(energy_wh) AS energy_wh,"
            " sum(cost) AS cost, sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) AS uncosted"
            f" FROM sessions WHERE {' AND '.join(clauses)} GROUP BY token ORDER BY token",
            params,
        )

    async def session_energy(self, since: float, until: float) -> dict[str, Any]:
        """Sessions started in ``[since, until)``, open ones included: count and energy (Wh).

        An open session counts with the energy of its last progress checkpoint; a
        session whose counter went backwards (negative energy) counts with none.
        """
        rows = await self.query(
            "SELECT count(*) AS sessions,"
            " coalesce(sum(CASE WHEN energy_wh > 0 THEN energy_wh ELSE 0 END), 0) AS energy_wh"
            " FROM sessions WHERE started_at >= ? AND started_at < ?",
            (since, until),
        )
        return {"sessions": int(rows[0]["sessions"]), "energy_wh": int(rows[0]["energy_wh"])}

    async def power_per_minute(
        self, sources: Collection[str], since: float, until: float
    ) -> list[dict[str, Any]]:
        """Mean measured power per source and wall-clock minute, for the minutes ``[since, until)`` overlaps.

        The contract the owner's charts rely on, whatever the samples' storage:
        one row ``{"minute", "source", "power_w", "samples"}`` per source (``"grid"``,
        ``"pv"``, ``"node:<node id>"``) and wall-clock minute that has at least one
        sample with a power value; ``minute`` is the epoch second the minute starts
        at (a multiple of 60), ``power_w`` the mean of that minute's values in W
        (the sign as measured: a grid meter's export is negative), ``samples`` how
        many values it is the mean of. Rows come by minute, then source. A minute
        without samples has no row: the caller shows a gap, never a zero.
        """
        names = sorted(set(sources))
        if not names or until <= since:
            return []
        lo, hi = since - since % 60, until - until % 60 + (60 if until % 60 else 0)
        rows: list[dict[str, Any]] = []
        for name in names:  # index range scans per source: the minute rows, then 1 Hz rows
            unwritten = self._unwritten(lo, hi, name)
            # Minutes are kept as rows of their own (SampleWriter); journals of older
            # releases hold 1 Hz rows, averaged here the same way (weighted by samples).
            found = await self.query(
                "SELECT minute, source, sum(power_w * samples) / sum(samples) AS power_w,"
                " sum(samples) AS samples FROM ("
                "  SELECT minute, source, power_w, samples FROM meter_minutes"
                "  WHERE id >= ? AND id < ? AND source = ? AND power_w IS NOT NULL"
                "   AND samples > 0"
                "  UNION ALL"
                "  SELECT CAST(at / 60 AS INTEGER) * 60.0 AS minute, source,"
                "   avg(power_w) AS power_w, count(*) AS samples FROM meter_samples"
                "  WHERE source = ? AND at >= ? AND at < ? AND power_w IS NOT NULL"
                "  GROUP BY 1"
                ") GROUP BY minute",
                (minute_id(lo), minute_id(hi), name, name, lo, hi),
            )
            have = {float(r["minute"]) for r in found}
            found += [
                {"minute": m.minute, "source": name, "power_w": m.power_w, "samples": m.samples}
                for m in unwritten
                if m.minute not in have and m.samples > 0
            ]
            rows += found
        rows.sort(key=lambda r: (r["minute"], r["source"]))
        for r in rows:
            r["minute"] = float(r["minute"])
        return rows

    async def recent_holds(self, limit: int) -> list[dict[str, Any]]:
        """The latest holds, newest first (without their tokens)."""
        return await self.query(
            "SELECT id, bay_id, reservation_id, created_at, expires_at, state FROM holds"
            " ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )

    async def booking_calendar(self, limit: int) -> list[dict[str, Any]]:
        """Bookings still to come first, then the others; each group latest start first."""
        return await self.query(
            "SELECT id, bay_id, token, start_at, hold_s, reservation_id, state, created_at"
            " FROM bookings ORDER BY (state = 'scheduled') DESC, start_at DESC LIMIT ?",
            (limit,),
        )

    async def events(
        self, *, session_id: str | None = None, limit: int = 200, after_id: int = 0
    ) -> list[dict[str, Any]]:
        if session_id:
            return await self.query(
                "SELECT * FROM events WHERE session_id=? AND id>? ORDER BY id LIMIT ?",
                (session_id, after_id, limit),
            )
        return await self.query(
            "SELECT * FROM events WHERE id>? ORDER BY id LIMIT ?", (after_id, limit)
        )

    async def audit_log(
        self,
        *,
        limit: int = 200,
        kind: str | None = None,
        kinds: Collection[str] | None = None,
        not_kinds: Collection[str] | None = None,
        actor_prefix: str | None = None,
        not_actor_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; optionally one kind, some kinds, or by who acted (an actor prefix)."""
        clauses: list[str] = []
        params: list[Any] = []
        if kind:
            clauses.append("kind=?")
            params.append(kind)
        if kinds is not None:
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})" if kinds else "0")
            params.extend(kinds)
        if not_kinds:
            clauses.append(f"kind NOT IN ({','.join('?' * len(not_kinds))})")
            params.extend(not_kinds)
        if actor_prefix is not None:
            clauses.append("substr(actor, 1, ?) = ?")
            params.extend((len(actor_prefix), actor_prefix))
        if not_actor_prefix is not None:
            clauses.append("substr(actor, 1, ?) != ?")
            params.extend((len(not_actor_prefix), not_actor_prefix))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return await self.query(
            f"SELECT * FROM audit{where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )

    async def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        async with self._r.execute(sql, params) as cur:
            return [dict(r) for r in await cur.fetchall()]


def _session_filter(
    bay_id: str | None,
    state: str | None,
    since: float | None,
    until: float | None,
    mode: str | None,
    stop_reason: str | None,
    closed_with: Collection[str] | None = None,
    tokens: Collection[str] | None = None,
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    for col, val, op in (
        ("bay_id", bay_id, "="),
        ("state", state, "="),
        ("started_at", since, ">="),
        ("started_at", until, "<"),
        ("mode", mode, "="),
        ("stop_reason", stop_reason, "="),
    ):
        if val is not None:
            clauses.append(f"{col} {op} ?")
            params.append(val)
    if closed_with is not None:
        reasons = sorted(closed_with)
        clauses.append(f"state = 'closed' AND stop_reason IN ({','.join('?' * len(reasons))})")
        params.extend(reasons)
    if tokens is not None:
        toks = sorted(tokens)
        clauses.append(f"token IN ({','.join('?' * len(toks))})" if toks else "0")
        params.extend(toks)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)


def _col(v: Any) -> Any:
    if isinstance(v, dict | list):
        return _dumps(v)
    return v


async def _migrate(conn: aiosqlite.Connection) -> None:
    cur = await conn.execute("PRAGMA user_version")
    row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise JournalError(
            f"journal schema version {version} is newer than this software ({len(MIGRATIONS)})"
        )
    for target in range(version + 1, len(MIGRATIONS) + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await _run_script(conn, MIGRATIONS[target - 1])
            await conn.execute(f"PRAGMA user_version={target}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        log.info("journal.migrated", version=target)


async def _run_script(conn: aiosqlite.Connection, script: str) -> None:
    # executescript() would COMMIT first; run statement by statement inside our transaction.
    for stmt in script.split(";"):
        if stmt.strip():
            await conn.execute(stmt)
