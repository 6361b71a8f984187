"""A vehicle on a simulated wallbox: how much it draws for the limit it is offered.

IEC 61851-1: below 6 A offered the vehicle pauses; otherwise it draws the
lesser of the offer and its own on-board charger's maximum, tapering above
80 % state of charge, and nothing once full.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_OFFER_A = 6.0
VOLTS = 230.0


@dataclass(slots=True)
class Car:
    max_current_a: float = 16.0
    phases: int = 3
    battery_wh: float = 50_000.0
    soc: float = 0.3
    response_s: float = 0.0  # the vehicle takes this long to follow a lower offer

    @property
    def full(self) -> bool:
        return self.soc >= 1.0

    def wants_a(self, offer_a: float) -> float:
        """What it draws per phase for ``offer_a`` (0 below the IEC minimum or when full)."""
        if self.full or offer_a < MIN_OFFER_A:
            return 0.0
        top = self.max_current_a
        if self.soc > 0.8:
            top = max(MIN_OFFER_A, top * (1.0 - self.soc) / 0.2)
        return min(offer_a, top)

    def charge(self, current_a: float, dt_s: float) -> float:
        """Take ``current_a`` for ``dt_s`` seconds; the energy it took, in Wh."""
        wh = current_a * VOLTS * self.phases * dt_s / 3600.0
        self.soc = min(1.0, self.soc + wh / self.battery_wh)
        return wh
