"""What the nodes measure, kept kind to flash: live in memory, one journal write a minute.

Every telemetry frame updates its node's figures for the current minute in
place (:meth:`SampleWriter.add`: no row, no JSON, no allocation per frame). Once
every ``interval_s`` (60 s by default, just after the minute turns) one
transaction writes the minutes that have ended (one row per node: mean and peak
power, mean currents, the energy register at the minute's last sample).

A node's minute row names the session it charged and holds the register: it *is*
that session's energy checkpoint (restore reads it, controller.core.restore). The
session's own row is rewritten only when no fresh minute row carries its figures
(a node silent since the minute turned, minutes skipped on a short disk, a
checkpoint interval shorter than a minute) and at least every ``ROW_CHECKPOINT_S``
(so restore reads a few minutes of rows at most). Rewriting every open session's
row each minute cost more flash than the minutes themselves.

Transitions (start, stop, status changes) are written by the bay runner as they
happen, so a crash loses at most one interval of a session's progress, never a
start or a stop; billing comes from the node's energy register at start and stop,
which survives us.

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
FLUSH_LAG_S = 1.0
"""A minute's write waits this long after the minute turns: the last frames of the minute are in."""
ROW_CHECKPOINT_S = 900.0
"""A session's own row gets its figures at least this often, minute rows or not."""


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
        # session id -> (meter, peak, when) of its last durable checkpoint: its row or a minute row
        self._checkpointed: dict[str, tuple[int, float, float]] = {}
        self._row_at: dict[str, float] = {}  # session id -> when its own row was last written
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
            await self._clock.sleep(self._next_wait())
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
        carried = _carried(minutes)
        progress = self._progress(now, carried)
        try:
            await self._journal.write_minutes(minutes, progress)
        except JournalError:
            self._guard.failed()
            return
        for sid, (meter, peak, at) in carried.items():
            self._checkpointed[sid] = (meter, peak, at)
        for row in progress:
            self._checkpointed[row["id"]] = (row["meter_wh"], row["peak_power_w"], now)
            self._row_at[row["id"]] = now

    def _next_wait(self) -> float:
        """Seconds to the next write: just after the minute turns when the interval is whole minutes."""
        if self.interval_s < 60.0 or self.interval_s % 60.0:
            return self.interval_s
        now = self._clock.wall()
        due = math.floor(now / self.interval_s) * self.interval_s + FLUSH_LAG_S
        while due <= now + 1e-3:
            due += self.interval_s
        return due - now

    def _progress(
        self, now: float, carried: dict[str, tuple[int, float, float]]
    ) -> list[dict[str, Any]]:
        """The open sessions whose own row needs their figures now (see the module's notes)."""
        out: list[dict[str, Any]] = []
        live: set[str] = set()
        for rt in self._bays.values():
            sess = rt.state.session
            if sess is None:
                continue
            sid = sess.session_id
            live.add(sid)
            last = carried.get(sid) or self._checkpointed.get(sid)
            if last is not None and (last[0], last[1]) == (sess.meter_wh, sess.peak_power_w):
                continue  # nothing moved since the last durable checkpoint
            row_due = now - self._row_at.get(sid, sess.started_at) >= ROW_CHECKPOINT_S
            if last is not None and not row_due:
                fresh = now - last[2] < self.interval_s
                if fresh and last[1] >= sess.peak_power_w:
                    continue  # a minute row written just now carries it
            row = session_row_progress(sess)
            row["checkpoint_at"] = now
            out.append(row)
        for gone in [sid for sid in self._checkpointed if sid not in live]:
            del self._checkpointed[gone]
        for gone in [sid for sid in self._row_at if sid not in live]:
            del self._row_at[gone]
        return out


def _carried(minutes: list[MinuteRow]) -> dict[str, tuple[int, float, float]]:
    """Per session, the checkpoint its minute rows carry: (register, peak power, last sample)."""
    out: dict[str, tuple[int, float, float]] = {}
    for m in minutes:
        if m.session_id is None or m.energy_wh is None:
            continue
        prev = out.get(m.session_id)
        if prev is None or m.last_at >= prev[2]:
            peak = max(m.power_max_w, prev[1] if prev else 0.0)
            out[m.session_id] = (int(m.energy_wh), peak, m.last_at)
        else:
            out[m.session_id] = (prev[0], max(prev[1], m.power_max_w), prev[2])
    return out


__all__ = ["FLUSH_LAG_S", "INTERVAL_S", "ROW_CHECKPOINT_S", "SampleWriter"]
