"""HTML pages: the kiosk (public), the owner/installer UI (login), login and first-run setup.

Pages are static files from ``local_ui/static`` (no CDN, no template engine);
their small vanilla JS reads the JSON API and the live WebSocket.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from local_ui.context import (
    Ctx,
    MaybeUser,
)

STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=_NO_STORE)


@router.get("/")
async def root(ctx: Ctx, user: MaybeUser) -> Response:
    if ctx.accounts.setup_code is not None:
        return RedirectResponse("/setup", 303)
    if user is None:
        return RedirectResponse("/login", 303)
    return RedirectResponse("/member" if user.role == "member" else "/owner", 303)


@router.get("/kiosk")
async def kiosk() -> Response:
    return _page("kiosk.html")


@router.get("/login")
async def login_page(ctx: Ctx) -> Response:
    if ctx.accounts.setup_code is not None:
        return RedirectResponse("/setup", 303)
    return _page("login.html")


@router.get("/setup")
async def setup_page(ctx: Ctx) -> Response:
    if ctx.accounts.setup_code is None:
        return RedirectResponse("/login", 303)
    return _page("setup.html")


@router.get("/owner")
async def owner(request: Request, user: MaybeUser) -> Response:
    if user is None:
        return RedirectResponse("/login", 303)
    if user.role == "member":
        return RedirectResponse("/member", 303)
    return _page("owner.html")


@router.get("/member")
async def member(user: MaybeUser) -> Response:
    if user is None:
        return RedirectResponse("/login", 303)
    if user.role != "member":
        return RedirectResponse("/owner", 303)
    return _page("member.html")


@router.get("/invite")
async def invite_page() -> Response:
    """Where an invited member chooses their password (the code is in the address's #)."""
    return _page("invite.html")
