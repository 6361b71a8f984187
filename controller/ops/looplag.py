"""Event-loop lag: how late the loop wakes a coroutine that asked to sleep a fixed period.

Owns the :class:`LoopLagMonitor` service. It sleeps ``period_s`` again and
again and records how much later than asked it woke up; anything that holds
the loop (a blocking call, a CPU-heavy callback, a swapping Pi) shows up as
lag. It keeps the latest value and the last ``window`` samples (their maximum
and 99th percentile), for ``/healthz``, ``/metrics`` and the logs.

The station carries its monitor as ``station.loop_lag`` (set by :func:`attach`
in the composition root); code that may run without one uses :func:`monitor_of`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["LagStats", "LoopLagMonitor", "attach", "monitor_of"]

log = structlog.get_logger(__name__)

PERIOD_S = 0.25
WINDOW = 240  # samples: one minute at PERIOD_S
WARN_S = 0.1  # logged once when crossed, and once on recovery


@dataclass(frozen=True, slots=True)
class LagStats:
    """A snapshot of the monitor. Seconds; ``None`` before the first sample."""

    latest_s: float | None
    max_s: float | None  # over the last ``samples`` (at most ``window``) samples
    p99_s: float | None  # nearest-rank 99th percentile over the same samples
    max_ever_s: float | None
    samples: int
    total_samples: int
    last_at: float | None  # the monitor clock's time of the latest sample
    period_s: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class LoopLagMonitor:
    def __init__(
        self,
        *,
        period_s: float = PERIOD_S,
        window: int = WINDOW,
        warn_s: float = WARN_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if period_s <= 0 or window <= 0:
            raise ValueError("period_s and window must be positive")
        self.period_s = period_s
        self.window = window
        self.warn_s = warn_s
        self._clock = clock
        self._window: deque[float] = deque(maxlen=window)
        self._latest: float | None = None
        self._max_ever: float | None = None
        self._last_at: float | None = None
        self._total = 0
        self._lagging = False
        self._sampled = asyncio.Event()

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Measure until cancelled (a station service)."""
        while True:
            start = self.now()
            await asyncio.sleep(self.period_s)
            woke = self.now()
            self.record(woke - start - self.period_s, woke)

    def record(self, lag_s: float, at: float) -> None:
        """One measurement: the loop woke us ``lag_s`` seconds late (negative counts as 0)."""
        lag = max(0.0, lag_s)
        self._latest = lag
        self._window.append(lag)
        self._max_ever = lag if self._max_ever is None else max(self._max_ever, lag)
        self._last_at = at
        self._total += 1
        if lag >= self.warn_s and not self._lagging:
            self._lagging = True
            log.warning("loop.lag_high", lag_s=round(lag, 3))
        elif lag < self.warn_s and self._lagging:
            self._lagging = False
            log.info("loop.lag_recovered", lag_s=round(lag, 3))
        self._sampled.set()
        self._sampled = asyncio.Event()

    async def next_sample(self) -> LagStats:
        """Wait for the next measurement (tests, diagnostics)."""
        await self._sampled.wait()
        return self.stats()

    def stats(self) -> LagStats:
        w = list(self._window)
        return LagStats(
            latest_s=self._latest,
            max_s=max(w) if w else None,
            p99_s=percentile(w, 99) if w else None,
            max_ever_s=self._max_ever,
            samples=len(w),
            total_samples=self._total,
            last_at=self._last_at,
            period_s=self.period_s,
        )

    def silent_for(self, now: float | None = None) -> float | None:
        """Seconds since the latest sample (``None`` before the first one)."""
        if self._last_at is None:
            return None
        return max(0.0, (self.now() if now is None else now) - self._last_at)

    @property
    def stale_after_s(self) -> float:
        """No sample for this long means the monitor (or the loop) is stuck."""
        return max(2.0, 8 * self.period_s)


def attach(station: Any, **kw: Any) -> LoopLagMonitor:
    """Create a monitor, expose it as ``station.loop_lag`` and run it as a station service."""
    monitor = LoopLagMonitor(**kw)
    station.loop_lag = monitor
    station.add_service("loop_lag", monitor.run)
    return monitor


def monitor_of(station: Any) -> LoopLagMonitor | None:
    mon = getattr(station, "loop_lag", None)
    return mon if isinstance(mon, LoopLagMonitor) else None
