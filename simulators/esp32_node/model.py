"""The physics of one simulated bay: relay, what is plugged in and what it draws, energy.

Pure state advanced with explicit ``now`` values (no clock of its own, no I/O).
Kinds: ``evse`` (control pilot and an EV that follows the setpoint after a
response delay on 1 or 3 phases, optional SoC) and ``locker`` (door, lock and
an outlet feeding an e-bike charger).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.ports import PilotState

Kind = Literal["evse", "locker"]
IEC_MIN_A = 6.0


@dataclass(slots=True)
class Ev:
    max_a: float = 16.0
    phases: int = 3
    soc_pct: float | None = None
    capacity_wh: float | None = None


@dataclass(slots=True)
class BayPhysics:
    kind: Kind
    voltage_v: float = 230.0
    response_delay_s: float = 0.0
    relay_cmd: bool = False  # what the node commands
    stuck_relay: bool = False  # knob: the contacts are welded closed
    setpoint_a: float = 0.0
    overcurrent_a: float = 0.0  # knob: extra draw beyond what the load should take
    ev: Ev | None = None
    charger_a: float | None = None  # locker: an e-bike charger plugged into the outlet
    door_closed: bool = True
    locked: bool = True
    energy_wh: float = 0.0
    draw_a: float = 0.0
    _target_a: float = 0.0
    _target_at: float = 0.0
    _last: float | None = None
    _relay_closed: bool = False

    @property
    def relay_closed(self) -> bool:
        return self._relay_closed

    @property
    def phases(self) -> int:
        if self.kind == "evse" and self.ev is not None:
            return self.ev.phases
        return 1

    def currents(self) -> tuple[float, float, float]:
        if not self._relay_closed:
            return (0.0, 0.0, 0.0)
        per_phase = self.draw_a + (
            self.overcurrent_a if (self.draw_a > 0 or self.overcurrent_a) else 0.0
        )
        n = self.phases
        return (per_phase, per_phase if n == 3 else 0.0, per_phase if n == 3 else 0.0)

    def voltages(self) -> tuple[float, float, float]:
        return (self.voltage_v, self.voltage_v, self.voltage_v)

    def pilot(self) -> PilotState:
        if self.kind != "evse":
            return PilotState.NONE
        if self.ev is None:
            return PilotState.A
        return PilotState.C if self._relay_closed and self._target_a > 0 else PilotState.B

    def temperature_c(self) -> float:
        return 25.0 + 0.5 * max(self.currents())

    # ------------------------------------------------------------------ changes

    def change(self, now: float) -> None:
        """Call after any input changed: recompute what the load wants to draw."""
        self.advance(now)
        self._relay_closed = self.relay_cmd or self.stuck_relay
        target = self._wanted_a()
        if target != self._target_a:
            self._target_a = target
            self._target_at = now
            if target < self.draw_a or self.response_delay_s <= 0:
                self.draw_a = target  # a load drops at once (relay open, pilot lowered)

    def _wanted_a(self) -> float:
        if not self._relay_closed:
            return 0.0
        if self.kind == "evse":
            ev = self.ev
            if ev is None or self.setpoint_a < IEC_MIN_A:
                return 0.0
            if ev.soc_pct is not None and ev.soc_pct >= 100.0:
                return 0.0
            return min(self.setpoint_a, ev.max_a)
        return self.charger_a or 0.0

    def advance(self, now: float) -> None:
        """Integrate energy up to ``now``; apply a pending EV response."""
        if self._last is None:
            self._last = now
            return
        if self.draw_a != self._target_a:
            switch = self._target_at + self.response_delay_s
            if now >= switch:
                self._integrate(max(self._last, min(switch, now)))
                self.draw_a = self._target_a
        self._integrate(now)
        ev = self.ev
        if ev is not None and ev.soc_pct is not None and ev.soc_pct >= 100.0 and self._target_a > 0:
            self._target_a = self.draw_a = 0.0  # battery full: the EV stops drawing

    def _integrate(self, until: float) -> None:
        assert self._last is not None
        dt = until - self._last
        if dt <= 0:
            return
        power_w = sum(i * v for i, v in zip(self.currents(), self.voltages(), strict=True))
        wh = power_w * dt / 3600.0
        self.energy_wh += wh
        ev = self.ev
        if ev is not None and ev.soc_pct is not None and ev.capacity_wh:
            ev.soc_pct = min(100.0, ev.soc_pct + wh / ev.capacity_wh * 100.0)
        self._last = until
