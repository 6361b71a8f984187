"""API: bays, station status, tokens, availability, faults, safe-mode blockers, holds."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from controller.core.accounting import Tariff
from controller.core.bays import UnknownBay
from controller.ops.session_csv import mask_token
from local_ui.actions import bay_or_404, present_token, refuse_if_failed
from local_ui.bookings_calendar import calendar_html, week_start
from local_ui.context import (
    Ctx,
    Operator,
    OwnerOnly,
    Reader,
    audit_actor,
    check_csrf,
)
from local_ui.errors import ApiError, ErrorBody
from local_ui.messages import booking_overlap
from local_ui.schemas import (
    AvailabilityRequest,
    BookingRequest,
    HoldRequest,
    OutcomeOut,
    TokenRequest,
)
from local_ui.views import bay_view, session_view, station_view

# Every error the API answers, on every operation: the body limit (413) and an
# unreadable body (400) can meet any request.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody},
    429: {"model": ErrorBody},
}

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)


@router.get("/station", tags=["station"])
async def station_status(ctx: Ctx, user: Reader) -> dict[str, Any]:
    """Station status: safe mode, cloud link, PV availability, tariff, load (when known)."""
    return station_view(ctx.station)


@router.post("/station/blockers/{cause}/clear", tags=["station"])
async def clear_blocker(cause: str, ctx: Ctx, user: OwnerOnly) -> dict[str, Any]:
    """Clear a latched safe-mode cause (the emergency stop) once its reason is gone."""
    st = ctx.station
    entry = st.safety.causes.get(cause)
    if entry is None:
        raise ApiError(404, "unknown_blocker", f"The station is not in safe mode for {cause!r}.")
    if cause == "emergency_stop":
        refuse_if_failed(await st.safety.clear_emergency_stop(actor=audit_actor(user)))
    elif not entry.latched:
        raise ApiError(
            409, "not_latched", "This cause clears by itself once its condition is gone."
        )
    else:
        st.safety.unblock(cause, actor=audit_actor(user), owner=True)
    return station_view(st)


@router.get("/bays", tags=["bays"])
async def list_bays(ctx: Ctx, user: Reader) -> list[dict[str, Any]]:
    """Every bay's live snapshot."""
    return [bay_view(ctx.station, rt) for rt in ctx.station.bays.values()]


@router.get("/bays/{bay_id}", tags=["bays"])
async def bay_detail(bay_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    bay_or_404(ctx.station, bay_id)
    rt = ctx.station.bays[bay_id]
    view = bay_view(ctx.station, rt)
    view["config"] = rt.cfg.model_dump(mode="json")
    recent = await ctx.station.journal.sessions(bay_id=bay_id, limit=5)
    view["recent_sessions"] = [session_view(s) for s in recent]
    return view


@router.post("/bays/{bay_id}/token", tags=["bays"], response_model=OutcomeOut)
async def bay_token(
    bay_id: str,
    req: TokenRequest,
    ctx: Ctx,
    user: Operator,
) -> OutcomeOut:
    """Present a token at a bay: starts a session (or stops the one this token runs).

    409 with ``{"error": code}`` when refused; ``confirm_boost`` asks to resend
    with ``boost_confirmed: true`` after showing the demand warning.
    """
    out = await present_token(ctx.station, bay_id, req, source=audit_actor(user))
    return OutcomeOut(**outcome_body(out))


@router.post("/bays/{bay_id}/availability", tags=["bays"], response_model=OutcomeOut)
async def bay_availability(
    bay_id: str,
    req: AvailabilityRequest,
    ctx: Ctx,
    user: Operator,
) -> OutcomeOut:
    """Make a bay (un)available; a running session finishes first."""
    bay_or_404(ctx.station, bay_id)
    out = await ctx.station.commands.set_availability(
        bay_id, req.available, actor=audit_actor(user)
    )
    return OutcomeOut(**outcome_body(out))


@router.post("/bays/{bay_id}/clear-fault", tags=["bays"], response_model=OutcomeOut)
async def bay_clear_fault(bay_id: str, ctx: Ctx, user: Operator) -> OutcomeOut:
    bay_or_404(ctx.station, bay_id)
    if ctx.station.bays[bay_id].state.fault is None:
        raise ApiError(409, "no_fault", "This bay has no fault to clear.")
    await ctx.station.commands.clear_fault(bay_id, actor=audit_actor(user))
    return OutcomeOut(ok=True, code="cleared", message="Fault cleared.")


@router.get("/holds", tags=["holds"])
async def list_holds(
    ctx: Ctx,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Active holds (one per bay at most) and the most recent ones."""
    active = []
    for rt in ctx.station.bays.values():
        h = rt.state.hold
        if h is not None:
            tok = mask_token(h.token)
            active.append(
                {
                    "id": h.hold_id,
                    "bay_id": rt.cfg.id,
                    "token": tok,
                    "expires_at": h.expires_at,
                    "reservation_id": h.reservation_id,
                }
            )
    recent = await ctx.station.journal.recent_holds(limit)
    return {"active": active, "recent": recent, "default_duration_s": ctx.station.cfg.timers.hold_s}


@router.post("/holds", tags=["holds"], status_code=201, response_model=OutcomeOut)
async def create_hold(req: HoldRequest, ctx: Ctx, user: Operator) -> OutcomeOut:
    """Hold a bay for a token (arrival grace); 409 if the bay cannot be held now."""
    bay_or_404(ctx.station, req.bay_id)
    try:
        out = await ctx.station.commands.place_hold(
            req.bay_id, req.token, req.duration_s, actor=audit_actor(user)
        )
    except UnknownBay:
        raise ApiError(404, "unknown_bay", f"There is no bay {req.bay_id!r}.") from None
    return OutcomeOut(**outcome_body(refuse_if_failed(out)))


@router.delete("/holds/{hold_id}", tags=["holds"], response_model=OutcomeOut)
async def cancel_hold(hold_id: str, ctx: Ctx, user: Operator) -> OutcomeOut:
    for rt in ctx.station.bays.values():
        if rt.state.hold is not None and rt.state.hold.hold_id == hold_id:
            out = await ctx.station.commands.cancel_hold(
                rt.cfg.id, hold_id, actor=audit_actor(user)
            )
            return OutcomeOut(**outcome_body(refuse_if_failed(out)))
    raise ApiError(404, "unknown_hold", f"There is no active hold {hold_id!r}.")


@router.get("/bookings", tags=["holds"])
async def list_bookings(
    ctx: Ctx,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The local booking calendar: future holds (placed at their time, also offline) and past ones."""
    rows = await ctx.station.journal.booking_calendar(limit)
    for r in rows:
        r["token"] = mask_token(str(r["token"]))
    return {"bookings": rows}


@router.get(
    "/bookings/calendar",
    tags=["holds"],
    response_class=Response,
    responses={200: {"content": {"text/html": {}}, "description": "an HTML table"}},
)
async def bookings_calendar(
    ctx: Ctx,
    user: Reader,
    bay_id: Annotated[str, Query(min_length=1, max_length=32)],
    week: Annotated[dt.date | None, Query(description="any day of the week (default: now)")] = None,
) -> HTMLResponse:
    """One bay's week of bookings as an HTML table (hours × days; free hours to tap)."""
    bay_or_404(ctx.station, bay_id)
    now = ctx.station.clock.wall()
    day = week or dt.datetime.fromtimestamp(now).date()
    if not 1970 < day.year < 2100:
        raise ApiError(422, "invalid_request", "Choose a week between 1971 and 2099.")
    rows = await ctx.station.journal.booking_calendar(500)
    html = calendar_html(bay_id, week_start(day), rows, now)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.post("/bookings", tags=["holds"], status_code=201, response_model=OutcomeOut)
async def create_booking(req: BookingRequest, ctx: Ctx, user: Operator) -> OutcomeOut:
    """Book a bay for a token from ``start_at``; 409 when it overlaps another booking or is over."""
    bay_or_404(ctx.station, req.bay_id)
    out = await ctx.station.bookings.add(
        req.bay_id, req.token, req.start_at, req.hold_s, actor=audit_actor(user)
    )
    if out.code == "booking_overlap":
        hold = req.hold_s or ctx.station.cfg.timers.hold_s
        clash = [
            b
            for b in await ctx.station.journal.booking_calendar(500)
            if b["bay_id"] == req.bay_id
            and b["state"] == "scheduled"
            and b["start_at"] < req.start_at + hold
            and b["start_at"] + b["hold_s"] > req.start_at
        ]
        first = min(clash, key=lambda b: b["start_at"]) if clash else None
        span = (first["start_at"], first["start_at"] + first["hold_s"]) if first else None
        raise ApiError(409, out.code, booking_overlap(req.bay_id, span))
    return OutcomeOut(**outcome_body(refuse_if_failed(out)))


@router.delete("/bookings/{booking_id}", tags=["holds"], response_model=OutcomeOut)
async def cancel_booking(booking_id: str, ctx: Ctx, user: Operator) -> OutcomeOut:
    out = await ctx.station.bookings.cancel(booking_id[:64], actor=audit_actor(user))
    if out.code == "unknown_booking":
        raise ApiError(404, out.code, out.message)
    return OutcomeOut(**outcome_body(refuse_if_failed(out)))


@router.get("/tariff", tags=["station"], response_model=Tariff)
async def tariff(ctx: Ctx, user: Reader) -> Tariff:
    return ctx.station.cfg.tariff


def outcome_body(out: Any) -> dict[str, Any]:
    return {
        "ok": out.ok,
        "code": out.code,
        "message": out.message,
        "session_id": out.session_id,
        "data": dict(out.data),
    }
