"""A Modbus energy meter as a :class:`controller.ports.Meter`: poll, decode, publish.

Each poll reads through the shared :class:`ModbusBus` the requests that carry
what load management needs (``every_poll``: a grid meter's currents) and one
of the other requests in turn, so a slow meter refreshes its currents every
period instead of once per full sweep. It publishes one frozen
:class:`MeterReading`: ``FRESH`` with the latest value of every quantity, or
``FAILED`` with the error and no sample. An outage is logged when it starts
and when it ends, not on every poll.

Each value is stamped with the moment its request went out: the meter may
have measured it any time up to its answer, so the start is the stamp that
never makes a value look younger than it is against the moment it was asked
for (the answer's arrival would make a slow meter's values look fresher by its
whole answer time). The reading's ``at`` is the oldest stamp among the
``every_poll`` values.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

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
from .planner import PollPlan, ReadBlock, plan_poll

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
        every_poll: Collection[Quantity] | None = None,
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
        self.plan: PollPlan = plan_poll(
            register_map.resolved(),
            every_poll=every_poll,
            max_registers=max_registers or register_map.max_registers,
            max_gap=register_map.max_gap,
        )
        self.blocks: tuple[ReadBlock, ...] = self.plan.blocks
        fast = {f.quantity for b in self.plan.fast for f in b.fields}
        self._key: frozenset[Quantity] = frozenset(
            fast if every_poll is None else fast & set(every_poll)
        ) or frozenset(fast)
        self._skipped: set[ReadBlock] = set()  # optional blocks this unit rejected
        self._values: dict[Quantity, float | None] = {}
        self._stamps: dict[Quantity, float] = {}
        self._next_slow = 0
        self._swept = False  # every slow block read once since start
        self._failing = False
        self._failed_polls = 0

    def __repr__(self) -> str:
        return f"ModbusMeter({self.name!r}, {self.register_map.model}, {self.bus}, unit {self.unit_id})"

    def _due(self) -> list[ReadBlock]:
        """This poll's requests: a slow one (all of them on the first poll), then the fast ones."""
        slow = self.plan.slow
        if not slow:
            return list(self.plan.fast)
        if not self._swept:
            return [*slow, *self.plan.fast]
        block = slow[self._next_slow % len(slow)]
        self._next_slow = (self._next_slow + 1) % len(slow)
        # Slow first: the currents are the last thing read, so the reading is as young as it can be.
        return [block, *self.plan.fast]

    async def poll_once(self) -> MeterSample:
        """Read this poll's requests; raises :class:`DriverError` if a required value is missing."""
        for block in self._due():
            if block in self._skipped:
                continue
            try:
                regs, sent_at = await self.bus.read_registers_stamped(
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
                values = decode_block(block, regs)
            except ValueError as exc:  # a frame that parsed but does not fit the map
                raise TransientError(f"meter {self.name}: undecodable answer: {exc}") from exc
            self._values.update(values)
            self._stamps.update(dict.fromkeys(values, sent_at))
        self._swept = True
        key = [self._stamps[q] for q in self._key if q in self._stamps]
        at = min(key) if key else self._clock.monotonic()
        return to_sample(self._values, at, self._stamps)

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
        return MeterReading(meter=self.name, at=sample.at, freshness=Freshness.FRESH, sample=sample)
