"""What the nodes measure, kept kind to flash: live in memory, one journal write a minute.

Every telemetry frame updates its node's figures for the current minute in
place (:meth:`SampleWriter.add`: no row, no JSON, no allocation per frame). Once
every ``interval_s`` (60 s by default) one transaction writes the minutes that
have ended (one row per node: mean and peak power, mean currents, the energy
register at the minute's last sample) and an energy checkpoint of every open
session whose figures moved since the last one. Transitions (start, stop,
status changes) are written by the bay runner as they happen, so a crash loses
at most one interval of a session's progress, never a start or a stop; billing
comes from the node's energy register at start and stop, which survives us.

While the journal cannot write nothing is written; while its disk is short of
space the minutes are skipped (and counted) and only the checkpoints go in:
session records need the last space more than charts do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.core.bays import Bays
from controller.core.journal import Journal, JournalError, MinuteRow
from controller.core.journalguard import JournalGuard
from controller.core.persist import session_row_progress
from controller.ports import Clock, NodeTelemetry

log = structlog.get_logger(__name__)

INTERVAL_S = 60.0


@dataclass(slots=True)
class _Minute:
    """One node's running figures over one minute (updated in place)."""

    minute: float
    session_id: str | None
    samples: int = 0
    energy_wh: float | None = None
    power_sum_w: float = 0.0
    power_max_w: float = 0.0
    current_sum_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    last_at: float = 0.0

    def row(self, source: str) -> MinuteRow:
        n = self.samples or 1
        return MinuteRow(
            minute=self.minute,
            source=source,
            session_id=self.session_id,
            samples=self.samples,
            energy_wh=self.energy_wh,
            power_w=round(self.power_sum_w / n, 1),
            power_max_w=round(self.power_max_w, 1),
            current_a=[round(c / n, 2) for c in self.current_sum_a],
            last_at=self.last_at,
        )


class SampleWriter:
    def __init__(
        self,
        journal: Journal,
        guard: JournalGuard,
        clock: Clock,
        bays: Bays,
        *,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._journal = journal
        self._guard = guard
        self._clock = clock
        self._bays = bays
        self.interval_s = interval_s
        self._open: dict[str, _Minute] = {}  # source -> its current minute
        self._ended: list[MinuteRow] = []
        self._checkpointed: dict[str, tuple[int, float]] = {}  # session id -> (meter, peak)
        self.skipped = 0  # minute rows not written (journal blocked or space short)

    def add(
        self, source: str, session_id: str | None, t: NodeTelemetry, power_w: float, at: float
    ) -> None:
        """One telemetry frame of ``source`` (its power, W) at wall time ``at`` (never blocks)."""
        self.add_reading(source, session_id, t.energy_wh, power_w, t.current_a, at)

    def add_reading(
        self,
        source: str,
        session_id: str | None,
        energy_wh: float | None,
        power_w: float,
        current_a: tuple[float | None, ...],
        at: float,
    ) -> None:
        """One reading of ``source`` (a node, or a ``grid``/``pv`` meter) at wall time ``at``."""
        minute = math.floor(at / 60.0) * 60.0
        m = self._open.get(source)
        if m is None or m.minute != minute:
            if m is not None:
                self._ended.append(m.row(source))
            m = self._open[source] = _Minute(minute, session_id)
        elif session_id is not None:
            m.session_id = session_id  # the minute's row names the session charging last in it
        m.samples += 1
        if energy_wh is not None:
            m.energy_wh = energy_wh
        p = power_w
        m.power_sum_w += p
        if p > m.power_max_w:
            m.power_max_w = p
        acc = m.current_sum_a
        for i, c in enumerate(current_a[:3]):
            if c is not None:
                acc[i] += c
        m.last_at = at

    async def run(self) -> None:
        paused = False
        while True:
            await self._clock.sleep(self.interval_s)
            if self._guard.samples_paused and not paused:
                log.warning("journal.samples_paused", **self._guard.snapshot())
            elif paused and not self._guard.samples_paused:
                log.info("journal.samples_resumed")
            paused = self._guard.samples_paused
            await self.flush(final=False)

    async def flush(self, *, final: bool = True) -> None:
        """Write what has ended (``final``: every minute, the current ones too) and checkpoints."""
        now = self._clock.wall()
        current = math.floor(now / 60.0) * 60.0
        for source, m in list(self._open.items()):
            if final or m.minute < current:
                self._ended.append(m.row(source))
                del self._open[source]
        minutes, self._ended = self._ended, []
        if self._guard.blocked:
            self.skipped += len(minutes)
            return
        if self._guard.samples_paused:
            self.skipped += len(minutes)
            minutes = []
        progress = self._progress(now)
        try:
            await self._journal.write_minutes(minutes, progress)
        except JournalError:
            self._guard.failed()
            return
        for row in progress:
            self._checkpointed[row["id"]] = (row["meter_wh"], row["peak_power_w"])

    def _progress(self, now: float) -> list[dict[str, Any]]:
        """An energy checkpoint of every open session whose figures moved since the last one."""
        out: list[dict[str, Any]] = []
        live: set[str] = set()
        for rt in self._bays.values():
            sess = rt.state.session
            if sess is None:
                continue
            live.add(sess.session_id)
            if self._checkpointed.get(sess.session_id) == (sess.meter_wh, sess.peak_power_w):
                continue
            row = session_row_progress(sess)
            row["checkpoint_at"] = now
            out.append(row)
        for sid in set(self._checkpointed) - live:
            del self._checkpointed[sid]
        return out


__all__ = ["INTERVAL_S", "SampleWriter"]
