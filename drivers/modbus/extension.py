"""The ``[[meters]]`` entries: Modbus meters feeding the station (grid, PV, per-bay).

Each entry is a :class:`~drivers.modbus.config.MeterConfig` plus its ``role``
(``grid``, ``pv`` or ``bay``) and, for a bay meter, the ``bay`` it measures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.config import StationConfig
from controller.ports import DriverError, MeterReading
from drivers.modbus.config import MeterConfig, build_meters
from drivers.modbus.maps import Quantity

if TYPE_CHECKING:
    from controller.station import Station


class MeterRole(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["grid", "pv", "bay"] = "grid"
    bay: str | None = None


def split(entry: dict[str, Any]) -> tuple[MeterRole, MeterConfig]:
    rest = dict(entry)
    role = MeterRole.model_validate({k: rest.pop(k) for k in ("role", "bay") if k in rest})
    return role, MeterConfig.model_validate(rest)


def _grid_phases(i: int, mc: MeterConfig, cfg: StationConfig) -> list[str]:
    """The grid meter must read the current of every phase the site is supplied on."""
    if cfg.site is None:
        return []
    fields = mc.register_map().fields
    missing = [
        f"L{p + 1}" for p in cfg.site.phase_indices if Quantity(f"current_l{p + 1}") not in fields
    ]
    if not missing:
        return []
    if cfg.site.phases == 3:
        return [
            f"meters[{i}].map: grid meter {mc.name!r} ({mc.map}) reads no current on "
            f"{', '.join(missing)}, but the site is three-phase: the load manager would never "
            "see those phases. Use a three-phase meter, or set [site] phases = 1 on a "
            "single-phase supply"
        ]
    return [f"meters[{i}].map: grid meter {mc.name!r} ({mc.map}) reads no current on L1"]


class MetersExtension:
    name = "meters"

    def check(self, cfg: StationConfig) -> list[str]:
        problems: list[str] = []
        parsed: list[MeterConfig] = []
        bays = {b.id for b in cfg.bays}
        grids = 0
        for i, entry in enumerate(cfg.meters):
            try:
                role, mc = split(entry)
            except ValidationError as err:
                problems += [
                    f"meters[{i}].{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in err.errors()
                ]
                continue
            parsed.append(mc)
            grids += role.role == "grid"
            if role.role == "grid":
                problems += _grid_phases(i, mc, cfg)
            if role.role == "bay" and role.bay not in bays:
                problems.append(f"meters[{i}].bay: unknown bay {role.bay!r}")
        if grids > 1:
            problems.append("meters: more than one grid meter")
        if not problems:
            try:
                build_meters(parsed)
            except DriverError as err:
                problems.append(f"meters: {err}")
        return problems

    def attach(self, station: Station) -> None:
        entries = [split(e) for e in station.cfg.meters]
        meters = build_meters([mc for _, mc in entries])
        for (role, _), meter in zip(entries, meters, strict=True):

            def sink(reading: MeterReading, role: MeterRole = role) -> None:
                station.on_meter_reading(reading, role=role.role, bay_id=role.bay)

            async def service(meter: Any = meter, sink: Any = sink) -> None:
                await meter.run(sink)

            station.add_service(f"meter:{meter.name}", service)


EXTENSION = MetersExtension()
