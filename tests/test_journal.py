"""The journal: migrations, atomic commits, outbox order, batching, replay nonces, failure."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.core import schema
from controller.core.journal import Commit, EventRow, Journal, JournalError, OutboxRow


def _open_row(sid: str, bay: str = "b1") -> dict[str, object]:
    return {
        "id": sid,
        "bay_id": bay,
        "connector": 1,
        "token": "T",
        "auth_source": "local",
        "mode": "standard",
        "state": "open",
        "started_at": 1.0,
        "meter_start_wh": 0,
        "meter_wh": 0,
        "tariff": {"per_kwh": 0.3},
    }


async def test_migrations_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = await Journal.open(path)
    assert await j.schema_version() == len(schema.MIGRATIONS)
    await j.close()
    j = await Journal.open(path)  # reopening runs nothing twice
    assert await j.schema_version() == len(schema.MIGRATIONS)
    mode = await j.query("PRAGMA journal_mode")
    assert mode[0]["journal_mode"] == "wal"
    await j.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={len(schema.MIGRATIONS) + 5}")
    con.close()
    with pytest.raises(JournalError, match="newer"):
        await Journal.open(path)


async def test_commit_is_all_or_nothing(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        await j.commit(Commit(events=[EventRow("a", 1.0, "b1")], session_open=[_open_row("s1")]))
        # A second open session on the same bay violates the one-open-session index:
        # the event and outbox rows of that commit must not be written either.
        with pytest.raises(JournalError):
            await j.commit(
                Commit(
                    events=[EventRow("b", 2.0, "b1")],
                    session_open=[_open_row("s2")],
                    outbox=[OutboxRow("StartTransaction", {"x": 1}, "s2")],
                )
            )
        assert [e["kind"] for e in await j.events()] == ["a"]
        assert await j.outbox_depth() == 0
        assert [s["id"] for s in await j.sessions()] == ["s1"]
    finally:
        await j.close()


async def test_checkpoint_wal_copies_the_log_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = await Journal.open(path)
    try:
        await j.checkpoint_wal()  # the migrations' pages
        db_before = path.stat().st_size
        for i in range(200):
            await j.commit(Commit(events=[EventRow("a", float(i), "b1", None, {"n": "x" * 200})]))
        assert db_before == path.stat().st_size  # the rows are in the log only
        pages = await j.checkpoint_wal()
        assert pages > 0
        assert path.stat().st_size > db_before  # now in the database file
        assert len(await j.events(limit=500)) == 200
    finally:
        await j.close()


async def test_outbox_strict_order_and_states(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        for i in range(3):
            await j.commit(
                Commit(events=[EventRow("e", float(i))], outbox=[OutboxRow("A", {"i": i}, "s")])
            )
        assert j.outbox_changed.is_set()
        head = await j.outbox_next(0)
        assert head is not None and head["payload"] == {"i": 0}
        await j.outbox_failed(head["id"], 1.0, "CallError", give_up=False, retry_at=5.0)
        head2 = await j.outbox_next(0)
        assert head2 is not None and head2["id"] == head["id"] and head2["attempts"] == 1
        await j.outbox_failed(head["id"], 2.0, "CallError", give_up=True, retry_at=0)
        head3 = await j.outbox_next(0)
        assert head3 is not None and head3["payload"] == {"i": 1}
        await j.outbox_done(head3["id"], 3.0, {"ok": True})
        assert await j.outbox_depth() == 1
        failed = await j.query("SELECT state, last_error FROM outbox WHERE state='failed'")
        assert failed == [{"state": "failed", "last_error": "CallError"}]
    finally:
        await j.close()


async def test_meter_samples_batched(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        rows = [(float(i), "node:b1", None, i * 10.0, 230.0, "[1,0,0]") for i in range(500)]
        assert await j.add_meter_samples(rows) == 500
        n = await j.query("SELECT count(*) AS n, max(energy_wh) AS m FROM meter_samples")
        assert n == [{"n": 500, "m": 4990.0}]
    finally:
        await j.close()


async def test_nonce_replay(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        assert await j.nonce_seen_or_add("n1", expires_at=100.0, now=0.0) is False
        assert await j.nonce_seen_or_add("n1", expires_at=100.0, now=50.0) is True
        # Past its validity window the nonce is forgotten (the token is expired anyway).
        assert await j.nonce_seen_or_add("n1", expires_at=300.0, now=200.0) is False
    finally:
        await j.close()


async def test_unwritable_journal_raises_and_recovers(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        await j._w.execute("PRAGMA query_only=ON")
        with pytest.raises(JournalError):
            await j.commit(Commit(events=[EventRow("x", 1.0)]))
        assert j.writable is False
        await j._w.execute("PRAGMA query_only=OFF")
        await j.commit(Commit(events=[EventRow("y", 2.0)]))
        assert j.writable is True
        assert [e["kind"] for e in await j.events()] == ["y"]
    finally:
        await j.close()


async def test_a_commit_refused_at_commit_time_leaves_no_transaction_open(tmp_path: Path) -> None:
    """SQLite may keep a transaction open when COMMIT itself fails (a full disk, a deferred
    constraint): the journal must roll it back, or every later write fails for ever."""
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        # A deferred constraint fails at COMMIT, not at the INSERT: the same place where a
        # disk that fills up while the WAL is written makes COMMIT fail.
        await j._w.execute("CREATE TEMP TABLE parent(id TEXT PRIMARY KEY)")
        await j._w.execute(
            "CREATE TEMP TABLE child(pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        await j._w.execute(
            "CREATE TEMP TRIGGER orphan AFTER INSERT ON main.events WHEN new.kind = 'bad'"
            " BEGIN INSERT INTO child VALUES ('nobody'); END"
        )
        with pytest.raises(JournalError):
            await j.commit(Commit(events=[EventRow("bad", 1.0)]))
        assert j.writable is False
        await j.commit(Commit(events=[EventRow("good", 2.0)]))
        assert j.writable is True
        assert [e["kind"] for e in await j.events()] == ["good"]
    finally:
        await j.close()


async def test_probe_write_tells_whether_the_journal_can_write(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite3")
    try:
        await j._w.execute("PRAGMA query_only=ON")
        with pytest.raises(JournalError):
            await j.probe(5.0)
        assert j.writable is False
        await j._w.execute("PRAGMA query_only=OFF")
        await j.probe(6.0)
        assert j.writable is True
        assert await j.kv_get("journal.probe") == 6.0
        free, total = await j.disk_space()
        assert 0 < free <= total
    finally:
        await j.close()
