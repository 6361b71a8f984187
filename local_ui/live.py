"""Live updates over WebSocket: ``/api/v1/live`` (logged in) and ``/api/v1/kiosk/live`` (public).

On connect the page gets a full ``snapshot``; then a message for every station
event it shows (``bay``, ``station``, ``notice``, ``scan``, ``bookings``, ``settings``,
``test_ended``; see :func:`local_ui.views.ui_message`) as it happens, a ``load``
message when the load manager's figures change, and a ``tick`` every few
seconds (the station's clock and when each bay was last measured) so a page
notices a dead link and can tell an unchanged figure from a stale one. The kiosk's stream carries no tokens
and no load figures; each session it shows, and each stop by a code the camera saw, comes with
the session's receipt key (it opens that receipt, nothing else), so a kiosk shows the receipt
however the session ended, whoever started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.core.events import Event
from local_ui.context import READ, SESSION_COOKIE, UiContext
from local_ui.views import UI_EVENTS, bay_view, load_view, station_view, ui_message

router = APIRouter()
KIOSK_SECTIONS = ("kiosk", "tariff", "names")
"""Settings sections whose values the kiosk's stream carries (the kiosk shows them)."""
TICK_S = 5.0


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if not origin:
        return True  # not a browser: cookies and CSRF are the browser's problem
    host = ws.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def _bay(ctx: UiContext, view: dict[str, Any], public: bool) -> dict[str, Any]:
    return ctx.kiosk_bay(view) if public else view


def snapshot(ctx: UiContext, public: bool) -> dict[str, Any]:
    st = station_view(ctx.station)
    if public:
        st.pop("load", None)
    return {
        "type": "snapshot",
        "station": st,
        "bays": [
            _bay(ctx, bay_view(ctx.station, rt, public=public), public)
            for rt in ctx.station.bays.values()
        ],
        "kiosk": ctx.settings.kiosk.model_dump(mode="json"),
    }


def _message(ctx: UiContext, event: Event, public: bool) -> dict[str, Any] | None:
    msg = ui_message(ctx.station, event, public)
    if msg is None or not public:
        return msg
    if msg["type"] == "station":
        msg["station"].pop("load", None)
    elif msg["type"] == "bay":
        ctx.kiosk_bay(msg["bay"])
    elif msg["type"] == "scan" and msg["ok"] and msg["code"] == "stopped" and msg["session_id"]:
        # Stopped by a code the camera saw: the kiosk shows its receipt (whoever started it).
        msg["receipt_key"] = ctx.receipt_key(msg["session_id"])
    elif msg["type"] == "settings" and msg["section"] not in KIOSK_SECTIONS:
        return {"type": "settings", "section": msg["section"]}
    return msg


def _tick(ctx: UiContext) -> dict[str, Any]:
    # A bay whose figures do not change publishes nothing, so the tick also says
    # when each bay was last measured: the page can tell "unchanged" from "silent".
    st = ctx.station
    measured = {b: st.snapshots.bay(rt)["measured_at"] for b, rt in st.bays.items()}
    return {"type": "tick", "now": st.clock.wall(), "measured_at": measured}


async def _stream(ws: WebSocket, ctx: UiContext, public: bool) -> None:
    # Lossy: a page that cannot keep up loses old events, and the next message catches up.
    async with ctx.station.events.subscription(lossy=True, kinds=UI_EVENTS) as q:
        await ws.send_json(snapshot(ctx, public))

        async def sender() -> None:
            last_load = load_view(ctx.station) if not public else None
            last_tick = time.monotonic()
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        msg = await q.get()
                except TimeoutError:
                    if not public:
                        load = load_view(ctx.station)
                        if load != last_load:
                            last_load = load
                            await ws.send_json({"type": "load", "load": load})
                    if time.monotonic() - last_tick >= TICK_S:
                        last_tick = time.monotonic()
                        await ws.send_json(_tick(ctx))
                    continue
                out = _message(ctx, msg, public)
                if out is not None:
                    await ws.send_json(out)

        async def receiver() -> None:
            while True:
                m = await ws.receive()
                if m["type"] == "websocket.disconnect":
                    return

        tasks = [asyncio.create_task(sender()), asyncio.create_task(receiver())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await t


@router.websocket("/api/v1/live")
async def live(ws: WebSocket) -> None:
    ctx: UiContext = ws.app.state.ui
    await ctx.ensure_ready()
    sid = ws.cookies.get(SESSION_COOKIE)
    user = await ctx.accounts.session_user(sid[:200]) if sid else None
    # A member sees only their own sessions: not this stream of every bay's.
    if user is None or not _same_origin(ws) or user.role not in READ:
        await ws.close(code=4401 if user is None else 4403)
        return
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await _stream(ws, ctx, public=False)


@router.websocket("/api/v1/kiosk/live")
async def kiosk_live(ws: WebSocket) -> None:
    ctx: UiContext = ws.app.state.ui
    await ctx.ensure_ready()
    if not _same_origin(ws):
        await ws.close(code=4403)
        return
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await _stream(ws, ctx, public=True)
