"""API: shared access. The owner gives members their cards and codes; a member starts and
stops charging with them and sees only the sessions started with them (their history
and costs), nothing of anyone else's.

Ownership of a session is its token: a session belongs to the member who holds the
card or code it was started with. Another person's session is answered as if it did
not exist (404), so a member cannot even learn which sessions there are.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from controller.core.bay import StopReason
from controller.core.outcome import UnknownSession
from controller.ops.session_csv import mask_token
from local_ui import history
from local_ui.actions import present_token
from local_ui.api_bays import ERROR_RESPONSES, outcome_body
from local_ui.context import (
    Ctx,
    MemberOnly,
    OwnerOnly,
    UiContext,
    audit_actor,
    check_csrf,
)
from local_ui.describe import stop_text
from local_ui.errors import ApiError
from local_ui.schemas import MemberStart, MemberTokens, OutcomeOut, Page, TokenRequest
from local_ui.views import bay_view, session_view

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(check_csrf)],
    responses=ERROR_RESPONSES,
    tags=["members"],
)


async def _member(ctx: UiContext, username: str) -> None:
    user = await ctx.accounts.get_user(username)
    if user is None or user.role != "member":
        raise ApiError(404, "unknown_member", f"There is no member called “{username[:64]}”.")


# ---------------------------------------------------------------------- the owner's side


@router.get("/members/{username}/tokens")
async def member_tokens(username: str, ctx: Ctx, user: OwnerOnly) -> dict[str, Any]:
    """A member's cards and codes, masked like everywhere else."""
    await _member(ctx, username)
    tokens = await ctx.accounts.member_tokens(username)
    return {"username": username, "tokens": [mask_token(t) for t in tokens]}


@router.put("/members/{username}/tokens")
async def set_member_tokens(
    username: str, req: MemberTokens, ctx: Ctx, user: OwnerOnly
) -> dict[str, Any]:
    """Give a member their cards and codes (replaces the list); a card belongs to one member."""
    await _member(ctx, username)
    for tok in req.tokens:
        holder = await ctx.accounts.token_owner(tok)
        if holder is not None and holder != username:
            raise ApiError(
                409,
                "token_taken",
                f"The card or code {mask_token(tok)} belongs to “{holder}” already: take it "
                "from them first.",
            )
    await ctx.accounts.set_member_tokens(username, req.tokens)
    await ctx.station.audit.record(
        "member_tokens_changed",
        audit_actor(user),
        {"username": username, "count": len(req.tokens)},
    )
    return {"username": username, "tokens": [mask_token(t) for t in req.tokens]}


# ---------------------------------------------------------------------- the member's side


async def _mine(ctx: UiContext, username: str) -> list[str]:
    return await ctx.accounts.member_tokens(username)


@router.get("/me/bays")
async def my_bays(ctx: Ctx, user: MemberOnly) -> dict[str, Any]:
    """Every bay's state (no one's token); a session shows its figures only if it is mine."""
    mine = set(await _mine(ctx, user.username))
    bays = []
    for rt in ctx.station.bays.values():
        view = bay_view(ctx.station, rt, public=True)
        sess = rt.state.session
        own = sess is not None and sess.token in mine
        view["mine"] = own
        if sess is not None and not own:
            view["session"] = None  # someone else's: only that the bay is busy
            view["busy"] = True
        bays.append(view)
    cards = [mask_token(t) for t in mine]
    return {"bays": bays, "cards": cards}


@router.get("/me/sessions", response_model=Page)
async def my_sessions(
    ctx: Ctx,
    user: MemberOnly,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page:
    """My sessions, newest first, with energy and cost."""
    mine = await _mine(ctx, user.username)
    journal = ctx.station.journal
    total = await journal.count_sessions(tokens=mine)
    rows = await journal.sessions(tokens=mine, limit=limit, offset=offset)
    items = []
    for r in rows:
        v = session_view(r)
        v["outcome"] = history.outcome_of(r.get("stop_reason"))
        v["stop_text"] = stop_text(r["stop_reason"]) if r.get("stop_reason") else None
        items.append(v)
    return Page(total=total, limit=limit, offset=offset, items=items)


async def _my_session(ctx: UiContext, username: str, session_id: str) -> dict[str, Any]:
    row = await ctx.station.journal.session(session_id[:64])
    if row is None or str(row.get("token")) not in await _mine(ctx, username):
        raise ApiError(404, "unknown_session", "There is no such session of yours.")
    return row


@router.post("/me/sessions/{session_id}/stop", response_model=OutcomeOut)
async def stop_my_session(session_id: str, ctx: Ctx, user: MemberOnly) -> OutcomeOut:
    """Stop one of my running sessions."""
    await _my_session(ctx, user.username, session_id)
    try:
        out = await ctx.station.commands.stop_session(
            session_id, StopReason.LOCAL, actor=audit_actor(user)
        )
    except UnknownSession:
        raise ApiError(404, "unknown_session", "There is no such session of yours.") from None
    if not out.ok:
        raise ApiError(409, out.code, out.message)
    return OutcomeOut(**outcome_body(out))


@router.post("/me/bays/{bay_id}/start", response_model=OutcomeOut)
async def start_at_bay(bay_id: str, req: MemberStart, ctx: Ctx, user: MemberOnly) -> OutcomeOut:
    """Start charging at a bay with one of my cards."""
    mine = await _mine(ctx, user.username)
    if not mine:
        raise ApiError(
            409, "no_card", "You have no card or code yet: ask the station's owner for one."
        )
    if req.card >= len(mine):
        raise ApiError(422, "invalid_request", "Choose one of your cards or codes.")
    sess = ctx.station.bays[bay_id].state.session if bay_id in ctx.station.bays else None
    if sess is not None and sess.token not in mine:
        raise ApiError(409, "bay_busy", f"Bay {bay_id} is in use by someone else.")
    if sess is not None:
        raise ApiError(409, "already_charging", f"You are charging at bay {bay_id} already.")
    out = await present_token(
        ctx.station,
        bay_id,
        TokenRequest(token=mine[req.card], mode=req.mode),
        source=audit_actor(user),
    )
    return OutcomeOut(**outcome_body(out))
