"""Driver, owner and central-system commands of the station (start, stop, holds, modes, ...).

Each refuses with a clear :class:`Outcome` what the bay or the station cannot do, and goes
through :meth:`Station.apply` for every change.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import structlog

from controller.core import tokens
from controller.core.auth import AuthRequest
from controller.core.bay import (
    AvailabilityChanged,
    FaultCleared,
    FaultRaised,
    Hold,
    HoldCancelled,
    HoldPlaced,
    ModeChanged,
    StopReason,
    StopRequested,
    TokenPresented,
)
from controller.core.journal import Commit, EventRow, JournalError, OutboxRow
from controller.core.journalguard import NOT_RECORDED, STOP_NOT_RECORDED
from controller.core.outputs import TestOutput
from controller.core.tokens import Outcome as TokenOutcome
from controller.ports import (
    AuthStatus,
)

if TYPE_CHECKING:
    pass

from controller.core.runtime import (
    _NO_KEYS,
    BayRuntime,
    Outcome,
    StationBase,
    UnknownBay,
    UnknownSession,
    _outcome,
    _precheck,
)

log = structlog.get_logger(__name__)


class StationCommands(StationBase):
    def bay(self, bay_id: str) -> BayRuntime:
        rt = self.bays.get(bay_id)
        if rt is None:
            raise UnknownBay(bay_id)
        return rt

    def bay_by_connector(self, connector: int) -> BayRuntime:
        for rt in self.bays.values():
            if rt.cfg.connector == connector:
                return rt
        raise UnknownBay(str(connector))

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
        rt = self.bay(bay_id)
        sess = rt.state.session
        if sess is not None and self._owns_session(token, sess.token, rt):
            return await self.stop_session(sess.session_id, StopReason.LOCAL, actor=source)
        if self.blockers and sess is None:
            cause, msg = next(iter(self.blockers.items()))
            await self._audit("refused", source, {"bay_id": bay_id, "cause": cause})
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
            auth = await self.authorizer.authorize(
                AuthRequest(token, bay_id, rt.cfg.connector, source)
            )
            if auth.status is not AuthStatus.ACCEPTED:
                await self._audit(
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
        effects = await self.apply(
            bay_id,
            TokenPresented(token, auth_source, self.new_id(), mode, quota_wh, quota_s),
            actor=source,
        )
        return _outcome(effects)

    def _owns_session(self, presented: str, session_token: str, rt: BayRuntime) -> bool:
        """The same card, or the same signed QR code shown again (its id tag), stops a session."""
        if presented == session_token:
            return True
        if self.token_keys is None or not presented.startswith("ES"):
            return False
        res = tokens.check(presented, self.clock.wall(), rt.cfg.connector, self.token_keys)
        return res.claims is not None and res.claims.id_tag == session_token

    async def _verify_signed(self, text: str, rt: BayRuntime, source: str) -> tokens.VerifyResult:
        """Signed tokens are verified offline (signature, window, bay, replay); others pass through."""
        if self.token_keys is None:
            if tokens.classify_plain(text):
                return tokens.VerifyResult(TokenOutcome.PLAIN_ID_TAG, "")
            res = tokens.check(text, self.clock.wall(), rt.cfg.connector, _NO_KEYS)
        else:
            res = await tokens.verify(
                text, self.clock.wall(), rt.cfg.connector, self.token_keys, self._nonces
            )
        if not res.outcome.ok:
            await self._audit(
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
            self.bay(bay_id)
        self._focus = (bay_id, self.clock.monotonic() + seconds) if bay_id else None

    async def code_scanned(
        self, text: str, *, camera: str = "camera", bay_id: str | None = None
    ) -> Outcome:
        """A QR code seen by a camera: find its bay (the token's, the camera's, the kiosk's)."""
        target = bay_id
        if target is None and self.token_keys is not None:
            res = tokens.check(text, self.clock.wall(), 0, self.token_keys)
            if res.claims is not None and res.claims.bay is not None:
                with contextlib.suppress(UnknownBay):
                    target = self.bay_by_connector(res.claims.bay).cfg.id
        if target is None and self._focus is not None and self._focus[1] > self.clock.monotonic():
            target = self._focus[0]
        if target is None:
            out = Outcome(False, "choose_bay", "Choose a bay on the screen first.")
        else:
            out = await self.present_token(target, text, source=camera)
        self._publish(
            {
                "type": "scan",
                "bay_id": target,
                "ok": out.ok,
                "code": out.code,
                "message": out.message,
            }
        )
        return out

    async def stop_session(
        self, session_id: str, reason: StopReason, *, actor: str = "local"
    ) -> Outcome:
        for rt in self.bays.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                effects = await self.apply(
                    rt.cfg.id, StopRequested(reason, session_id), actor=actor
                )
                return _outcome(effects)
        if session_id in self.backlog.closing():
            # Stopped already, but not recorded yet: asking again is asking to record it.
            if await self.backlog.flush():
                return Outcome(True, "stopped", "Session stopped.", session_id)
            return Outcome(False, NOT_RECORDED, STOP_NOT_RECORDED, session_id)
        if await self.journal.session(session_id) is None:
            raise UnknownSession(session_id)
        return Outcome(False, "not_running", "This session has already ended.", session_id)

    async def set_mode(self, session_id: str, mode: str, *, actor: str = "kiosk") -> Outcome:
        """Switch a running session's mode; the load manager applies it at its next step."""
        for rt in self.bays.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                effects = await self.apply(rt.cfg.id, ModeChanged(mode, session_id), actor=actor)
                self.load_changed.set()
                return _outcome(effects, ok_code="mode_changed")
        if await self.journal.session(session_id) is None:
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
        self.bay(bay_id)
        expires = self.clock.wall() + (duration_s or self.cfg.timers.hold_s)
        hold = Hold(self.new_id(), token, expires, reservation_id)
        effects = await self.apply(bay_id, HoldPlaced(hold), actor=actor)
        out = _outcome(effects)
        if out.ok:
            return Outcome(
                True, "held", "Bay held.", data={"hold_id": hold.hold_id, "expires_at": expires}
            )
        return out

    # ------------------------------------------------------------------ bookings

    async def add_booking(
        self,
        bay_id: str,
        token: str,
        start_at: float,
        hold_s: float | None = None,
        *,
        reservation_id: int | None = None,
        actor: str = "owner",
    ) -> Outcome:
        """Book a bay for ``token`` from ``start_at`` (wall time): it becomes a hold then, offline too."""
        self.bay(bay_id)
        now = self.clock.wall()
        hold = hold_s or self.cfg.timers.hold_s
        if start_at + hold <= now:
            return Outcome(False, "booking_in_past", "This booking would already be over.")
        clash = await self.journal.query(
            "SELECT id FROM bookings WHERE bay_id=? AND state='scheduled'"
            " AND start_at < ? AND start_at + hold_s > ?",
            (bay_id, start_at + hold, start_at),
        )
        if clash:
            return Outcome(
                False, "booking_overlap", f"Bay {bay_id} is already booked then ({clash[0]['id']})."
            )
        booking_id = self.new_id()
        try:
            await self.journal.commit(
                Commit(
                    events=[EventRow("booking_added", now, bay_id, None, {"id": booking_id})],
                    audit=[
                        (
                            actor,
                            "booking_added",
                            {"id": booking_id, "bay_id": bay_id, "start_at": start_at},
                        )
                    ],
                    bookings=[
                        {
                            "id": booking_id,
                            "bay_id": bay_id,
                            "token": token,
                            "start_at": start_at,
                            "hold_s": hold,
                            "reservation_id": reservation_id,
                            "state": "scheduled",
                            "created_at": now,
                            "detail": "",
                        }
                    ],
                )
            )
        except JournalError:
            return Outcome(False, "journal", "The station cannot record bookings right now.")
        self._publish({"type": "bookings"})
        return Outcome(True, "booked", "Booked.", data={"booking_id": booking_id})

    async def cancel_booking(self, booking_id: str, *, actor: str = "owner") -> Outcome:
        rows = await self.journal.query("SELECT * FROM bookings WHERE id=?", (booking_id,))
        if not rows:
            return Outcome(False, "unknown_booking", f"There is no booking {booking_id!r}.")
        b = rows[0]
        if b["state"] == "placed":
            # Its hold is on the bay now: cancelling the booking cancels the hold.
            rt = self.bays.get(b["bay_id"])
            if (
                rt is not None
                and rt.state.hold is not None
                and rt.state.hold.hold_id == b["detail"]
            ):
                await self.cancel_hold(b["bay_id"], b["detail"], actor=actor)
        elif b["state"] != "scheduled":
            return Outcome(False, "booking_over", f"This booking is already {b['state']}.")
        await self._set_booking(booking_id, "cancelled", b["detail"], actor=actor)
        return Outcome(True, "cancelled", "Booking cancelled.")

    async def place_due_bookings(self) -> None:
        """Turn every booking whose time has come into a hold (called by the ticker)."""
        now = self.clock.wall()
        due = await self.journal.query(
            "SELECT * FROM bookings WHERE state='scheduled' AND start_at <= ? ORDER BY start_at",
            (now,),
        )
        for b in due:
            end = b["start_at"] + b["hold_s"]
            if end <= now:
                await self._set_booking(b["id"], "missed", "the bay was never free in its window")
                continue
            out = await self.place_hold(
                b["bay_id"], b["token"], end - now, b["reservation_id"], actor=f"booking:{b['id']}"
            )
            if out.ok:
                await self._set_booking(b["id"], "placed", str(out.data.get("hold_id", "")))
            # Otherwise the bay is busy: try again at the next tick, until the window ends.

    async def _set_booking(
        self, booking_id: str, state: str, detail: str, *, actor: str = "station"
    ) -> None:
        now = self.clock.wall()
        await self.journal.commit(
            Commit(
                events=[EventRow(f"booking_{state}", now, None, None, {"id": booking_id})],
                audit=[(actor, f"booking_{state}", {"id": booking_id, "detail": detail})],
                booking_states=[(booking_id, state, detail)],
            )
        )
        self._publish({"type": "bookings"})

    async def cancel_hold(self, bay_id: str, hold_id: str, *, actor: str = "owner") -> Outcome:
        return _outcome(
            await self.apply(bay_id, HoldCancelled(hold_id), actor=actor), ok_code="cancelled"
        )

    async def set_availability(
        self, bay_id: str, available: bool, *, actor: str = "owner"
    ) -> Outcome:
        rt = self.bay(bay_id)
        refused = _outcome(await self.apply(bay_id, AvailabilityChanged(available), actor=actor))
        if not refused.ok:
            return refused
        scheduled = rt.state.pending_unavailable
        return Outcome(
            True, "scheduled" if scheduled else "accepted", "Scheduled" if scheduled else "Accepted"
        )

    async def unlock_connector(self, bay_id: str, *, actor: str = "csms") -> Outcome:
        """Open a bay's lock (OCPP UnlockConnector): a running session stops first."""
        rt = self.bay(bay_id)
        if rt.state.session is not None:
            await self.apply(
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
        for rt in self.bays.values():
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
        rt = self.bay(bay_id)
        async with self._lock:
            sess = rt.state.session
            if sess is None:
                return None
            now = self.clock.wall()
            commit = Commit(
                events=[EventRow(action.lower(), now, bay_id, sess.session_id, {})],
                outbox=[OutboxRow(action, payload, sess.session_id)],
            )
            # Behind whatever waits for the journal, so the outbox keeps the order of events.
            if not await self.backlog.write(commit, keep=False):
                self.guard.failed()
                raise JournalError("the journal cannot be written")
            return sess.session_id

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Ask the supervisor to stop (SIGTERM, soft or hard reset). Open sessions stay open.

        A reset passes ``EXIT_RESTART`` (75): the unit restarts on it without logging a failure.
        """
        log.info("station.stop_requested", reason=reason)
        self.exit_code = exit_code
        for listener in self.stop_listeners:
            listener()
        self._stop_requested.set()

    async def installer_test_output(
        self, bay_id: str, *, relay_on: bool, current_a: float, hold_s: float, actor: str
    ) -> Outcome:
        """Hold a test output on an idle bay (relay, current ramp) for ``hold_s`` seconds.

        Refused while a session runs, the bay is faulted or offline, or any safe-mode
        cause is active (and ended by the station at once when one appears); the
        current is clipped to the bay's maximum, and the lease still guards it.
        ``relay_on=False`` ends the test: that is always allowed.
        """
        rt = self.bay(bay_id)
        if not relay_on:
            return await self.end_test_output(bay_id, actor=actor)
        if rt.state.session is not None:
            return Outcome(False, "bay_in_use", "A session is running on this bay.")
        if self.safe.active:
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
        rt.test_output = TestOutput(True, amps, self.clock.monotonic() + hold)
        rt.output_changed.set()
        await self._audit(
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
        rt = self.bay(bay_id)
        was = rt.test_output
        rt.test_output = None
        rt.output_changed.set()
        await self._audit(
            "installer_test",
            actor,
            {"bay_id": bay_id, "action": "end", "was_testing": was is not None},
        )
        return Outcome(True, "test_ended", "The test output ended.")

    async def raise_fault(
        self, bay_id: str, code: str, *, stop: bool = True, actor: str = "station"
    ) -> None:
        await self.apply(bay_id, FaultRaised(code, stop), actor=actor)

    async def clear_fault(self, bay_id: str, *, actor: str = "owner") -> None:
        await self.apply(bay_id, FaultCleared(), actor=actor)
