"""A simulated OCPP 1.6J wallbox (the ``ocpp`` library's charge-point side, written from the spec).

It connects to its central system at ``<url>/<id>`` (Basic auth when given a
password), boots, reports status and meter values, and charges a :class:`Car`
at the limit its own smart charging computes (``smart.py``). A person can
plug and unplug the car and present a card at its RFID reader. When it loses
its central system it keeps its profiles (a lease profile runs out by its
validTo) and, after ``failsafe_after_s``, applies its own failsafe current on
top, like the "failsafe current" setting of many commercial wallboxes.
Transaction messages sent while offline wait in a queue, in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ocpp.exceptions import OCPPError
from ocpp.routing import on as _on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from simulators.wallbox.car import VOLTS, Car
from simulators.wallbox.smart import Profile, ProfileBook

_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], _on(action))


def _not_cancelled() -> None:
    """The library waits with asyncio.wait_for, which on Python 3.11 can swallow a
    cancellation that lands with an answer: a loop checks before going round again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Outlet:
    """One connector of the wallbox."""

    n: int
    car: Car | None = None  # plugged when not None
    status: str = "Available"
    error: str = "NoError"
    tx_id: int | None = None
    tx_tag: str | None = None
    tx_start: float | None = None
    pending_tag: str | None = None  # authorized (card or remote start), waiting for a car
    current_a: float = 0.0
    energy_wh: float = 1_000.0
    limit_a: float = 0.0  # what it offers the car now
    limit_log: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, offer)


class _Link(ChargePoint):  # type: ignore[misc]
    def __init__(self, box: WallboxSim, ws: ClientConnection) -> None:
        super().__init__(box.cp_id, ws, response_timeout=10)
        self.box = box

    async def start(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                raw = await self._connection.recv()
                self.box.frames_in += 1
                tg.create_task(self.route_message(raw))

    @on(Action.remote_start_transaction)
    def on_remote_start(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(
            status=self.box.remote_start(id_tag, connector_id or 1)
        )

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status=self.box.remote_stop(transaction_id))

    @on(Action.set_charging_profile)
    def on_set_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        return call_result.SetChargingProfile(
            status=self.box.set_profile(connector_id, cs_charging_profiles)
        )

    @on(Action.clear_charging_profile)
    def on_clear_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        hit = self.box.book.clear(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if hit else "Unknown")

    @on(Action.change_configuration)
    def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(status=self.box.configure(key, value))

    @on(Action.get_configuration)
    def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        items = [
            {"key": k, "readonly": False, "value": v}
            for k, v in self.box.config.items()
            if not key or k in key
        ]
        unknown = [k for k in key or [] if k not in self.box.config]
        return call_result.GetConfiguration(configuration_key=items, unknown_key=unknown or None)

    @on(Action.trigger_message)
    def on_trigger(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        if requested_message not in ("StatusNotification", "MeterValues", "Heartbeat"):
            return call_result.TriggerMessage(status="NotImplemented")
        self.box.triggered.append((requested_message, connector_id))
        self.box.wake.set()
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        self.box.unlocks += 1
        self.box._notify()
        return call_result.UnlockConnector(status="Unlocked")


class WallboxSim:
    """One wallbox; ``run()`` until cancelled. Drive it with plug/unplug/present_card."""

    def __init__(
        self,
        url: str,
        cp_id: str,
        *,
        connectors: int = 1,
        phases: int = 3,
        max_current_a: float = 16.0,
        password: str | None = None,
        ca_file: str | None = None,
        vendor: str = "edge-station",
        model: str = "SimBox",
        measurands: tuple[str, ...] | None = None,
        failsafe_current_a: float = 0.0,
        failsafe_after_s: float = 30.0,
        tick_s: float = 0.1,
        reconnect_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.cp_id = cp_id
        self.phases = phases
        self.max_current_a = max_current_a
        self.password = password
        self.ca_file = ca_file
        self.vendor, self.model = vendor, model
        self.failsafe_current_a = failsafe_current_a
        self.failsafe_after_s = failsafe_after_s
        self.tick_s = tick_s
        self.reconnect_s = reconnect_s
        self.outlets = {n: Outlet(n) for n in range(1, connectors + 1)}
        self.book = ProfileBook()
        self.config: dict[str, str] = {
            "MeterValueSampleInterval": "60",
            "MeterValuesSampledData": "Energy.Active.Import.Register",
            "HeartbeatInterval": "60",
            "AuthorizeRemoteTxRequests": "false",
            "StopTransactionOnInvalidId": "true",
            "ConnectionTimeOut": "120",
        }
        self.allowed_measurands = measurands  # None: it sends whatever it is asked
        self.link: _Link | None = None
        self.connected = asyncio.Event()
        self.accepted = False
        self.offline_since: float | None = clock()
        self.reconnect = True  # tests hold it off the line by setting this False
        self.wake = asyncio.Event()
        self.triggered: list[tuple[str, int | None]] = []
        self.queue: deque[tuple[str, dict[str, Any], int]] = deque()  # transaction messages
        self.rejected_handshakes = 0
        self.attempts = 0
        self.frames_in = 0
        self.unlocks = 0
        self.remote_stops = 0
        self.boots = 0
        self.transactions: list[int] = []  # the ids its central system gave, in order
        self._clock = clock
        self._changed = asyncio.Event()
        self._pending_status: set[int] = set()

    # ------------------------------------------------------------------ people

    def plug(self, car: Car | None = None, connector: int = 1) -> None:
        o = self.outlets[connector]
        o.car = car or Car(max_current_a=self.max_current_a, phases=self.phases)
        if o.tx_id is None and o.pending_tag is None:
            self._set_status(o, "Preparing")
        self.wake.set()

    def unplug(self, connector: int = 1) -> None:
        o = self.outlets[connector]
        o.car = None
        o.current_a = 0.0
        if o.tx_id is not None:
            self._stop_tx(o, "EVDisconnected")
        o.pending_tag = None
        self._set_status(o, "Available")
        self.wake.set()

    async def present_card(self, tag: str, connector: int = 1) -> str:
        """A card at the reader: start (after Authorize), or stop the session it started."""
        o = self.outlets[connector]
        if o.tx_id is not None and o.tx_tag == tag:
            self._stop_tx(o, "Local")
            return "Stopped"
        if self.link is None or not self.accepted:
            return "Offline"
        res = await self.link.call(call.Authorize(id_tag=tag))
        status = str(res.id_tag_info["status"])
        if status == "Accepted" and o.tx_id is None:
            o.pending_tag = tag
            self.wake.set()
        return status

    def present_cached_card(self, tag: str, connector: int = 1) -> None:
        """A card its own authorization cache knows: it starts without asking (no Authorize)."""
        self.outlets[connector].pending_tag = tag
        self.wake.set()

    def fault(self, code: str = "GroundFailure", connector: int = 1) -> None:
        o = self.outlets[connector]
        if o.tx_id is not None:
            self._stop_tx(o, "Other")
        self._set_status(o, "Faulted", code)

    def clear_fault(self, connector: int = 1) -> None:
        o = self.outlets[connector]
        self._set_status(o, "Preparing" if o.car is not None else "Available")

    # ------------------------------------------------------------------ what a test reads

    def offer_a(self, connector: int = 1) -> float:
        return self.outlets[connector].limit_a

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def drop(self) -> None:
        """Cut the line without a goodbye (the TCP connection just dies)."""
        link = self.link
        if link is not None:
            link._connection.transport.abort()

    # ------------------------------------------------------------------ the central system's calls

    def remote_start(self, tag: str, connector: int) -> str:
        o = self.outlets.get(connector)
        if o is None or o.tx_id is not None or o.status == "Faulted":
            return "Rejected"
        o.pending_tag = tag
        self.wake.set()
        return "Accepted"

    def remote_stop(self, tx_id: int) -> str:
        self.remote_stops += 1
        for o in self.outlets.values():
            if o.tx_id == tx_id:
                self._stop_tx(o, "Remote")
                return "Accepted"
        return "Rejected"

    def set_profile(self, connector: int, raw: dict[str, Any]) -> str:
        try:
            p = Profile.parse(connector, raw)
        except (KeyError, TypeError, ValueError):
            return "Rejected"
        if p.purpose == "TxProfile" and (connector == 0 or self.outlets[connector].tx_id is None):
            return "Rejected"
        if p.purpose == "ChargePointMaxProfile" and connector != 0:
            return "Rejected"
        self.book.install(p)
        self._apply_limits()  # at once: the acknowledgement means it is in force
        return "Accepted"

    def configure(self, key: str, value: str) -> str:
        if key not in self.config:
            return "NotSupported"
        if key == "MeterValuesSampledData" and self.allowed_measurands is not None:
            asked = [m for m in value.split(",") if m]
            value = ",".join(m for m in asked if m in self.allowed_measurands)
        self.config[key] = value
        self.wake.set()
        return "Accepted"

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._physics(), name=f"wallbox:{self.cp_id}:physics")
            tg.create_task(self._connection_loop(), name=f"wallbox:{self.cp_id}:link")

    async def _connection_loop(self) -> None:
        headers = {}
        if self.password is not None:
            cred = base64.b64encode(f"{self.cp_id}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {cred}"
        while True:
            if not self.reconnect:
                await asyncio.sleep(self.reconnect_s)
                continue
            self.attempts += 1
            try:
                async with connect(
                    f"{self.url}/{self.cp_id}",
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    additional_headers=headers,
                    open_timeout=5,
                    ping_interval=None,
                    proxy=None,
                    ssl=self._tls(),
                ) as ws:
                    await self._session(ws)
            except* InvalidStatus:
                self.rejected_handshakes += 1
            except* (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, OCPPError):
                pass  # the line is gone: dial again
            finally:
                if self.link is not None or self.offline_since is None:
                    self.offline_since = self._clock()
                self.link, self.accepted = None, False
                self.connected.clear()
                self._notify()
            await asyncio.sleep(self.reconnect_s)

    def _tls(self) -> ssl.SSLContext | None:
        if not self.url.startswith("wss://"):
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    async def _session(self, ws: ClientConnection) -> None:
        link = _Link(self, ws)
        self.link = link
        async with asyncio.TaskGroup() as tg:
            tg.create_task(link.start())
            res = await link.call(
                call.BootNotification(
                    charge_point_vendor=self.vendor,
                    charge_point_model=self.model,
                    firmware_version="sim-1.0",
                )
            )
            if res.status != "Accepted":
                raise ConnectionClosed(None, None)
            self.boots += 1
            self.config["HeartbeatInterval"] = str(res.interval)
            self.accepted = True
            self.offline_since = None
            self.connected.set()
            self._notify()
            for o in self.outlets.values():
                await self._send_status(o)
            while self.queue:
                action, payload, n = self.queue[0]
                await self._send_tx_message(action, payload, n)
                self.queue.popleft()
            tg.create_task(self._heartbeat(link))
            tg.create_task(self._meter_loop(link))

    async def _heartbeat(self, link: _Link) -> None:
        while True:
            _not_cancelled()
            await asyncio.sleep(max(1.0, float(self.config["HeartbeatInterval"])))
            await link.call(call.Heartbeat())

    async def _meter_loop(self, link: _Link) -> None:
        last: dict[int, float] = {}
        while True:
            _not_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.wake.wait()
            self.wake.clear()
            while self.triggered:
                what, n = self.triggered.pop(0)
                targets = [n] if n else list(self.outlets)
                for t in targets:
                    o = self.outlets.get(t)
                    if o is None:
                        continue
                    if what == "StatusNotification":
                        await self._send_status(o)
                    elif what == "MeterValues":
                        await self._send_meter(link, o, "Trigger")
                    else:
                        await link.call(call.Heartbeat())
            interval = float(self.config["MeterValueSampleInterval"] or 0)
            now = self._clock()
            for o in self.outlets.values():
                if interval > 0 and now - last.get(o.n, -math.inf) >= interval:
                    last[o.n] = now
                    await self._send_meter(link, o, "Sample.Periodic")
            for o in self.outlets.values():
                await self._maybe_start(o)

    async def _maybe_start(self, o: Outlet) -> None:
        if o.pending_tag is None or o.car is None or o.tx_id is not None:
            return
        tag, o.pending_tag = o.pending_tag, None
        o.tx_id, o.tx_tag, o.tx_start = -1, tag, time.time()  # -1: waiting for its id
        payload = {
            "connector_id": o.n,
            "id_tag": tag,
            "meter_start": int(o.energy_wh),
            "timestamp": _now_iso(),
        }
        link = self.link
        if link is None:
            o.tx_id, o.tx_tag = None, None
            return
        try:
            res = await link.call(call.StartTransaction(**payload))
        except BaseException:
            o.tx_id, o.tx_tag, o.pending_tag = None, None, tag  # tried again once back
            raise
        o.tx_id = int(res.transaction_id)
        self.transactions.append(o.tx_id)
        self._apply_limits()
        await self._send_status(o)
        if res.id_tag_info["status"] != "Accepted":
            self._stop_tx(o, "DeAuthorized")

    def _stop_tx(self, o: Outlet, reason: str) -> None:
        tx, tag = o.tx_id, o.tx_tag
        o.tx_id, o.tx_tag, o.tx_start = None, None, None
        o.current_a = 0.0
        self.book.end_transaction(o.n)
        if tx is None or tx < 0:
            return
        payload = {
            "transaction_id": tx,
            "meter_stop": int(o.energy_wh),
            "timestamp": _now_iso(),
            "reason": reason,
            "id_tag": tag,
        }
        self.queue.append(("StopTransaction", payload, o.n))
        self._set_status(o, "Finishing" if o.car is not None else "Available")
        self.wake.set()

    async def _send_tx_message(self, action: str, payload: dict[str, Any], n: int) -> None:
        link = self.link
        if link is None:
            raise ConnectionClosed(None, None)
        if action == "StopTransaction":
            await link.call(call.StopTransaction(**payload))

    def _set_status(self, o: Outlet, status: str, error: str = "NoError") -> None:
        if o.status == status:
            return
        o.status, o.error = status, error
        self._pending_status.add(o.n)
        self._notify()
        self.wake.set()

    async def _send_status(self, o: Outlet) -> None:
        link = self.link
        if link is None or not self.accepted:
            return
        await link.call(
            call.StatusNotification(
                connector_id=o.n,
                error_code=o.error,
                status=o.status,
                timestamp=_now_iso(),
            )
        )

    async def _send_meter(self, link: _Link, o: Outlet, context: str) -> None:
        wanted = [m for m in self.config["MeterValuesSampledData"].split(",") if m]
        values: list[dict[str, Any]] = []
        for m in wanted:
            if m == "Energy.Active.Import.Register":
                values.append(
                    {
                        "value": str(int(o.energy_wh)),
                        "measurand": m,
                        "unit": "Wh",
                        "context": context,
                    }
                )
            elif m == "Current.Import":
                for p in ("L1", "L2", "L3")[: self.phases]:
                    values.append(
                        {
                            "value": f"{o.current_a:.2f}",
                            "measurand": m,
                            "phase": p,
                            "unit": "A",
                            "context": context,
                        }
                    )
            elif m == "Power.Active.Import":
                w = o.current_a * VOLTS * self.phases
                values.append(
                    {"value": f"{w:.0f}", "measurand": m, "unit": "W", "context": context}
                )
        if not values:
            return
        tx = o.tx_id if o.tx_id is not None and o.tx_id > 0 else None
        await link.call(
            call.MeterValues(
                connector_id=o.n,
                transaction_id=tx,
                meter_value=[{"timestamp": _now_iso(), "sampled_value": values}],
            )
        )

    # ------------------------------------------------------------------ physics

    def _apply_limits(self) -> None:
        now_wall = time.time()
        now = self._clock()
        failsafe = (
            self.offline_since is not None and now - self.offline_since >= self.failsafe_after_s
        )
        for o in self.outlets.values():
            tx = o.tx_id if o.tx_id is not None and o.tx_id > 0 else None
            limit = self.book.limit_a(o.n, now_wall, tx, o.tx_start, self.phases)
            offer = self.max_current_a if limit is None else min(limit, self.max_current_a)
            if failsafe:
                offer = min(offer, self.failsafe_current_a)
            offer = max(0.0, offer)
            if offer != o.limit_a:
                o.limit_a = offer
                o.limit_log.append((now, offer))
                self._notify()

    async def _physics(self) -> None:
        last = self._clock()
        while True:
            _not_cancelled()
            await asyncio.sleep(self.tick_s)
            now = self._clock()
            dt, last = now - last, now
            self._apply_limits()
            for o in self.outlets.values():
                charging = o.car is not None and o.tx_id is not None and o.tx_id > 0
                draw = o.car.wants_a(o.limit_a) if charging and o.car is not None else 0.0
                if draw != o.current_a:
                    o.current_a = draw
                    self._notify()
                if o.car is not None and draw > 0:
                    o.energy_wh += o.car.charge(draw, dt)
                if charging and o.car is not None:
                    status = (
                        "Charging"
                        if draw > 0
                        else ("SuspendedEV" if o.car.full else "SuspendedEVSE")
                    )
                    self._set_status(o, status)
            if self._pending_status and self.link is not None and self.accepted:
                pending, self._pending_status = self._pending_status, set()
                for n in sorted(pending):
                    with contextlib.suppress(OCPPError, TimeoutError, ConnectionClosed):
                        await self._send_status(self.outlets[n])
            if self.queue and self.link is not None and self.accepted:
                with contextlib.suppress(OCPPError, TimeoutError, ConnectionClosed):
                    while self.queue:
                        action, payload, n = self.queue[0]
                        await self._send_tx_message(action, payload, n)
                        self.queue.popleft()
