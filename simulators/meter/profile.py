"""A building's electrical load over a day, as pure functions of the time of day.

A smooth daily curve (night base, morning and evening peaks), scheduled
appliance spikes (heat-pump starts with inrush, an oven, a kettle) and an
optional PV production bell. Values are per phase in W; no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DAY_S = 86_400.0
Phases = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Appliance:
    """A load that runs ``duration_s`` from ``start_s`` (seconds after midnight) every day."""

    name: str
    start_s: float
    duration_s: float
    watts: float
    phases: tuple[int, ...] = (0, 1, 2)  # indices of the phases it loads, evenly
    inrush_factor: float = 1.0  # multiplier during the first inrush_s seconds (motor start)
    inrush_s: float = 0.0

    def power_w(self, t_day: float) -> Phases:
        dt = (t_day - self.start_s) % DAY_S
        if dt >= self.duration_s:
            return (0.0, 0.0, 0.0)
        w = self.watts * (self.inrush_factor if dt < self.inrush_s else 1.0) / len(self.phases)
        return (
            w if 0 in self.phases else 0.0,
            w if 1 in self.phases else 0.0,
            w if 2 in self.phases else 0.0,
        )


def _h(hours: float) -> float:
    return hours * 3600.0


DEFAULT_APPLIANCES: tuple[Appliance, ...] = (
    Appliance("heat pump", _h(6.5), _h(0.75), 3000.0, (0, 1, 2), inrush_factor=3.0, inrush_s=2.0),
    Appliance("kettle", _h(7.25), 180.0, 2000.0, (1,)),
    Appliance("heat pump", _h(13.0), _h(0.5), 3000.0, (0, 1, 2), inrush_factor=3.0, inrush_s=2.0),
    Appliance("oven", _h(18.0), _h(0.75), 2500.0, (0,)),
    Appliance("heat pump", _h(21.0), _h(0.75), 3000.0, (0, 1, 2), inrush_factor=3.0, inrush_s=2.0),
)


def _bump(t_day: float, centre_h: float, width_h: float) -> float:
    d = (t_day - _h(centre_h) + DAY_S / 2) % DAY_S - DAY_S / 2  # wrap around midnight
    return math.exp(-0.5 * (d / _h(width_h)) ** 2)


@dataclass(frozen=True, slots=True)
class BuildingProfile:
    """Consumption and PV production of a building, per phase, in W."""

    base_w: float = 350.0
    morning_peak_w: float = 1200.0
    evening_peak_w: float = 2200.0
    phase_split: Phases = (0.40, 0.35, 0.25)
    appliances: tuple[Appliance, ...] = DEFAULT_APPLIANCES
    pv_peak_w: float = 0.0  # 0: no PV
    pv_sunrise_h: float = 6.5
    pv_sunset_h: float = 20.0
    pv_phases: tuple[int, ...] = field(default=(0, 1, 2))

    def load_w(self, t_day: float) -> Phases:
        t_day %= DAY_S
        curve = (
            self.base_w
            + self.morning_peak_w * _bump(t_day, 7.5, 1.0)
            + self.evening_peak_w * _bump(t_day, 19.0, 1.75)
        )
        p = [curve * s for s in self.phase_split]
        for a in self.appliances:
            for i, w in enumerate(a.power_w(t_day)):
                p[i] += w
        return (p[0], p[1], p[2])

    def pv_w(self, t_day: float) -> Phases:
        t_day %= DAY_S
        rise, sset = _h(self.pv_sunrise_h), _h(self.pv_sunset_h)
        if self.pv_peak_w <= 0 or not rise < t_day < sset:
            return (0.0, 0.0, 0.0)
        w = (
            self.pv_peak_w
            * math.sin(math.pi * (t_day - rise) / (sset - rise)) ** 2
            / len(self.pv_phases)
        )
        return (
            w if 0 in self.pv_phases else 0.0,
            w if 1 in self.pv_phases else 0.0,
            w if 2 in self.pv_phases else 0.0,
        )
