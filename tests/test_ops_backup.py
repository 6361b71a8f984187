"""Online backup while a real Journal commits, restore, and what restore refuses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from controller.cli.main import build_parser
from controller.core.journal import Commit, EventRow, Journal, OutboxRow
from controller.core.schema import MIGRATIONS
from controller.ops.backup import (
    BackupError,
    RestoreRefused,
    backup_journal,
    backup_journal_async,
    restore_journal,
)

BAYS = ["b1", "b2", "b3", "b4"]


def _open(i: int, bay: str, at: float) -> Commit:
    """What the station commits when a session opens: event, session, bay state, StartTransaction."""
    sid = f"s{i:06d}"
    return Commit(
        events=[EventRow("session_opened", at, bay, sid, {"i": i})],
        bay_states={bay: {"session": sid}},
        session_open=[
            {
                "id": sid,
                "bay_id": bay,
                "connector": BAYS.index(bay) + 1,
                "token": "1234",
                "auth_source": "local_list",
                "mode": "standard",
                "state": "open",
                "started_at": at,
                "meter_start_wh": 1000,
                "meter_wh": 1000,
                "tariff": {"per_kwh": 0.3},
            }
        ],
        outbox=[OutboxRow("StartTransaction", {"connectorId": 1, "meterStart": 1000}, sid)],
    )


def _close(sid: str, bay: str, at: float) -> Commit:
    return Commit(
        events=[EventRow("session_closed", at, bay, sid, {})],
        bay_states={bay: {"session": None}},
        session_update=[
            {
                "id": sid,
                "state": "closed",
                "stopped_at": at,
                "meter_stop_wh": 1500,
                "energy_wh": 500,
            }
        ],
        outbox=[OutboxRow("StopTransaction", {"meterStop": 1500}, sid)],
    )


class Writer:
    """Commits open/close transitions in a loop, as fast as the journal takes them."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.commits = 0
        self.sessions = 0
        self.stop = asyncio.Event()
        self.warm = asyncio.Event()  # set once the writer is in full swing
        self.open: dict[str, str] = {}

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            bay = BAYS[i % len(BAYS)]
            at = 1_700_000_000.0 + i
            if bay in self.open:
                await self.journal.commit(_close(self.open.pop(bay), bay, at))
            else:
                self.open[bay] = f"s{i:06d}"
                await self.journal.commit(_open(i, bay, at))
                self.sessions += 1  # counted once committed
            self.commits += 1
            if self.commits >= 50:
                self.warm.set()
            i += 1


async def _prefill(journal: Journal, rows: int = 60_000) -> None:
    # Some bulk, so that the copy takes long enough for commits to land during it.
    batch = [
        (1_600_000_000.0 + n, "node:b1", None, float(n), 2300.0, json.dumps([10.0, 10.0, 10.0]))
        for n in range(rows)
    ]
    await journal.add_meter_samples(batch)


def check_consistent(path: Path) -> dict[str, int]:
    """Every transaction whole: each session has its events, outbox rows and bay state."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        sessions = conn.execute("SELECT id, bay_id, state FROM sessions").fetchall()
        outbox: dict[tuple[str, str], int] = {}
        for sid, action in conn.execute("SELECT session_id, action FROM outbox"):
            outbox[(sid, action)] = outbox.get((sid, action), 0) + 1
        events: dict[str, list[str]] = {}
        for sid, kind in conn.execute(
            "SELECT session_id, kind FROM events WHERE session_id IS NOT NULL"
        ):
            events.setdefault(sid, []).append(kind)
        states = {b: json.loads(d) for b, d in conn.execute("SELECT bay_id, data FROM bay_state")}
        open_by_bay = {}
        for sid, bay, state in sessions:
            assert outbox.get((sid, "StartTransaction")) == 1, sid
            if state == "closed":
                assert outbox.get((sid, "StopTransaction")) == 1, sid
                assert events[sid] == ["session_opened", "session_closed"], sid
            else:
                assert (sid, "StopTransaction") not in outbox, sid
                assert events[sid] == ["session_opened"], sid
                open_by_bay[bay] = sid
        assert sum(outbox.values()) == len(sessions) + sum(1 for s in sessions if s[2] == "closed")
        assert len(events) == len(sessions)
        for bay, data in states.items():
            assert data["session"] == open_by_bay.get(bay), bay
        return {
            "sessions": len(sessions),
            "closed": sum(1 for s in sessions if s[2] == "closed"),
            "samples": conn.execute("SELECT count(*) FROM meter_samples").fetchone()[0],
        }
    finally:
        conn.close()


async def test_backup_during_heavy_writes_is_one_consistent_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    journal = await Journal.open(data / "journal.sqlite3", synchronous="NORMAL")
    writer = Writer(journal)
    try:
        await _prefill(journal)
        task = asyncio.create_task(writer.run())
        await writer.warm.wait()
        before = writer.sessions
        commits_before = writer.commits
        rep = await backup_journal_async(data / "journal.sqlite3", tmp_path / "b.sqlite3")
        commits_during = writer.commits - commits_before
        after = writer.sessions
        writer.stop.set()
        await task
    finally:
        await journal.close()
    # The station kept writing while the copy ran: the backup ran off the event loop.
    assert commits_during > 0
    assert rep.counts.ok and rep.size_bytes == (tmp_path / "b.sqlite3").stat().st_size
    got = check_consistent(tmp_path / "b.sqlite3")
    assert before <= got["sessions"] <= after + 1  # + the one commit that may be in flight
    assert got["samples"] == 60_000
    assert rep.counts.sessions_open + rep.counts.sessions_closed == got["sessions"]
    # Self-contained: no -wal needed beside the backup.
    assert not (tmp_path / "b.sqlite3-wal").exists()
    assert not (tmp_path / "b.sqlite3.partial").exists()

    # Restored into a new data directory, the station's Journal opens it as it was.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out = restore_journal(fresh, tmp_path / "b.sqlite3")
    assert out.kept_as == []
    restored = await Journal.open(fresh / "journal.sqlite3")
    try:
        assert len(await restored.open_sessions()) == rep.counts.sessions_open
        assert await restored.outbox_depth() == rep.counts.outbox_pending
        assert await restored.schema_version() == len(MIGRATIONS)
    finally:
        await restored.close()
    check_consistent(fresh / "journal.sqlite3")

    # Over the original: refused (it holds newer events), unless forced; the old one is kept.
    final_sessions = check_consistent(data / "journal.sqlite3")["sessions"]
    assert final_sessions >= after
    with pytest.raises(RestoreRefused, match="newer than the backup"):
        restore_journal(data, tmp_path / "b.sqlite3")
    assert check_consistent(data / "journal.sqlite3")["sessions"] == final_sessions
    out = restore_journal(data, tmp_path / "b.sqlite3", force=True, now=1_750_000_000.0)
    kept = data / "journal.sqlite3.bak-20250615T150640Z"
    assert out.kept_as == [kept]
    assert check_consistent(kept)["sessions"] == final_sessions
    assert check_consistent(data / "journal.sqlite3")["sessions"] == got["sessions"]
    assert not list(data.glob(".journal.sqlite3.restore-*"))


async def _small_journal(data: Path, sessions: int = 3) -> None:
    journal = await Journal.open(data / "journal.sqlite3", synchronous="NORMAL")
    try:
        for i in range(sessions):
            await journal.commit(_open(i, BAYS[i], 1_700_000_000.0 + i))
    finally:
        await journal.close()


async def test_restore_refuses_while_the_journal_is_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _small_journal(data)
    backup_journal(data / "journal.sqlite3", tmp_path / "b.sqlite3")
    journal = await Journal.open(data / "journal.sqlite3")  # the station runs
    try:
        with pytest.raises(RestoreRefused, match="stop the station"):
            await asyncio.to_thread(
                restore_journal, data, tmp_path / "b.sqlite3", force=True, lock_timeout_s=0.1
            )
        assert len(await journal.open_sessions()) == 3  # untouched, still usable
        await journal.commit(_close("s000000", "b1", 1_700_000_100.0))
    finally:
        await journal.close()
    assert not list(data.glob("journal.sqlite3.bak-*"))
    # Stopped: the same restore goes through.
    out = restore_journal(data, tmp_path / "b.sqlite3", force=True, now=1_750_000_000.0)
    assert len(out.kept_as) == 1 and out.counts is not None and out.counts.sessions_open == 3
    # Again within the same second: the first .bak is not overwritten.
    again = restore_journal(data, tmp_path / "b.sqlite3", force=True, now=1_750_000_000.0)
    assert [p.name for p in again.kept_as] == ["journal.sqlite3.bak-20250615T150640Z-2"]
    assert check_consistent(out.kept_as[0])["closed"] == 1  # the journal from before


async def test_restore_refuses_corrupt_foreign_and_newer_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _small_journal(data)
    good = tmp_path / "good.sqlite3"
    backup_journal(data / "journal.sqlite3", good)

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"definitely not SQLite " * 500)
    with pytest.raises(RestoreRefused, match="not a usable SQLite database"):
        restore_journal(data, garbage, force=True)

    # A real journal with one damaged page: caught by the integrity check.
    damaged = tmp_path / "damaged.sqlite3"
    raw = bytearray(good.read_bytes())
    page = sqlite3.connect(good).execute("PRAGMA page_size").fetchone()[0]
    root = (
        sqlite3.connect(good)
        .execute("SELECT rootpage FROM sqlite_master WHERE name='sessions'")
        .fetchone()[0]
    )
    start = (root - 1) * page
    raw[start + 8 : start + page] = b"\xa5" * (page - 8)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(RestoreRefused, match="fails its integrity check"):
        restore_journal(data, damaged, force=True)

    newer = tmp_path / "newer.sqlite3"
    newer.write_bytes(good.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(RestoreRefused, match="newer than this software"):
        restore_journal(data, newer, force=True)

    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t(x)")
    with pytest.raises(RestoreRefused, match="not an edge-station journal"):
        restore_journal(data, foreign, force=True)

    # Nothing was replaced or set aside, and nothing half-done lies around.
    assert not list(data.glob("journal.sqlite3.bak-*"))
    assert not list(data.glob(".journal.sqlite3.restore-*"))
    assert check_consistent(data / "journal.sqlite3")["sessions"] == 3


async def test_restore_over_a_damaged_journal_needs_no_force(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _small_journal(data)
    good = tmp_path / "good.sqlite3"
    backup_journal(data / "journal.sqlite3", good)
    (data / "journal.sqlite3").write_bytes(b"\0" * 100 + b"trashed by a dying SD card")
    out = restore_journal(data, good)
    assert out.kept_as[0].name.startswith("journal.sqlite3.bak-")
    assert check_consistent(data / "journal.sqlite3")["sessions"] == 3


async def test_backup_and_restore_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    await _small_journal(data)
    out = tmp_path / "b.sqlite3"

    def run(*argv: str) -> int:
        args = build_parser().parse_args(list(argv))
        return int(args.func(args))

    assert run("backup", "--data-dir", str(data), str(out)) == 0
    text = capsys.readouterr().out
    assert "integrity ok" in text and "sessions 3 open, 0 closed" in text and "KiB" in text
    assert out.stat().st_mode & 0o077 == 0  # tokens and password hashes stay private
    assert run("backup", "--data-dir", str(data), str(out)) == 1
    assert "exists" in capsys.readouterr().err
    assert run("backup", "--data-dir", str(tmp_path / "nowhere"), str(tmp_path / "x")) == 1

    assert run("restore", "--data-dir", str(data), str(tmp_path / "missing.sqlite3")) == 1
    assert "no backup" in capsys.readouterr().err
    assert run("restore", "--data-dir", str(data), str(out)) == 0
    text = capsys.readouterr().out
    assert "restored" in text and "kept as" in text

    cfg = tmp_path / "station.toml"
    cfg.write_text(f'[station]\ndata_dir = "{data}"\n')
    assert run("backup", "--config", str(cfg), str(tmp_path / "c.sqlite3")) == 0
    cfg.write_text("[station\n")
    assert run("backup", "--config", str(cfg), str(tmp_path / "d.sqlite3")) == 2


def test_backup_refuses_to_write_over_the_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"")
    with pytest.raises(BackupError):
        backup_journal(tmp_path / "journal.sqlite3", tmp_path / "journal.sqlite3", overwrite=True)
