"""Calls from the central system: thin translations into Station and store calls.

Every handler answers from what it can check at once; work that must follow
the answer (starting a session, resetting, sending a triggered message) is
registered with :meth:`Link.after`.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from cloud_sync.config import OcppConfig
from cloud_sync.diagnostics import DiagnosticsUploads
from cloud_sync.firmware import FirmwareUpdates
from cloud_sync.keys import ConfigKeys
from cloud_sync.link import Link, on
from cloud_sync.localauth import LocalAuth
from cloud_sync.outbox import OutboxSender
from cloud_sync.smart import (
    CP_MAX,
    TX,
    Profile,
    ProfileStore,
    TxContext,
    check,
    composite,
    parse_time,
)
from controller.core.bay import StopReason
from controller.core.bays import BayRuntime, UnknownBay
from controller.core.outcome import UnknownSession
from controller.core.persist import iso
from controller.core.station import Station

log = structlog.get_logger(__name__)


class LinkOwner(Protocol):
    """What the handlers use of the upstream that owns the link (``cloud_sync.upstream``).

    Named here so that the handlers do not import the upstream that imports them.
    """

    cfg: OcppConfig
    station: Station
    keys: ConfigKeys
    local: LocalAuth
    profiles: ProfileStore
    outbox: OutboxSender
    diagnostics: DiagnosticsUploads
    firmware: FirmwareUpdates
    rejected: bool

    def bay_can_start(self, rt: BayRuntime) -> bool: ...

    def limits_changed(self) -> None: ...

    async def tx_context(self, rt: BayRuntime) -> TxContext: ...

    async def reset(self, kind: str) -> None: ...

    async def triggered(self, link: StationLink, what: str, connector: int | None) -> None: ...


class StationLink(Link):
    """The connection plus the handlers; ``up`` is the upstream that owns everything else."""

    def __init__(self, up: LinkOwner, ws: Any) -> None:
        super().__init__(
            up.cfg.charge_point_id,
            ws,
            response_timeout=up.cfg.response_timeout_s,
            drop_calls=lambda: up.rejected,
        )
        self.up = up
        # connector -> when its status was last sent unasked-for changes aside (registration,
        # TriggerMessage): changes queued before that are old news and are not sent.
        self.status_forced_at: dict[int, float] = {}

    def _bay(self, connector: int) -> BayRuntime | None:
        try:
            return self.up.station.bays.by_connector(connector)
        except UnknownBay:
            return None

    # ------------------------------------------------------------------ core

    @on(Action.remote_start_transaction)
    async def on_remote_start(
        self, id_tag: str, connector_id: int | None = None, charging_profile: Any = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        up = self.up
        if connector_id is not None:
            rt = self._bay(connector_id)
        else:
            rt = next(
                (
                    b
                    for b in up.station.bays.values()
                    if b.state.session is None
                    and (b.state.hold is None or b.state.hold.token == id_tag)
                    and up.bay_can_start(b)
                ),
                None,
            )
        if rt is None or not up.bay_can_start(rt):
            return call_result.RemoteStartTransaction(status="Rejected")
        profile = None
        if charging_profile is not None:
            if charging_profile.get("charging_profile_purpose") != TX:
                return call_result.RemoteStartTransaction(status="Rejected")
            try:
                profile = Profile.from_ocpp(
                    rt.cfg.connector, charging_profile, up.station.clock.wall()
                )
            except (KeyError, ValueError, TypeError):
                return call_result.RemoteStartTransaction(status="Rejected")
        bay_id = rt.cfg.id

        async def start() -> None:
            pre = None if up.keys.get_bool("AuthorizeRemoteTxRequests") else "csms"
            out = await up.station.commands.present_token(
                bay_id, id_tag, source="csms", preauthorized=pre
            )
            log.info("ocpp.remote_start", bay_id=bay_id, ok=out.ok, code=out.code)
            if out.ok and profile is not None:
                await up.profiles.install(profile, charging_profile, up.station.clock.wall())

        self.after(start)
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(
        self, transaction_id: int, **_: Any
    ) -> call_result.RemoteStopTransaction:
        sid = await self.up.outbox.session_of(transaction_id)
        running = sid is not None and any(
            b.state.session is not None and b.state.session.session_id == sid
            for b in self.up.station.bays.values()
        )
        if sid is None or not running:
            return call_result.RemoteStopTransaction(status="Rejected")
        try:
            out = await self.up.station.commands.stop_session(sid, StopReason.REMOTE, actor="csms")
        except UnknownSession:
            return call_result.RemoteStopTransaction(status="Rejected")
        return call_result.RemoteStopTransaction(status="Accepted" if out.ok else "Rejected")

    @on(Action.unlock_connector)
    async def on_unlock(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        rt = self._bay(connector_id)
        if rt is None:
            return call_result.UnlockConnector(status="NotSupported")
        out = await self.up.station.commands.unlock_connector(rt.cfg.id, actor="csms")
        if out.ok:
            return call_result.UnlockConnector(status="Unlocked")
        return call_result.UnlockConnector(
            status="NotSupported" if out.code == "not_supported" else "UnlockFailed"
        )

    @on(Action.reset)
    async def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        self.after(lambda: self.up.reset(type))
        return call_result.Reset(status="Accepted")

    @on(Action.change_availability)
    async def on_change_availability(
        self, connector_id: int, type: str, **_: Any
    ) -> call_result.ChangeAvailability:
        st = self.up.station
        if connector_id == 0:
            bays = list(st.bays.values())
        else:
            rt = self._bay(connector_id)
            if rt is None:
                return call_result.ChangeAvailability(status="Rejected")
            bays = [rt]
        scheduled = False
        for rt in bays:
            out = await st.commands.set_availability(rt.cfg.id, type == "Operative", actor="csms")
            scheduled = scheduled or out.code == "scheduled"
        return call_result.ChangeAvailability(status="Scheduled" if scheduled else "Accepted")

    @on(Action.get_configuration)
    async def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        items = self.up.keys.items()
        known = {name for name, _, _ in items}
        wanted = set(key) if key else known
        found = [
            {"key": name, "readonly": ro, "value": value}
            for name, value, ro in items
            if name in wanted
        ]
        unknown = [k for k in (key or []) if k not in known]
        return call_result.GetConfiguration(configuration_key=found, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        status = await self.up.keys.change(key, value)
        log.info("ocpp.change_configuration", key=key, status=status)
        return call_result.ChangeConfiguration(status=status)

    @on(Action.clear_cache)
    async def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        await self.up.local.clear_cache()
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None, **_: Any
    ) -> call_result.DataTransfer:
        if vendor_id != self.up.cfg.data_transfer_vendor:
            return call_result.DataTransfer(status="UnknownVendorId")
        if message_id == "Ping":
            return call_result.DataTransfer(status="Accepted", data=data)
        return call_result.DataTransfer(status="UnknownMessageId")

    # ------------------------------------------------------------------ firmware management

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        start_time: str | None = None,
        stop_time: str | None = None,
        **_: Any,
    ) -> call_result.GetDiagnostics:
        try:
            since = parse_time(start_time) if start_time else None
            until = parse_time(stop_time) if stop_time else None
        except ValueError:
            log.info("ocpp.diagnostics_refused", why="bad time window")
            return call_result.GetDiagnostics()
        name = self.up.diagnostics.request(
            location,
            retries=retries,
            retry_interval_s=float(retry_interval) if retry_interval is not None else None,
            since=since,
            until=until,
        )
        return call_result.GetDiagnostics(file_name=name)

    @on(Action.update_firmware)
    async def on_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        # UpdateFirmware.conf has no status: a refused request shows as no notification.
        try:
            at = parse_time(retrieve_date)
        except ValueError:
            log.info("ocpp.firmware_refused", why="bad retrieveDate")
            return call_result.UpdateFirmware()
        self.up.firmware.request(
            location,
            at,
            retries=retries,
            retry_interval_s=float(retry_interval) if retry_interval is not None else None,
        )
        return call_result.UpdateFirmware()

    # ------------------------------------------------------------------ remote trigger

    @on(Action.trigger_message)
    async def on_trigger(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        if connector_id not in (None, 0) and self._bay(connector_id) is None:
            return call_result.TriggerMessage(status="Rejected")
        if requested_message not in (
            "BootNotification",
            "Heartbeat",
            "StatusNotification",
            "MeterValues",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
        ):
            return call_result.TriggerMessage(status="NotImplemented")
        self.after(lambda: self.up.triggered(self, requested_message, connector_id))
        return call_result.TriggerMessage(status="Accepted")

    # ------------------------------------------------------------------ reservation

    @on(Action.reserve_now)
    async def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        **_: Any,
    ) -> call_result.ReserveNow:
        st = self.up.station
        if connector_id == 0:
            return call_result.ReserveNow(status="Rejected")  # ReserveConnectorZeroSupported=false
        rt = self._bay(connector_id)
        if rt is None:
            return call_result.ReserveNow(status="Rejected")
        try:
            expires = parse_time(expiry_date)
        except ValueError:
            return call_result.ReserveNow(status="Rejected")
        now = st.clock.wall()
        if expires <= now:
            return call_result.ReserveNow(status="Rejected")
        s = rt.state
        if s.hold is not None and s.hold.reservation_id == reservation_id:
            await st.commands.cancel_reservation(reservation_id, actor="csms")  # replaced below
        else:
            # The same reservationId elsewhere is replaced too.
            for other in st.bays.values():
                h = other.state.hold
                if other is not rt and h is not None and h.reservation_id == reservation_id:
                    await st.commands.cancel_reservation(reservation_id, actor="csms")
        s = rt.state
        if s.fault is not None or not s.node_online:
            return call_result.ReserveNow(status="Faulted")
        if not s.available or s.pending_unavailable:
            return call_result.ReserveNow(status="Unavailable")
        if s.session is not None or s.hold is not None or s.phase.value != "idle":
            return call_result.ReserveNow(status="Occupied")
        out = await st.commands.place_hold(
            rt.cfg.id, id_tag, expires - now, reservation_id, actor="csms"
        )
        return call_result.ReserveNow(status="Accepted" if out.ok else "Rejected")

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(
        self, reservation_id: int, **_: Any
    ) -> call_result.CancelReservation:
        out = await self.up.station.commands.cancel_reservation(reservation_id, actor="csms")
        return call_result.CancelReservation(status="Accepted" if out.ok else "Rejected")

    # ------------------------------------------------------------------ local list

    @on(Action.send_local_list)
    async def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.SendLocalList:
        keys = self.up.keys
        if not keys.get_bool("LocalAuthListEnabled"):
            return call_result.SendLocalList(status="NotSupported")
        status = await self.up.local.send_local_list(
            list_version,
            update_type,
            local_authorization_list or [],
            max_send=keys.get_int("SendLocalListMaxLength"),
            max_total=keys.get_int("LocalAuthListMaxLength"),
        )
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        if not self.up.keys.get_bool("LocalAuthListEnabled"):
            return call_result.GetLocalListVersion(list_version=-1)
        return call_result.GetLocalListVersion(list_version=self.up.local.version)

    # ------------------------------------------------------------------ smart charging

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        up = self.up
        rejected = call_result.SetChargingProfile(status="Rejected")
        rt = self._bay(connector_id) if connector_id != 0 else None
        if connector_id != 0 and rt is None:
            return rejected
        now = up.station.clock.wall()
        try:
            p = Profile.from_ocpp(connector_id, cs_charging_profiles, now)
        except (KeyError, ValueError, TypeError):
            return rejected
        why = check(
            p,
            max_stack=up.keys.get_int("ChargeProfileMaxStackLevel"),
            max_periods=up.keys.get_int("ChargingScheduleMaxPeriods"),
        )
        if why is None and p.purpose == CP_MAX and connector_id != 0:
            why = "ChargePointMaxProfile only on connector 0"
        if why is None and p.purpose == TX:
            if rt is None or rt.state.session is None:
                why = "TxProfile without a transaction"
            elif p.transaction_id is not None:
                tx = await up.outbox.tx_id(rt.state.session.session_id)
                if tx != p.transaction_id:
                    why = f"transaction {p.transaction_id} is not running on {connector_id}"
        if why is None:
            why = await up.profiles.install(p, cs_charging_profiles, now)
        if why is not None:
            log.info("ocpp.profile_rejected", connector=connector_id, why=why)
            return rejected
        up.limits_changed()
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        n = await self.up.profiles.clear(
            profile_id=id,
            connector=connector_id,
            purpose=charging_profile_purpose,
            stack_level=stack_level,
        )
        if n:
            self.up.limits_changed()
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        up = self.up
        if connector_id == 0:
            ctx = TxContext(0)
            default_a = sum(b.cfg.max_current_a for b in up.station.bays.values()) or 1000.0
        else:
            rt = self._bay(connector_id)
            if rt is None:
                return call_result.GetCompositeSchedule(status="Rejected")
            ctx = await up.tx_context(rt)
            default_a = rt.cfg.max_current_a
        unit = charging_rate_unit or "A"
        now = up.station.clock.wall()
        periods = composite(
            up.profiles.profiles.values(), ctx, now, duration, unit=unit, default_a=default_a
        )
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=iso(now),
            charging_schedule={
                "duration": duration,
                "start_schedule": iso(now),
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": s, "limit": v} for s, v in periods],
            },
        )
