"""The one door every transport goes through: offer a limit, report the grid operator, read back.

A limit offered here is handed to the load loop's :class:`ExternalLimits` with
the loop's own clock and wakes the loop, so it is applied at its next step, not
at the next period. A refused value (out of bounds, unknown bay) is logged once
per offer and audited by the load loop like any change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from controller.core.bay import ocpp_status
from controller.core.events import StationChanged
from controller.load.external import ExternalChange, ExternalConfig, ExternalLimits

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BayReadback:
    bay_id: str
    status: str
    setpoint_a: float
    current_a: tuple[float, float, float]
    power_w: float


@dataclass(frozen=True, slots=True)
class SiteReadback:
    current_a: tuple[float, float, float]
    """The grid meter's current per phase, or the chargers' sum without one."""
    limit_a: float | None
    """The external site limit in force per phase (None: none)."""
    grid_operator: bool
    fallback: bool
    lease_left_s: float | None
    bays: tuple[BayReadback, ...]


class SetpointGate:
    def __init__(self, station: Station, limits: ExternalLimits) -> None:
        self._station = station
        self.limits = limits

    def now(self) -> float:
        """The load loop's clock (monotonic s)."""
        return self._station.clock.monotonic()

    def offer(
        self,
        *,
        scope: str,
        source: str,
        amps: float | None = None,
        watts: float | None = None,
        lease_s: float | None = None,
    ) -> ExternalChange:
        now = self._station.clock.monotonic()
        change = self.limits.offer(
            now, scope=scope, source=source, amps=amps, watts=watts, lease_s=lease_s
        )
        if change.kind == "refused":
            log.warning("external.refused", scope=scope, source=source, reason=change.detail)
        if self._station.load is not None:
            self._station.load.wake()
        return change

    def grid_operator(self, source: str, active: bool) -> None:
        change = self.limits.grid_operator(source, active)
        if change is not None:
            log.warning("external.grid_operator", source=source, active=active)
            if self._station.load is not None:
                self._station.load.wake()

    def assume_grid_operator(self, source: str) -> None:
        self.limits.assume_grid_operator(source)

    def readback(self) -> SiteReadback:
        st = self._station
        now = st.clock.monotonic()
        status = self.limits.status(now)
        bays: list[BayReadback] = []
        chargers = [0.0, 0.0, 0.0]
        for rt in st.bays.values():
            tel = rt.telemetry if rt.state.node_online else None
            cur = tel.current_a if tel is not None else (0.0, 0.0, 0.0)
            for i in range(3):
                chargers[i] += cur[i]
            bays.append(
                BayReadback(
                    rt.cfg.id,
                    ocpp_status(rt.state).value,
                    _acked_a(rt.last_output),
                    (cur[0], cur[1], cur[2]),
                    tel.power_w if tel is not None else 0.0,
                )
            )
        site = (chargers[0], chargers[1], chargers[2])
        grid = st.meters.of_role("grid")
        sample = grid.reading.sample if grid is not None else None
        if sample is not None and all(c is not None for c in sample.current_a):
            site = tuple(c or 0.0 for c in sample.current_a)  # type: ignore[assignment]
        left = status["site_expires_in_s"]
        limit = status["site_a"]
        return SiteReadback(
            current_a=site,
            limit_a=float(limit) if isinstance(limit, int | float) else None,
            grid_operator=bool(status["grid_operator"]),
            fallback=bool(status["fallback"]),
            lease_left_s=float(left) if isinstance(left, int | float) else None,
            bays=tuple(bays),
        )


def external_gate(station: Station) -> SetpointGate | None:
    """The station's gate, made on first use from ``[external]`` (None without a load manager).

    The setpoint transports and the GPIO grid-limit input share one
    :class:`ExternalLimits`, kept by the load loop.
    """
    from drivers.setpoint.config import parse_external

    load = station.load
    if load is None:
        return None
    if load.external is None:
        section = station.cfg.external
        ext = parse_external(section)
        site = station.cfg.site
        assert site is not None  # a load loop exists only with a [site]
        load.external = ExternalLimits(
            ExternalConfig(
                lease_s=ext.lease_s,
                fallback_site_a=ext.fallback_site_a,
                fallback_bay_a=ext.fallback_bay_a,
                grid_operator_w=ext.grid_operator_kw * 1000.0,
                volts=site.nominal_voltage_v,
                phases=site.phases,
                max_a=max(site.main_limit_a),
                site_leased=any((ext.mqtt, ext.modbus, ext.http)),
            ),
            {b.id: b.phases for b in station.cfg.bays},
        )
        limits = load.external
        load.external_listeners.append(lambda _caps: station_changed(station))
        station.snapshots.external = lambda: limits.status(station.clock.monotonic())
        load.wake()
    return SetpointGate(station, load.external)


def station_changed(station: Station) -> None:
    """The UIs show the banner from the station's snapshot: tell them it changed."""
    station.events.publish(StationChanged(at=station.clock.wall()))


def _acked_a(output: tuple[bool, float] | None) -> float:
    """What the node last acknowledged (0 with its relay off or nothing confirmed)."""
    return output[1] if output is not None and output[0] else 0.0
