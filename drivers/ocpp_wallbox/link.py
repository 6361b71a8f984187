"""One wallbox's websocket, the central-system side of the ``ocpp`` library (OCPP 1.6J).

Each CALL from the wallbox is served in its own task, so a handler that asks
the station (an Authorize through the CSMS, a start) never blocks the answers
to the station's own calls on the same socket. Handlers translate to and
from the :class:`Charger` (``charger.py``) that owns the state; the library
checks every payload against the 1.6 schemas both ways.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import structlog
from ocpp.routing import on as _on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

log = structlog.get_logger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    """``ocpp.routing.on`` with its type kept (the library is untyped)."""
    return cast(Callable[[_F], _F], _on(action))


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ChargerSide(Protocol):
    """What the link asks of its charger (``charger.Charger``)."""

    def booted(self, vendor: str, model: str, firmware: str) -> None: ...

    def status(self, connector: int, status: str, error_code: str, info: str) -> None: ...

    def meter_values(
        self, connector: int, values: list[dict[str, Any]], tx_id: int | None
    ) -> None: ...

    async def authorize(self, id_tag: str) -> str: ...

    async def start_transaction(
        self, connector: int, id_tag: str, meter_start: int
    ) -> tuple[int, str]: ...

    async def stop_transaction(self, tx_id: int, meter_stop: int, reason: str) -> None: ...

    def seen(self) -> None: ...

    def boot_answered(self) -> None: ...


class ChargerLink(ChargePoint):  # type: ignore[misc]
    def __init__(
        self, cp_id: str, ws: Any, side: ChargerSide, *, heartbeat_s: int, response_timeout_s: float
    ) -> None:
        super().__init__(cp_id, ws, response_timeout=response_timeout_s)
        self.side = side
        self.heartbeat_s = heartbeat_s
        self._boot_accepted = False  # set by a BootNotification that passed its schema

    async def start(self) -> None:
        """Receive until the socket closes (``ConnectionClosed``); calls are served concurrently."""
        async with asyncio.TaskGroup() as tg:
            while True:
                raw = await self._connection.recv()
                self.side.seen()
                try:
                    msg = json.loads(raw)
                except (ValueError, TypeError):
                    log.warning("wallbox.garbage_frame", charger=self.id, frame=str(raw)[:200])
                    continue
                if isinstance(msg, list) and msg and msg[0] == 2:
                    tg.create_task(self._serve(raw, len(msg) > 2 and msg[2] == "BootNotification"))
                else:
                    await self.route_message(raw)

    async def _serve(self, raw: str, boot: bool) -> None:
        await self.route_message(raw)
        if boot and self._boot_accepted:
            self._boot_accepted = False
            # Only once the answer is out: the wallbox takes no call before it is accepted.
            self.side.boot_answered()

    async def request(self, payload: Any) -> Any:
        """A call to the wallbox; its answer, or the CallError raised (``OCPPError``)."""
        return await self.call(payload, suppress=False)

    # ------------------------------------------------------------------ the wallbox's calls

    @on(Action.boot_notification)
    def on_boot(
        self,
        charge_point_vendor: str,
        charge_point_model: str,
        firmware_version: str = "",
        **_: Any,
    ) -> call_result.BootNotification:
        self.side.booted(charge_point_vendor, charge_point_model, firmware_version)
        self._boot_accepted = True
        return call_result.BootNotification(
            current_time=iso_now(), interval=self.heartbeat_s, status="Accepted"
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=iso_now())

    @on(Action.status_notification)
    def on_status(
        self, connector_id: int, status: str, error_code: str, info: str = "", **_: Any
    ) -> call_result.StatusNotification:
        self.side.status(connector_id, status, error_code, info)
        return call_result.StatusNotification()

    @on(Action.meter_values)
    def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
        **_: Any,
    ) -> call_result.MeterValues:
        self.side.meter_values(connector_id, meter_value, transaction_id)
        return call_result.MeterValues()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        status = await self.side.authorize(id_tag)
        return call_result.Authorize(id_tag_info={"status": status})

    @on(Action.start_transaction)
    async def on_start(
        self, connector_id: int, id_tag: str, meter_start: int, **_: Any
    ) -> call_result.StartTransaction:
        tx_id, status = await self.side.start_transaction(connector_id, id_tag, meter_start)
        return call_result.StartTransaction(transaction_id=tx_id, id_tag_info={"status": status})

    @on(Action.stop_transaction)
    async def on_stop(
        self,
        transaction_id: int,
        meter_stop: int,
        reason: str = "Local",
        id_tag: str | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        await self.side.stop_transaction(transaction_id, meter_stop, reason)
        info = {"status": "Accepted"} if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    def on_diag(self, **_: Any) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()


__all__ = ["ChargerLink", "ChargerSide", "iso_now"]
