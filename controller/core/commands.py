"""The commands service: what drivers, owners and the central system ask of the station.

Start (a token presented, a code scanned), stop, holds and bookings, modes,
availability, faults, unlocking, installer test outputs. Each refuses with a
clear :class:`~controller.core.outcome.Outcome` what the bay or the station
cannot do, and changes a bay only through the bay runner's ``apply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import structlog

from controller.core import tokens
from controller.core.audit import AuditLog
from controller.core.auth import Authorizer, AuthRequest
from controller.core.backlog import Backlog
from controller.core.bay import (
    AvailabilityChanged,
    BayState,
    CloseSession,
    Effect,
    FaultCleared,
    FaultRaised,
    Hold,
    HoldCancelled,
    HoldPlaced,
    ModeChanged,
    OpenSession,
    Refused,
    StopReason,
    StopRequested,
    TokenPresented,
)
from controller.core.bays import BayRuntime, Bays, UnknownBay
from controller.core.config import StationConfig
from controller.core.events import EventBus, ScanResult
from controller.core.journal import Journal
from controller.core.journalguard import NOT_RECORDED, STOP_NOT_RECORDED
from controller.core.outcome import Outcome, UnknownSession
from controller.core.outputs import TestOutput
from controller.core.runner import BayRunner
from controller.core.safety import SafetySupervisor
from controller.core.tokens import Outcome as TokenOutcome
from controller.ports import AuthStatus, Clock

log = structlog.get_logger(__name__)

_NO_KEYS = tokens.TokenKeys("-")


class _JournalNonces:
    """Replay memory of signed tokens, in the journal (so a restart forgets nothing)."""

    def __init__(self, journal: Journal, clock: Clock) -> None:
        self._journal = journal
        self._clock = clock

    async def seen_or_add(self, nonce: str, expires_wall: float) -> bool:
        return await self._journal.nonce_seen_or_add(nonce, expires_wall, self._clock.wall())


def _precheck(s: BayState) -> Refused | None:
    """Refuse early (before asking the CSMS) what the bay would refuse anyway."""
    if s.session is not None:
        return Refused("bay_in_use", "This bay is in use.")
    if s.fault is not None or not s.node_online:
        return Refused("bay_faulted", "This bay is out of order.")
    if not s.available:
        return Refused("bay_unavailable", "This bay is not available.")
    return None


def _outcome(effects: list[Effect], ok_code: str = "ok") -> Outcome:
    for eff in effects:
        if isinstance(eff, Refused):
            return Outcome(False, eff.code, eff.message)
    for eff in effects:
        if isinstance(eff, OpenSession):
            return Outcome(True, "started", "Session started.", eff.session.session_id)
        if isinstance(eff, CloseSession):
            s = eff.session
            return Outcome(
                True,
                "stopped",
                "Session stopped.",
                s.session_id,
                {"energy_wh": s.energy_wh, "reason": eff.reason.value},
            )
    return Outcome(True, ok_code, "Done.")


class Commands:
    def __init__(
        self,
        cfg: StationConfig,
        bays: Bays,
        clock: Clock,
        *,
        runner: BayRunner,
        safety: SafetySupervisor,
        audit: AuditLog,
        events: EventBus,
        journal: Journal,
        backlog: Backlog,
        authorizer: Authorizer,
        new_id: Callable[[], str],
        load_changed: asyncio.Event,
    ) -> None:
        self._cfg = cfg
        self._bays = bays
        self._clock = clock
        self._runner = runner
        self._safety = safety
        self._audit = audit
        self._events = events
        self._journal = journal
        self._backlog = backlog
        self._authorizer = authorizer
        self._new_id = new_id
        self._load_changed = load_changed
        self._nonces = _JournalNonces(journal, clock)
        self._focus: tuple[str, float] | None = None
        self.token_keys: tokens.TokenKeys | None = None  # signed QR tokens (set when configured)

    async def present_token(
        self,
        bay_id: str,
        token: str,
        *,
        source: str = "kiosk",
        mode: str = "standard",
        quota_wh: int | None = None,
        quota_s: float | None = None,
        preauthorized: str | None = None,
    ) -> Outcome:
        """A driver (or the CSMS) presents ``token`` at a bay: start, or stop own session."""
        rt = self._bays.require(bay_id)
        sess = rt.state.session
        if sess is not None and self._owns_session(token, sess.token, rt):
            return await self.stop_session(sess.session_id, StopReason.LOCAL, actor=source)
        if self._safety.blockers and sess is None:
            cause, msg = next(iter(self._safety.blockers.items()))
            await self._audit.record("refused", source, {"bay_id": bay_id, "cause": cause})
            return Outcome(False, f"blocked_{cause}", msg)
        pre = _precheck(rt.state)
        if pre is not None:
            return Outcome(False, pre.code, pre.message)
        if preauthorized is None:
            verdict = await self._verify_signed(token, rt, source)
            if not verdict.outcome.ok:
                return Outcome(False, verdict.outcome.value, verdict.message)
            if verdict.outcome is TokenOutcome.ACCEPTED and verdict.id_tag:
                token, preauthorized = verdict.id_tag, "qr_token"
        if preauthorized is None:
            auth = await self._authorizer.authorize(
                AuthRequest(token, bay_id, rt.cfg.connector, source)
            )
            if auth.status is not AuthStatus.ACCEPTED:
                await self._audit.record(
                    "auth_rejected",
                    source,
                    {"bay_id": bay_id, "status": auth.status.value, "via": auth.source},
                )
                return Outcome(
                    False, "not_authorized", auth.message or "This code is not accepted here."
                )
            auth_source = auth.source
        else:
            auth_source = preauthorized
        effects = await self._runner.apply(
            bay_id,
            TokenPresented(token, auth_source, self._new_id(), mode, quota_wh, quota_s),
            actor=source,
        )
        return _outcome(effects)

    def _owns_session(self, presented: str, session_token: str, rt: BayRuntime) -> bool:
        """The same card, or the same signed QR code shown again (its id tag), stops a session."""
        if presented == session_token:
            return True
        if self.token_keys is None or not presented.startswith("ES"):
            return False
        res = tokens.check(presented, self._clock.wall(), rt.cfg.connector, self.token_keys)
        return res.claims is not None and res.claims.id_tag == session_token

    async def _verify_signed(self, text: str, rt: BayRuntime, source: str) -> tokens.VerifyResult:
        """Signed tokens are verified offline (signature, window, bay, replay); others pass through."""
        if self.token_keys is None:
            if tokens.classify_plain(text):
                return tokens.VerifyResult(TokenOutcome.PLAIN_ID_TAG, "")
            res = tokens.check(text, self._clock.wall(), rt.cfg.connector, _NO_KEYS)
        else:
            res = await tokens.verify(
                text, self._clock.wall(), rt.cfg.connector, self.token_keys, self._nonces
            )
        if not res.outcome.ok:
            await self._audit.record(
                "token_rejected",
                source,
                {"bay_id": rt.cfg.id, "outcome": res.outcome.value, "detail": res.detail[:200]},
            )
            log.info(
                "token.rejected",
                bay_id=rt.cfg.id,
                outcome=res.outcome.value,
                detail=res.detail[:200],
            )
        return res

    def focus_bay(self, bay_id: str | None, seconds: float = 60.0) -> None:
        """The kiosk shows this bay: a code the camera sees now is meant for it."""
        if bay_id is not None:
            self._bays.require(bay_id)
        self._focus = (bay_id, self._clock.monotonic() + seconds) if bay_id else None

    async def code_scanned(
        self, text: str, *, camera: str = "camera", bay_id: str | None = None
    ) -> Outcome:
        """A QR code seen by a camera: find its bay (the token's, the camera's, the kiosk's)."""
        target = bay_id
        if target is None and self.token_keys is not None:
            res = tokens.check(text, self._clock.wall(), 0, self.token_keys)
            if res.claims is not None and res.claims.bay is not None:
                with contextlib.suppress(UnknownBay):
                    target = self._bays.by_connector(res.claims.bay).cfg.id
        if target is None and self._focus is not None and self._focus[1] > self._clock.monotonic():
            target = self._focus[0]
        if target is None:
            out = Outcome(False, "choose_bay", "Choose a bay on the screen first.")
        else:
            out = await self.present_token(target, text, source=camera)
        self._events.publish(ScanResult(target, out.ok, out.code, out.message, out.session_id))
        return out

    async def stop_session(
        self, session_id: str, reason: StopReason, *, actor: str = "local"
    ) -> Outcome:
        """Stop a running session (its bay's ``StopRequested``), or record a stop that waits."""
        rt = self._bays.with_session(session_id)
        if rt is not None:
            effects = await self._runner.apply(
                rt.cfg.id, StopRequested(reason, session_id), actor=actor
            )
            return _outcome(effects)
        if session_id in self._backlog.closing():
            # Stopped already, but not recorded yet: asking again is asking to record it.
            if await self._backlog.flush():
                return Outcome(True, "stopped", "Session stopped.", session_id)
            return Outcome(False, NOT_RECORDED, STOP_NOT_RECORDED, session_id)
        if await self._journal.session(session_id) is None:
            raise UnknownSession(session_id)
        return Outcome(False, "not_running", "This session has already ended.", session_id)

    async def set_mode(self, session_id: str, mode: str, *, actor: str = "kiosk") -> Outcome:
        """Switch a running session's mode; the load manager applies it at its next step."""
        rt = self._bays.with_session(session_id)
        if rt is not None:
            effects = await self._runner.apply(
                rt.cfg.id, ModeChanged(mode, session_id), actor=actor
            )
            self._load_changed.set()
            return _outcome(effects, ok_code="mode_changed")
        if await self._journal.session(session_id) is None:
            raise UnknownSession(session_id)
        return Outcome(False, "not_running", "This session has already ended.", session_id)

    async def place_hold(
        self,
        bay_id: str,
        token: str,
        duration_s: float | None = None,
        reservation_id: int | None = None,
        *,
        actor: str = "owner",
    ) -> Outcome:
        self._bays.require(bay_id)
        expires = self._clock.wall() + (duration_s or self._cfg.timers.hold_s)
        hold = Hold(self._new_id(), token, expires, reservation_id)
        effects = await self._runner.apply(bay_id, HoldPlaced(hold), actor=actor)
        out = _outcome(effects)
        if out.ok:
            return Outcome(
                True, "held", "Bay held.", data={"hold_id": hold.hold_id, "expires_at": expires}
            )
        return out

    async def cancel_hold(self, bay_id: str, hold_id: str, *, actor: str = "owner") -> Outcome:
        return _outcome(
            await self._runner.apply(bay_id, HoldCancelled(hold_id), actor=actor),
            ok_code="cancelled",
        )

    async def set_availability(
        self, bay_id: str, available: bool, *, actor: str = "owner"
    ) -> Outcome:
        rt = self._bays.require(bay_id)
        refused = _outcome(
            await self._runner.apply(bay_id, AvailabilityChanged(available), actor=actor)
        )
        if not refused.ok:
            return refused
        scheduled = rt.state.pending_unavailable
        return Outcome(
            True, "scheduled" if scheduled else "accepted", "Scheduled" if scheduled else "Accepted"
        )

    async def unlock_connector(self, bay_id: str, *, actor: str = "csms") -> Outcome:
        """Open a bay's lock (OCPP UnlockConnector): a running session stops first."""
        rt = self._bays.require(bay_id)
        if rt.state.session is not None:
            await self._runner.apply(
                bay_id,
                StopRequested(StopReason.UNLOCK_COMMAND, rt.state.session.session_id),
                actor=actor,
            )
        if rt.cfg.kind != "locker" and rt.node is None:
            return Outcome(False, "not_supported", "This bay has no lock.")
        rt.want_locked = False
        rt.lock_changed.set()
        return Outcome(True, "unlocked", "Unlocked.")

    async def cancel_reservation(self, reservation_id: int, *, actor: str = "csms") -> Outcome:
        for rt in self._bays.values():
            h = rt.state.hold
            if h is not None and h.reservation_id == reservation_id:
                return await self.cancel_hold(rt.cfg.id, h.hold_id, actor=actor)
        return Outcome(False, "unknown_reservation", f"No reservation {reservation_id}.")

    async def enqueue_for_session(
        self, bay_id: str, action: str, payload: dict[str, Any]
    ) -> str | None:
        """Journal an outbox message for the bay's open session, ordered with its start and stop.

        Returns the session id, or None when no session is open (nothing written).
        """
        return await self._runner.enqueue_for_session(bay_id, action, payload)

    async def installer_test_output(
        self, bay_id: str, *, relay_on: bool, current_a: float, hold_s: float, actor: str
    ) -> Outcome:
        """Hold a test output on an idle bay (relay, current ramp) for ``hold_s`` seconds.

        Refused while a session runs, the bay is faulted or offline, or any safe-mode
        cause is active (and ended by the station at once when one appears); the
        current is clipped to the bay's maximum, and the lease still guards it.
        ``relay_on=False`` ends the test: that is always allowed.
        """
        rt = self._bays.require(bay_id)
        if not relay_on:
            return await self.end_test_output(bay_id, actor=actor)
        if rt.state.session is not None:
            return Outcome(False, "bay_in_use", "A session is running on this bay.")
        if self._safety.active:
            return Outcome(
                False, "safe_mode", "The station is in safe mode: tests wait until it is cleared."
            )
        if rt.state.fault is not None:
            return Outcome(False, "bay_faulted", "This bay is out of order: clear its fault first.")
        if rt.node is None or not rt.state.node_online:
            return Outcome(False, "node_offline", "The bay's node is not connected.")
        amps = current_a if math.isfinite(current_a) else 0.0
        amps = max(0.0, min(amps, rt.cfg.max_current_a))
        hold = max(0.0, min(hold_s, 60.0)) if math.isfinite(hold_s) else 0.0
        rt.test_output = TestOutput(True, amps, self._clock.monotonic() + hold)
        rt.output_changed.set()
        await self._audit.record(
            "installer_test",
            actor,
            {"bay_id": bay_id, "relay_on": True, "current_a": amps, "hold_s": hold},
        )
        return Outcome(
            True, "testing", f"Test output held for {hold:.0f} s.", data={"current_a": amps}
        )

    async def end_test_output(self, bay_id: str, *, actor: str) -> Outcome:
        """End an installer test output: the bay goes back to its own output at once.

        Always allowed (in safe mode too): it can only switch something off.
        """
        rt = self._bays.require(bay_id)
        was = rt.test_output
        rt.test_output = None
        rt.output_changed.set()
        await self._audit.record(
            "installer_test",
            actor,
            {"bay_id": bay_id, "action": "end", "was_testing": was is not None},
        )
        return Outcome(True, "test_ended", "The test output ended.")

    async def raise_fault(
        self, bay_id: str, code: str, *, stop: bool = True, actor: str = "station"
    ) -> None:
        await self._runner.apply(bay_id, FaultRaised(code, stop), actor=actor)

    async def clear_fault(self, bay_id: str, *, actor: str = "owner") -> None:
        await self._runner.apply(bay_id, FaultCleared(), actor=actor)
