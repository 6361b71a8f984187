"""The OCPP 1.6J upstream: connection, registration, status, heartbeat, authorization.

Implements :class:`controller.ports.Upstream`. One connection at a time,
reconnected with capped exponential backoff and jitter. On each connection:
BootNotification until Accepted (Pending: answer the CSMS, send nothing
unasked; Rejected: send and answer nothing until the interval is over), then
the status of every connector (0..N), then heartbeats, live status changes
and the transaction outbox, all through the one-call-in-flight lock of the
``ocpp`` library.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from cloud_sync.config import OcppConfig, load_firmware_key
from cloud_sync.diagnostics import DiagnosticsUploads
from cloud_sync.firmware import FirmwareUpdates
from cloud_sync.handlers import StationLink
from cloud_sync.invalid_id import InvalidIdLimits
from cloud_sync.keys import ConfigKeys
from cloud_sync.localauth import LocalAuth, TagInfo
from cloud_sync.meter import MeterService, bay_phases, meter_value, sampled_values
from cloud_sync.outbox import OutboxSender
from cloud_sync.smart import ProfileStore, TxContext, parse_time
from cloud_sync.store import OcppStore
from cloud_sync.txdata import with_transaction_data
from controller.core.auth import AuthRequest
from controller.core.bay import StopReason
from controller.core.bays import BayRuntime
from controller.core.events import SessionClosed, StatusChanged, Subscription
from controller.core.outcome import UnknownSession
from controller.core.persist import iso
from controller.core.station import EXIT_RESTART, Station
from controller.ports import AuthResult, AuthStatus

log = structlog.get_logger(__name__)

SUBPROTOCOL = "ocpp1.6"
SEND_ERRORS = (OCPPError, UnknownCallErrorCodeError, TimeoutError, ConnectionClosed)
_LINK_ERRORS = (ConnectionClosed, OSError, InvalidHandshake, InvalidURI, TimeoutError, OCPPError)


class ProtocolRefused(Exception):
    """The server did not agree on ocpp1.6."""


def backoff_delay(
    attempt: int, lo: float, hi: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with equal jitter: in [cap/2, cap], cap = min(hi, lo·2^attempt)."""
    cap = min(hi, lo * 2.0 ** min(attempt, 32))
    return cap / 2 + rand() * cap / 2


def ssl_context(cfg: OcppConfig) -> ssl.SSLContext | None:
    if not cfg.url.lower().startswith("wss://"):
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.ca_bundle) if cfg.ca_bundle else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class OcppUpstream:
    def __init__(
        self, cfg: OcppConfig, station: Station, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.cfg = cfg
        self.station = station
        self._rand = rand
        j = station.journal
        self.keys = ConfigKeys(
            j,
            fixed={"NumberOfConnectors": str(len(station.cfg.bays))},
            defaults={"ConnectionTimeOut": str(int(station.cfg.timers.connection_timeout_s))},
        )
        self.keys.listeners.append(self._key_changed)
        self.store = OcppStore(j)  # registered here, opened (migrated) by load()
        self.local = LocalAuth(j, self.store)
        self.profiles = ProfileStore(self.store)
        self.outbox = OutboxSender(j, self.keys, self.local, station.clock, self._start_rejected)
        self.meter = MeterService(station, self.keys, self._send_meter_direct)
        self.outbox.enrich_stop = self._stop_data
        self.invalid_id = InvalidIdLimits(station, self.keys)
        self.diagnostics = DiagnosticsUploads(station, self._diagnostics_status)
        self.firmware = FirmwareUpdates(
            station,
            self._firmware_status,
            key=load_firmware_key(cfg.firmware_key),
            hash_only=cfg.firmware_hash_only,
        )
        self.link: StationLink | None = None
        self.accepted = False
        self.rejected = False
        self.boot_status: str | None = None
        self.connects = 0
        self.last_error = ""
        self.clock_offset_s: float | None = None
        self.on_limits_changed: Callable[[], None] | None = None
        self.changed = asyncio.Event()
        self._boot_trigger = asyncio.Event()
        self._feed: Subscription | None = None
        self._stale = 0  # events queued before the last registration (their statuses are old)
        self._pending: collections.deque[StatusChanged] = collections.deque()
        self._pending_evt = asyncio.Event()
        self._loaded = False
        self._load_failed = False
        self._ready = asyncio.Event()  # set once keys, lists and profiles are loaded

    # ------------------------------------------------------------------ Upstream port

    @property
    def online(self) -> bool:
        return self.link is not None and self.accepted

    async def load(self) -> None:
        if self._loaded:
            return
        try:
            await self.store.open()
            await self.keys.load(self.cfg.keys)
            await self.local.load()
            await self.profiles.load()
            await self.outbox.recover()
            await self.invalid_id.load()
        except Exception:
            self._load_failed = True  # tokens stop waiting for it (see _wait_loaded)
            raise
        self.profiles.max_installed = self.keys.get_int("MaxChargingProfilesInstalled")
        self._loaded, self._load_failed = True, False
        self._ready.set()

    async def _wait_loaded(self, timeout_s: float) -> bool:
        """A token presented while the client starts waits for its keys and lists (bounded)."""
        if self._loaded:
            return True
        if self._load_failed:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        await self.load()
        # Lossless: a StatusNotification or a transaction's end must never be dropped.
        feed = self.station.events.subscription(lossy=False, kinds=(StatusChanged, SessionClosed))
        async with feed as sub, asyncio.TaskGroup() as tg:
            self._feed = sub
            tg.create_task(self._connection_loop(), name="ocpp:connection")
            tg.create_task(self._watch(sub), name="ocpp:watch")
            tg.create_task(self.meter.run(), name="ocpp:meter")
            tg.create_task(self.invalid_id.run(), name="ocpp:invalid-id")
            tg.create_task(self.diagnostics.run(), name="ocpp:diagnostics")
            tg.create_task(self.firmware.run(), name="ocpp:firmware")

    async def authorize(self, id_tag: str, *, timeout_s: float = 5.0) -> AuthResult:
        result = await self._decide(id_tag, timeout_s)
        return result or AuthResult(AuthStatus.INVALID, "none", "This code is not known here.")

    async def auth_step(self, req: AuthRequest) -> AuthResult | None:
        """The AuthStep for ``station.authorizer``: None lets later steps decide."""
        return await self._decide(req.token, 5.0)

    async def _decide(self, tag: str, timeout_s: float) -> AuthResult | None:
        if len(tag) > 20 or not await self._wait_loaded(timeout_s):
            # Not an OCPP idTag (a signed QR token, say), or the client could not load its
            # keys and lists (a journal from newer software, say): other steps decide.
            return None
        now = self.station.clock.wall()
        k = self.keys
        known = self.local.lookup(
            tag,
            list_enabled=k.get_bool("LocalAuthListEnabled"),
            cache_enabled=k.get_bool("AuthorizationCacheEnabled"),
        )
        link = self.link
        if link is not None and self.accepted:
            if (
                known
                and k.get_bool("LocalPreAuthorize")
                and known[0].effective_status(now) == "Accepted"
            ):
                return AuthResult(AuthStatus.ACCEPTED, known[1])
            try:
                async with asyncio.timeout(timeout_s):
                    resp = await link.call_raw("Authorize", {"idTag": tag})
            except SEND_ERRORS as err:
                log.info("ocpp.authorize_offline", error=str(err))
            else:
                info = resp["id_tag_info"]
                if k.get_bool("AuthorizationCacheEnabled"):
                    await self.local.remember(tag, info)
                status = TagInfo.from_ocpp(info).effective_status(now)
                return AuthResult(AuthStatus(status), "csms", _message(status))
        if known is not None:
            status = known[0].effective_status(now)
            if status != "Accepted":
                return AuthResult(AuthStatus(status), known[1], _message(status))
            if k.get_bool("LocalAuthorizeOffline"):
                return AuthResult(AuthStatus.ACCEPTED, known[1])
            return None
        if k.get_bool("AllowOfflineTxForUnknownId"):
            return AuthResult(AuthStatus.ACCEPTED, "offline_unknown")
        return None

    # ------------------------------------------------------------------ for handlers and the UI

    def _key_changed(self, name: str, value: str) -> None:
        if name == "ConnectionTimeOut":
            # A read-write key in 1.6: the bays' authorizations lapse after it from now on.
            runner = self.station.runner
            runner.timers = dataclasses.replace(runner.timers, connection_timeout_s=float(value))

    async def _stop_data(self, session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        def source(bay_id: str) -> tuple[str | None, int]:
            rt = self.station.bays.get(bay_id)
            return (f"node:{rt.cfg.node_id}", rt.cfg.phases) if rt is not None else (None, 3)

        return await with_transaction_data(
            self.station.journal,
            session_id,
            payload,
            source_of=source,
            measurands=self.keys.get_list("StopTxnSampledData"),
        )

    def bay_can_start(self, rt: BayRuntime) -> bool:
        s = rt.state
        return (
            s.session is None
            and s.fault is None
            and s.node_online
            and s.available
            and s.phase.value in ("idle", "held")
            and not self.station.safety.blockers
        )

    async def tx_context(self, rt: BayRuntime) -> TxContext:
        sess = rt.state.session
        tx = await self.outbox.tx_id(sess.session_id) if sess else None
        return TxContext(rt.cfg.connector, rt.cfg.phases, sess.started_at if sess else None, tx)

    def current_limits_a(self, now_wall: float) -> dict[int, float | None]:
        """Amps cap per connector from charging profiles (0 = the station); None = no cap."""
        ctxs = []
        for rt in self.station.bays.values():
            sess = rt.state.session
            tx = self.outbox._tx_ids.get(sess.session_id) if sess else None
            ctxs.append(
                TxContext(rt.cfg.connector, rt.cfg.phases, sess.started_at if sess else None, tx)
            )
        return self.profiles.limits(ctxs, now_wall)

    def limits_changed(self) -> None:
        if self.on_limits_changed is not None:
            self.on_limits_changed()

    async def status(self) -> dict[str, Any]:
        """For the UI: link state and outbox counts."""
        return {
            "online": self.online,
            "boot_status": self.boot_status,
            "connects": self.connects,
            "last_error": self.last_error,
            "outbox": await self.outbox.counts(),
            "outbox_errors": self.outbox.stats.errors,
            "local_list_version": self.local.version,
        }

    async def reset(self, kind: str) -> None:
        reason = StopReason.HARD_RESET if kind == "Hard" else StopReason.SOFT_RESET
        for rt in list(self.station.bays.values()):
            if rt.state.session is not None:
                with contextlib.suppress(UnknownSession):
                    await self.station.commands.stop_session(
                        rt.state.session.session_id, reason, actor="csms"
                    )
        # Give the StopTransactions a moment to reach the CSMS; they stay queued if not.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                while self.online and await self.outbox.pending():
                    self.outbox.idle.clear()
                    await self.outbox.idle.wait()
        self.station.request_stop(f"{kind.lower()} reset", exit_code=EXIT_RESTART)

    async def triggered(self, link: StationLink, what: str, connector: int | None) -> None:
        if what == "BootNotification":
            if self.accepted:
                await self._boot_once(link)
            else:
                self._boot_trigger.set()
        elif what == "Heartbeat":
            await self._heartbeat_once(link)
        elif what == "StatusNotification":
            targets = [connector] if connector is not None else self._connectors()
            for c in targets:
                await self._send_status(link, c, force=True)
        elif what == "MeterValues":
            for rt in self.station.bays.values():
                if connector not in (None, 0) and rt.cfg.connector != connector:
                    continue
                if rt.telemetry is None:
                    continue
                values = sampled_values(
                    rt.telemetry,
                    self.keys.get_list("MeterValuesSampledData"),
                    phases=bay_phases(rt),
                    context="Trigger",
                )
                sess = rt.state.session
                tx = await self.outbox.tx_id(sess.session_id) if sess else None
                await self._send_meter_direct(
                    rt.cfg.connector, [meter_value(self.station.clock.wall(), values)], tx, link
                )
        elif what == "DiagnosticsStatusNotification":
            await link.call_raw(what, {"status": self.diagnostics.status})
        elif what == "FirmwareStatusNotification":
            await link.call_raw(what, {"status": self.firmware.status})

    # ------------------------------------------------------------------ connection

    def _headers(self) -> dict[str, str]:
        if self.cfg.security_profile >= 1 and self.cfg.password is not None:
            cred = f"{self.cfg.charge_point_id}:{self.cfg.password.get_secret_value()}"
            return {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}
        return {}

    async def _connection_loop(self) -> None:
        attempt = 0
        tls = ssl_context(self.cfg)
        while True:
            registered = False
            try:
                ping = self.keys.get_int("WebSocketPingInterval") or None
                async with connect(
                    self.cfg.endpoint(),
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=self._headers(),
                    ssl=tls,
                    proxy=None,
                    open_timeout=self.cfg.open_timeout_s,
                    ping_interval=ping,
                    ping_timeout=ping,
                    max_size=2**22,
                ) as ws:
                    if ws.subprotocol != SUBPROTOCOL:
                        raise ProtocolRefused(f"server chose subprotocol {ws.subprotocol!r}")
                    self.connects += 1
                    log.info("ocpp.connected", url=self.cfg.endpoint(), n=self.connects)
                    registered = await self._session(ws)
            except* _LINK_ERRORS as eg:
                self._note_error(eg.exceptions[0])
            except* ProtocolRefused as eg:
                self._note_error(eg.exceptions[0])
            except* Exception as eg:  # a bug must not take the station down
                log.error(
                    "ocpp.link_crashed", error=repr(eg.exceptions[0]), exc_info=eg.exceptions[0]
                )
                self.last_error = repr(eg.exceptions[0])
            finally:
                self._set_link(None, accepted=False)
            if registered:
                attempt = 0
            delay = backoff_delay(
                attempt, self.cfg.backoff_min_s, self.cfg.backoff_max_s, self._rand
            )
            attempt += 1
            log.info("ocpp.reconnect_in", seconds=round(delay, 2), error=self.last_error)
            await asyncio.sleep(delay)

    def _note_error(self, err: BaseException) -> None:
        while isinstance(err, BaseExceptionGroup) and err.exceptions:
            err = err.exceptions[0]
        text = f"{type(err).__name__}: {err}"
        if text != self.last_error:
            log.warning("ocpp.link_error", error=text)
        self.last_error = text
        self._fire()

    def _set_link(self, link: StationLink | None, *, accepted: bool) -> None:
        was = self.online
        self.link = link
        self.accepted = accepted
        if was != self.online:
            self._fire()

    def _fire(self) -> None:
        """Wake whoever waits on :attr:`changed` (link, registration or boot state changed)."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def _session(self, ws: Any) -> bool:
        """Serve one connection; True once BootNotification was accepted on it."""
        link = StationLink(self, ws)
        self._set_link(link, accepted=False)
        registered = False

        async def register(tg: asyncio.TaskGroup) -> None:
            nonlocal registered
            if self.cfg.boot_every_connect or self.boot_status != "Accepted":
                await self._boot(link)
            registered = True
            self._set_link(link, accepted=True)
            # Superseded: every connector's status is announced now, as it is now.
            self._pending.clear()
            self._stale = self._feed.qsize() if self._feed is not None else 0
            for c in self._connectors():
                await self._send_status(link, c, force=True)
            tg.create_task(self._heartbeat(link), name="ocpp:heartbeat")
            tg.create_task(self._push_status(link), name="ocpp:status")
            tg.create_task(self.outbox.run(link.call_raw, link.wait_quiet), name="ocpp:outbox")

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.start(), name="ocpp:recv")
                tg.create_task(register(tg), name="ocpp:register")
        except* _LINK_ERRORS as eg:
            self._note_error(eg.exceptions[0])
        finally:
            self.rejected = False
        return registered

    async def _boot(self, link: StationLink) -> None:
        while not await self._boot_once(link):
            wait = self._boot_wait
            self._boot_trigger.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._boot_trigger.wait()

    async def _boot_once(self, link: StationLink) -> bool:
        payload: dict[str, Any] = {
            "chargePointVendor": self.cfg.vendor,
            "chargePointModel": self.cfg.model,
        }
        if self.cfg.firmware_version:
            payload["firmwareVersion"] = self.cfg.firmware_version
        if self.cfg.serial_number:
            payload["chargePointSerialNumber"] = self.cfg.serial_number
        try:
            resp = await link.call_raw("BootNotification", payload)
        except (OCPPError, UnknownCallErrorCodeError) as err:
            log.warning("ocpp.boot_error", error=str(err))
            self.boot_status, interval = "Rejected", 0
        else:
            self.boot_status, interval = str(resp["status"]), int(resp["interval"])
            with contextlib.suppress(ValueError, KeyError):
                self.clock_offset_s = parse_time(resp["current_time"]) - self.station.clock.wall()
        log.info(
            "ocpp.boot",
            status=self.boot_status,
            interval=interval,
            clock_offset_s=self.clock_offset_s,
        )
        if self.boot_status == "Accepted":
            self.rejected = False
            if interval > 0:
                await self.keys.set_internal("HeartbeatInterval", str(interval))
            return True
        self.rejected = self.boot_status == "Rejected"
        self._fire()
        self._boot_wait = float(interval) if interval > 0 else self.cfg.boot_retry_s
        return False

    _boot_wait: float = 60.0

    async def _heartbeat(self, link: StationLink) -> None:
        while True:
            interval = self.keys.get_int("HeartbeatInterval")
            if interval <= 0:
                await self.keys.wait_changed(3600)
                continue
            remaining = link.last_call_at + interval - time.monotonic()
            if remaining > 0:
                await self.keys.wait_changed(remaining)
                continue
            await self._heartbeat_once(link)

    async def _heartbeat_once(self, link: StationLink) -> None:
        await link.wait_quiet()
        try:
            resp = await link.call_raw("Heartbeat", {})
        except (OCPPError, UnknownCallErrorCodeError, TimeoutError) as err:
            log.warning("ocpp.heartbeat_failed", error=str(err))
            return
        with contextlib.suppress(ValueError, KeyError):
            self.clock_offset_s = parse_time(resp["current_time"]) - self.station.clock.wall()

    # ------------------------------------------------------------------ status

    def _connectors(self) -> list[int]:
        return [0, *sorted(rt.cfg.connector for rt in self.station.bays.values())]

    async def _send_status(self, link: StationLink, connector: int, *, force: bool = False) -> None:
        """The connector's status as it is now (on registration, or when triggered)."""
        now = self.station.status.current(connector)
        await self._notify(
            link,
            StatusChanged(connector, None, now.status, now.error_code, now.info, self._wall()),
            force=force,
        )

    def _wall(self) -> float:
        return self.station.clock.wall()

    async def _notify(self, link: StationLink, ev: StatusChanged, *, force: bool = False) -> None:
        sent = link.status_sent
        if force:
            # What is sent now supersedes every change queued before it.
            link.status_forced_at[ev.connector] = ev.at
        elif sent.get(ev.connector) == ev.status or ev.at <= link.status_forced_at.get(
            ev.connector, float("-inf")
        ):
            return
        payload: dict[str, Any] = {
            "connectorId": ev.connector,
            "errorCode": ev.error_code,
            "status": ev.status,
            "timestamp": iso(ev.at),
        }
        if ev.info:
            payload["info"] = ev.info
        await link.wait_quiet()
        await link.call_raw("StatusNotification", payload)
        sent[ev.connector] = ev.status

    async def _push_status(self, link: StationLink) -> None:
        """Every status change, in order, while registered."""
        while True:
            await self._pending_evt.wait()
            self._pending_evt.clear()
            while self._pending:
                hold = self.keys.get_int("MinimumStatusDuration")
                if hold > 0:
                    wait = self._pending[0].at + hold - self._wall()
                    if wait > 0:
                        await self.station.clock.sleep(wait)
                if not self._pending:
                    break
                ev = self._pending.popleft()
                if hold > 0 and any(e.connector == ev.connector for e in self._pending):
                    continue  # it did not last MinimumStatusDuration: the newer one is sent
                try:
                    await self._notify(link, ev)
                except (OCPPError, UnknownCallErrorCodeError, TimeoutError) as err:
                    log.warning("ocpp.status_failed", connector=ev.connector, error=str(err))

    async def _watch(self, sub: Subscription) -> None:
        """The station's events for the central system: status changes, ended transactions."""
        while True:
            ev = await sub.get()
            stale = self._stale > 0
            if stale:
                self._stale -= 1
            if isinstance(ev, StatusChanged):
                # Offline (and for what happened before registering), the status of every
                # connector is announced on registration instead.
                if self.online and not stale:
                    self._pending.append(ev)
                    self._pending_evt.set()
            elif isinstance(ev, SessionClosed):
                await self.profiles.end_transaction(ev.connector)
                self.limits_changed()

    # ------------------------------------------------------------------ direct sends

    async def _send_meter_direct(
        self,
        connector: int,
        meter_values: list[dict[str, Any]],
        tx_id: int | None,
        link: StationLink | None = None,
    ) -> bool:
        link = link or self.link
        if link is None or not self.accepted:
            return False
        payload: dict[str, Any] = {"connectorId": connector, "meterValue": meter_values}
        if tx_id is not None:
            payload["transactionId"] = tx_id
        try:
            await link.wait_quiet()
            await link.call_raw("MeterValues", payload)
        except SEND_ERRORS as err:
            log.info("ocpp.meter_direct_failed", error=str(err))
            return False
        return True

    async def _diagnostics_status(self, status: str) -> None:
        await self._send_direct("DiagnosticsStatusNotification", status)

    async def _firmware_status(self, status: str) -> None:
        await self._send_direct("FirmwareStatusNotification", status)

    async def _send_direct(self, action: str, status: str) -> None:
        link = self.link
        if link is None or not self.accepted:
            log.info("ocpp.status_offline", action=action, status=status)
            return
        await link.wait_quiet()
        await link.call_raw(action, {"status": status})

    async def _start_rejected(self, session_id: str, status: str) -> None:
        if await self.invalid_id.invalidated(session_id):
            return  # it may deliver MaxEnergyOnInvalidId first (cloud_sync.invalid_id)
        for rt in self.station.bays.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                log.warning("ocpp.deauthorized", session_id=session_id, status=status)
                await self.station.commands.stop_session(
                    session_id, StopReason.DEAUTHORIZED, actor="csms"
                )


def _message(status: str) -> str:
    return {
        "Accepted": "",
        "Blocked": "This card is blocked.",
        "Expired": "This card has expired.",
        "ConcurrentTx": "This card is already in use.",
    }.get(status, "This code is not accepted here.")
