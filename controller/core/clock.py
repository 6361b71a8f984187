"""The station's clock: monotonic time for timers and leases, wall time for records.

Every part of the core takes the clock it is given (:class:`controller.ports.Clock`),
so tests can drive time; :class:`SystemClock` is the real one.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


__all__ = ["SystemClock"]
