"""Meter samples of the nodes, batched into the journal every couple of seconds.

While the journal cannot write, or its disk is short of space, samples are
skipped (and counted): session records need the last space more than samples do.
"""

from __future__ import annotations

from typing import Any

import structlog

from controller.core.journal import Journal, JournalError
from controller.core.journalguard import JournalGuard
from controller.ports import Clock

log = structlog.get_logger(__name__)

FLUSH_S = 2.0


class SampleWriter:
    def __init__(self, journal: Journal, guard: JournalGuard, clock: Clock) -> None:
        self._journal = journal
        self._guard = guard
        self._clock = clock
        self._batch: list[tuple[Any, ...]] = []
        self.skipped = 0  # samples not written (journal blocked or space short)

    def add(self, row: tuple[Any, ...]) -> None:
        self._batch.append(row)

    async def run(self) -> None:
        skipped = 0
        while True:
            await self._clock.sleep(FLUSH_S)
            if self._guard.samples_paused:
                if self._batch and skipped == 0:
                    log.warning("journal.samples_paused", **self._guard.snapshot())
                skipped += len(self._batch)
                self.skipped += len(self._batch)
                self._batch = []
                continue
            if skipped:
                log.info("journal.samples_resumed", skipped=skipped)
                skipped = 0
            await self.flush()

    async def flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            try:
                await self._journal.add_meter_samples(batch)
            except JournalError:
                self._guard.failed()


__all__ = ["FLUSH_S", "SampleWriter"]
