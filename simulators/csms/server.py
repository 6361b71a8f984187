"""Development CSMS on the ``ocpp`` library's central-system side, over a websockets server.

Accepts boot, answers Authorize (all, or an allow-list / per-tag statuses),
numbers transactions 1, 2, 3 …, logs one readable line per message, and
lets a test drive it: send any CSMS call, inject CallErrors or silence for
the next N calls of an action, delay answers, go down and come back up on the
same port, wait for a condition on what was received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ocpp.routing import on as _on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("csms")
_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], _on(action))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Received:
    """One CALL from a charge point, as it arrived."""

    cp_id: str
    unique_id: str
    action: str
    payload: dict[str, Any]
    at: float


@dataclass(slots=True)
class Transaction:
    id: int
    cp_id: str
    connector: int
    id_tag: str
    meter_start: int
    meter_stop: int | None = None
    meter_values: int = 0
    reason: str | None = None


@dataclass(slots=True)
class _Injections:
    errors: dict[str, list[str]] = field(default_factory=dict)
    silence: dict[str, list[bool]] = field(default_factory=dict)


class CsmsConnection(ChargePoint):  # type: ignore[misc]
    """The central system's side of one charge point's connection."""

    def __init__(self, cp_id: str, ws: ServerConnection, sim: CsmsSim) -> None:
        super().__init__(cp_id, ws, response_timeout=sim.response_timeout_s)
        self.sim = sim
        self.frames: dict[str, list[Any]] = {}  # answers to our calls by id (also malformed ones)
        self.frame_event = asyncio.Event()

    async def route_message(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            log.warning("%s ?? %s", self.id, raw[:200])
            return
        if isinstance(msg, list) and msg and msg[0] == 2 and len(msg) >= 4:
            uid, action, payload = str(msg[1]), str(msg[2]), msg[3]
            self.sim._record(Received(self.id, uid, action, payload, time.monotonic()))
            if self.sim._take_silence(action):
                log.info("%s -> %s (silenced)", self.id, action)
                return
            code = self.sim._take_error(action)
            if code is not None:
                log.info("%s -> %s (answering CallError %s)", self.id, action, code)
                await self._send(json.dumps([4, uid, code, "injected by the simulator", {}]))
                return
            if self.sim.answer_delay_s:
                await asyncio.sleep(self.sim.answer_delay_s)
        elif isinstance(msg, list) and len(msg) >= 2 and msg[0] in (3, 4):
            self.frames[str(msg[1])] = msg
            self.frame_event.set()
            self.frame_event = asyncio.Event()
        await super().route_message(raw)
        self.sim._notify()

    # ------------------------------------------------------------------ charge point → CSMS

    @on(Action.boot_notification)
    def on_boot(
        self, charge_point_vendor: str, charge_point_model: str, **_: Any
    ) -> call_result.BootNotification:
        status = self.sim.boot_statuses.pop(0) if self.sim.boot_statuses else "Accepted"
        interval = self.sim.heartbeat_interval if status == "Accepted" else self.sim.boot_interval
        self.sim.boots[self.id] = status
        return call_result.BootNotification(
            current_time=now_iso(), interval=interval, status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, connector_id: int, status: str, **_: Any) -> call_result.StatusNotification:
        self.sim.statuses.setdefault(self.id, {})[connector_id] = status
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": self.sim.tag_status(id_tag)})

    @on(Action.start_transaction)
    def on_start(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        tx = self.sim.next_tx
        self.sim.next_tx += 1
        self.sim.transactions[tx] = Transaction(tx, self.id, connector_id, id_tag, meter_start)
        return call_result.StartTransaction(
            transaction_id=tx, id_tag_info={"status": self.sim.tag_status(id_tag)}
        )

    @on(Action.stop_transaction)
    def on_stop(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        t = self.sim.transactions.get(transaction_id)
        if t is not None:
            t.meter_stop, t.reason = meter_stop, reason or "Local"
        info = {"status": self.sim.tag_status(id_tag)} if id_tag else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None, **_: Any
    ) -> call_result.MeterValues:
        t = self.sim.transactions.get(transaction_id) if transaction_id is not None else None
        if t is not None:
            t.meter_values += 1
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="Accepted")

    @on(Action.diagnostics_status_notification)
    def on_diag(self, **_: Any) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()


class CsmsSim:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        accept_tags: set[str] | None = None,
        tag_statuses: dict[str, str] | None = None,
        heartbeat_interval: int = 300,
        boot_interval: int = 10,
        passwords: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        response_timeout_s: float = 10.0,
        log_messages: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.accept_tags = accept_tags
        self.tag_statuses = dict(tag_statuses or {})
        self.heartbeat_interval = heartbeat_interval
        self.boot_interval = boot_interval
        self.boot_statuses: list[str] = []  # answers for the next boots; then Accepted
        self.passwords = passwords
        self.ssl_context = ssl_context
        self.response_timeout_s = response_timeout_s
        self.log_messages = log_messages
        self.answer_delay_s = 0.0
        self.received: list[Received] = []
        self.connections: dict[str, CsmsConnection] = {}
        self.transactions: dict[int, Transaction] = {}
        self.statuses: dict[str, dict[int, str]] = {}
        self.boots: dict[str, str] = {}
        self.next_tx = 1
        self.connects = 0
        self.rejected_auth = 0
        self._inject = _Injections()
        self._server: Server | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.host}:{self.port}/ocpp"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            process_request=self._check_auth,
            ssl=self.ssl_context,
            max_size=2**22,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("csms listening on %s", self.url)

    async def stop(self) -> None:
        """Go down: close the listener and every connection."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        self.connections.clear()
        log.info("csms down")

    async def __aenter__(self) -> CsmsSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    def _check_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.passwords is None:
            return None
        cp_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
                ok = user == cp_id and self.passwords.get(cp_id) == pw
            except ValueError:
                ok = False
        if ok:
            return None
        self.rejected_auth += 1
        log.info("%s refused: bad credentials", cp_id)
        return Response(
            401, "Unauthorized", Headers([("WWW-Authenticate", 'Basic realm="csms"')]), b""
        )

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        if ws.subprotocol != "ocpp1.6":
            await ws.close(1002, "ocpp1.6 required")
            return
        conn = CsmsConnection(cp_id, ws, self)
        self.connections[cp_id] = conn
        self.connects += 1
        log.info("%s connected", cp_id)
        self._notify()
        try:
            await conn.start()
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(cp_id) is conn:
                del self.connections[cp_id]
            log.info("%s disconnected", cp_id)
            self._notify()

    # ------------------------------------------------------------------ recording

    def _record(self, r: Received) -> None:
        self.received.append(r)
        if self.log_messages:
            log.info(
                "%s -> %s %s", r.cp_id, r.action, json.dumps(r.payload, separators=(",", ":"))[:300]
            )
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``pred()`` holds (checked after every received message and connection)."""
        async with asyncio.timeout(timeout):
            while not pred():
                await self._changed.wait()

    def actions(self, *names: str) -> list[Received]:
        return [r for r in self.received if not names or r.action in names]

    def tag_status(self, tag: str) -> str:
        if tag in self.tag_statuses:
            return self.tag_statuses[tag]
        if self.accept_tags is None or tag in self.accept_tags:
            return "Accepted"
        return "Invalid"

    # ------------------------------------------------------------------ injections

    def fail_next(self, action: str, code: str = "InternalError", times: int = 1) -> None:
        """Answer the next ``times`` calls of ``action`` with a CallError ``code``."""
        self._inject.errors.setdefault(action, []).extend([code] * times)

    def silence_next(self, action: str, times: int = 1, *, after: int = 0) -> None:
        """Answer ``after`` more calls of ``action``, then leave the next ``times`` unanswered."""
        self._inject.silence.setdefault(action, []).extend([False] * after + [True] * times)

    def _take_error(self, action: str) -> str | None:
        q = self._inject.errors.get(action)
        return q.pop(0) if q else None

    def _take_silence(self, action: str) -> bool:
        q = self._inject.silence.get(action)
        return q.pop(0) if q else False

    # ------------------------------------------------------------------ CSMS → charge point

    def connection(self, cp_id: str) -> CsmsConnection:
        return self.connections[cp_id]

    async def call(self, cp_id: str, payload: Any) -> Any:
        """Send a ``ocpp.v16.call.*`` payload; the answer, or the CallError raised."""
        if self.log_messages:
            log.info("%s <- %s", cp_id, type(payload).__name__)
        return await self.connection(cp_id).call(payload, suppress=False)

    async def send_frame(
        self, cp_id: str, frame: str, unique_id: str, timeout: float = 5.0
    ) -> list[Any]:
        """Send a raw frame (malformed on purpose) and wait for the answer with ``unique_id``."""
        conn = self.connection(cp_id)
        await conn._send(frame)
        async with asyncio.timeout(timeout):
            while unique_id not in conn.frames:
                await conn.frame_event.wait()
        return conn.frames.pop(unique_id)
