"""The local UI's own tables in the journal (store namespace ``ui``): all of local_ui's SQL.

- ``ui_users``: owner, installer and viewer accounts with their argon2id password hashes;
- ``ui_sessions``: login sessions, by the SHA-256 of their cookie (never the cookie itself);
- ``ui_member_tokens``: the cards and codes of each member account (migration 2, which
  also lets ``ui_users`` hold the ``member`` role): a member sees and stops only the
  sessions started with one of them.

What the UI shows of the station (sessions, holds, bookings, the audit log)
comes from the journal's methods, never from SQL here. Migration 1 creates the
tables IF NOT EXISTS: journals made before this store existed already have
them (the core's released migration 3 made them), with their accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.core.journal import Journal
from controller.core.store import Store

NAMESPACE = "ui"

# Append, never edit a released entry.
MIGRATIONS: list[str] = [
    # 1: accounts and login sessions (as the core's migration 3 made them before)
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
    # 2: members (a role that sees and stops only their own sessions) and their tokens.
    # SQLite cannot change a CHECK constraint in place: the table is rebuilt, rows kept.
    """
    CREATE TABLE ui_users_v2 (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'installer', 'viewer', 'member')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    INSERT INTO ui_users_v2(username, password_hash, role, created_at, updated_at)
        SELECT username, password_hash, role, created_at, updated_at FROM ui_users;
    DROP TABLE ui_users;
    ALTER TABLE ui_users_v2 RENAME TO ui_users;
    CREATE TABLE ui_member_tokens (
        token TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        added_at REAL NOT NULL
    );
    CREATE INDEX ui_member_tokens_user ON ui_member_tokens(username);
    """,
]


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class LoginRow:
    username: str
    role: str
    expires_at: float


class UiStore:
    def __init__(self, journal: Journal) -> None:
        self._store = Store(journal, NAMESPACE, MIGRATIONS)

    async def open(self) -> None:
        """Create or migrate the tables (the UI does it when it gets ready)."""
        await self._store.open()

    # ------------------------------------------------------------------ accounts

    async def has_owner(self) -> bool:
        return bool(await self._store.query("SELECT 1 FROM ui_users WHERE role='owner' LIMIT 1"))

    async def add_user(self, username: str, password_hash: str, role: str, at: float) -> None:
        await self._store.execute(
            "INSERT INTO ui_users(username, password_hash, role, created_at, updated_at)"
            " VALUES (?,?,?,?,?)",
            (username, password_hash, role, at, at),
        )

    async def user(self, username: str) -> UserRow | None:
        rows = await self._store.query(
            "SELECT username, role, password_hash FROM ui_users WHERE username=?", (username,)
        )
        if not rows:
            return None
        r = rows[0]
        return UserRow(str(r["username"]), str(r["role"]), str(r["password_hash"]))

    async def users(self) -> list[dict[str, Any]]:
        """Every account (name, role, created, updated), by name; never the hashes."""
        return await self._store.query(
            "SELECT username, role, created_at, updated_at FROM ui_users ORDER BY username"
        )

    async def delete_user(self, username: str) -> bool:
        """The account, its logins and its tokens, in one transaction; False if there was none."""
        async with self._store.transaction() as tx:
            n = await tx.execute("DELETE FROM ui_users WHERE username=?", (username,))
            await tx.execute("DELETE FROM ui_sessions WHERE username=?", (username,))
            await tx.execute("DELETE FROM ui_member_tokens WHERE username=?", (username,))
        return n > 0

    # ------------------------------------------------------------------ members' tokens

    async def member_tokens(self, username: str) -> list[str]:
        rows = await self._store.query(
            "SELECT token FROM ui_member_tokens WHERE username=? ORDER BY added_at, token",
            (username,),
        )
        return [str(r["token"]) for r in rows]

    async def token_owner(self, token: str) -> str | None:
        rows = await self._store.query(
            "SELECT username FROM ui_member_tokens WHERE token=?", (token,)
        )
        return str(rows[0]["username"]) if rows else None

    async def set_member_tokens(self, username: str, tokens: list[str], at: float) -> None:
        """Replace the member's tokens (one transaction); a token belongs to one member."""
        async with self._store.transaction() as tx:
            await tx.execute("DELETE FROM ui_member_tokens WHERE username=?", (username,))
            for tok in tokens:
                await tx.execute(
                    "INSERT INTO ui_member_tokens(token, username, added_at) VALUES (?,?,?)",
                    (tok, username, at),
                )

    async def set_password_hash(self, username: str, password_hash: str, at: float) -> None:
        await self._store.execute(
            "UPDATE ui_users SET password_hash=?, updated_at=? WHERE username=?",
            (password_hash, at, username),
        )

    # ------------------------------------------------------------------ login sessions

    async def add_login(
        self, id_hash: str, username: str, created_at: float, expires_at: float
    ) -> None:
        await self._store.execute(
            "INSERT INTO ui_sessions(id_hash, username, created_at, expires_at) VALUES (?,?,?,?)",
            (id_hash, username, created_at, expires_at),
        )

    async def login(self, id_hash: str, now: float) -> LoginRow | None:
        """The account of a login still valid at ``now`` (and when the login ends), or None."""
        rows = await self._store.query(
            "SELECT u.username, u.role, s.expires_at FROM ui_sessions s"
            " JOIN ui_users u ON u.username = s.username WHERE s.id_hash=? AND s.expires_at > ?",
            (id_hash, now),
        )
        if not rows:
            return None
        r = rows[0]
        return LoginRow(str(r["username"]), str(r["role"]), float(r["expires_at"]))

    async def end_logins_of(self, username: str, *, keep: str = "") -> int:
        """End every login of ``username`` but the one hashed ``keep``; returns how many ended."""
        return await self._store.execute(
            "DELETE FROM ui_sessions WHERE username=? AND id_hash != ?", (username, keep)
        )

    async def end_login(self, id_hash: str) -> None:
        await self._store.execute("DELETE FROM ui_sessions WHERE id_hash=?", (id_hash,))

    async def end_expired_logins(self, now: float) -> int:
        return await self._store.execute("DELETE FROM ui_sessions WHERE expires_at < ?", (now,))
