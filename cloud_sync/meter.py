"""MeterValues (OCPP 1.6 §4.7): sampled values from a bay's latest telemetry.

:func:`sampled_values` is pure. The service writes periodic (Sample.Periodic)
values of every open session through the station's outbox, so they keep
their order with StartTransaction and StopTransaction; clock-aligned values
(Sample.Clock) of a session go the same way, while those of an idle
connector and of connector 0 (sum of the bays) are not transaction-related
and are sent directly when online (dropped otherwise).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from cloud_sync.keys import ConfigKeys
from controller.core.bays import BayRuntime
from controller.core.persist import iso
from controller.core.station import Station
from controller.ports import NodeTelemetry

log = structlog.get_logger(__name__)

PHASES = ("L1", "L2", "L3")


def _sv(
    value: float | int, measurand: str, unit: str, context: str, phase: str | None = None
) -> dict[str, Any]:
    v: dict[str, Any] = {
        "value": str(int(value)) if isinstance(value, int) else f"{value:.1f}",
        "context": context,
        "measurand": measurand,
        "unit": unit,
    }
    if phase:
        v["phase"] = phase
    if measurand == "SoC":
        v["location"] = "EV"
    return v


def bay_phases(rt: BayRuntime) -> tuple[str, ...]:
    if rt.cfg.phases == 3:
        return PHASES
    return (rt.cfg.phase or "L1",)


def sampled_values(
    tel: NodeTelemetry,
    measurands: list[str],
    *,
    phases: tuple[str, ...] = PHASES,
    context: str = "Sample.Periodic",
    offered_a: float | None = None,
) -> list[dict[str, Any]]:
    """The sampledValue list for ``measurands`` (unknown ones are skipped; SoC only when known)."""
    out: list[dict[str, Any]] = []
    idx = [PHASES.index(p) for p in phases]
    for m in measurands:
        if m == "Energy.Active.Import.Register":
            out.append(_sv(int(tel.energy_wh), m, "Wh", context))
        elif m == "Power.Active.Import":
            out.append(_sv(float(tel.power_w), m, "W", context))
        elif m == "Current.Import":
            out.extend(_sv(float(tel.current_a[i]), m, "A", context, PHASES[i]) for i in idx)
        elif m == "Voltage":
            out.extend(_sv(float(tel.voltage_v[i]), m, "V", context, f"{PHASES[i]}-N") for i in idx)
        elif m == "Current.Offered" and offered_a is not None:
            out.append(_sv(float(offered_a), m, "A", context))
        elif m == "SoC" and tel.soc_pct is not None:
            out.append(_sv(float(tel.soc_pct), m, "Percent", context))
        elif m == "Temperature" and tel.temperature_c is not None:
            out.append(_sv(float(tel.temperature_c), m, "Celsius", context))
    return out


def meter_value(at_wall: float, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {"timestamp": iso(at_wall), "sampledValue": values}


DirectSend = Callable[[int, list[dict[str, Any]], int | None], Awaitable[bool]]


class MeterService:
    """Writes periodic and clock-aligned meter values; ``send_direct`` sends non-queued ones."""

    def __init__(self, station: Station, keys: ConfigKeys, send_direct: DirectSend) -> None:
        self.station = station
        self.keys = keys
        self.send_direct = send_direct

    async def sample_sessions(self, context: str, measurands: list[str]) -> int:
        """One MeterValues per open session with telemetry, queued in order; returns how many."""
        n = 0
        now = self.station.clock.wall()
        for rt in list(self.station.bays.values()):
            tel = rt.telemetry
            if rt.state.session is None or tel is None:
                continue
            values = sampled_values(
                tel,
                measurands,
                phases=bay_phases(rt),
                context=context,
                offered_a=rt.state.setpoint_a,
            )
            if not values:
                continue
            payload = {"connectorId": rt.cfg.connector, "meterValue": [meter_value(now, values)]}
            if await self.station.commands.enqueue_for_session(rt.cfg.id, "MeterValues", payload):
                n += 1
        return n

    async def aligned_idle(self, measurands: list[str]) -> None:
        """Clock-aligned values of idle connectors and of connector 0, sent directly."""
        now = self.station.clock.wall()
        total_wh = 0
        total_w = 0.0
        have = False
        for rt in list(self.station.bays.values()):
            tel = rt.telemetry
            if tel is None:
                continue
            have = True
            total_wh += tel.energy_wh
            total_w += tel.power_w
            if rt.state.session is not None:
                continue
            values = sampled_values(tel, measurands, phases=bay_phases(rt), context="Sample.Clock")
            if values:
                await self.send_direct(rt.cfg.connector, [meter_value(now, values)], None)
        if have:
            values = []
            if "Energy.Active.Import.Register" in measurands:
                values.append(_sv(total_wh, "Energy.Active.Import.Register", "Wh", "Sample.Clock"))
            if "Power.Active.Import" in measurands:
                values.append(_sv(total_w, "Power.Active.Import", "W", "Sample.Clock"))
            if values:
                await self.send_direct(0, [meter_value(now, values)], None)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._periodic(), name="ocpp:meter-periodic")
            tg.create_task(self._aligned(), name="ocpp:meter-aligned")

    async def _periodic(self) -> None:
        while True:
            interval = self.keys.get_int("MeterValueSampleInterval")
            if interval <= 0:
                await self.keys.wait_changed(3600)
                continue
            await self.station.clock.sleep(interval)
            try:
                await self.sample_sessions(
                    "Sample.Periodic", self.keys.get_list("MeterValuesSampledData")
                )
            except Exception:
                log.exception("ocpp.meter_sample_failed")

    async def _aligned(self) -> None:
        while True:
            interval = self.keys.get_int("ClockAlignedDataInterval")
            if interval <= 0:
                await self.keys.wait_changed(3600)
                continue
            now = self.station.clock.wall()
            nxt = math.floor(now / interval) * interval + interval
            await self.station.clock.sleep(max(0.0, nxt - now))
            measurands = self.keys.get_list("MeterValuesAlignedData")
            try:
                await self.sample_sessions("Sample.Clock", measurands)
                await self.aligned_idle(measurands)
            except Exception:
                log.exception("ocpp.meter_aligned_failed")
