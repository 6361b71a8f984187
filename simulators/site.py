"""The simulated site around the bays: a building on the grid meter, PV on the roof, a CSMS.

``SimSite`` owns the meters of ``simulate``: the grid meter serves the building's
daily curve (or a fixed load a ``sim grid`` step set) plus what the simulated bays
draw, minus the PV; the PV meter serves a daily sun curve of ``--pv-kw`` peak (or
a fixed power a ``sim pv`` step set). Both are real Modbus TCP servers read by the
real Modbus driver. Simulated time runs ``speed`` times faster than the clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from simulators.meter.profile import BuildingProfile, Phases
from simulators.meter.server import MeterSimulator

log = structlog.get_logger(__name__)

VOLTS = 230.0
DEFAULT_LIMIT_A = 40.0


class SimSite:
    """The building, its PV and its meters (``meters``: station meter name -> simulator)."""

    def __init__(
        self,
        charging: Callable[[], Phases],
        *,
        pv_kw: float = 0.0,
        speed: float = 20.0,
        start_hour: float = 16.5,
    ) -> None:
        self._charging = charging
        self.pv_kw = pv_kw
        self.speed = speed
        self.start_hour = start_hour
        self.profile = BuildingProfile(pv_peak_w=pv_kw * 1000.0)
        self.meters: dict[str, MeterSimulator] = {}
        self._pv_fixed_w: float | None = None
        self._grid: MeterSimulator | None = None
        self._pv_name: str | None = None

    # ------------------------------------------------------------------ what the meters serve

    def pv_amps(self) -> Phases:
        """What the PV produces now, per phase (positive amps)."""
        if self._pv_fixed_w is not None:
            w = self._pv_fixed_w / 3
            return (w / VOLTS, w / VOLTS, w / VOLTS)
        if self._grid is None or self.pv_kw <= 0:
            return (0.0, 0.0, 0.0)
        p = self.profile.pv_w(self._grid.time_of_day_s())
        return (p[0] / VOLTS, p[1] / VOLTS, p[2] / VOLTS)

    def _grid_extra(self) -> Phases:
        c, pv = self._charging(), self.pv_amps()
        return (c[0] - pv[0], c[1] - pv[1], c[2] - pv[2])

    # ------------------------------------------------------------------ steps (sim grid, sim pv)

    def set_building_load(self, amps: Phases | None) -> None:
        """A fixed building load per phase (a step), or ``None``: back to the daily curve."""
        self.grid().set_currents(amps)

    def set_pv(self, kw: float | None) -> None:
        """A fixed PV production (a cloud, full sun), or ``None``: back to the sun's curve."""
        if not self.has_pv():
            raise ValueError("no PV meter")
        self._pv_fixed_w = None if kw is None else kw * 1000.0

    def has_pv(self) -> bool:
        return self._pv_name is not None

    def grid(self) -> MeterSimulator:
        if self._grid is None:
            raise ValueError("no grid meter")
        return self._grid

    # ------------------------------------------------------------------ start

    async def start(
        self,
        stack: contextlib.AsyncExitStack,
        raw: dict[str, Any],
        bay_amps: Callable[[str], Phases] | None = None,
    ) -> None:
        """Start a simulator for every meter ``raw`` names (``[[meters]]`` of a real config),
        or the default grid (and PV) meters when it names none; point the entries at them."""
        wanted: list[dict[str, Any]] = list(raw.get("meters") or [])
        if not wanted:
            wanted = [_meter_entry("grid", "grid", poll_s=0.25)]
            if self.pv_kw > 0:
                wanted.append({**_meter_entry("pv", "pv", poll_s=1.0), "max_current_a": 63.0})
        out = []
        for entry in wanted:
            role, name = str(entry.get("role", "grid")), str(entry["name"])
            common: dict[str, Any] = {
                "map_name": entry.get("map", "sdm630"),
                "port": 0,
                "unit_id": int(entry.get("unit_id", 1)),
                "speed": self.speed,
            }
            if role == "grid":
                # The grid meter's own profile has no PV: the PV is taken off through the
                # extra load, so a PV step shows on both meters at once.
                sim = MeterSimulator(
                    **common,
                    role="grid",
                    start_time_of_day_s=self.start_hour * 3600,
                    profile=BuildingProfile(),
                    extra_load=self._grid_extra,
                )
                self._grid = sim
            elif role == "pv":
                if self.pv_kw <= 0:
                    self.pv_kw = 5.0
                    self.profile = BuildingProfile(pv_peak_w=self.pv_kw * 1000.0)
                # A "bay"-role simulator serves exactly its extra load: here the PV.
                sim = MeterSimulator(**common, role="bay", extra_load=self.pv_amps)
                self._pv_name = name
            else:
                sim = MeterSimulator(
                    **common, role="bay", extra_load=_bay_load(bay_amps, str(entry.get("bay", "")))
                )
            await stack.enter_async_context(sim)
            self.meters[name] = sim
            out.append(
                {**entry, "bus": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port}}
            )
            log.info("simulate.meter", name=name, role=role, port=sim.port)
        raw["meters"] = out


def _bay_load(bay_amps: Callable[[str], Phases] | None, bay: str) -> Callable[[], Phases]:
    def load() -> Phases:
        return bay_amps(bay) if bay_amps is not None else (0.0, 0.0, 0.0)

    return load


def _meter_entry(name: str, role: str, *, poll_s: float) -> dict[str, Any]:
    return {"name": name, "map": "sdm630", "role": role, "poll_interval_s": poll_s}


def default_site_section() -> dict[str, Any]:
    """A house behind a 40 A main breaker (what ``simulate`` runs without ``--config``)."""
    return {
        "main_limit_a": DEFAULT_LIMIT_A,
        "main_guaranteed_headroom_a": 10.0,
        "main_reserve_a": 2.0,
        "eco_current_a": 8.0,
        "min_on_time_s": 30,
        "min_off_time_s": 30,
    }
