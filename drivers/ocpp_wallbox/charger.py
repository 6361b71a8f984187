"""One wallbox as the station sees it: its connectors (bays), what it reports, what it was told.

Reports become node updates: BootNotification a hello, StatusNotification the
pilot (and faults), MeterValues the currents and the energy register, each as
a :class:`NodeTelemetry` of the connector's bay. What the station commands
goes out as OCPP: a limit as a TxDefaultProfile at stack level 1 with a short
validity (the lease), renewed at half of it; below it, installed at boot, a
stack-0 TxDefaultProfile at the bay's safe share, which the wallbox falls to
when the lease runs out because the station is gone. A session the station
opened is started with RemoteStartTransaction and ended with
RemoteStopTransaction; a card at the wallbox is authorized by the station
(its auth chain: local list, cache, CSMS) and becomes a station session.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed

from controller.core.config import BayConfig
from controller.ports import (
    ConnectionLost,
    DriverTimeout,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeLink,
    NodeSink,
    NodeTelemetry,
    PilotState,
    TransientError,
)
from drivers.ocpp_wallbox.config import NOMINAL_V, WallboxBus, match_model
from drivers.ocpp_wallbox.link import ChargerLink, iso_now

log = structlog.get_logger(__name__)

LEASE_PROFILE_ID = 1000  # + connector: stack 1, the station's current limit
FALLBACK_PROFILE_ID = 900  # + connector: stack 0, the safe share when the station is gone
AUTH_MEMORY_S = 120.0  # an Authorize answer covers the StartTransaction that follows it

_PILOT = {
    "Available": PilotState.A,
    "Preparing": PilotState.B,
    "Charging": PilotState.C,
    "SuspendedEV": PilotState.B,
    "SuspendedEVSE": PilotState.B,
    "Finishing": PilotState.B,
    "Reserved": PilotState.A,
    "Unavailable": PilotState.A,
    "Faulted": PilotState.F,
}
_TX_IDS = itertools.count(int(time.time()) % 1_000_000 * 100 + 1)


class StationSide(Protocol):
    """What the wallboxes ask of the station (bound by the extension; see ``extension.py``)."""

    def session_token(self, bay_id: str) -> str | None: ...

    async def authorize(self, bay_id: str, id_tag: str) -> tuple[str, str]:
        """(OCPP status, source) from the station's auth chain."""
        ...

    async def start(self, bay_id: str, id_tag: str, preauthorized: str | None) -> bool: ...

    async def stop(self, bay_id: str, reason: str) -> None: ...


@dataclass(slots=True)
class Connector:
    bay: BayConfig
    status: str = "Unavailable"
    error_code: str = "NoError"
    current_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    energy_wh: int | None = None
    tx_id: int | None = None
    tx_tag: str | None = None
    remote_start_at: float | None = None
    limit_a: float | None = None  # what the wallbox acknowledged last (None: nothing yet)
    valid_until: float = -math.inf  # monotonic end of that limit's validity
    renew_at: float = -math.inf
    fallback_a: float | None = None  # the stack-0 limit it acknowledged (None: not installed)
    faulted: bool = False
    starting: bool = False  # a StartTransaction of its own waits for the station's answer


class Charger:
    """One charge point id: its connection (when there is one) and its connectors."""

    def __init__(
        self,
        cp_id: str,
        bays: list[BayConfig],
        bus: WallboxBus,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cp_id = cp_id
        self.bus = bus
        self.connectors = {b.charger_connector: Connector(b) for b in bays}
        self.model_name, self.model = match_model(bus.model_table(), "", "", bus.models.get(cp_id))
        self.link: ChargerLink | None = None
        self.sink: NodeSink = lambda _u: None
        self.station: StationSide | None = None
        self.ever_connected = False
        self.last_seen = -math.inf
        self.boots = 0
        self._clock = clock
        self._booted = asyncio.Event()
        self._auth: dict[str, tuple[str, str, float]] = {}  # id tag -> (status, source, at)

    # ------------------------------------------------------------------ connection

    @property
    def online(self) -> bool:
        return self.link is not None

    async def serve(self, link: ChargerLink) -> None:
        """Serve one connection until it closes (raises what closed it)."""
        self.link, self.ever_connected = link, True
        self._booted.clear()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.start(), name=f"wallbox:{self.cp_id}:recv")
                tg.create_task(self._configure_on_boot(link), name=f"wallbox:{self.cp_id}:cfg")
        finally:
            if self.link is link:
                self.link = None
                self._lost("connection closed")

    def _lost(self, reason: str) -> None:
        now = self._clock()
        for c in self.connectors.values():
            c.remote_start_at = None
            self.sink(NodeLink(c.bay.node_id, now, False, reason))
        log.warning("wallbox.offline", charger=self.cp_id, reason=reason)

    def seen(self) -> None:
        self.last_seen = self._clock()

    # ------------------------------------------------------------------ reports (ChargerSide)

    def booted(self, vendor: str, model: str, firmware: str) -> None:
        self.boots += 1
        self.model_name, self.model = match_model(
            self.bus.model_table(), vendor, model, self.bus.models.get(self.cp_id)
        )
        log.info(
            "wallbox.boot", charger=self.cp_id, vendor=vendor, model=model, profile=self.model_name
        )
        now = self._clock()
        for c in self.connectors.values():
            # A boot forgets what the wallbox was told (profiles may be lost with its power).
            c.limit_a, c.valid_until, c.renew_at, c.fallback_a = None, -math.inf, -math.inf, None
            self.sink(NodeHello(c.bay.node_id, now, firmware or f"{vendor} {model}", 16))

    def boot_answered(self) -> None:
        self._booted.set()

    def status(self, connector: int, status: str, error_code: str, info: str) -> None:
        c = self.connectors.get(connector)
        if c is None:
            if connector != 0:
                log.info("wallbox.unknown_connector", charger=self.cp_id, connector=connector)
            return
        c.status, c.error_code = status, error_code
        now = self._clock()
        if status == "Faulted" and not c.faulted:
            c.faulted = True
            self.sink(NodeEvent(c.bay.node_id, now, NodeEventKind.FAULT, error_code))
        elif status != "Faulted" and c.faulted:
            c.faulted = False
            self.sink(NodeEvent(c.bay.node_id, now, NodeEventKind.FAULT_CLEARED))
        if status in ("Available", "Preparing") and c.tx_id is None:
            c.current_a = [0.0, 0.0, 0.0]
        self._report(c)

    def meter_values(
        self, connector: int, values: list[dict[str, Any]], tx_id: int | None = None
    ) -> None:
        c = self.connectors.get(connector)
        if c is None:
            return
        if tx_id is not None and c.tx_id is None:
            # A transaction begun before the station (re)started: known again, so its
            # session can go on (relay on) or, if the station has none, be stopped.
            c.tx_id = tx_id
            log.info("wallbox.transaction_adopted", charger=self.cp_id, tx=tx_id)
        for mv in values:
            self._sampled(c, mv.get("sampled_value") or mv.get("sampledValue") or [])
        self._report(c)

    def _sampled(self, c: Connector, samples: list[dict[str, Any]]) -> None:
        phases = _bay_phases(c.bay)
        currents: dict[int, float] = {}
        power_w: float | None = None
        for s in samples:
            try:
                value = float(s["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            measurand = s.get("measurand", "Energy.Active.Import.Register")
            unit = s.get("unit", "")
            phase = str(s.get("phase", ""))[:2]
            if measurand == "Energy.Active.Import.Register" and not phase:
                wh = value * 1000.0 if unit == "kWh" else value
                if wh >= 0:
                    c.energy_wh = int(wh)
            elif measurand == "Current.Import":
                idx = {"L1": 0, "L2": 1, "L3": 2}.get(phase)
                for p in [idx] if idx is not None else phases:
                    currents[p] = max(0.0, value)
            elif measurand == "Power.Active.Import" and not phase:
                power_w = max(0.0, value * 1000.0 if unit == "kW" else value)
        if currents:
            c.current_a = [currents.get(p, 0.0) for p in range(3)]
        elif power_w is not None:
            # Only the power: spread over the bay's phases at the nominal voltage.
            per = power_w / NOMINAL_V / len(phases)
            c.current_a = [per if p in phases else 0.0 for p in range(3)]

    def _report(self, c: Connector) -> None:
        if c.energy_wh is None:
            return  # no register yet: the bay cannot open a session without a true start
        now = self._clock()
        pilot = _PILOT.get(c.status, PilotState.NONE)
        self.sink(
            NodeTelemetry(
                node_id=c.bay.node_id,
                at=now,
                current_a=(c.current_a[0], c.current_a[1], c.current_a[2]),
                voltage_v=(NOMINAL_V, NOMINAL_V, NOMINAL_V),
                energy_wh=c.energy_wh,
                relay_on=c.tx_id is not None and c.status in ("Charging", "SuspendedEV"),
                setpoint_a=c.limit_a or 0.0,
                lease_remaining_s=max(0.0, c.valid_until - now),
                pilot=pilot,
            )
        )

    # ------------------------------------------------------------------ authorization, transactions

    def _connector_for_card(self) -> Connector:
        """Authorize names no connector: the one with a car waiting, else the first."""
        waiting = [c for c in self.connectors.values() if c.status == "Preparing"]
        return (waiting or list(self.connectors.values()))[0]

    async def authorize(self, id_tag: str) -> str:
        c = self._connector_for_card()
        station = self.station
        if station is None:
            return "Invalid"
        if station.session_token(c.bay.id) == id_tag or c.tx_tag == id_tag:
            return "Accepted"  # the card of the running session: the wallbox stops it
        status, source = await station.authorize(c.bay.id, id_tag)
        self._auth[id_tag] = (status, source, self._clock())
        log.info("wallbox.authorize", charger=self.cp_id, bay_id=c.bay.id, status=status)
        return status

    async def start_transaction(
        self, connector: int, id_tag: str, meter_start: int
    ) -> tuple[int, str]:
        tx_id = next(_TX_IDS)
        c = self.connectors.get(connector)
        if c is None or self.station is None:
            return tx_id, "Invalid"
        if self.model.measurands and meter_start >= 0 and c.energy_wh is None:
            c.energy_wh = meter_start
            self._report(c)
        c.tx_id, c.tx_tag, c.remote_start_at = tx_id, id_tag, None
        if self.station.session_token(c.bay.id) == id_tag:
            return tx_id, "Accepted"  # the station's own session (kiosk, CSMS, earlier card)
        remembered = self._auth.pop(id_tag, None)
        pre = None
        if remembered is not None and self._clock() - remembered[2] < AUTH_MEMORY_S:
            if remembered[0] != "Accepted":
                c.tx_id = None
                return tx_id, remembered[0]
            pre = remembered[1]
        # Meanwhile the output loop must neither stop this transaction (no session yet)
        # nor start another one (the session about to open is this one).
        c.starting = True
        try:
            ok = await self.station.start(c.bay.id, id_tag, pre)
        finally:
            c.starting = False
        if not ok:
            c.tx_id = None
            return tx_id, "Invalid"
        return tx_id, "Accepted"

    async def stop_transaction(self, tx_id: int, meter_stop: int, reason: str) -> None:
        for c in self.connectors.values():
            if c.tx_id != tx_id:
                continue
            c.tx_id, c.tx_tag = None, None
            if meter_stop >= (c.energy_wh or 0):
                c.energy_wh = meter_stop
            self._report(c)
            if self.station is not None and self.station.session_token(c.bay.id) is not None:
                await self.station.stop(c.bay.id, reason)
            return
        log.info("wallbox.unknown_transaction", charger=self.cp_id, tx_id=tx_id)

    # ------------------------------------------------------------------ station -> wallbox

    async def _configure_on_boot(self, link: ChargerLink) -> None:
        """After each boot: what to report and how often, the fallback profiles, a fresh report."""
        while True:
            await self._booted.wait()
            self._booted.clear()
            try:
                await self._configure(link)
            except (OCPPError, TimeoutError) as err:
                log.warning("wallbox.configure_failed", charger=self.cp_id, error=str(err))

    async def _configure(self, link: ChargerLink) -> None:
        m = self.model
        if m.measurands:
            await link.request(
                call.ChangeConfiguration(key="MeterValuesSampledData", value=",".join(m.measurands))
            )
        interval = max(self.bus.meter_interval_s, m.min_interval_s)
        await link.request(
            call.ChangeConfiguration(key="MeterValueSampleInterval", value=str(interval))
        )
        for c in self.connectors.values():
            if m.fallback == "profile" and m.tx_default:
                safe = c.bay.safe_current_a
                res = await link.request(
                    call.SetChargingProfile(
                        connector_id=c.bay.charger_connector,
                        cs_charging_profiles=self._profile(
                            c, FALLBACK_PROFILE_ID, 0, safe, valid_to=None
                        ),
                    )
                )
                c.fallback_a = safe if res.status == "Accepted" else None
                if c.fallback_a is None:
                    log.error(
                        "wallbox.fallback_refused",
                        charger=self.cp_id,
                        bay_id=c.bay.id,
                        note="counted at its maximum whenever the station cannot reach it",
                    )
        for c in self.connectors.values():
            await link.request(
                call.TriggerMessage(
                    requested_message="StatusNotification", connector_id=c.bay.charger_connector
                )
            )
            await link.request(
                call.TriggerMessage(
                    requested_message="MeterValues", connector_id=c.bay.charger_connector
                )
            )

    def _profile(
        self, c: Connector, profile_id: int, stack: int, amps: float, *, valid_to: float | None
    ) -> dict[str, Any]:
        m = self.model
        limit = _floor1(amps)
        if m.rate_unit == "W":
            limit = math.floor(amps * NOMINAL_V * len(_bay_phases(c.bay)))
        profile: dict[str, Any] = {
            "chargingProfileId": profile_id + c.bay.charger_connector,
            "stackLevel": stack,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "startSchedule": iso_now(),
                "chargingRateUnit": m.rate_unit,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        }
        if valid_to is not None:
            profile["validTo"] = _iso_wall(valid_to)
        return profile

    async def set_limit(self, c: Connector, *, relay_on: bool, current_a: float) -> None:
        """The station's output for one connector: limit (the lease), start or stop."""
        link = self.link
        if link is None:
            raise ConnectionLost(f"wallbox {self.cp_id} is not connected")
        amps = _floor1(min(current_a, c.bay.max_current_a)) if relay_on else 0.0
        now = self._clock()
        try:
            if amps != c.limit_a or now >= c.renew_at:
                await self._send_limit(link, c, amps, now)
            token = self.station.session_token(c.bay.id) if self.station else None
            if c.starting:
                pass
            elif token is None and c.tx_id is not None:
                res = await link.request(call.RemoteStopTransaction(transaction_id=c.tx_id))
                log.info("wallbox.remote_stop", charger=self.cp_id, tx=c.tx_id, status=res.status)
            elif relay_on and token is not None and c.tx_id is None and c.remote_start_at is None:
                res = await link.request(
                    call.RemoteStartTransaction(
                        id_tag=token[:20], connector_id=c.bay.charger_connector
                    )
                )
                if res.status == "Accepted":
                    c.remote_start_at = now
                log.info("wallbox.remote_start", charger=self.cp_id, status=res.status)
        except TimeoutError as err:
            raise DriverTimeout(f"wallbox {self.cp_id}: {err}") from err
        except OCPPError as err:
            raise TransientError(f"wallbox {self.cp_id}: {err}") from err
        except ConnectionClosed as err:
            raise ConnectionLost(f"wallbox {self.cp_id}: {err}") from err

    async def _send_limit(self, link: ChargerLink, c: Connector, amps: float, now: float) -> None:
        validity = self.bus.profile_validity_s
        if self.model.tx_default:
            profile = self._profile(c, LEASE_PROFILE_ID, 1, amps, valid_to=time.time() + validity)
        elif c.tx_id is not None:
            profile = self._profile(c, LEASE_PROFILE_ID, 1, amps, valid_to=time.time() + validity)
            profile["chargingProfilePurpose"] = "TxProfile"
            profile["transactionId"] = c.tx_id
        else:
            c.limit_a, c.valid_until, c.renew_at = amps, now + validity, now + validity / 2
            return  # nothing to limit before a transaction; its TxProfile follows at once
        res = await link.request(
            call.SetChargingProfile(
                connector_id=c.bay.charger_connector, cs_charging_profiles=profile
            )
        )
        if res.status != "Accepted":
            raise TransientError(f"wallbox {self.cp_id} refused the limit ({res.status})")
        c.limit_a, c.valid_until, c.renew_at = amps, now + validity, now + validity / 2

    async def unlock(self, c: Connector) -> None:
        link = self.link
        if link is None:
            raise ConnectionLost(f"wallbox {self.cp_id} is not connected")
        try:
            res = await link.request(call.UnlockConnector(connector_id=c.bay.charger_connector))
        except TimeoutError as err:
            raise DriverTimeout(str(err)) from err
        except OCPPError as err:
            raise TransientError(str(err)) from err
        except ConnectionClosed as err:
            raise ConnectionLost(f"wallbox {self.cp_id}: {err}") from err
        if res.status != "Unlocked":
            raise TransientError(f"wallbox {self.cp_id} could not unlock ({res.status})")

    # ------------------------------------------------------------------ safety

    def assumed_draw_a(self, c: Connector, now: float) -> float | None:
        """What the connector may draw while the station cannot reach it; None while it can.

        Never connected, or no fallback profile acknowledged: its maximum. Otherwise its
        last acknowledged limit until that lease runs out, then its safe share.
        """
        if self.online:
            return None
        top = c.bay.max_current_a
        if not self.ever_connected or c.fallback_a is None:
            return top
        if now < c.valid_until and c.limit_a is not None:
            return min(top, max(c.limit_a, c.fallback_a))
        return min(top, c.fallback_a)


def _floor1(x: float) -> float:
    """Limits on the wire are floored (0.1 A)."""
    return max(0.0, math.floor(x * 10.0 + 1e-6) / 10.0)


def _iso_wall(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bay_phases(bay: BayConfig) -> list[int]:
    if bay.phases == 1:
        return [{"L1": 0, "L2": 1, "L3": 2}[bay.phase or "L1"]]
    return [0, 1, 2]


__all__ = ["Charger", "Connector", "StationSide"]
