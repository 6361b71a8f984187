"""API for the touchscreen (no login): driver actions only.

A driver can present a token at a bay, stop the session their kiosk started
(or stopped: it holds the session's ``key``), and read that session's
receipt. Presenting the same token again at the bay also stops the session,
so a driver who walked away from the screen can still end their own session;
nobody can end someone else's. Tokens never appear in what the kiosk reads.
A receipt opens with the session's key or its receipt key (which the kiosk's live stream
carries with the session: see :meth:`local_ui.context.UiContext.receipt_key`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from controller.core.bay import StopReason
from controller.core.outcome import UnknownSession
from local_ui import i18n
from local_ui import kiosk_receipt as receipts
from local_ui.accounts import LoginLimiter
from local_ui.actions import bay_or_404, check_mode, present_token
from local_ui.api_bays import ERROR_RESPONSES
from local_ui.charts import qr_svg
from local_ui.context import (
    Ctx,
    UiContext,
    check_csrf,
    client_ip,
)
from local_ui.errors import ApiError
from local_ui.schemas import KioskModeRequest, KioskOutcome, KioskStopRequest, TokenRequest
from local_ui.views import bay_view, receipt, station_view

router = APIRouter(
    prefix="/api/v1/kiosk",
    tags=["kiosk"],
    dependencies=[Depends(check_csrf)],
    responses=ERROR_RESPONSES,
)

Lang = Annotated[str, Query(max_length=16, pattern=r"^[A-Za-z_-]*$")]

# Typing codes at random is slowed down, but a kiosk shared by all drivers is not locked out.
_codes = LoginLimiter(free_attempts=10, max_delay_s=60.0)


def _out(ctx: UiContext, out: Any) -> KioskOutcome:
    return KioskOutcome(
        ok=out.ok,
        code=out.code,
        message=out.message,
        session_id=out.session_id,
        data=dict(out.data),
        key=ctx.session_key(out.session_id) if out.session_id else None,
    )


@router.get("/state")
async def kiosk_state(ctx: Ctx) -> dict[str, Any]:
    """Everything the idle screen shows: station status, every bay, the kiosk settings."""
    st = station_view(ctx.station)
    st.pop("load", None)
    return {
        "station": st,
        "bays": [
            ctx.kiosk_bay(bay_view(ctx.station, rt, public=True))
            for rt in ctx.station.bays.values()
        ],
        "kiosk": ctx.settings.kiosk.model_dump(mode="json"),
    }


@router.get("/setup")
async def kiosk_setup(ctx: Ctx, lang: Lang = "") -> dict[str, Any]:
    """What the kiosk needs to speak ``lang`` (else the station's language): its catalogue,
    the languages on offer, and the station's own words (names, contact, opening hours)."""
    cfg = ctx.station.cfg
    default = i18n.pick(cfg.station.language)
    chosen = i18n.pick(lang, default)
    return {
        "lang": chosen,
        "default_language": default,
        "languages": [{"code": c, "name": i18n.native_name(c)} for c in i18n.LANGUAGES],
        "messages": i18n.catalogue(chosen),
        "station": {
            "name": cfg.station.name,
            "contact": cfg.station.contact,
            "opening_hours": cfg.station.opening_hours,
        },
        "bay_names": {b.id: b.name for b in cfg.bays if b.name},
    }


@router.post("/bays/{bay_id}/token", response_model=KioskOutcome)
async def kiosk_token(bay_id: str, req: TokenRequest, request: Request, ctx: Ctx) -> KioskOutcome:
    """Present a code (typed or scanned) at a bay: start, or stop this code's own session."""
    key = f"kiosk:{client_ip(request)}"
    wait = _codes.retry_after(key)
    if wait > 0:
        raise ApiError(
            429,
            "too_many_attempts",
            f"Too many wrong codes. Try again in {int(wait) + 1} s.",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    try:
        out = await present_token(ctx.station, bay_id, req, source="kiosk")
    except ApiError as err:
        if err.code == "not_authorized":
            _codes.failed(key)
        raise
    _codes.succeeded(key)
    return _out(ctx, out)


def _own_running_session(ctx: UiContext, bay_id: str, req: KioskStopRequest, verb: str) -> None:
    """The session named by ``req`` runs on this bay and this kiosk started it (its key)."""
    bay_or_404(ctx.station, bay_id)
    if not ctx.check_session_key(req.session_id, req.key):
        raise ApiError(403, "not_your_session", f"Scan or type your code to {verb} this session.")
    sess = ctx.station.bays[bay_id].state.session
    if sess is not None and sess.session_id == req.session_id:
        return
    if verb == "stop" and req.session_id in ctx.station.backlog.closing():
        return  # stopped but not yet recorded: asking again asks the station to record it
    raise ApiError(409, "not_running", "This session has already ended.")


@router.post("/bays/{bay_id}/stop", response_model=KioskOutcome)
async def kiosk_stop(bay_id: str, req: KioskStopRequest, ctx: Ctx) -> KioskOutcome:
    """Stop the session this kiosk started on the bay (proved by its key)."""
    _own_running_session(ctx, bay_id, req, "stop")
    try:
        out = await ctx.station.commands.stop_session(
            req.session_id, StopReason.LOCAL, actor="kiosk"
        )
    except UnknownSession:
        raise ApiError(404, "unknown_session", "There is no such session.") from None
    if not out.ok:
        raise ApiError(409, out.code, out.message)
    return _out(ctx, out)


@router.post("/bays/{bay_id}/focus")
async def kiosk_focus(bay_id: str, ctx: Ctx) -> dict[str, Any]:
    """The screen shows this bay: a code the camera sees in the next minute is meant for it."""
    bay_or_404(ctx.station, bay_id)
    ctx.station.commands.focus_bay(bay_id, 60.0)
    return {"ok": True, "bay_id": bay_id}


@router.post("/bays/{bay_id}/mode", response_model=KioskOutcome)
async def kiosk_mode(bay_id: str, req: KioskModeRequest, ctx: Ctx) -> KioskOutcome:
    """Switch the mode of the session this kiosk started (applied by the load manager within 3 s)."""
    _own_running_session(ctx, bay_id, req, "change")
    check_mode(ctx.station, req.mode, req.boost_confirmed)
    try:
        out = await ctx.station.commands.set_mode(req.session_id, req.mode, actor="kiosk")
    except UnknownSession:
        raise ApiError(404, "unknown_session", "There is no such session.") from None
    if not out.ok:
        raise ApiError(409, out.code, out.message)
    return _out(ctx, out)


Key = Annotated[str, Query(min_length=1, max_length=64)]


async def _receipt(ctx: UiContext, session_id: str, key: str, lang: str) -> dict[str, Any]:
    if len(session_id) > 64 or not ctx.check_receipt_key(session_id, key):
        raise ApiError(404, "unknown_session", "There is no such receipt.")
    row = await ctx.station.journal.session(session_id)
    if row is None:
        raise ApiError(404, "unknown_session", "There is no such receipt.")
    r = receipt(ctx.station, row)
    try:
        tariff = json.loads(row.get("tariff") or "null") or {}
    except ValueError:
        tariff = {}
    if not isinstance(tariff, dict) or "per_kwh" not in tariff:
        tariff = ctx.station.cfg.tariff.model_dump(mode="json")
    lang = i18n.pick(lang, i18n.pick(ctx.station.cfg.station.language))
    r["lang"] = lang
    r["tariff"] = tariff
    r["text"] = receipts.texts(ctx.station, r, tariff, lang)
    return r


@router.get("/sessions/{session_id}/receipt")
async def kiosk_receipt(session_id: str, key: Key, ctx: Ctx, lang: Lang = "") -> dict[str, Any]:
    """The receipt of a session in ``lang``: figures, their text, and a QR code: a link to
    the receipt's page when the station has a ``public_url``, else the receipt as text."""
    r = await _receipt(ctx, session_id, key, lang)
    public = ctx.station.cfg.http.public_url
    url = receipts.page_url(public, session_id, key, r["lang"]) if public else None
    r["qr_url"] = url
    r["qr_svg"] = qr_svg(url or receipts.qr_text(r, r["text"], r["lang"]), scale=4)
    return r


# A page for people (like the pages in pages.py), not part of the JSON API's schema.
@router.get(
    "/sessions/{session_id}/receipt.html", response_class=HTMLResponse, include_in_schema=False
)
async def kiosk_receipt_page(session_id: str, key: Key, ctx: Ctx, lang: Lang = "") -> Response:
    """The receipt as a page a driver keeps on their phone (the receipt QR's link)."""
    r = await _receipt(ctx, session_id, key, lang)
    return HTMLResponse(
        receipts.page(r, r["text"], r["lang"]), headers={"Cache-Control": "no-store"}
    )


@router.get("/bays/{bay_id}/qr.svg", response_class=Response)
async def bay_qr(bay_id: str, request: Request, ctx: Ctx) -> Response:
    """A QR code linking to the bay's page on this station (generated locally), at the
    station's public address when it has one (a phone cannot open the kiosk's loopback)."""
    bay_or_404(ctx.station, bay_id)
    base = ctx.station.cfg.http.public_url or str(request.base_url).rstrip("/")
    url = base + f"/kiosk?bay={bay_id}"
    return Response(
        qr_svg(url, scale=5),
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=3600"},
    )
