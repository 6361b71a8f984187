"""The journal: SQLite (WAL, synchronous=FULL), the station's memory and the truth after a crash.

It owns the schema and its migrations, and the one writer. Every state
change of a bay is one transaction (:meth:`Journal.commit`) that writes the
event, the bay's state snapshot, the session and hold rows it touched, and the
outbox messages for the central system. A ``kill -9`` at any instant leaves
either all of it or none of it.

Reads for the UI go through a second connection (WAL lets them run beside the
writer); meter samples are written in batches.

A failed write (a full disk, a read-only card) marks the journal unwritable and
sets :attr:`Journal.failed`; it never leaves a transaction open, so the next
write (or :meth:`Journal.probe`) finds out by itself whether it can write again.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

log = structlog.get_logger(__name__)

# Each entry is one schema version; append, never edit a released one.
MIGRATIONS: list[str] = [
    # 1: the foundation
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        bay_id TEXT,
        session_id TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_session ON events(session_id);
    CREATE INDEX events_at ON events(at);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        connector INTEGER NOT NULL,
        token TEXT NOT NULL,
        auth_source TEXT NOT NULL,
        reservation_id INTEGER,
        mode TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        started_at REAL NOT NULL,
        stopped_at REAL,
        meter_start_wh INTEGER NOT NULL,
        meter_stop_wh INTEGER,
        meter_wh INTEGER NOT NULL,
        energy_wh INTEGER NOT NULL DEFAULT 0,
        peak_power_w REAL NOT NULL DEFAULT 0,
        avg_power_w REAL,
        tariff TEXT NOT NULL,
        cost REAL,
        currency TEXT,
        stop_reason TEXT,
        quota_wh INTEGER,
        quota_s REAL,
        ocpp_tx_id INTEGER,
        sync_state TEXT NOT NULL DEFAULT 'pending'
    );
    CREATE INDEX sessions_bay ON sessions(bay_id, started_at);
    CREATE INDEX sessions_started ON sessions(started_at);
    CREATE UNIQUE INDEX sessions_one_open_per_bay ON sessions(bay_id) WHERE state = 'open';
    CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        token TEXT NOT NULL,
        reservation_id INTEGER,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE bay_state (
        bay_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        session_id TEXT,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        done_at REAL,
        response TEXT
    );
    CREATE INDEX outbox_pending ON outbox(state, id);
    CREATE TABLE meter_samples (
        at REAL NOT NULL,
        source TEXT NOT NULL,
        session_id TEXT,
        energy_wh REAL,
        power_w REAL,
        current_a TEXT
    );
    CREATE INDEX meter_samples_source ON meter_samples(source, at);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    """,
    # 2: OCPP state (charging profiles, local authorization list, authorization cache)
    """
    CREATE TABLE charging_profiles (
        id INTEGER PRIMARY KEY,
        connector INTEGER NOT NULL,
        stack_level INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        transaction_id INTEGER,
        profile TEXT NOT NULL,
        installed_at REAL NOT NULL
    );
    CREATE TABLE local_auth_list (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT
    );
    CREATE TABLE auth_cache (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT,
        updated_at REAL NOT NULL
    );
    """,
    # 3: accounts and login sessions of the local UI (only a hash of each login cookie is kept)
    """
    CREATE TABLE IF NOT EXISTS ui_users (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'installer', 'viewer')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS ui_sessions (
        id_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 4: the local booking calendar: future holds, placed at their time (also offline)
    """
    CREATE TABLE bookings (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        token TEXT NOT NULL,
        start_at REAL NOT NULL,
        hold_s REAL NOT NULL,
        reservation_id INTEGER,
        state TEXT NOT NULL CHECK (state IN ('scheduled', 'placed', 'cancelled', 'missed')),
        created_at REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX bookings_due ON bookings(state, start_at);
    """,
    # 5: plug continuity: the node's plug and boot counters when a session began
    """
    ALTER TABLE sessions ADD COLUMN plug_count INTEGER;
    ALTER TABLE sessions ADD COLUMN node_boot_id INTEGER;
    """,
]


class JournalError(Exception):
    """The journal cannot be written: the station must refuse new sessions."""


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

    # ------------------------------------------------------------------ reading

    async def bay_states(self) -> dict[str, dict[str, Any]]:
        rows = await self.query("SELECT bay_id, data FROM bay_state")
        return {r["bay_id"]: json.loads(r["data"]) for r in rows}

    async def open_sessions(self) -> list[dict[str, Any]]:
        return await self.query("SELECT * FROM sessions WHERE state='open' ORDER BY started_at")

    async def session(self, session_id: str) -> dict[str, Any] | None:
        rows = await self.query("SELECT * FROM sessions WHERE id=?", (session_id,))
        return rows[0] if rows else None

    async def sessions(
        self,
        *,
        bay_id: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        mode: str | None = None,
        stop_reason: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        where, params = _session_filter(bay_id, state, since, until, mode, stop_reason)
        order = "DESC" if newest_first else "ASC"
        return await self.query(
            f"SELECT * FROM sessions {where} ORDER BY started_at {order}, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    async def count_sessions(self, **filters: Any) -> int:
        where, params = _session_filter(
            filters.get("bay_id"),
            filters.get("state"),
            filters.get("since"),
            filters.get("until"),
            filters.get("mode"),
            filters.get("stop_reason"),
        )
        rows = await self.query(f"SELECT count(*) AS n FROM sessions {where}", params)
        return int(rows[0]["n"])

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

    async def audit_log(self, *, limit: int = 200, kind: str | None = None) -> list[dict[str, Any]]:
        if kind:
            return await self.query(
                "SELECT * FROM audit WHERE kind=? ORDER BY id DESC LIMIT ?", (kind, limit)
            )
        return await self.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))

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
