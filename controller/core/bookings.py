"""Bookings: a local calendar of holds to come, kept in the journal.

A booking becomes a hold on its bay when its time comes (checked every tick,
offline too); a bay still busy then is tried again until the booking's window
ends, and a window that passed is marked missed. Holds are placed and
cancelled through the commands service.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.core.bays import Bays
from controller.core.commands import Commands
from controller.core.config import StationConfig
from controller.core.events import BookingsChanged, EventBus
from controller.core.journal import Commit, EventRow, Journal, JournalError
from controller.core.outcome import Outcome
from controller.ports import Clock


class Bookings:
    def __init__(
        self,
        cfg: StationConfig,
        bays: Bays,
        clock: Clock,
        *,
        commands: Commands,
        journal: Journal,
        events: EventBus,
        new_id: Callable[[], str],
    ) -> None:
        self._cfg = cfg
        self._bays = bays
        self._clock = clock
        self._commands = commands
        self._journal = journal
        self._events = events
        self._new_id = new_id

    async def add(
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
        self._bays.require(bay_id)
        now = self._clock.wall()
        hold = hold_s or self._cfg.timers.hold_s
        if start_at + hold <= now:
            return Outcome(False, "booking_in_past", "This booking would already be over.")
        clash = await self._journal.query(
            "SELECT id FROM bookings WHERE bay_id=? AND state='scheduled'"
            " AND start_at < ? AND start_at + hold_s > ?",
            (bay_id, start_at + hold, start_at),
        )
        if clash:
            return Outcome(
                False, "booking_overlap", f"Bay {bay_id} is already booked then ({clash[0]['id']})."
            )
        booking_id = self._new_id()
        try:
            await self._journal.commit(
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
        self._events.publish(BookingsChanged())
        return Outcome(True, "booked", "Booked.", data={"booking_id": booking_id})

    async def cancel(self, booking_id: str, *, actor: str = "owner") -> Outcome:
        rows = await self._journal.query("SELECT * FROM bookings WHERE id=?", (booking_id,))
        if not rows:
            return Outcome(False, "unknown_booking", f"There is no booking {booking_id!r}.")
        b = rows[0]
        if b["state"] == "placed":
            # Its hold is on the bay now: cancelling the booking cancels the hold.
            rt = self._bays.get(b["bay_id"])
            if (
                rt is not None
                and rt.state.hold is not None
                and rt.state.hold.hold_id == b["detail"]
            ):
                await self._commands.cancel_hold(b["bay_id"], b["detail"], actor=actor)
        elif b["state"] != "scheduled":
            return Outcome(False, "booking_over", f"This booking is already {b['state']}.")
        await self._set_state(booking_id, "cancelled", b["detail"], actor=actor)
        return Outcome(True, "cancelled", "Booking cancelled.")

    async def place_due(self) -> None:
        """Turn every booking whose time has come into a hold (called by the ticker)."""
        now = self._clock.wall()
        due = await self._journal.query(
            "SELECT * FROM bookings WHERE state='scheduled' AND start_at <= ? ORDER BY start_at",
            (now,),
        )
        for b in due:
            end = b["start_at"] + b["hold_s"]
            if end <= now:
                await self._set_state(b["id"], "missed", "the bay was never free in its window")
                continue
            out = await self._commands.place_hold(
                b["bay_id"], b["token"], end - now, b["reservation_id"], actor=f"booking:{b['id']}"
            )
            if out.ok:
                await self._set_state(b["id"], "placed", str(out.data.get("hold_id", "")))
            # Otherwise the bay is busy: try again at the next tick, until the window ends.

    async def _set_state(
        self, booking_id: str, state: str, detail: str, *, actor: str = "station"
    ) -> None:
        now = self._clock.wall()
        await self._journal.commit(
            Commit(
                events=[EventRow(f"booking_{state}", now, None, None, {"id": booking_id})],
                audit=[(actor, f"booking_{state}", {"id": booking_id, "detail": detail})],
                booking_states=[(booking_id, state, detail)],
            )
        )
        self._events.publish(BookingsChanged())


__all__ = ["Bookings"]
