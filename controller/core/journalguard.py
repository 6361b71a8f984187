"""The journal's disk at run time: free space, the low-space warning, leaving the blocked state.

Part of the station's core (:meth:`JournalGuard.run`). Every ``check_s`` it
reads the free space of the data folder (``statvfs``). Below ``low_space_mb``
it warns — a log line once, a ``/healthz`` warning, a metric, a banner in the
owner UI — before the disk is full. Below ``samples_min_free_mb`` the station
stops writing meter samples (the bulk of the journal) so that session records
keep the last space.

It also keeps an emergency reserve: a file of ``emergency_reserve_mb`` in the
data folder. When the disk is full and a stop (or a fault) cannot be written,
the station deletes it and writes the stop in the space it frees, so the
driver's stop is recorded and acknowledged even then; new sessions stay
refused until the reserve can be made again.

When any write fails the station refuses new sessions (safe-mode cause
``journal``). The guard then retries every ``retry_s``: it writes the
transitions that wait in the backlog (in order), then a probe row, then
re-makes the reserve; once all succeed the station accepts sessions again by
itself — no owner action and no unrelated write needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from controller.core.backlog import Backlog
from controller.core.bay import CloseSession, Effect, Event, TokenPresented
from controller.core.config import JournalSection
from controller.core.events import EventBus, StationChanged
from controller.core.journal import Journal, JournalError
from controller.ports import Clock

log = structlog.get_logger(__name__)

MB = 1024 * 1024
RESERVE_FILE = "journal.reserve"
NOT_RECORDED = "not_recorded"
# What drivers and owners read while the journal cannot be written.
BLOCKED_MESSAGE = (
    "The station cannot record charging sessions right now, so none can start. "
    "Please try again later or call the operator."
)
STOP_NOT_RECORDED = (
    "The station could not record this. Charging has been stopped for safety, and the "
    "station will record the stop as soon as it can; if in doubt, call the operator."
)
START_NOT_RECORDED = (
    "The station could not record this, so charging has not started. "
    "Please try again in a moment or call the operator."
)
CHANGE_NOT_RECORDED = (
    "The station could not record this, so nothing was changed. "
    "Please try again in a moment or call the operator."
)


def not_recorded_message(event: Event, effects: list[Effect]) -> str:
    """The sentence for a command whose transition the journal could not record."""
    if any(isinstance(e, CloseSession) for e in effects):
        return STOP_NOT_RECORDED
    if isinstance(event, TokenPresented):
        return START_NOT_RECORDED
    return CHANGE_NOT_RECORDED


@dataclass(slots=True)
class DiskSpace:
    free_bytes: int
    total_bytes: int
    at: float  # monotonic


class SafeModeSwitch(Protocol):
    """Where the guard enters and leaves the ``journal`` cause (the safety supervisor)."""

    @property
    def causes(self) -> Mapping[str, object]: ...

    def block(self, cause: str, message: str) -> None: ...

    def unblock(self, cause: str, *, actor: str = ..., owner: bool = ...) -> bool: ...


class JournalGuard:
    def __init__(
        self,
        journal: Journal,
        cfg: JournalSection,
        backlog: Backlog,
        *,
        clock: Clock,
        safe: SafeModeSwitch,
        events: EventBus,
    ) -> None:
        self.journal = journal
        self.cfg = cfg
        self.backlog = backlog
        self._clock = clock
        self._safe = safe
        self._events = events
        self.space: DiskSpace | None = None
        self.low = False
        self.blocked_since: float | None = None  # monotonic, first failure of this episode
        self.last_unblock_s: float | None = None  # how long the last episode lasted
        self.space_errors = 0
        self.reserve_released = False  # the reserve was spent on a full disk, not made again yet
        self.reserve_in_place = False  # as far as the last look found (ensure_reserve)
        self.reserve_looked = asyncio.Event()  # set once ensure_reserve has looked (and made it)

    # ------------------------------------------------------------------ state

    @property
    def blocked(self) -> bool:
        return (
            not self.journal.writable
            or len(self.backlog) > 0
            or self.reserve_released
            or "journal" in self._safe.causes
        )

    @property
    def samples_paused(self) -> bool:
        """Meter samples are skipped while writes fail or space is short."""
        if self.blocked:
            return True
        sp = self.space
        return sp is not None and sp.free_bytes < self.cfg.samples_min_free_mb * MB

    @property
    def reserve_path(self) -> Path:
        return self.journal.path.parent / RESERVE_FILE

    def snapshot(self) -> dict[str, Any]:
        sp = self.space
        return {
            "writable": self.journal.writable and not self.blocked,
            "free_bytes": sp.free_bytes if sp else None,
            "total_bytes": sp.total_bytes if sp else None,
            "low_space": self.low,
            "low_space_mb": self.cfg.low_space_mb,
            "unwritten": len(self.backlog),
            "reserve_released": self.reserve_released,
        }

    def warning(self) -> str | None:
        """A sentence for the owner while space is low (None otherwise)."""
        if not self.low or self.space is None:
            return None
        free_mb = self.space.free_bytes / MB
        return (
            f"The station's storage is almost full ({free_mb:.0f} MB free). "
            "Free some space or call your installer before sessions can no longer be recorded."
        )

    # ------------------------------------------------------------------ running

    def failed(self) -> None:
        """A write failed (called by whoever saw it): refuse new sessions until writes work."""
        if self.blocked_since is None:
            self.blocked_since = time.monotonic()
        self._safe.block("journal", BLOCKED_MESSAGE)

    def wrote(self) -> None:
        """A transition was written: when nothing else holds the block, it is over.

        Not while the reserve is not in place: a write that worked says nothing of whether
        the next stop will find space (the retry loop reads the free space, then decides).
        """
        if self.blocked and self.journal.writable and not self.reserve_released:
            if not self.backlog and self.reserve_in_place:
                self.recovered()

    async def release_reserve(self) -> bool:
        """Free the emergency reserve for a stop that cannot be written; False if there is none."""
        path = self.reserve_path
        try:
            size = await asyncio.to_thread(_remove, path)
        except OSError as err:
            log.error("journal.reserve_release_failed", error=str(err))
            return False
        if size is None:
            return False
        self.reserve_released = True
        self.reserve_in_place = False
        self.failed()
        log.warning("journal.reserve_released", mb=round(size / MB, 1))
        return True

    async def ensure_reserve(self) -> bool:
        """Make the reserve when it is missing and the disk has room for it; True when in place."""
        self.reserve_in_place = await self._ensure_reserve()
        self.reserve_looked.set()
        return self.reserve_in_place

    async def _ensure_reserve(self) -> bool:
        want = int(self.cfg.emergency_reserve_mb * MB)
        if want <= 0:
            self.reserve_released = False
            return True
        path = self.reserve_path
        if await asyncio.to_thread(path.exists):
            self.reserve_released = False
            return True
        sp = self.space
        if sp is None or sp.free_bytes < want + self.cfg.samples_min_free_mb * MB:
            return False
        try:
            await asyncio.to_thread(_make_reserve, path, want)
        except OSError as err:
            log.warning("journal.reserve_not_made", error=str(err))
            return False
        if self.reserve_released:
            log.info("journal.reserve_made", mb=self.cfg.emergency_reserve_mb)
        self.reserve_released = False
        return True

    async def run(self) -> None:
        journal = self.journal
        next_check = 0.0
        while True:
            if journal.failed.is_set():
                journal.failed.clear()
                if not journal.writable:  # not already written again by someone else
                    self.failed()
            if self.blocked:
                await self.check_space()
                await self.retry()
                journal.failed.clear()  # the retry's own failure is no news
                if self.blocked:
                    await asyncio.sleep(self.cfg.retry_s)
                continue
            now = time.monotonic()
            if now >= next_check:
                await self.check_space()
                await self.ensure_reserve()
                next_check = now + self.cfg.check_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_check - time.monotonic())):
                    await journal.failed.wait()

    async def check_space(self) -> None:
        try:
            free, total = await self.journal.disk_space()
        except OSError as err:
            self.space_errors += 1
            if self.space_errors == 1:
                log.warning("journal.space_unknown", error=str(err))
            return
        self.space_errors = 0
        self.space = DiskSpace(free, total, time.monotonic())
        low = free < self.cfg.low_space_mb * MB
        if low != self.low:
            self.low = low
            if low:
                log.warning("journal.disk_low", free_mb=round(free / MB, 1), total_mb=total // MB)
            else:
                log.info("journal.disk_ok", free_mb=round(free / MB, 1))
            self._events.publish(StationChanged(self._clock.wall()))

    async def retry(self) -> bool:
        """Write what waits, a probe row, make the reserve again; then unblock the station."""
        journal = self.journal
        try:
            if not await self.backlog.flush():
                return False
            await journal.probe(self._clock.wall())
        except JournalError:
            return False
        if not await self.ensure_reserve() and not self._room_for_reserve():
            return False  # writes work, but the next stop might find no space: wait
        journal.failed.clear()
        self.recovered()
        return True

    def _room_for_reserve(self) -> bool:
        """At least the reserve's worth of space is free (the file itself may be missing)."""
        sp = self.space
        return sp is not None and sp.free_bytes >= self.cfg.emergency_reserve_mb * MB

    def recovered(self) -> None:
        """Writes work again and nothing waits: accept sessions again."""
        if self.blocked_since is not None:
            self.last_unblock_s = time.monotonic() - self.blocked_since
            log.info(
                "journal.writable_again",
                blocked_s=round(self.last_unblock_s, 2),
                written_late=self.backlog.written_late,
            )
        self.blocked_since = None
        self.reserve_released = False
        self._safe.unblock("journal")


def _remove(path: Path) -> int | None:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def _make_reserve(path: Path, size: int) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Real blocks, not a sparse file: deleting it must give space back.
            os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
