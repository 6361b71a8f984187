"""API: first-run setup, login, logout, own password, CSRF token."""

from __future__ import annotations

import hmac
import secrets

import structlog
from fastapi import APIRouter, Depends, Request, Response

from local_ui.api_bays import ERROR_RESPONSES
from local_ui.context import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AnyUser,
    Ctx,
    MaybeUser,
    UiContext,
    audit_actor,
    check_csrf,
    client_ip,
)
from local_ui.errors import ApiError
from local_ui.passwords import require_strong
from local_ui.schemas import AuthStatus, LoginRequest, PasswordChange, SetupRequest, UserOut

log = structlog.get_logger(__name__)

router = APIRouter(
    prefix="/api/v1/auth",
    tags=["auth"],
    dependencies=[Depends(check_csrf)],
    responses=ERROR_RESPONSES,
)


def set_login(response: Response, sid: str, ttl: float) -> None:
    response.set_cookie(
        SESSION_COOKIE, sid, max_age=int(ttl), httponly=True, samesite="strict", path="/"
    )


def _login_keys(request: Request, username: str) -> tuple[str, str]:
    """Throttle keys of a password attempt: the user name on this client, and this client.

    Never the user name alone: a stranger's guesses must not lock the owner
    out of the hosts they really use.
    """
    ip = client_ip(request)
    return f"user-ip:{username.lower()}|{ip}", f"ip:{ip}"


def throttle(ctx: UiContext, *keys: str) -> None:
    wait = ctx.limiter.retry_after(*keys)
    if wait > 0:
        raise ApiError(
            429,
            "too_many_attempts",
            f"Too many failed attempts. Try again in {int(wait) + 1} s.",
            headers={"Retry-After": str(int(wait) + 1)},
        )


@router.get("/status", response_model=AuthStatus)
async def auth_status(ctx: Ctx, user: MaybeUser) -> AuthStatus:
    """Whether the first-run setup is pending, and who is logged in."""
    return AuthStatus(
        setup_required=ctx.accounts.setup_code is not None,
        user=UserOut(username=user.username, role=user.role) if user else None,
    )


@router.get("/csrf")
async def csrf(request: Request, response: Response) -> dict[str, str]:
    """The double-submit token (also set as the ``es_csrf`` cookie on every page)."""
    token = request.cookies.get(CSRF_COOKIE) or request.scope.get("state", {}).get("csrf_new")
    if not token:
        token = secrets.token_urlsafe(24)
        response.set_cookie(CSRF_COOKIE, token, samesite="strict", path="/")
    return {"csrf_token": token, "header": "X-CSRF-Token"}


@router.post("/setup", response_model=UserOut, status_code=201)
async def setup(req: SetupRequest, request: Request, response: Response, ctx: Ctx) -> UserOut:
    """Create the owner account with the one-time setup code from the station's log."""
    # Per client only: the code has 60 bits, so a shared limit would only let a
    # stranger keep the installer from setting up the station.
    ip_key = f"setup:{client_ip(request)}"
    throttle(ctx, ip_key)
    code = ctx.accounts.setup_code
    if code is None:
        raise ApiError(409, "already_set_up", "The owner account exists already: log in.")
    given = req.code.strip().upper().replace(" ", "")
    if not hmac.compare_digest(given.encode(), code.encode()):
        ctx.limiter.failed(ip_key)
        log.warning("ui.setup_code_wrong", ip=client_ip(request))
        raise ApiError(
            403, "wrong_setup_code", "This setup code is not right (see the station log)."
        )
    ctx.limiter.succeeded(ip_key)
    await require_strong(ctx, req.password, req.username)
    if ctx.accounts.setup_code is None:  # someone else finished meanwhile
        raise ApiError(409, "already_set_up", "The owner account exists already: log in.")
    ctx.accounts.setup_code = None
    user = await ctx.accounts.create_user(req.username, req.password, "owner")
    await ctx.station.audit.record("owner_created", audit_actor(user), {"ip": client_ip(request)})
    set_login(response, await ctx.accounts.new_session(user), ctx.accounts.session_ttl_s)
    return UserOut(username=user.username, role=user.role)


@router.post("/login", response_model=UserOut)
async def login(req: LoginRequest, request: Request, response: Response, ctx: Ctx) -> UserOut:
    """Log in; failed attempts are limited per client, and per user name on a client."""
    keys = _login_keys(request, req.username)
    throttle(ctx, *keys)
    user = await ctx.accounts.verify(req.username, req.password)
    if user is None:
        ctx.limiter.failed(*keys)
        await ctx.station.audit.record(
            "login_failed", f"ip:{client_ip(request)}", {"username": req.username[:64]}
        )
        raise ApiError(401, "wrong_credentials", "Wrong user name or password.")
    # Only this user's count on this client: a login to one's own account must
    # not wipe the count of guesses this client made at other accounts.
    ctx.limiter.succeeded(keys[0])
    await ctx.station.audit.record("login", audit_actor(user), {"ip": client_ip(request)})
    set_login(response, await ctx.accounts.new_session(user), ctx.accounts.session_ttl_s)
    return UserOut(username=user.username, role=user.role)


@router.post("/logout")
async def logout(request: Request, response: Response, ctx: Ctx) -> dict[str, bool]:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        await ctx.accounts.end_session(sid[:200])
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"ok": True}


@router.post("/password")
async def change_password(
    req: PasswordChange,
    request: Request,
    ctx: Ctx,
    user: AnyUser,
) -> dict[str, bool]:
    """Change one's own password; every other login of this user ends (this one stays)."""
    keys = _login_keys(request, user.username)
    throttle(ctx, *keys)
    if await ctx.accounts.verify(user.username, req.current_password) is None:
        ctx.limiter.failed(*keys)
        raise ApiError(403, "wrong_password", "The current password is wrong.")
    await require_strong(ctx, req.new_password, user.username)
    await ctx.accounts.set_password(user.username, req.new_password)
    # After the new password is stored, so a login racing with the change cannot survive it.
    ended = await ctx.accounts.end_other_sessions(
        user.username, request.cookies.get(SESSION_COOKIE)
    )
    await ctx.station.audit.record(
        "password_changed", audit_actor(user), {"ip": client_ip(request), "ended_sessions": ended}
    )
    return {"ok": True}
