"""The audit log at run time: who did what, written to the journal.

``record`` writes at once (for a command that waits for it); ``spawn`` writes
from a callback or a transition, as a job of the station's task runner (its
TaskGroup owns it, and it may finish while the station stops). A write that
fails is reported to ``on_failure`` (the journal guard), never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.core.journal import Journal, JournalError
from controller.core.taskrunner import TaskRunner
from controller.ports import Clock


class AuditLog:
    def __init__(
        self, journal: Journal, clock: Clock, tasks: TaskRunner, on_failure: Callable[[], None]
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._tasks = tasks
        self._on_failure = on_failure

    async def record(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        try:
            await self._journal.audit(self._clock.wall(), actor, kind, detail)
        except JournalError:
            self._on_failure()

    def spawn(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        self._tasks.spawn(self.record(kind, actor, detail), name=f"audit:{kind}", drain=True)


__all__ = ["AuditLog"]
