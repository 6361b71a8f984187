"""API: session history (filters, pagination), detail with events, stop, CSV export, monthly stats."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from controller.core.bay import StopReason
from controller.core.outcome import UnknownSession
from local_ui import history
from local_ui.api_bays import ERROR_RESPONSES, outcome_body
from local_ui.charts import monthly_svg
from local_ui.context import (
    Ctx,
    Operator,
    Reader,
    UiContext,
    audit_actor,
    check_csrf,
)
from local_ui.describe import event_row, stop_text
from local_ui.errors import ApiError
from local_ui.schemas import OutcomeOut, Page
from local_ui.views import session_view

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)


def session_filter(
    since: Annotated[
        dt.datetime | None,
        Query(description="ISO date/time (local if naive, 1970–2100), inclusive"),
    ] = None,
    until: Annotated[
        dt.datetime | None, Query(description="ISO date/time (1970–2100), exclusive")
    ] = None,
    bay_id: Annotated[str | None, Query(max_length=32)] = None,
    mode: Literal["standard", "eco", "boost", "solar"] | None = None,
    stop_reason: StopReason | None = None,
    outcome: Literal["success", "error"] | None = None,
    state: Literal["open", "closed"] | None = None,
) -> history.SessionFilter:
    _in_range(since, "start")
    _in_range(until, "end")
    if since is not None and until is not None and _ts(until) <= _ts(since):
        raise ApiError(422, "invalid_request", "until must be after since.")
    return history.SessionFilter(
        since, until, bay_id, mode, stop_reason.value if stop_reason else None, outcome, state
    )


Filter = Annotated[history.SessionFilter, Depends(session_filter)]


def _in_range(d: dt.datetime | None, which: str) -> None:
    """Refuse dates the station cannot mean (year 1 breaks local-time arithmetic, 9999 too)."""
    if d is not None and not history.EARLIEST_YEAR <= d.year <= history.LATEST_YEAR:
        raise ApiError(
            422,
            "date_out_of_range",
            f"The {which} date must lie between {history.EARLIEST_YEAR} and {history.LATEST_YEAR}.",
        )


def _ts(d: dt.datetime) -> float:
    return (d if d.tzinfo else d.astimezone()).timestamp()


@router.get("/sessions", tags=["sessions"], response_model=Page)
async def list_sessions(
    ctx: Ctx,
    user: Reader,
    f: Filter,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    """Sessions, newest first, with the total count of the filtered set."""
    total, rows = await history.page(ctx.station.journal, f, limit, offset)
    items = []
    for r in rows:
        v = session_view(r)
        v["outcome"] = history.outcome_of(r.get("stop_reason"))
        items.append(v)
    return Page(total=total, limit=limit, offset=offset, items=items)


@router.get("/sessions.csv", tags=["sessions"], response_class=StreamingResponse)
async def sessions_csv(
    f: Filter,
    ctx: Ctx,
    user: Reader,
) -> StreamingResponse:
    """UTF-8 CSV of the filtered sessions (oldest first), with a header row; the ``member``
    column names the member who holds the session's card or code."""
    name = f"sessions-{ctx.station.cfg.station.id}-{dt.date.today().isoformat()}.csv"
    return StreamingResponse(
        history.csv_chunks(ctx.station.journal, f, members=await ctx.accounts.token_members()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/sessions/{session_id}", tags=["sessions"])
async def session_detail(session_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    """One session with its events, oldest first."""
    row = await ctx.station.journal.session(session_id)
    if row is None:
        raise ApiError(404, "unknown_session", f"There is no session {session_id!r}.")
    view = session_view(row)
    view["outcome"] = history.outcome_of(row.get("stop_reason"))
    events = await ctx.station.journal.events(session_id=session_id, limit=1000)
    view["events"] = [event_row(e) for e in events]
    view["stop_text"] = stop_text(row.get("stop_reason")) if row.get("stop_reason") else None
    return view


@router.post("/sessions/{session_id}/stop", tags=["sessions"], response_model=OutcomeOut)
async def stop_session(session_id: str, ctx: Ctx, user: Operator) -> OutcomeOut:
    """Stop a running session (stop reason ``Owner``); 409 if it has already ended."""
    if len(session_id) > 64:
        raise ApiError(404, "unknown_session", "There is no such session.")
    try:
        out = await ctx.station.commands.stop_session(
            session_id, StopReason.OWNER, actor=audit_actor(user)
        )
    except UnknownSession:
        raise ApiError(404, "unknown_session", f"There is no session {session_id!r}.") from None
    if not out.ok:
        raise ApiError(409, out.code, out.message)
    return OutcomeOut(**outcome_body(out))


async def _stats(
    ctx: UiContext, months: int, bay_id: str | None, until: dt.datetime | None
) -> dict[str, Any]:
    end = until.date() if until else dt.date.today()
    since = dt.datetime.combine(history.month_start(end, months - 1), dt.time())
    rows = await history.monthly(ctx.station.journal, since, until, bay_id)
    t = ctx.station.cfg.tariff
    kwh = round(sum(r["energy_kwh"] for r in rows), 3)
    n = sum(r["sessions"] for r in rows)
    tariff_missing = t.per_kwh == 0 and t.per_minute == 0 and t.per_session == 0
    return {
        "months": rows,
        "trend_kwh": history.trend([r["energy_kwh"] for r in rows]),
        "totals": {
            "energy_kwh": kwh,
            "sessions": n,
            "avg_kwh_per_session": round(kwh / n, 3) if n else 0.0,
            "cost": None if tariff_missing else round(sum(r["cost"] for r in rows), 2),
            "currency": t.currency,
        },
        "tariff_missing": tariff_missing,
    }


@router.get("/stats/monthly", tags=["sessions"])
async def stats_monthly(
    ctx: Ctx,
    user: Reader,
    months: Annotated[int, Query(ge=1, le=120)] = 12,
    bay_id: Annotated[str | None, Query(max_length=32)] = None,
    until: Annotated[
        dt.datetime | None, Query(description="ISO date/time (1970–2100), exclusive")
    ] = None,
) -> dict[str, Any]:
    """kWh, sessions and cost per month (closed sessions), a trend line and the totals."""
    _in_range(until, "end")
    return await _stats(ctx, months, bay_id, until)


@router.get("/stats/monthly.svg", tags=["sessions"], response_class=Response)
async def stats_monthly_svg(
    ctx: Ctx,
    user: Reader,
    months: Annotated[int, Query(ge=1, le=120)] = 12,
    bay_id: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The monthly kWh bar chart with its trend line, as SVG."""
    s = await _stats(ctx, months, bay_id, None)
    return Response(monthly_svg(s["months"], s["trend_kwh"]), media_type="image/svg+xml")
