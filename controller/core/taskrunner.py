"""The station's runner for work that outlives the call that starts it.

A safe-mode audit written from a callback, an installer's current ramp
started by an HTTP request: each is a task in this runner's own TaskGroup,
which runs inside the station's. A failing job is logged and ends alone; it
never takes the station down. When the station stops, jobs marked ``drain``
(audit rows) may finish for a moment; the others are cancelled with the group.
A job started while the runner is not running waits, and :meth:`settle` runs
it, so nothing started before or after the station runs is lost or orphaned.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DRAIN_S = 2.0
"""How long jobs marked ``drain`` may go on once the station stops."""

Job = Coroutine[Any, Any, None]


class TaskRunner:
    def __init__(self, *, drain_s: float = DRAIN_S) -> None:
        self._tg: asyncio.TaskGroup | None = None
        self._waiting: list[tuple[Job, str, bool]] = []
        self._running: dict[asyncio.Task[None], bool] = {}  # task -> drain
        self._drain_s = drain_s

    @property
    def running(self) -> bool:
        return self._tg is not None

    def spawn(
        self, job: Job, *, name: str, drain: bool = False, wait: bool = True
    ) -> asyncio.Task[None] | None:
        """Run ``job`` in the runner's TaskGroup and return its task.

        While the runner does not run, the job waits for it (None is returned), or
        with ``wait=False`` is dropped (closed, never started; None as well).
        """
        if self._tg is None:
            if wait:
                self._waiting.append((job, name, drain))
            else:
                job.close()
            return None
        return self._start(self._tg, job, name, drain)

    def _start(self, tg: asyncio.TaskGroup, job: Job, name: str, drain: bool) -> asyncio.Task[None]:
        task = tg.create_task(self._guarded(job, name), name=name)
        self._running[task] = drain

        def done(task: asyncio.Task[None]) -> None:
            self._running.pop(task, None)
            if inspect.getcoroutinestate(job) == inspect.CORO_CREATED:
                job.close()  # cancelled before it ever ran: nothing to clean up

        task.add_done_callback(done)
        return task

    @staticmethod
    async def _guarded(job: Job, name: str) -> None:
        try:
            await job
        except Exception:
            log.exception("task.failed", task=name)

    async def run(self) -> None:
        """The runner's life: one TaskGroup until cancelled (by the station's TaskGroup)."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                waiting, self._waiting = self._waiting, []
                for job, name, drain in waiting:
                    self._start(tg, job, name, drain)
                await asyncio.Future()  # until the station's TaskGroup cancels us
            except asyncio.CancelledError:
                # Let audit rows in flight reach the journal; the group cancels the rest.
                drains = [t for t, d in self._running.items() if d]
                if drains:
                    await asyncio.wait(drains, timeout=self._drain_s)
                raise
            finally:
                self._tg = None

    async def settle(self) -> None:
        """Wait until no job runs; jobs waiting for a runner that does not run, run here."""
        while self._running or self._waiting:
            if self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)
            if self._tg is None:
                waiting, self._waiting = self._waiting, []
                for job, name, _drain in waiting:
                    await self._guarded(job, name)
            elif self._waiting:
                await asyncio.sleep(0)  # the runner is starting them right now


__all__ = ["DRAIN_S", "TaskRunner"]
