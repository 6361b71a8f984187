"""A Modbus energy meter as a :class:`controller.ports.Meter`: poll, decode, publish.

Each poll reads the planned blocks through the shared :class:`ModbusBus` and
publishes one frozen :class:`MeterReading`: ``FRESH`` with the new sample, or
``FAILED`` with the error and no sample. An outage is logged when it starts
and when it ends, not on every poll.
"""

from __future__ import annotations

import logging

from controller.ports import (
    Clock,
    DriverError,
    Freshness,
    MeterReading,
    MeterSample,
    MeterSink,
    PermanentError,
    TransientError,
)

from .bus import ModbusBus, SystemClock
from .codec import decode_block, to_sample
from .errors import ModbusRejected
from .maps import Quantity, RegisterMap
from .planner import ReadBlock, plan_reads

log = logging.getLogger(__name__)


class ModbusMeter:
    """One meter (one unit id) on a bus."""

    def __init__(
        self,
        name: str,
        register_map: RegisterMap,
        bus: ModbusBus,
        *,
        unit_id: int = 1,
        poll_interval_s: float = 1.0,
        max_registers: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.name = name
        self.register_map = register_map
        self.bus = bus
        self.unit_id = unit_id
        self.poll_interval_s = poll_interval_s
        self._clock: Clock = clock or SystemClock()
        self.blocks: tuple[ReadBlock, ...] = plan_reads(
            register_map.resolved(),
            max_registers=max_registers or register_map.max_registers,
            max_gap=register_map.max_gap,
        )
        self._skipped: set[ReadBlock] = set()  # optional blocks this unit rejected
        self._failing = False
        self._failed_polls = 0

    def __repr__(self) -> str:
        return f"ModbusMeter({self.name!r}, {self.register_map.model}, {self.bus}, unit {self.unit_id})"

    async def poll_once(self) -> MeterSample:
        """Read every block once; raises :class:`DriverError` if a required value is missing."""
        at = self._clock.monotonic()
        values: dict[Quantity, float | None] = {}
        for block in self.blocks:
            if block in self._skipped:
                continue
            try:
                regs = await self.bus.read_registers(
                    unit_id=self.unit_id,
                    function=block.function,
                    address=block.address,
                    count=block.count,
                )
            except ModbusRejected as exc:
                if not block.optional:
                    raise
                # This unit lacks the optional registers; those values stay None.
                self._skipped.add(block)
                names = ", ".join(f.quantity for f in block.fields)
                log.info("meter %s: no optional %s on this unit (%s)", self.name, names, exc)
                continue
            try:
                values.update(decode_block(block, regs))
            except ValueError as exc:  # a frame that parsed but does not fit the map
                raise TransientError(f"meter {self.name}: undecodable answer: {exc}") from exc
        return to_sample(values, at)

    async def run(self, sink: MeterSink) -> None:
        """Poll every ``poll_interval_s`` and publish each result until cancelled."""
        async with self.bus:
            next_at = self._clock.monotonic()
            while True:
                sink(await self._poll_reading())
                next_at += self.poll_interval_s
                now = self._clock.monotonic()
                if next_at < now:  # overran: skip the missed slots, do not burst
                    next_at = now
                await self._clock.sleep(next_at - now)

    async def _poll_reading(self) -> MeterReading:
        try:
            sample = await self.poll_once()
        except DriverError as exc:
            self._failed_polls += 1
            if not self._failing:
                self._failing = True
                level = logging.ERROR if isinstance(exc, PermanentError) else logging.WARNING
                log.log(level, "meter %s: poll failed: %s", self.name, exc)
            return MeterReading(
                meter=self.name,
                at=self._clock.monotonic(),
                freshness=Freshness.FAILED,
                sample=None,
                error=f"{type(exc).__name__}: {exc}",
            )
        if self._failing:
            log.info("meter %s: recovered after %d failed polls", self.name, self._failed_polls)
            self._failing = False
            self._failed_polls = 0
        return MeterReading(
            meter=self.name, at=self._clock.monotonic(), freshness=Freshness.FRESH, sample=sample
        )
