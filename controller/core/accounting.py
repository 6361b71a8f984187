"""Session accounting: energy, power and cost of a session from the meter's energy register.

Energy always comes from the counter (Wh) of the bay's node or meter, never
from time × power. Cost is a snapshot of the tariff taken when the session
opened, so a tariff change never rewrites a running or past session.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Tariff(BaseModel):
    """Prices in the station's currency. ``per_kwh`` plus optional per-minute and per-session fees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="EUR", min_length=3, max_length=3)
    per_kwh: float = Field(default=0.30, ge=0)
    per_minute: float = Field(default=0.0, ge=0)
    per_session: float = Field(default=0.0, ge=0)


@dataclass(frozen=True, slots=True)
class SessionFigures:
    energy_wh: int
    duration_s: float
    avg_power_w: float
    peak_power_w: float
    cost: float
    currency: str


def figures(
    *,
    meter_start_wh: int,
    meter_stop_wh: int,
    started_at: float,
    stopped_at: float,
    peak_power_w: float,
    tariff: Tariff,
) -> SessionFigures:
    energy = max(0, meter_stop_wh - meter_start_wh)
    duration = max(0.0, stopped_at - started_at)
    avg = energy * 3600.0 / duration if duration > 0 else 0.0
    # The peak is what the node saw; it can never be below the average.
    peak = max(peak_power_w, avg)
    return SessionFigures(
        energy_wh=energy,
        duration_s=duration,
        avg_power_w=round(avg, 1),
        peak_power_w=round(peak, 1),
        cost=cost(energy, duration, tariff),
        currency=tariff.currency,
    )


def cost(energy_wh: int, duration_s: float, tariff: Tariff) -> float:
    total = (
        tariff.per_session
        + tariff.per_kwh * energy_wh / 1000.0
        + tariff.per_minute * duration_s / 60.0
    )
    return round(total, 2)
