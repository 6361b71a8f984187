"""Transitions that happened but are not written yet, kept in order until the journal can write.

A stop, a fault or a fact reported by a node happens physically whether or
not the journal can record it: the relay goes off at once. Its commit (built
when it happened, so with its true time and meter value) waits here, and
every later commit waits behind it, so the journal always receives the
station's changes in the order they happened: once the backlog is written,
the journal is exactly what it would have been had the disk never filled.

Nothing here is dropped. A commit leaves the backlog only after the journal
has committed it, and every write runs as its own task that a cancelled caller
does not interrupt, so a commit is never written twice nor lost half-way.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import Any

import structlog

from controller.core.journal import Commit, Journal, JournalError

log = structlog.get_logger(__name__)


class Backlog:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._items: collections.deque[Commit] = collections.deque()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self.written_late = 0  # commits written after waiting here (for metrics)

    def __len__(self) -> int:
        return len(self._items)

    def closing(self) -> set[str]:
        """Sessions whose close is waiting to be written."""
        return {
            str(row["id"])
            for c in self._items
            for row in c.session_update
            if row.get("state") == "closed"
        }

    async def write(self, commit: Commit, *, keep: bool) -> bool:
        """Write what waits, then ``commit``. False when it could not be written now;
        with ``keep`` it then waits here (in order) instead of being forgotten."""
        return await self._run(self._write(commit, keep))

    async def flush(self) -> bool:
        """Write what waits, in order; True when nothing waits any more."""
        if not self._items:
            return True
        return await self._run(self._flush())

    async def settle(self) -> None:
        """Wait for writes already under way (shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, work: Coroutine[Any, Any, bool]) -> bool:
        # Shielded: a cancelled caller must not stop a write between the journal's commit
        # and the backlog's bookkeeping (the commit would be written a second time).
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _write(self, commit: Commit, keep: bool) -> bool:
        async with self._lock:
            if await self._drain():
                try:
                    await self.journal.commit(commit)
                    return True
                except JournalError:
                    pass
            if keep:
                self._items.append(commit)
            return False

    async def _flush(self) -> bool:
        async with self._lock:
            return await self._drain()

    async def _drain(self) -> bool:
        if not self._items:
            return True
        n = len(self._items)
        while self._items:
            try:
                await self.journal.commit(self._items[0])
            except JournalError:
                return False
            self._items.popleft()
            self.written_late += 1
        log.info("journal.backlog_written", commits=n)
        return True
