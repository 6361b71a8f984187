"""Online backup and offline restore of the journal file, and read-only access to it.

Owns the journal *as a file* (the running station owns it as a database,
:mod:`controller.core.journal`):

- :func:`backup_journal` copies it with SQLite's online backup API in one step:
  a single read transaction, so the copy is one consistent snapshot, every
  transaction in it whole. The journal is in WAL mode, so the station keeps
  writing meanwhile (readers never block the writer). The copy is made
  self-contained (rollback journal mode), checked with ``PRAGMA
  integrity_check`` and only then renamed into place. It is blocking work: the
  station calls :func:`backup_journal_async`, which runs it in a thread.
- :func:`restore_journal` puts a backup in place of the journal, refusing
  while anything has the journal open (it takes an exclusive SQLite lock with a
  short timeout: the station holds its connections open all the time), or when
  the backup is damaged, not a journal, or of a newer schema than this
  software. The old journal is folded (WAL checkpoint) and kept beside it as
  ``journal.sqlite3.bak-<UTC time>``. Unless ``force`` is given it also refuses
  when the current journal is intact and holds events newer than the backup:
  those sessions and unsent OCPP messages would silently vanish from the station.

Run both as the journal's owner (``sudo -u edge-station edge-station backup ...``):
files SQLite creates beside the journal (``-wal``, ``-shm``) must stay the
station's, so root is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.core.schema import MIGRATIONS

__all__ = [
    "BackupError",
    "JournalCounts",
    "RestoreRefused",
    "add_commands",
    "backup_journal",
    "backup_journal_async",
    "inspect_journal",
    "open_readonly",
    "restore_journal",
]

JOURNAL_FILE = "journal.sqlite3"
REQUIRED_TABLES = frozenset({"events", "sessions", "outbox", "bay_state", "kv"})
EXIT_FAILED, EXIT_CONFIG = 1, 2


class BackupError(Exception):
    """The backup or restore did not happen; the message says why."""


class RestoreRefused(BackupError):
    """Restoring would be unsafe (station running, bad backup, newer data)."""


@dataclass(frozen=True, slots=True)
class JournalCounts:
    integrity: list[str]
    schema_version: int
    tables: frozenset[str]
    sessions_open: int = 0
    sessions_closed: int = 0
    events: int = 0
    last_event_at: float | None = None
    outbox_pending: int = 0
    outbox_failed: int = 0
    meter_samples: int = 0

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"]

    def describe(self) -> str:
        return (
            f"schema {self.schema_version}; sessions {self.sessions_open} open,"
            f" {self.sessions_closed} closed; events {self.events}"
            f" (last {_iso(self.last_event_at)}); outbox {self.outbox_pending} pending,"
            f" {self.outbox_failed} failed; meter samples {self.meter_samples}"
        )


@dataclass(frozen=True, slots=True)
class BackupReport:
    source: Path
    path: Path
    size_bytes: int
    seconds: float
    counts: JournalCounts


@dataclass(frozen=True, slots=True)
class RestoreReport:
    path: Path
    kept_as: list[Path] = field(default_factory=list)
    counts: JournalCounts | None = None


# --------------------------------------------------------------------------- reading


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open a journal read-only without creating anything beside it.

    With a ``-wal`` file present (station running, or not shut down cleanly) the
    WAL is read too; without one the file is opened immutable, since a read-only
    WAL connection would otherwise leave new ``-wal``/``-shm`` files behind.
    """
    wal = path.with_name(path.name + "-wal").exists()
    uri = path.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
    return sqlite3.connect(uri, uri=True, timeout=5.0)


def inspect_journal(conn: sqlite3.Connection, *, quick: bool = False) -> JournalCounts:
    """Integrity, schema version and row counts of an open journal."""
    check = "quick_check" if quick else "integrity_check"
    integrity = [str(r[0]) for r in conn.execute(f"PRAGMA {check}").fetchall()]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = frozenset(
        str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    )
    if not REQUIRED_TABLES <= tables or integrity != ["ok"]:
        return JournalCounts(integrity, version, tables)

    def one(sql: str) -> Any:
        return conn.execute(sql).fetchone()[0]

    return JournalCounts(
        integrity,
        version,
        tables,
        sessions_open=int(one("SELECT count(*) FROM sessions WHERE state='open'")),
        sessions_closed=int(one("SELECT count(*) FROM sessions WHERE state='closed'")),
        events=int(one("SELECT count(*) FROM events")),
        last_event_at=one("SELECT max(at) FROM events"),
        outbox_pending=int(one("SELECT count(*) FROM outbox WHERE state='pending'")),
        outbox_failed=int(one("SELECT count(*) FROM outbox WHERE state='failed'")),
        meter_samples=int(one("SELECT count(*) FROM meter_samples"))
        if "meter_samples" in tables
        else 0,
    )


# --------------------------------------------------------------------------- backup


def backup_journal(source: Path, dest: Path, *, overwrite: bool = False) -> BackupReport:
    """Copy the journal at ``source`` to ``dest``; safe while the station writes (blocking)."""
    _refuse_root(source)
    if not source.is_file():
        raise BackupError(f"no journal at {source}")
    if dest.exists() and not overwrite:
        raise BackupError(f"{dest} exists (pass --overwrite to replace it)")
    if dest.resolve() == source.resolve():
        raise BackupError("the backup cannot be the journal itself")
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    # Created here so the copy (tokens, password hashes) is private from its first byte.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    started = time.monotonic()
    try:
        src = sqlite3.connect(source, timeout=10.0)
        try:
            counts = _copy_checked(src, tmp)
        finally:
            src.close()
        if not counts.ok:
            raise BackupError(
                f"the copy fails its integrity check: {'; '.join(counts.integrity[:5])}"
            )
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as err:
        raise BackupError(f"backup failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return BackupReport(source, dest, dest.stat().st_size, time.monotonic() - started, counts)


async def backup_journal_async(
    source: Path, dest: Path, *, overwrite: bool = False
) -> BackupReport:
    """:func:`backup_journal` in a worker thread: the event loop keeps running meanwhile."""
    return await asyncio.to_thread(backup_journal, source, dest, overwrite=overwrite)


# --------------------------------------------------------------------------- restore


def restore_journal(
    data_dir: Path,
    backup: Path,
    *,
    force: bool = False,
    lock_timeout_s: float = 1.0,
    now: float | None = None,
) -> RestoreReport:
    """Replace ``data_dir``'s journal with ``backup`` (the station must be stopped)."""
    live = data_dir / JOURNAL_FILE
    _refuse_root(live)
    if not backup.is_file():
        raise RestoreRefused(f"no backup at {backup}")
    if not data_dir.is_dir():
        raise RestoreRefused(f"no data directory {data_dir}")
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    suffix = stamp.strftime("%Y%m%dT%H%M%SZ")
    staged = data_dir / f".{JOURNAL_FILE}.restore-{suffix}"
    staged.unlink(missing_ok=True)
    os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        counts = _stage(backup, staged)
        kept: list[Path] = []
        if live.exists():
            kept = _set_aside(live, counts, force, lock_timeout_s, suffix)
        _fsync(staged)
        os.replace(staged, live)
        _fsync_dir(data_dir)
    finally:
        staged.unlink(missing_ok=True)
    return RestoreReport(live, kept, counts)


def _copy_checked(src: sqlite3.Connection, dest: Path) -> JournalCounts:
    """Copy ``src`` into the file ``dest`` as one self-contained database, then inspect the copy."""
    target = sqlite3.connect(dest, isolation_level=None)
    try:
        # pages=-1: one step, one read transaction, one consistent snapshot. A
        # stepwise copy would restart each time the station commits.
        src.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode=DELETE")
        return inspect_journal(target)
    finally:
        target.close()


def _stage(backup: Path, staged: Path) -> JournalCounts:
    """Copy the backup next to the journal and validate the copy (what will be used)."""
    try:
        src = open_readonly(backup)
        try:
            counts = _copy_checked(src, staged)
        finally:
            src.close()
    except sqlite3.DatabaseError as err:
        raise RestoreRefused(f"{backup} is not a usable SQLite database: {err}") from err
    if not counts.ok:
        raise RestoreRefused(
            f"{backup} fails its integrity check: {'; '.join(counts.integrity[:5])}"
        )
    if counts.schema_version > len(MIGRATIONS):
        raise RestoreRefused(
            f"{backup} has journal schema {counts.schema_version}, newer than this software"
            f" ({len(MIGRATIONS)}): update edge-station first"
        )
    missing = REQUIRED_TABLES - counts.tables
    if counts.schema_version < 1 or missing:
        raise RestoreRefused(f"{backup} is not an edge-station journal (missing {sorted(missing)})")
    return counts


def _set_aside(
    live: Path, incoming: JournalCounts, force: bool, lock_timeout_s: float, suffix: str
) -> list[Path]:
    """Lock the current journal, check it may be replaced, fold its WAL, move it aside."""
    conn = sqlite3.connect(live, timeout=lock_timeout_s, isolation_level=None)
    try:
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            # In WAL mode this lock is refused while any other connection has the file open.
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
            locked = True
        except sqlite3.OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise RestoreRefused(
                    f"{live} is in use: stop the station first (systemctl stop edge-station)"
                ) from err
            raise BackupError(f"cannot open {live}: {err}") from err
        except sqlite3.DatabaseError:
            locked = False  # not a database: nothing can be running on it
        if locked:
            _check_newer(conn, live, incoming, force)
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy is not None and busy[0]:
                raise RestoreRefused(f"{live}: its write-ahead log could not be folded in")
    finally:
        conn.close()
    base = f"{live.name}.bak-{suffix}"
    n = 1
    while any(live.with_name(base + t).exists() for t in ("", "-wal", "-shm")):
        n += 1  # never overwrite an earlier .bak (two restores within a second)
        base = f"{live.name}.bak-{suffix}-{n}"
    kept = []
    for tail in ("", "-wal", "-shm"):
        p = live.with_name(live.name + tail)
        if p.exists():
            dest = live.with_name(base + tail)
            os.replace(p, dest)
            kept.append(dest)
    return kept


def _check_newer(
    conn: sqlite3.Connection, live: Path, incoming: JournalCounts, force: bool
) -> None:
    if force:
        return
    try:
        current = inspect_journal(conn, quick=True)
    except sqlite3.DatabaseError:
        return  # damaged: that is what the backup is for
    if not current.ok or "events" not in current.tables:
        return
    since = incoming.last_event_at if incoming.last_event_at is not None else float("-inf")
    newer = int(conn.execute("SELECT count(*) FROM events WHERE at > ?", (since,)).fetchone()[0])
    if newer:
        raise RestoreRefused(
            f"{live} holds {newer} events newer than the backup (up to"
            f" {_iso(current.last_event_at)}; {current.sessions_open} open sessions,"
            f" {current.outbox_pending} messages for the CSMS pending): pass --force to set it"
            " aside and restore the backup anyway"
        )


# --------------------------------------------------------------------------- helpers


def _refuse_root(path: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        owner = path.stat().st_uid if path.exists() else path.parent.stat().st_uid
    except OSError:
        return  # nothing there: the caller says so
    if owner != 0:
        try:
            import pwd

            name = pwd.getpwuid(owner).pw_name
        except (ImportError, KeyError):
            name = str(owner)
        raise BackupError(
            f"run this as the journal's owner, not root: sudo -u {name} edge-station ..."
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be synced
        _fsync(path)


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _size(n: int) -> str:
    return f"{n / 1_048_576:.2f} MiB" if n >= 1_048_576 else f"{n / 1024:.1f} KiB"


# --------------------------------------------------------------------------- commands


def add_commands(sub: Any) -> None:
    b = sub.add_parser(
        "backup", help="consistent copy of the journal (also while the station runs)"
    )
    _source(b)
    b.add_argument("out", type=Path, help="the backup file to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing backup file")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="replace the journal with a backup (station stopped)")
    _source(r)
    r.add_argument("backup", type=Path, help="a file written by 'edge-station backup'")
    r.add_argument(
        "--force", action="store_true", help="restore even if the journal has newer events"
    )
    r.set_defaults(func=cmd_restore)


def _source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path)
    src.add_argument("--data-dir", type=Path)


def _data_dir(args: argparse.Namespace) -> Path | None:
    if args.data_dir:
        return Path(args.data_dir)
    from controller.core.config import ConfigError, load_config

    try:
        return load_config(args.config).station.data_dir
    except ConfigError as err:
        print(f"{err.source}: invalid configuration", file=sys.stderr)
        for pr in err.problems:
            print(f"  - {pr}", file=sys.stderr)
        return None


def cmd_backup(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if data_dir is None:
        return EXIT_CONFIG
    try:
        rep = backup_journal(data_dir / JOURNAL_FILE, args.out, overwrite=args.overwrite)
    except BackupError as err:
        print(f"backup failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{rep.source} -> {rep.path}: {_size(rep.size_bytes)} in {rep.seconds:.2f} s, integrity ok"
    )
    print(f"  {rep.counts.describe()}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if data_dir is None:
        return EXIT_CONFIG
    try:
        rep = restore_journal(data_dir, args.backup, force=args.force)
    except BackupError as err:
        print(f"restore refused: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.backup} -> {rep.path}: restored, integrity ok")
    if rep.counts is not None:
        print(f"  {rep.counts.describe()}")
    for p in rep.kept_as:
        print(f"  the previous journal is kept as {p}")
    return 0
