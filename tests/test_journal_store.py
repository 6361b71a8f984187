"""Adapter stores on the journal: namespaces, their migrations, one transaction per write,
failures mapped to JournalError and the journal's writability, cancellation."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.core.journal import Commit, EventRow, Journal, JournalError
from controller.core.store import Store

NOTES = [
    "CREATE TABLE IF NOT EXISTS t_notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE)",
    "ALTER TABLE t_notes ADD COLUMN at REAL; CREATE INDEX t_notes_at ON t_notes(at)",
]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        yield j
    finally:
        await j.close()


async def _tables(j: Journal) -> set[str]:
    rows = await j.query("SELECT name FROM sqlite_master WHERE type='table'")
    return {r["name"] for r in rows}


async def test_migrations_run_in_order_once_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = await Journal.open(path)
    try:
        store = Store(j, "notes", NOTES[:1])
        assert "t_notes" not in await _tables(j)  # registering writes nothing
        await store.execute("INSERT INTO t_notes(text) VALUES ('first')")  # opens on first use
        assert await store.version() == 1
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        store = Store(j, "notes", NOTES)  # the next release adds a migration
        await store.open()
        await store.open()
        assert await store.version() == 2
        await store.execute("INSERT INTO t_notes(text, at) VALUES ('second', 2.0)")
        rows = await store.query("SELECT text, at FROM t_notes ORDER BY id")
        assert rows == [{"text": "first", "at": None}, {"text": "second", "at": 2.0}]
        other = Store(j, "other", ["CREATE TABLE t_other (x INTEGER)"])
        await other.open()
        versions = await j.query("SELECT namespace, version FROM store_versions ORDER BY 1")
        assert versions == [
            {"namespace": "notes", "version": 2},
            {"namespace": "other", "version": 1},
        ]
    finally:
        await j.close()


async def test_a_failing_migration_leaves_the_namespace_at_its_last_version(
    journal: Journal,
) -> None:
    broken = [NOTES[0], "CREATE TABLE t_half (x INTEGER); CREATE TABLE t_notes (x INTEGER)"]
    store = Store(journal, "notes", broken)
    with pytest.raises(JournalError, match="already exists"):
        await store.open()
    assert await store.version() == 1
    assert "t_half" not in await _tables(journal)  # the whole migration was rolled back
    await journal.probe(1.0)  # and the writer is free again
    assert journal.writable


async def test_newer_store_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = await Journal.open(path)
    await Store(j, "notes", NOTES).open()
    await j.close()
    j = await Journal.open(path)
    try:
        older = Store(j, "notes", NOTES[:1])  # the software was downgraded
        with pytest.raises(
            JournalError,
            match=r"journal schema version 2 of 'notes' is newer than this software \(1\)",
        ):
            await older.query("SELECT * FROM t_notes")
        assert j.writable  # not a write failure: the station's own journal works on
        await j.commit(Commit(events=[EventRow("still", 1.0)]))
    finally:
        await j.close()


def test_namespace_is_a_plain_name(tmp_path: Path) -> None:
    for bad in ("", "UI", "ui; DROP TABLE sessions", "a" * 40):
        with pytest.raises(ValueError, match="namespace"):
            Store(None, bad, [])  # type: ignore[arg-type]


async def test_transaction_is_all_or_nothing(journal: Journal) -> None:
    store = Store(journal, "notes", NOTES)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t_notes(text) VALUES ('a')")
            raise RuntimeError("the caller changed its mind")
    assert await store.query("SELECT * FROM t_notes") == []
    assert journal.writable  # not the journal's failure
    with pytest.raises(JournalError, match="UNIQUE"):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t_notes(text) VALUES ('b')")
            assert await tx.query("SELECT text FROM t_notes") == [{"text": "b"}]
            await tx.execute("INSERT INTO t_notes(text) VALUES ('b')")
    assert await store.query("SELECT * FROM t_notes") == []
    assert not journal.writable and journal.failed.is_set()  # as every failed write
    assert await store.executemany("INSERT INTO t_notes(text) VALUES (?)", [("c",), ("d",)]) == 2
    assert journal.writable  # the next good write says so


async def test_read_only_disk_refuses_store_writes_then_recovers(journal: Journal) -> None:
    store = Store(journal, "notes", NOTES)
    await store.open()
    await journal._w.execute("PRAGMA query_only=ON")  # the card turned read-only
    with pytest.raises(JournalError):
        await store.execute("INSERT INTO t_notes(text) VALUES ('x')")
    assert not journal.writable
    await journal._w.execute("PRAGMA query_only=OFF")
    assert await store.execute("INSERT INTO t_notes(text) VALUES ('x')") == 1
    assert journal.writable


async def test_cancelled_transaction_writes_nothing_and_frees_the_writer(journal: Journal) -> None:
    store = Store(journal, "notes", NOTES)
    inside = asyncio.Event()

    async def slow_writer() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t_notes(text) VALUES ('half')")
            inside.set()
            await asyncio.Event().wait()  # cancelled here, mid-transaction

    task = asyncio.create_task(slow_writer())
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.query("SELECT * FROM t_notes") == []
    async with asyncio.timeout(5):  # the station's commits go on
        await journal.commit(Commit(events=[EventRow("after", 1.0)]))
    assert journal.writable


async def test_store_writes_wait_for_the_one_writer(journal: Journal) -> None:
    """A store's write never lands inside a station commit's transaction: it takes the lock."""
    store = Store(journal, "notes", NOTES)
    await store.open()
    async with journal._lock:  # a station commit is between BEGIN and COMMIT
        write = asyncio.create_task(store.execute("INSERT INTO t_notes(text) VALUES ('w')"))
        await asyncio.sleep(0.05)
        assert not write.done()
        assert not journal._w.in_transaction
    assert await asyncio.wait_for(write, 5) == 1


async def test_old_sqlite_file_without_store_table_gets_it(tmp_path: Path) -> None:
    """The store table is a core migration: a journal at version 5 gets it when it opens."""
    path = tmp_path / "j.sqlite3"
    con = sqlite3.connect(path)
    con.executescript((Path(__file__).parent / "data" / "journal_schema_v5.sql").read_text())
    con.close()
    j = await Journal.open(path)
    try:
        await Store(j, "notes", NOTES).open()
        assert await j.query("SELECT * FROM store_versions") == [
            {"namespace": "notes", "version": 2}
        ]
    finally:
        await j.close()
