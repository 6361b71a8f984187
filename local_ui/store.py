"""The local UI's own tables in the journal (store namespace ``ui``): all of local_ui's SQL.

- ``ui_users``: owner, installer and viewer accounts with their argon2id password hashes;
- ``ui_sessions``: login sessions, by the SHA-256 of their cookie (never the cookie itself);
- ``ui_member_tokens``: the cards and codes of each member account (migration 2, which
  also lets ``ui_users`` hold the ``member`` role): a member sees and stops only the
  sessions started with one of them;
- ``ui_invites``: the owner's invitations of members (migration 3): only the SHA-256 of
  the one-time code is kept, with its expiry and when it was used (a code works once).

What the UI shows of the station (sessions, holds, bookings, the audit log)
comes from the journal's methods, never from SQL here. Migration 1 creates the
tables IF NOT EXISTS: journals made before this store existed already have
them (the core's released migration 3 made them), with their accounts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.core.journal import Journal
from controller.core.store import Store

NAMESPACE = "ui"
INVITES_KEPT_S = 30 * 86400.0

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
    # 3: invitations of members: a one-time code (its hash only), the cards it brings.
    """
    CREATE TABLE ui_invites (
        code_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        tokens TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE INDEX ui_invites_user ON ui_invites(username);
    """,
]


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class InviteRow:
    username: str
    tokens: list[str]
    created_by: str
    created_at: float
    expires_at: float
    used_at: float | None


class InviteTaken(Exception):
    """The invited name was given to another account meanwhile."""


@dataclass(frozen=True, slots=True)
class LoginRow:
    username: str
    role: str
    expires_at: float


_INVITE_SQL = (
    "SELECT username, tokens, created_by, created_at, expires_at, used_at"
    " FROM ui_invites WHERE code_hash=?"
)


def _invite_row(r: dict[str, Any]) -> InviteRow:
    return InviteRow(
        str(r["username"]),
        [str(t) for t in json.loads(str(r["tokens"]))],
        str(r["created_by"]),
        float(r["created_at"]),
        float(r["expires_at"]),
        None if r["used_at"] is None else float(r["used_at"]),
    )


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

    async def token_members(self) -> dict[str, str]:
        """Every member's card or code -> the member's name (who a session belongs to)."""
        rows = await self._store.query("SELECT token, username FROM ui_member_tokens")
        return {str(r["token"]): str(r["username"]) for r in rows}

    # ------------------------------------------------------------------ invitations

    async def add_invite(
        self,
        code_hash: str,
        username: str,
        tokens: list[str],
        created_by: str,
        at: float,
        expires_at: float,
    ) -> None:
        """A new invitation for ``username``; one still open for that name is withdrawn.
        Invitations that ended a month ago are forgotten (until then, a used one is told
        apart from a forged one)."""
        async with self._store.transaction() as tx:
            await tx.execute("DELETE FROM ui_invites WHERE expires_at < ?", (at - INVITES_KEPT_S,))
            await tx.execute(
                "DELETE FROM ui_invites WHERE username=? AND used_at IS NULL", (username,)
            )
            await tx.execute(
                "INSERT INTO ui_invites(code_hash, username, tokens, created_by, created_at,"
                " expires_at) VALUES (?,?,?,?,?,?)",
                (code_hash, username, json.dumps(tokens), created_by, at, expires_at),
            )

    async def invite(self, code_hash: str) -> InviteRow | None:
        rows = await self._store.query(_INVITE_SQL, (code_hash,))
        return _invite_row(rows[0]) if rows else None

    async def open_invites(self, now: float) -> list[dict[str, Any]]:
        """Invitations not used and not expired at ``now``, newest first (never a code)."""
        rows = await self._store.query(
            "SELECT username, tokens, created_by, created_at, expires_at FROM ui_invites"
            " WHERE used_at IS NULL AND expires_at > ? ORDER BY created_at DESC",
            (now,),
        )
        return [{**r, "tokens": json.loads(str(r["tokens"]))} for r in rows]

    async def withdraw_invites(self, username: str) -> int:
        return await self._store.execute(
            "DELETE FROM ui_invites WHERE username=? AND used_at IS NULL", (username,)
        )

    async def redeem_invite(
        self, code_hash: str, password_hash: str, at: float
    ) -> InviteRow | None:
        """Use the invitation once: mark it used, create the member and give them the cards
        still free, in one transaction. None if it is unknown, used or expired at ``at``.
        Raises :class:`InviteTaken` when the name is an account already."""
        async with self._store.transaction() as tx:
            n = await tx.execute(
                "UPDATE ui_invites SET used_at=? WHERE code_hash=? AND used_at IS NULL"
                " AND expires_at > ?",
                (at, code_hash, at),
            )
            if n != 1:
                return None
            row = _invite_row((await tx.query(_INVITE_SQL, (code_hash,)))[0])
            taken = await tx.execute(
                "INSERT OR IGNORE INTO ui_users(username, password_hash, role, created_at,"
                " updated_at) VALUES (?,?,'member',?,?)",
                (row.username, password_hash, at, at),
            )
            if taken != 1:
                raise InviteTaken(row.username)
            for tok in row.tokens:
                await tx.execute(
                    "INSERT OR IGNORE INTO ui_member_tokens(token, username, added_at)"
                    " VALUES (?,?,?)",
                    (tok, row.username, at),
                )
        return row

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
