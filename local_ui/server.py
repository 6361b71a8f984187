"""The local UI's composition: the FastAPI app and the service that serves it with uvicorn.

``build(station)`` is registered as the ``http`` entry point of
``edge_station.services``; the station runs the coroutine it returns in its
TaskGroup and cancels it on shutdown. Uvicorn installs no signal handlers
here (the station owns SIGTERM), cancellation closes the listening socket and
the open connections, and a port that cannot be bound is retried with
backoff: charging never depends on the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.station import Station
from local_ui import api_admin, api_auth, api_bays, api_kiosk, api_sessions, errors, live, pages
from local_ui import ops as ops_routes
from local_ui.accounts import Accounts
from local_ui.context import CSRF_COOKIE, UiContext
from local_ui.settings import SettingsRegistry, default_registry

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class UiMiddleware:
    """Security headers, the CSRF cookie for new clients, and a request body size limit."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = 0
        cookie = b""
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = int(v) if v.isdigit() else self.max_body + 1
            elif k == b"cookie":
                cookie += v + b";"
        if length > self.max_body:
            body = json.dumps({"error": "too_large", "message": "Request body too large."}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        new_token = None
        if f"{CSRF_COOKIE}=".encode() not in cookie:
            new_token = secrets.token_urlsafe(24)
            scope.setdefault("state", {})["csrf_new"] = new_token

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                if new_token:
                    headers.append(
                        (
                            b"set-cookie",
                            f"{CSRF_COOKIE}={new_token}; Path=/; SameSite=Strict".encode(),
                        )
                    )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    station: Station,
    *,
    extra_routers: Iterable[APIRouter] = (),
    settings: SettingsRegistry | None = None,
    accounts: Accounts | None = None,
) -> FastAPI:
    """The app; ``extra_routers`` lets ``simulate`` mount demo routes beside the real ones."""
    app = FastAPI(
        title="edge-station local API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        description="Bays, sessions, holds, settings and diagnostics of one charging station. "
        "Log in with POST /api/v1/auth/login (cookie session); every state-changing request "
        "must echo the es_csrf cookie in the X-CSRF-Token header.",
    )
    app.state.ui = UiContext(
        station=station,
        accounts=accounts or Accounts(station.journal),
        settings=settings or default_registry(),
    )
    errors.install(app)
    for r in (
        api_auth.router,
        api_bays.router,
        api_sessions.router,
        api_admin.router,
        api_kiosk.router,
        live.router,
        pages.router,
        ops_routes.router,
        *extra_routers,
    ):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.add_middleware(UiMiddleware)
    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The station handles SIGTERM/SIGINT and cancels this service.
        yield


async def serve_app(app: FastAPI, host: str, port: int, *, retry_s: float = 30.0) -> None:
    """Serve until cancelled; a port that cannot be bound is retried with capped backoff."""
    ctx: UiContext = app.state.ui
    await ctx.ensure_ready(announce=f"http://{host}:{port}")
    delay = 1.0
    while True:
        server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                lifespan="off",
                access_log=False,
                ws="websockets-sansio",
                timeout_graceful_shutdown=2,
                server_header=False,
            )
        )
        try:
            await server.serve()
        except SystemExit:
            # uvicorn exits when it cannot bind; the station must keep running.
            log.error("ui.bind_failed", host=host, port=port, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(retry_s, delay * 2)
            continue
        except asyncio.CancelledError:
            if server.started:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await server.shutdown()
            raise
        return


def build(station: Station) -> Callable[[], Coroutine[Any, Any, None]]:
    """The ``http`` service: serves the local UI on ``station.cfg.http`` until cancelled."""
    app = create_app(station)

    async def run() -> None:
        await serve_app(app, station.cfg.http.host, station.cfg.http.port)

    return run
