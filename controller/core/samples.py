"""What the nodes measure, kept kind to flash: live in memory, minute rows written in batches.

Every telemetry frame updates its node's figures for the current minute in
place (:meth:`SampleWriter.add`: no row, no JSON, no allocation per frame). Once
every ``interval_s`` (whole minutes, just after the minute turns) one
transaction writes the minutes that have ended (one row per node and minute: mean
and peak power, mean currents, the energy register at the minute's last sample).
The figures stay per minute whatever the interval.

The interval (:func:`journal_interval`): ``[journal] checkpoint_s`` when set;
otherwise whole minutes chosen so that a write carries about ``ROWS_PER_WRITE``
rows — every minute from 40 sources (bays, and the grid and PV meters) up, every
10 minutes at 4 or fewer. A write costs at least one page of the write-ahead log
(and the OS page it straddles), however few rows it carries: written every
minute, 4 bays cost ~3.4 MB per bay per day, every 10 minutes ~0.8
(``tests/bench/bench_journal_day.py``).

A node's minute row names the session it charged and holds the register: it *is*
that session's energy checkpoint (restore reads it, controller.core.restore). The
session's own row is rewritten only when no fresh minute row carries its figures
(a node silent since the minute turned, minutes skipped on a short disk, a
checkpoint interval shorter than a minute) and at least every ``ROW_CHECKPOINT_S``
(so restore reads a few minutes of rows at most). Rewriting every open session's
row each minute cost more flash than the minutes themselves.

Transitions (start, stop, status changes, faults) are written by the bay runner as
they happen, never batched: billing comes from the node's energy register at start
and stop. What a crash (``kill -9``, power cut) loses is what happened since the
last write, at most one interval: the minute rows of those minutes (the charts
show a gap), and a session's progress since its last checkpoint — only if its
node lost its register as well. When the node comes back with the same plug and
register, restore continues the session from the node's register and nothing
is lost (controller.core.restore); a node that lost power ends the session at
its last journaled checkpoint (never guessed upward).

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
from controller.core.config import StationConfig
from controller.core.journal import Journal, JournalError, MinuteRow
from controller.core.journalguard import JournalGuard
from controller.core.persist import session_row_progress
from controller.ports import Clock, NodeTelemetry

log = structlog.get_logger(__name__)

INTERVAL_S = 60.0
"""The shortest default interval (and the one of stations with ``ROWS_PER_WRITE`` sources)."""
MAX_INTERVAL_S = 600.0
"""The longest default interval: what a crash may lose of the per-minute figures."""
ROWS_PER_WRITE = 40
"""Minute rows a write should carry (~3 KB, 3/4 of a 4 KiB page), so its pages are worth their cost."""
FLUSH_LAG_S = 1.0
"""A minute's write waits this long after the minute turns: the last frames of the minute are in."""
ROW_CHECKPOINT_S = 900.0
"""A session's own row gets its figures at least this often, minute rows or not."""


@dataclass(frozen=True, slots=True)
class Cadence:
    """How often the minute rows are written, and why."""

    interval_s: float
    sources: int  # minute rows per minute: bays, and the grid and PV meters
    configured: bool  # ``[journal] checkpoint_s`` set (otherwise chosen by ``sources``)

    def describe(self) -> str:
        """One sentence for check-config and the start-up log."""
        every = f"{self.interval_s:g} s"
        if self.interval_s >= 60 and self.interval_s % 60 == 0:
            n = int(self.interval_s // 60)
            every = "minute" if n == 1 else f"{n} minutes"
        if self.configured:
            return f"The journal writes the meter figures every {every} (journal.checkpoint_s)."
        return (
            f"The journal writes the meter figures every {every}, chosen for "
            f"{self.sources} meter {'source' if self.sources == 1 else 'sources'} "
            "(bays, grid and PV meters); set journal.checkpoint_s to choose."
        )


def default_interval_s(sources: int) -> float:
    """Whole minutes that give a write ``ROWS_PER_WRITE`` rows, from 1 up to 10 minutes."""
    minutes = math.ceil(ROWS_PER_WRITE / max(1, sources))
    return min(MAX_INTERVAL_S, max(INTERVAL_S, minutes * 60.0))


def journal_interval(cfg: StationConfig) -> Cadence:
    """The minute rows' write interval of a station: ``[journal] checkpoint_s`` wins."""
    roles = {str(m.get("role", "")) for m in cfg.meters} & {"grid", "pv"}
    sources = len(cfg.bays) + len(roles)
    if cfg.journal.checkpoint_s is not None:
        return Cadence(cfg.journal.checkpoint_s, sources, configured=True)
    return Cadence(default_interval_s(sources), sources, configured=False)


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
        cadence: Cadence,
    ) -> None:
        self._journal = journal
        self._guard = guard
        self._clock = clock
        self._bays = bays
        self.cadence = cadence
        self.interval_s = cadence.interval_s
        self._open: dict[str, _Minute] = {}  # source -> its current minute
        self._ended: list[MinuteRow] = []
        self._writing: list[MinuteRow] = []  # in the write under way
        # session id -> (meter, peak, when) of its last durable checkpoint: its row or a minute row
        self._checkpointed: dict[str, tuple[int, float, float]] = {}
        self._row_at: dict[str, float] = {}  # session id -> when its own row was last written
        self.skipped = 0  # minute rows not written (journal blocked or space short)
        journal.set_pending_minutes(self.pending)

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
        log.info(
            "journal.cadence",
            interval_s=self.interval_s,
            sources=self.cadence.sources,
            configured=self.cadence.configured,
            message=self.cadence.describe(),
        )
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
        self._writing = minutes  # still readable (pending) until the journal has them
        try:
            await self._journal.write_minutes(minutes, progress)
        except JournalError:
            self._guard.failed()
            return
        finally:
            self._writing = []
        for sid, (meter, peak, at) in carried.items():
            self._checkpointed[sid] = (meter, peak, at)
        for row in progress:
            self._checkpointed[row["id"]] = (row["meter_wh"], row["peak_power_w"], now)
            self._row_at[row["id"]] = now

    def pending(self) -> list[MinuteRow]:
        """The minutes that have ended and are not in the journal yet (the journal's
        readers add them: :meth:`Journal.set_pending_minutes`)."""
        current = math.floor(self._clock.wall() / 60.0) * 60.0
        ended = [m.row(source) for source, m in self._open.items() if m.minute < current]
        return [*self._writing, *self._ended, *ended]

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


__all__ = [
    "FLUSH_LAG_S",
    "INTERVAL_S",
    "MAX_INTERVAL_S",
    "ROWS_PER_WRITE",
    "ROW_CHECKPOINT_S",
    "Cadence",
    "SampleWriter",
    "default_interval_s",
    "journal_interval",
]
