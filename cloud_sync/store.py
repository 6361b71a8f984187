"""The OCPP client's own tables in the journal (store namespace ``ocpp``): all of cloud_sync's SQL.

- ``charging_profiles``: the installed charging profiles, as the CSMS sent them (JSON);
- ``local_auth_list``: the Local Authorization List the CSMS owns (SendLocalList); its
  version is a kv value of the journal (``ocpp.local_list_version``);
- ``auth_cache``: the Authorization Cache, learnt from every idTagInfo the CSMS sends.

The station's own tables (sessions, the outbox) are read and changed through the
journal's methods, never here. Migration 1 creates the tables IF NOT EXISTS:
journals made before this store existed already have them (the core's released
migration 2 made them), with their data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.core.journal import Journal
from controller.core.store import Store

NAMESPACE = "ocpp"

# Append, never edit a released entry.
MIGRATIONS: list[str] = [
    # 1: profiles, the local list and the cache (as the core's migration 2 made them before)
    """
    CREATE TABLE IF NOT EXISTS charging_profiles (
        id INTEGER PRIMARY KEY,
        connector INTEGER NOT NULL,
        stack_level INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        transaction_id INTEGER,
        profile TEXT NOT NULL,
        installed_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS local_auth_list (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT
    );
    CREATE TABLE IF NOT EXISTS auth_cache (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT,
        updated_at REAL NOT NULL
    );
    """,
]


@dataclass(frozen=True, slots=True)
class StoredProfile:
    id: int
    connector: int
    stack_level: int
    purpose: str
    transaction_id: int | None
    profile_json: str  # the csChargingProfiles object (snake_case keys)
    installed_at: float


@dataclass(frozen=True, slots=True)
class TagRow:
    """One idTag with its idTagInfo (expiry as the CSMS sent it, ISO 8601)."""

    id_tag: str
    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None


class OcppStore:
    def __init__(self, journal: Journal) -> None:
        self._store = Store(journal, NAMESPACE, MIGRATIONS)

    async def open(self) -> None:
        """Create or migrate the tables (the client does it when it starts)."""
        await self._store.open()

    # ------------------------------------------------------------------ charging profiles

    async def charging_profiles(self) -> list[StoredProfile]:
        rows = await self._store.query(
            "SELECT id, connector, stack_level, purpose, transaction_id, profile, installed_at"
            " FROM charging_profiles ORDER BY id"
        )
        return [
            StoredProfile(
                r["id"],
                r["connector"],
                r["stack_level"],
                r["purpose"],
                r["transaction_id"],
                r["profile"],
                r["installed_at"],
            )
            for r in rows
        ]

    async def install_charging_profile(self, p: StoredProfile, *, replaces: Iterable[int]) -> None:
        """Store ``p`` in place of the profiles ``replaces`` names, in one transaction."""
        async with self._store.transaction() as tx:
            await tx.executemany(
                "DELETE FROM charging_profiles WHERE id=?", [(pid,) for pid in replaces]
            )
            await tx.execute(
                "INSERT INTO charging_profiles(id, connector, stack_level, purpose, transaction_id,"
                " profile, installed_at) VALUES (?,?,?,?,?,?,?)",
                (
                    p.id,
                    p.connector,
                    p.stack_level,
                    p.purpose,
                    p.transaction_id,
                    p.profile_json,
                    p.installed_at,
                ),
            )

    async def remove_charging_profiles(self, ids: Iterable[int]) -> None:
        await self._store.executemany(
            "DELETE FROM charging_profiles WHERE id=?", [(pid,) for pid in ids]
        )

    # ------------------------------------------------------------------ local list and cache

    async def local_auth_list(self) -> list[TagRow]:
        return _tags(
            await self._store.query(
                "SELECT id_tag, status, expiry_date, parent_id_tag FROM local_auth_list"
            )
        )

    async def replace_local_auth_list(self, entries: Iterable[TagRow]) -> None:
        """The whole list at once: a crash leaves the old list or the new one, never a part."""
        async with self._store.transaction() as tx:
            await tx.execute("DELETE FROM local_auth_list")
            await tx.executemany(
                "INSERT INTO local_auth_list(id_tag, status, expiry_date, parent_id_tag)"
                " VALUES (?,?,?,?)",
                [(e.id_tag, e.status, e.expiry_date, e.parent_id_tag) for e in entries],
            )

    async def auth_cache(self) -> list[TagRow]:
        return _tags(
            await self._store.query(
                "SELECT id_tag, status, expiry_date, parent_id_tag FROM auth_cache"
            )
        )

    async def cache_tag(self, tag: TagRow, at: float) -> None:
        await self._store.execute(
            "INSERT INTO auth_cache(id_tag, status, expiry_date, parent_id_tag, updated_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(id_tag) DO UPDATE SET status=excluded.status,"
            " expiry_date=excluded.expiry_date, parent_id_tag=excluded.parent_id_tag,"
            " updated_at=excluded.updated_at",
            (tag.id_tag, tag.status, tag.expiry_date, tag.parent_id_tag, at),
        )

    async def clear_auth_cache(self) -> None:
        await self._store.execute("DELETE FROM auth_cache")


def _tags(rows: list[dict[str, object]]) -> list[TagRow]:
    return [
        TagRow(
            str(r["id_tag"]),
            str(r["status"]),
            None if r["expiry_date"] is None else str(r["expiry_date"]),
            None if r["parent_id_tag"] is None else str(r["parent_id_tag"]),
        )
        for r in rows
    ]
