"""Meter intake: every reading of a grid, PV or bay meter, through the plausibility gate.

An implausible reading goes on as FAILED (audited when such a run starts and
ends); a grid or PV reading wakes the load manager. A fresh grid or PV sample
also goes into the per-minute figures the journal keeps (source ``"grid"`` or
``"pv"``, :class:`SampleWriter`), at most one a second, for the owner's power history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from controller.core.audit import AuditLog
from controller.core.bays import Bays
from controller.core.config import StationConfig
from controller.core.plausibility import MeterGate, bounds_for
from controller.core.samples import SampleWriter
from controller.ports import Clock, Freshness, MeterReading, MeterSample

log = structlog.get_logger(__name__)

RECORD_EVERY_S = 1.0
"""At most one grid (and one PV) sample per this many seconds goes to the journal."""


@dataclass(frozen=True, slots=True)
class MeterInput:
    role: str  # "grid", "pv", "bay" or "site" (a shared site's main meter, see site_lease)
    bay_id: str | None
    reading: MeterReading


class MeterIntake:
    def __init__(
        self,
        cfg: StationConfig,
        bays: Bays,
        clock: Clock,
        audit: AuditLog,
        load_changed: asyncio.Event,
        samples: SampleWriter | None = None,
    ) -> None:
        self._cfg = cfg
        self._samples = samples
        self._recorded: dict[str, float] = {}  # role -> ``at`` of the last sample journaled
        self._bays = bays
        self._clock = clock
        self._audit = audit
        self._load_changed = load_changed
        self.inputs: dict[str, MeterInput] = {}  # meter name -> its latest reading
        self.gate = MeterGate()  # plausibility of every meter reading

    def on_reading(
        self,
        reading: MeterReading,
        *,
        role: str,
        bay_id: str | None = None,
        max_current_a: float | None = None,
    ) -> None:
        """A meter published (called on the loop by the meter adapter)."""
        site, rt = self._cfg.site, self._bays.get(bay_id or "")
        bounds = bounds_for(
            role,
            main_limit_a=site.main_limit_a if site is not None else None,
            bay_max_a=rt.cfg.max_current_a if rt is not None else None,
            rating_a=max_current_a,
        )
        reading, note = self.gate.admit(reading, bounds, role=role, now_wall=self._clock.wall())
        if note is not None:
            log.warning(note.kind, **note.detail)
            self._audit.spawn(note.kind, "meter", note.detail)
        prev = self.inputs.get(reading.meter)
        self.inputs[reading.meter] = MeterInput(role, bay_id, reading)
        if role in ("grid", "pv"):
            self._load_changed.set()
            self._record(role, reading)
        elif role == "site":
            self._load_changed.set()  # reported to the site coordinator after the step
        if prev is None or prev.reading.freshness != reading.freshness:
            log.info(
                "meter.freshness",
                meter=reading.meter,
                role=role,
                freshness=reading.freshness.value,
                error=reading.error or None,
            )

    def _record(self, role: str, reading: MeterReading) -> None:
        sample = reading.sample
        if self._samples is None or reading.freshness is not Freshness.FRESH or sample is None:
            return
        last = self._recorded.get(role)
        if last is not None and sample.at - last < RECORD_EVERY_S:
            return  # the same sample published again, or a meter polled faster than 1 Hz
        self._recorded[role] = sample.at
        power = _power_w(sample)
        if power is None:
            return  # the chart shows a gap for this minute, never a guessed zero
        self._samples.add_reading(
            role, None, sample.import_wh, power, sample.current_a, self._clock.wall()
        )

    def of_role(self, role: str) -> MeterInput | None:
        for m in self.inputs.values():
            if m.role == role:
                return m
        return None

    @property
    def pv_available(self) -> bool:
        return self.of_role("pv") is not None


def _power_w(sample: MeterSample) -> float | None:
    """The meter's own active power (total, else the sum of its phases); never V × I guesses."""
    if sample.power_total_w is not None:
        return round(sample.power_total_w, 1)
    phases = [p for p in sample.power_w if p is not None]
    return round(sum(phases), 1) if phases else None


__all__ = ["MeterInput", "MeterIntake"]
