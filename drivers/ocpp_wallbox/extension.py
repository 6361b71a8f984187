"""The wallboxes' part in the station: checking ``transport = "ocpp"`` buses, binding the hubs.

``check`` validates each OCPP bus (``listen``, its ``ocpp`` table) and what
the safe-share proof needs of a wallbox: a model that cannot keep a fallback
profile draws up to its maximum when it loses the station, so its bay's
``safe_current_a`` must say so. ``attach`` gives each wallbox hub the station
side: the session of a bay, the auth chain for cards, start and stop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from controller.core.auth import AuthRequest
from controller.core.bay import StopReason
from controller.core.config import StationConfig
from controller.core.outcome import UnknownSession
from controller.ports import DriverError
from drivers.ocpp_wallbox.config import bus_problems as _bus_problems
from drivers.ocpp_wallbox.config import parse_bus, parse_listen
from drivers.ocpp_wallbox.hub import WallboxHub

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)

ID_TAG_MAX = 20  # OCPP 1.6 idToken


class StationBinding:
    """``charger.StationSide`` on a running station."""

    def __init__(self, station: Station) -> None:
        self.station = station

    def session_token(self, bay_id: str) -> str | None:
        sess = self.station.bays.require(bay_id).state.session
        return sess.token[:ID_TAG_MAX] if sess is not None else None

    async def authorize(self, bay_id: str, id_tag: str) -> tuple[str, str]:
        rt = self.station.bays.require(bay_id)
        res = await self.station.authorizer.authorize(
            AuthRequest(id_tag, bay_id, rt.cfg.connector, "wallbox")
        )
        return res.status.value, res.source

    async def start(self, bay_id: str, id_tag: str, preauthorized: str | None) -> bool:
        out = await self.station.commands.present_token(
            bay_id, id_tag, source="wallbox", preauthorized=preauthorized
        )
        if not out.ok:
            log.info("wallbox.start_refused", bay_id=bay_id, code=out.code)
        return out.ok

    async def stop(self, bay_id: str, reason: str) -> None:
        sess = self.station.bays.require(bay_id).state.session
        if sess is None:
            return
        try:
            why = StopReason(reason)
        except ValueError:
            why = StopReason.OTHER
        try:
            await self.station.commands.stop_session(sess.session_id, why, actor="wallbox")
        except UnknownSession:
            pass


def check_wallboxes(cfg: StationConfig) -> list[str]:
    problems: list[str] = []
    for i, bus in enumerate(cfg.buses):
        if bus.transport != "ocpp":
            continue
        try:
            parse_listen(bus.listen or "0.0.0.0:8887")
        except ValueError as err:
            problems.append(f"buses[{i}].{err}")
        found = _bus_problems(f"buses[{i}].ocpp", bus.ocpp)
        problems += found
        if found:
            continue
        wb = parse_bus(bus.ocpp)
        table = wb.model_table()
        for j, bay in enumerate(cfg.bays):
            if bay.bus != bus.id or bay.charger_id is None:
                continue
            name = wb.models.get(bay.charger_id)
            model = table.get(name) if name else None
            if model is not None and (model.fallback == "none" or not model.tx_default):
                if bay.safe_current_a < bay.max_current_a:
                    problems.append(
                        f"bays[{j}].safe_current_a: the wallbox {bay.charger_id} ({name}) keeps "
                        "no fallback limit when it loses the station, so it may draw its maximum "
                        f"then: set safe_current_a = {bay.max_current_a:g} so the safe-share "
                        "proof counts it"
                    )
    return problems


class WallboxExtension:
    name = "ocpp_wallbox"

    def check(self, cfg: StationConfig) -> list[str]:
        return check_wallboxes(cfg)

    def attach(self, station: Station) -> None:
        binding = StationBinding(station)
        bays: list[str] = []
        for hub in station.hubs.values():
            if isinstance(hub, WallboxHub):
                hub.bind(binding)
                bays += [c.bay.id for ch in hub.chargers.values() for c in ch.connectors.values()]
        if bays:
            station.add_service("wallbox-unlock", lambda: _unlocks(station, bays))


async def _unlocks(station: Station, bay_ids: list[str]) -> None:
    """UnlockConnector for wallbox bays (the station's lock loop serves only lockers)."""
    async with asyncio.TaskGroup() as tg:
        for bay_id in bay_ids:
            tg.create_task(_unlock_loop(station, bay_id), name=f"wallbox-unlock:{bay_id}")


async def _unlock_loop(station: Station, bay_id: str) -> None:
    rt = station.bays.require(bay_id)
    while True:
        await rt.lock_changed.wait()
        rt.lock_changed.clear()
        if rt.want_locked is not False or rt.node is None or not rt.state.node_online:
            continue
        rt.want_locked = None  # a cable lock opens once per request; nothing to hold
        try:
            await rt.node.set_lock(locked=False)
            log.info("wallbox.unlocked", bay_id=bay_id)
        except DriverError as err:
            log.warning("wallbox.unlock_failed", bay_id=bay_id, error=str(err))


EXTENSION = WallboxExtension()
