"""One OCPP-J 1.6 connection: the ``ocpp`` library's ChargePoint with our dispatch rules.

- Each incoming CALL is served in its own task, so a handler may itself call
  the CSMS (Authorize) without blocking the receive loop.
- While a CALL is being served, our own requests wait (:meth:`Link.wait_quiet`):
  the answer goes out before anything the handler caused (a StopTransaction
  after RemoteStopTransaction, a StatusNotification after ReserveNow).
- Follow-ups registered with :meth:`Link.after` run once the answer was sent
  (TriggerMessage: the answer first, then the requested message).
- A malformed CALL is answered with a CALLERROR carrying its id, in the 1.6
  spelling (FormationViolation, OccurenceConstraintViolation); an unknown
  action gets NotImplemented, a known action we do not support NotSupported.
- Our own calls (:meth:`Link.call_raw`) go out as built, without the library's
  schema check of the request: every payload is made by this package from the
  journal and the configuration, and the tests check each kind against the
  OCPP 1.6 schemas (and the development CSMS validates all it receives). What
  comes back from the CSMS is always checked against its schema; an answer is
  small, so that is done at once rather than in a worker thread (validation is
  pure Python: a thread buys no parallelism under the GIL, only a hand-off).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import structlog
from ocpp.charge_point import camel_to_snake_case, remove_nones
from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    NotSupportedError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.exceptions import (
    NotImplementedError as OcppNotImplemented,
)
from ocpp.messages import Call, CallError, MessageType, get_validator, unpack
from ocpp.messages import SchemaValidationError as SchemaError  # jsonschema's, re-exported
from ocpp.routing import on as _on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

log = structlog.get_logger(__name__)

FollowUp = Callable[[], Awaitable[None]]
_followups: contextvars.ContextVar[list[FollowUp] | None] = contextvars.ContextVar(
    "ocpp_followups", default=None
)
_V16_ACTIONS = frozenset(a.value for a in Action)
_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    """``ocpp.routing.on`` with its type kept (the library is untyped)."""
    return cast(Callable[[_F], _F], _on(action))


def spec_error(err: OCPPError) -> OCPPError:
    """The library raises some 2.0.1 spellings; OCPP-J 1.6 has its own."""
    details = {k: v for k, v in (err.details or {}).items() if k != "ocpp_message"}
    if isinstance(err, FormatViolationError):
        return FormationViolationError(description=err.description, details=details)
    if isinstance(err, OccurrenceConstraintViolationError):
        return OccurenceConstraintViolationError(description=err.description, details=details)
    err.details = details
    return err


def check_payload(message_type: int, action: str, payload: dict[str, Any]) -> None:
    """Validate against the OCPP 1.6 JSON schema of ``action`` (a Call or a CallResult payload).

    Raises the 1.6 CallError spelling: TypeConstraintViolation (wrong type, too long),
    ProtocolError (a required field missing), FormationViolation (anything else).
    """
    try:
        get_validator(message_type, action, "1.6").validate(payload)
    except SchemaError as err:
        details = {"cause": err.message}
        if err.validator in ("type", "maxLength"):
            raise TypeConstraintViolationError(details=details) from err
        if err.validator == "required":
            raise ProtocolError(details=details) from err
        raise FormationViolationError(details=details) from err
    except OSError as err:  # no schema: not a 1.6 action
        raise OcppNotImplemented(details={"cause": f"no schema for {action}"}) from err


class Link(ChargePoint):  # type: ignore[misc]
    def __init__(
        self, cp_id: str, ws: Any, *, response_timeout: float, drop_calls: Callable[[], bool]
    ) -> None:
        super().__init__(cp_id, ws, response_timeout=response_timeout)
        self._drop_calls = drop_calls
        self._serving = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.last_call_at = time.monotonic()
        self.calls_in = 0
        self.calls_out = 0
        self.status_sent: dict[int, str] = {}  # connector -> last status sent on this link

    # ------------------------------------------------------------------ receiving

    async def start(self) -> None:
        """Receive until the connection closes (raises ``ConnectionClosed``)."""
        async with asyncio.TaskGroup() as tg:
            while True:
                raw = await self._connection.recv()
                try:
                    msg = json.loads(raw)
                except (ValueError, TypeError):
                    log.warning("ocpp.garbage_frame", frame=str(raw)[:200])
                    continue
                if isinstance(msg, list) and msg and msg[0] == Call.message_type_id:
                    if self._drop_calls():
                        log.info("ocpp.call_ignored_rejected", frame=str(raw)[:200])
                        continue
                    self._quiet.clear()
                    self._serving += 1
                    tg.create_task(self._serve(raw, msg))
                else:
                    await self.route_message(raw)

    async def _serve(self, raw: str, msg: list[Any]) -> None:
        followups: list[FollowUp] = []
        token = _followups.set(followups)
        try:
            self.calls_in += 1
            uid = str(msg[1]) if len(msg) > 1 else ""
            try:
                parsed = unpack(raw)
                if not isinstance(parsed, Call) or not isinstance(parsed.payload, dict):
                    raise FormationViolationError(details={"cause": "payload must be an object"})
                if not isinstance(parsed.action, str) or parsed.action not in self.route_map:
                    if isinstance(parsed.action, str) and parsed.action in _V16_ACTIONS:
                        raise NotSupportedError(details={"cause": f"{parsed.action} not supported"})
                    raise OcppNotImplemented(details={"cause": f"unknown action {parsed.action!r}"})
                await self._handle_call(parsed)
            except OCPPError as err:
                err = spec_error(err)
                if isinstance(err, ProtocolError | FormationViolationError) and not uid:
                    return
                log.info("ocpp.call_error_sent", code=err.code, id=uid)
                error = CallError(uid, err.code, err.description, err.details)
                await self._send(error.to_json())
        finally:
            self._serving -= 1
            if self._serving == 0:
                self._quiet.set()
            _followups.reset(token)
        for follow in followups:
            try:
                await follow()
            except (OCPPError, TimeoutError) as err:
                log.warning("ocpp.followup_failed", error=str(err))

    def after(self, follow: FollowUp) -> None:
        """Run ``follow`` once the answer of the call being served went out."""
        pending = _followups.get()
        if pending is None:
            raise RuntimeError("after() outside a CSMS call")
        pending.append(follow)

    async def wait_quiet(self) -> None:
        await self._quiet.wait()

    # ------------------------------------------------------------------ sending

    async def call_raw(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an OCPP-shaped (camelCase) payload; the answer comes back in snake_case keys.

        The library's ``call`` without its round trip through dataclasses for the request
        and without a worker thread for validation (see the module docstring); the answer
        is schema-checked and returned as ``dataclasses.asdict`` of its ``call_result``.
        """
        result_type = getattr(call_result, action)
        msg = Call(
            unique_id=str(self._unique_id_generator()),
            action=action,
            payload=remove_nones(payload),
        )
        self.last_call_at = time.monotonic()
        self.calls_out += 1
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        async with self._call_lock:
            await self._send(msg.to_json())
            try:
                answer = await self._get_specific_response(msg.unique_id, self._response_timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to {action} {msg.unique_id} in {self._response_timeout}s"
                ) from None
        # The library waits with asyncio.wait_for, which on Python 3.11 swallows a
        # cancellation that lands together with the answer: cancel must cancel. (Only a
        # cancel asked during the call: 3.11's TaskGroup leaves the count raised after a
        # child's failure, with nothing pending.)
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        if answer.message_type_id == MessageType.CallError:
            log.warning("ocpp.call_error_received", action=action, code=answer.error_code)
            raise answer.to_exception()
        check_payload(MessageType.CallResult, action, answer.payload)
        out: dict[str, Any] = dataclasses.asdict(result_type(**camel_to_snake_case(answer.payload)))
        return out
