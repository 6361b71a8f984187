"""API: usage per member — the owner's statistics and CSV of every member, a member's own.

The period is the statistics page's: the last ``months`` calendar months up to
now (or up to ``until``, exclusive). The owner, installer and viewer see every
member's row (and the cards of no member); a member sees only their own
sessions, figures and CSV (:mod:`local_ui.usage` says which sessions are whose).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from local_ui import history, usage
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.context import Ctx, MemberOnly, Reader, UiContext, check_csrf
from local_ui.errors import ApiError

router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_csrf)], responses=ERROR_RESPONSES)

Months = Annotated[int, Query(ge=1, le=120, description="calendar months back, this one included")]
Until = Annotated[
    dt.datetime | None, Query(description="ISO date/time (1970–2100), exclusive; default now")
]


def period(months: int, until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime | None]:
    """The first instant of the period and its exclusive end (None: now)."""
    if until is not None and not history.EARLIEST_YEAR <= until.year <= history.LATEST_YEAR:
        raise ApiError(
            422,
            "date_out_of_range",
            f"The end date must lie between {history.EARLIEST_YEAR} and {history.LATEST_YEAR}.",
        )
    end = until.date() if until else dt.date.today()
    return dt.datetime.combine(history.month_start(end, months - 1), dt.time()), until


def _ts(d: dt.datetime | None) -> float | None:
    if d is None:
        return None
    return (d if d.tzinfo else d.astimezone()).timestamp()


def _tariff_missing(ctx: UiContext) -> bool:
    t = ctx.station.cfg.tariff
    return t.per_kwh == 0 and t.per_minute == 0 and t.per_session == 0


async def _per_member(
    ctx: UiContext, months: int, until: dt.datetime | None
) -> tuple[list[usage.MemberUsage], float, float | None]:
    since, end = period(months, until)
    members = [str(u["username"]) for u in await ctx.accounts.list_users() if u["role"] == "member"]
    rows = await usage.per_member(
        ctx.station.journal,
        await ctx.accounts.token_members(),
        members,
        float(_ts(since) or 0.0),
        _ts(end),
    )
    return rows, float(_ts(since) or 0.0), _ts(end)


@router.get("/stats/members", tags=["sessions"])
async def stats_members(
    ctx: Ctx, user: Reader, months: Months = 12, until: Until = None
) -> dict[str, Any]:
    """Sessions, energy (kWh) and cost per member in the period, and the cards of no member.

    The rows add up to the monthly statistics' totals for the same period.
    """
    rows, since, end = await _per_member(ctx, months, until)
    currency = ctx.station.cfg.tariff.currency
    missing = _tariff_missing(ctx)
    views = [u.view(currency) for u in rows]
    if missing:
        for v in views:
            v["cost"] = None
    return {
        "since": since,
        "until": end,
        "members": views,
        "tariff_missing": missing,
    }


@router.get("/stats/members.csv", tags=["sessions"], response_class=Response)
async def stats_members_csv(
    ctx: Ctx, user: Reader, months: Months = 12, until: Until = None
) -> Response:
    """The usage per member as CSV: one row per member, then the cards of no member."""
    rows, since, end = await _per_member(ctx, months, until)
    name = f"usage-per-member-{ctx.station.cfg.station.id}-{dt.date.today().isoformat()}.csv"
    return Response(
        usage.csv_text(rows, ctx.station.cfg.tariff.currency, since, end),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# ---------------------------------------------------------------------- a member's own


@router.get("/me/usage", tags=["members"])
async def my_usage(
    ctx: Ctx, user: MemberOnly, months: Months = 12, until: Until = None
) -> dict[str, Any]:
    """My sessions, energy and cost per month in the period, and my totals."""
    since, end = period(months, until)
    mine = await ctx.accounts.member_tokens(user.username)
    rows = await history.monthly(ctx.station.journal, since, end, None, tokens=mine)
    missing = _tariff_missing(ctx)
    return {
        "since": _ts(since),
        "until": _ts(end),
        "months": rows,
        "totals": {
            "sessions": sum(r["sessions"] for r in rows),
            "energy_kwh": round(sum(r["energy_kwh"] for r in rows), 3),
            "cost": None if missing else round(sum(r["cost"] for r in rows), 2),
            "currency": ctx.station.cfg.tariff.currency,
        },
    }


@router.get("/me/usage.csv", tags=["members"], response_class=StreamingResponse)
async def my_usage_csv(
    ctx: Ctx, user: MemberOnly, months: Months = 12, until: Until = None
) -> StreamingResponse:
    """My sessions of the period as CSV (the sessions CSV's columns), oldest first."""
    since, end = period(months, until)
    mine = await ctx.accounts.member_tokens(user.username)
    name = f"my-sessions-{ctx.station.cfg.station.id}-{dt.date.today().isoformat()}.csv"
    return StreamingResponse(
        history.csv_chunks(
            ctx.station.journal,
            history.SessionFilter(since=since, until=end),
            members={t: user.username for t in mine},
            tokens=mine,
        ),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
