"""The ``[[meters]]`` entries: Modbus meters feeding the station (grid, PV, per-bay).

Each entry is a :class:`~drivers.modbus.config.MeterConfig` plus its ``role``
(``grid``, ``pv`` or ``bay``), for a bay meter the ``bay`` it measures, and
optionally ``max_current_a`` (the most it can plausibly measure: a PV
inverter's or a CT's rating). The role decides what is read on every poll
(a grid meter: its currents, and its total power when a PV meter asks for the
surplus); the config check warns when the grid meter's worst-case poll comes
near ``grid_meter_timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.config import StationConfig
from controller.ports import DriverError, MeterReading
from drivers.modbus import timing
from drivers.modbus.bus import SerialEndpoint
from drivers.modbus.config import MeterConfig, SerialBusConfig, build_meters
from drivers.modbus.maps import Quantity
from drivers.modbus.planner import plan_poll

if TYPE_CHECKING:
    from controller.core.station import Station

_CURRENTS = (Quantity.CURRENT_L1, Quantity.CURRENT_L2, Quantity.CURRENT_L3)


class MeterRole(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["grid", "pv", "bay", "site"] = "grid"
    """``site``: the main meter of a site shared by several stations, only reported to the
    site coordinator ([site_lease]); the station's own ``grid`` meter is its feeder's."""
    bay: str | None = None
    max_current_a: float | None = Field(None, gt=0, le=10_000)


def split(entry: dict[str, Any]) -> tuple[MeterRole, MeterConfig]:
    rest = dict(entry)
    role = MeterRole.model_validate(
        {k: rest.pop(k) for k in ("role", "bay", "max_current_a") if k in rest}
    )
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


def every_poll(role: str, *, with_pv: bool) -> tuple[Quantity, ...]:
    """What the role needs fresh on every poll."""
    if role == "grid":
        return (*_CURRENTS, Quantity.POWER_TOTAL) if with_pv else _CURRENTS
    if role == "pv":
        return (Quantity.POWER_TOTAL,)
    return _CURRENTS


def with_role_defaults(entries: list[tuple[MeterRole, MeterConfig]]) -> list[MeterConfig]:
    with_pv = any(r.role == "pv" for r, _ in entries)
    return [
        mc
        if mc.every_poll is not None
        else mc.model_copy(update={"every_poll": every_poll(r.role, with_pv=with_pv)})
        for r, mc in entries
    ]


def _bus_key(mc: MeterConfig) -> tuple[str, ...]:
    b = mc.bus
    return ("rtu", b.device) if isinstance(b, SerialBusConfig) else ("tcp", b.host, str(b.port))


@dataclass(frozen=True, slots=True)
class _PollTiming:
    cfg: MeterConfig
    answer_s: float | None  # documented in the map, or None (assumed)
    reads: int
    fast_s: float
    slow_s: float
    longest_request_s: float


def _poll_timing(mc: MeterConfig) -> _PollTiming:
    rmap = mc.register_map()
    plan = plan_poll(
        rmap.resolved(),
        every_poll=mc.every_poll,
        max_registers=mc.max_registers or rmap.max_registers,
        max_gap=rmap.max_gap,
    )
    endpoint = mc.endpoint()
    if isinstance(endpoint, SerialEndpoint):
        gap = mc.bus.inter_frame_gap_s
        link = timing.Link(endpoint.baudrate, endpoint.default_gap_s() if gap is None else gap)
    else:
        link = timing.Link()
    answer = rmap.answer_time_s or timing.DEFAULT_ANSWER_TIME_S
    return _PollTiming(
        mc,
        rmap.answer_time_s,
        plan.reads_per_poll,
        timing.fast_s(plan, answer, link),
        timing.slow_s(plan, answer, link),
        timing.longest_request_s(plan, answer, link),
    )


def timing_warnings(cfg: StationConfig, configs: list[tuple[MeterRole, MeterConfig]]) -> list[str]:
    """Grid meters whose currents may age near ``grid_meter_timeout_s`` between two readings."""
    if cfg.site is None:
        return []
    timeout = cfg.site.grid_meter_timeout_s
    polls = [(role, _poll_timing(mc)) for role, mc in configs]
    out = []
    for role, t in polls:
        if role.role != "grid":
            continue
        mc = t.cfg
        # Each request may queue behind one request of every other meter on the bus.
        others = sum(
            o.longest_request_s
            for _, o in polls
            if o.cfg is not mc and _bus_key(o.cfg) == _bus_key(mc)
        )
        fast = t.fast_s + (t.reads - 1 if t.slow_s else t.reads) * others
        slow = t.slow_s + others if t.slow_s else 0.0
        worst = timing.worst_age_s(mc.poll_interval_s, fast, slow)
        if worst < timing.WARN_FRACTION * timeout:
            continue
        answer = (
            f"{t.answer_s:g} s as documented"
            if t.answer_s
            else f"{timing.DEFAULT_ANSWER_TIME_S:g} s assumed"
        )
        queue = f", queueing {others:.1f} s behind other meters on its bus" if others else ""
        out.append(
            f"meters: grid meter {mc.name!r} ({mc.register_map().model}) may hold currents "
            f"{worst:.1f} s old before its next reading ({t.reads} requests a poll, answered in "
            f"{answer}{queue}, polled every {mc.poll_interval_s:g} s); that comes near or past "
            f"grid_meter_timeout_s = {timeout:g} s, so the station may fall back to its "
            "guaranteed headroom between readings. Give the meter its own bus, a shorter "
            "poll_interval_s or fewer every_poll quantities."
        )
    return out


class MetersExtension:
    name = "meters"

    def _parse(self, cfg: StationConfig) -> tuple[list[tuple[MeterRole, MeterConfig]], list[str]]:
        problems: list[str] = []
        parsed: list[tuple[MeterRole, MeterConfig]] = []
        bays = {b.id for b in cfg.bays}
        for i, entry in enumerate(cfg.meters):
            try:
                role, mc = split(entry)
            except ValidationError as err:
                problems += [
                    f"meters[{i}].{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in err.errors()
                ]
                continue
            parsed.append((role, mc))
            if role.role == "grid":
                problems += _grid_phases(i, mc, cfg)
            if role.role == "bay" and role.bay not in bays:
                problems.append(f"meters[{i}].bay: unknown bay {role.bay!r}")
        if sum(r.role == "grid" for r, _ in parsed) > 1:
            problems.append("meters: more than one grid meter")
        return parsed, problems

    def check(self, cfg: StationConfig) -> list[str]:
        parsed, problems = self._parse(cfg)
        if not problems:
            try:
                build_meters(with_role_defaults(parsed))
            except DriverError as err:
                problems.append(f"meters: {err}")
        return problems

    def warnings(self, cfg: StationConfig) -> list[str]:
        """What check-config reports without refusing the config."""
        parsed, problems = self._parse(cfg)
        if problems:
            return []
        roles = [r for r, _ in parsed]
        return timing_warnings(cfg, list(zip(roles, with_role_defaults(parsed), strict=True)))

    def attach(self, station: Station) -> None:
        entries = [split(e) for e in station.cfg.meters]
        meters = build_meters(with_role_defaults(entries))
        for (role, _), meter in zip(entries, meters, strict=True):

            def sink(reading: MeterReading, role: MeterRole = role) -> None:
                station.meters.on_reading(
                    reading, role=role.role, bay_id=role.bay, max_current_a=role.max_current_a
                )

            async def service(meter: Any = meter, sink: Any = sink) -> None:
                await meter.run(sink)

            station.add_service(f"meter:{meter.name}", service)


EXTENSION = MetersExtension()
