"""API: the owner invites a member with a one-time code shown as a QR code.

The owner names the member (and may give them cards and codes at once); the
station makes a one-time code, keeps only its hash, and shows the invitation's
address as a QR code (made here with segno, like the kiosk's). The address is
on the station's public address (``[http] public_url``), else on the host the
owner's browser used. The code travels in the address's fragment
(``/invite#CODE``), so no server log, proxy or Referer header ever holds it.

Whoever opens the address sees whose invitation it is, chooses a password and
is logged in as that member. A code works once and until it expires; a used,
expired or unknown code gets a sentence in the person's language (the
``owner`` catalogue), and failed tries are limited per client like logins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from controller.ops.session_csv import mask_token
from local_ui import i18n
from local_ui.accounts import InviteRefused
from local_ui.api_auth import set_login, throttle
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.charts import qr_svg
from local_ui.context import Ctx, OwnerOnly, UiContext, audit_actor, check_csrf, client_ip
from local_ui.errors import ApiError
from local_ui.passwords import weakness
from local_ui.schemas import InviteAccept, InviteCheck, InviteRequest, UserOut

log = structlog.get_logger(__name__)

DOMAIN = "owner"
MIN_PASSWORD = 10

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(check_csrf)],
    responses=ERROR_RESPONSES,
    tags=["members"],
)

# What a person holding a code that cannot be used reads (msgids of the ``owner`` catalogue).
REFUSALS = {
    "unknown": "This invitation is not valid. Check that you opened the whole link, or ask "
    "the station's owner for a new invitation.",
    "used": "This invitation has been used already. Log in with the password you chose, or "
    "ask the station's owner for a new invitation.",
    "expired": "This invitation has expired. Ask the station's owner for a new one.",
    "taken": "The name “{name}” belongs to another account by now. Ask the station's owner "
    "for a new invitation.",
}
TOO_SHORT = "Choose a password of at least {n} characters."
TOO_EASY = "This password is too easy to guess. Add another word or two; uncommon words are better."


def language(ctx: UiContext, wanted: str | None, accept: str | None) -> str:
    """The person's language: the page's choice, else the browser's, else the station's."""
    default = i18n.pick(ctx.station.cfg.station.language)
    if wanted:
        return i18n.pick(wanted, default)
    for part in (accept or "").split(",")[:8]:
        base = part.split(";", 1)[0].strip().replace("_", "-").split("-", 1)[0].lower()
        if base in i18n.LANGUAGES:
            return base
    return default


def gettext(lang: str) -> Callable[[str], str]:
    return i18n.translations(lang, DOMAIN).gettext


def invite_url(ctx: UiContext, request: Request, code: str) -> str:
    base = ctx.station.cfg.http.public_url or str(request.base_url).rstrip("/")
    return f"{base}/invite#{code}"


# ---------------------------------------------------------------------- the owner's side


@router.post("/members/invites", status_code=201)
async def invite_member(
    req: InviteRequest, request: Request, ctx: Ctx, user: OwnerOnly
) -> dict[str, Any]:
    """Invite a member: a one-time code (valid ``valid_hours``) as an address and a QR code."""
    if await ctx.accounts.get_user(req.username) is not None:
        raise ApiError(
            409,
            "user_exists",
            f"There is already an account called “{req.username}”: choose another name.",
        )
    for tok in req.tokens:
        holder = await ctx.accounts.token_owner(tok)
        if holder is not None:
            raise ApiError(
                409,
                "token_taken",
                f"The card or code {mask_token(tok)} belongs to “{holder}” already: take it "
                "from them first.",
            )
    code, expires_at = await ctx.accounts.create_invite(
        req.username, req.tokens, audit_actor(user), req.valid_hours * 3600.0
    )
    url = invite_url(ctx, request, code)
    await ctx.station.audit.record(
        "member_invited",
        audit_actor(user),
        {"username": req.username, "count": len(req.tokens), "expires_at": expires_at},
    )
    return {
        "username": req.username,
        "cards": [mask_token(t) for t in req.tokens],
        "expires_at": expires_at,
        "url": url,
        "qr_svg": qr_svg(url, scale=6),
    }


@router.get("/members/invites")
async def open_invites(ctx: Ctx, user: OwnerOnly) -> list[dict[str, Any]]:
    """Invitations not used yet and not expired, newest first (their codes are not kept)."""
    return [
        {
            "username": r["username"],
            "cards": [mask_token(str(t)) for t in r["tokens"]],
            "created_at": r["created_at"],
            "expires_at": r["expires_at"],
        }
        for r in await ctx.accounts.open_invites()
    ]


@router.delete("/members/invites/{username}")
async def withdraw_invite(username: str, ctx: Ctx, user: OwnerOnly) -> dict[str, bool]:
    """Withdraw the open invitation of ``username``: its code stops working."""
    if not await ctx.accounts.withdraw_invites(username[:64]):
        raise ApiError(404, "unknown_invite", f"There is no open invitation for “{username[:64]}”.")
    await ctx.station.audit.record(
        "member_invite_withdrawn", audit_actor(user), {"username": username[:64]}
    )
    return {"ok": True}


# ---------------------------------------------------------------------- the invited member's side

AcceptLanguage = Annotated[str | None, Header(max_length=200)]


async def _refused(
    ctx: UiContext, request: Request, key: str, err: InviteRefused, lang: str
) -> ApiError:
    ctx.limiter.failed(key)
    log.warning("ui.invite_refused", problem=err.problem, ip=client_ip(request))
    await ctx.station.audit.record(
        "invite_refused", f"ip:{client_ip(request)}", {"problem": err.problem}
    )
    status = 404 if err.problem == "unknown" else 409 if err.problem == "taken" else 410
    text = gettext(lang)(REFUSALS[err.problem]).format(name=err.username)
    return ApiError(status, f"invite_{err.problem}", text)


@router.post("/auth/invite/check", tags=["auth"])
async def check_invite(
    req: InviteCheck, request: Request, ctx: Ctx, accept_language: AcceptLanguage = None
) -> dict[str, Any]:
    """Whose invitation a code is and until when it works (nothing is used up)."""
    lang = language(ctx, req.lang, accept_language)
    key = f"invite:{client_ip(request)}"
    throttle(ctx, key)
    try:
        row = await ctx.accounts.invite(req.code.strip())
    except InviteRefused as err:
        raise await _refused(ctx, request, key, err, lang) from None
    return {
        "username": row.username,
        "expires_at": row.expires_at,
        "cards": len(row.tokens),
        "lang": lang,
    }


@router.post("/auth/invite/accept", tags=["auth"], status_code=201, response_model=UserOut)
async def accept_invite(
    req: InviteAccept,
    request: Request,
    response: Response,
    ctx: Ctx,
    accept_language: AcceptLanguage = None,
) -> UserOut:
    """Use an invitation: choose a password, become the member, and be logged in."""
    lang = language(ctx, req.lang, accept_language)
    _ = gettext(lang)
    key = f"invite:{client_ip(request)}"
    throttle(ctx, key)
    try:
        row = await ctx.accounts.invite(req.code.strip())
    except InviteRefused as err:
        raise await _refused(ctx, request, key, err, lang) from None
    if len(req.password) < MIN_PASSWORD:
        raise ApiError(422, "weak_password", _(TOO_SHORT).format(n=MIN_PASSWORD))
    cfg = ctx.station.cfg.station
    problem = await asyncio.to_thread(weakness, req.password, (row.username, cfg.id, cfg.name))
    if problem:
        # zxcvbn's reasons are English: other languages get the catalogue's sentence.
        raise ApiError(422, "weak_password", problem if lang == i18n.SOURCE else _(TOO_EASY))
    try:
        user, row = await ctx.accounts.accept_invite(req.code.strip(), req.password)
    except InviteRefused as err:
        raise await _refused(ctx, request, key, err, lang) from None
    ctx.limiter.succeeded(key)
    await ctx.station.audit.record(
        "member_joined",
        audit_actor(user),
        {"ip": client_ip(request), "count": len(row.tokens), "invited_by": row.created_by},
    )
    set_login(response, await ctx.accounts.new_session(user), ctx.accounts.session_ttl_s)
    return UserOut(username=user.username, role=user.role)


@router.get("/auth/messages", tags=["auth"])
async def messages(
    ctx: Ctx,
    lang: Annotated[str, Query(max_length=16)] = "",
    accept_language: AcceptLanguage = None,
) -> dict[str, Any]:
    """The owner and member pages' catalogue in ``lang`` (else the browser's or the
    station's language): every English sentence -> its translation."""
    chosen = language(ctx, lang, accept_language)
    return {
        "lang": chosen,
        "languages": [{"code": c, "name": i18n.native_name(c)} for c in i18n.LANGUAGES],
        "messages": i18n.catalogue(chosen, DOMAIN),
    }
