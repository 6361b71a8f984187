"""An adapter's own tables in the journal: its namespace, its migrations, its SQL.

An adapter (the OCPP client, the local UI) keeps state of its own beside the
station's: charging profiles, login sessions. It does not add tables to the
core schema; it opens a :class:`Store` on the journal under a namespace with
its own list of migrations, and keeps every statement in one module of its
package (``cloud_sync/store.py``, ``local_ui/store.py``). Everything goes
through the journal's one writer with its rules: one transaction per write,
rolled back whole on failure, an SQLite error marks the journal unwritable and
surfaces as :class:`JournalError`.

The version of each namespace is a row of the core table ``store_versions``;
migrations run when the store opens, each in one transaction with its version
bump. A journal whose namespace is newer than the software is refused with a
clear message, as the core schema is. A store opens by itself on first use;
an adapter opens it explicitly when it starts, so a problem shows up there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import structlog

from controller.core.journal import Journal, JournalError, Transaction

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

Params = Sequence[Any] | dict[str, Any]


class Store:
    """The tables of one namespace; append to ``migrations``, never edit a released entry."""

    def __init__(self, journal: Journal, namespace: str, migrations: Sequence[str]) -> None:
        if not _NAME.match(namespace):
            raise ValueError(f"a store namespace is a short lowercase name, not {namespace!r}")
        self.journal = journal
        self.namespace = namespace
        self.migrations = tuple(migrations)
        self._open = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Bring the namespace's tables to this software's version (once; cheap afterwards)."""
        if self._open:
            return
        async with self._opening:
            if self._open:
                return
            while await self._migrate_one():
                pass
            self._open = True

    async def _migrate_one(self) -> bool:
        """Apply the next migration, if one is due; False when the namespace is current."""
        latest = len(self.migrations)
        async with self.journal.transaction() as tx:
            rows = await tx.query(
                "SELECT version FROM store_versions WHERE namespace=?", (self.namespace,)
            )
            version = int(rows[0]["version"]) if rows else 0
            if version > latest:
                raise JournalError(
                    f"journal schema version {version} of {self.namespace!r} is newer than"
                    f" this software ({latest}): update edge-station"
                )
            if version == latest:
                return False
            await tx.script(self.migrations[version])
            await tx.execute(
                "INSERT INTO store_versions(namespace, version) VALUES (?,?)"
                " ON CONFLICT(namespace) DO UPDATE SET version=excluded.version",
                (self.namespace, version + 1),
            )
        log.info("journal.store_migrated", namespace=self.namespace, version=version + 1)
        return True

    async def version(self) -> int:
        rows = await self.journal.query(
            "SELECT version FROM store_versions WHERE namespace=?", (self.namespace,)
        )
        return int(rows[0]["version"]) if rows else 0

    # ------------------------------------------------------------------ statements

    async def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """A read on the journal's reader connection (beside the writer, WAL)."""
        await self.open()
        return await self.journal.query(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement in its own transaction; returns how many rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        async with self.transaction() as tx:
            return await tx.executemany(sql, rows)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Several statements as one write transaction (``async with store.transaction() as tx``)."""
        await self.open()
        async with self.journal.transaction() as tx:
            yield tx
