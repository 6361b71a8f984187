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
import socket
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.core.station import Station
from local_ui import (
    api_admin,
    api_auth,
    api_bays,
    api_diagnostics,
    api_invites,
    api_kiosk,
    api_members,
    api_sessions,
    api_usage,
    errors,
    live,
    pages,
)
from local_ui import ops as ops_routes
from local_ui.accounts import Accounts
from local_ui.connections import (
    DEFAULT_LIMITS,
    ConnectionGate,
    ConnectionLimits,
    protocols,
    widen_listen_queue,
)
from local_ui.context import CSRF_COOKIE, UiContext
from local_ui.load_settings import add_load_sections
from local_ui.name_settings import add_name_section
from local_ui.reports_api import router as reports_router
from local_ui.settings import SettingsRegistry, add_station_sections
from local_ui.store import UiStore

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
TOO_LARGE = "The request is too large: the station accepts at most {kib} KiB."
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


def _log_too_large(scope: Scope, size: int) -> None:
    client = scope.get("client")
    log.warning(
        "ui.body_too_large",
        client=client[0] if client else None,
        method=scope.get("method"),
        path=scope.get("path"),
        bytes_seen=size,
        note="answered 413 and closed the connection",
    )


class UiMiddleware:
    """Security headers, the CSRF cookie for new clients, and a request body size limit.

    The limit counts the bytes as they arrive, whatever the transfer encoding:
    a declared Content-Length above it is refused before anything is read, and
    a chunked body is cut off (413, connection closed) at the first chunk past it.
    """

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body
        self.too_large = TOO_LARGE.format(kib=max_body // 1024)

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
            _log_too_large(scope, length)
            body = json.dumps({"error": "too_large", "message": self.too_large}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # FastAPI passes its own HTTPException through body parsing (any other
                    # error there becomes a 400); "close" stops uvicorn reading the rest.
                    _log_too_large(scope, received)
                    raise HTTPException(413, self.too_large, headers={"connection": "close"})
            return message

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

        await self.app(scope, limited_receive, send_with_headers)


def default_registry() -> SettingsRegistry:
    """Every settings section: the station's (tariff, touchscreen, names), then the load
    manager's."""
    reg = SettingsRegistry()
    add_station_sections(reg)
    add_name_section(reg)
    add_load_sections(reg)
    return reg


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
        accounts=accounts or Accounts(UiStore(station.journal)),  # the UI's tables: its store
        settings=settings or default_registry(),
    )
    errors.install(app)
    for r in (
        api_auth.router,
        api_bays.router,
        api_sessions.router,
        reports_router,
        api_admin.router,
        api_diagnostics.router,
        api_members.router,
        api_invites.router,
        api_usage.router,
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
    listen_queue = DEFAULT_LIMITS.listen_queue

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            widen_listen_queue(self.servers, self.listen_queue)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The station handles SIGTERM/SIGINT and cancels this service.
        yield


async def serve_app(
    app: FastAPI,
    host: str,
    port: int,
    *,
    retry_s: float = 30.0,
    limits: ConnectionLimits = DEFAULT_LIMITS,
    gate: ConnectionGate | None = None,
) -> None:
    """Serve until cancelled; a port that cannot be bound is retried with capped backoff.

    Connections go through a :class:`ConnectionGate` (caps per client and in
    total, deadlines for request heads and bodies, see ``connections.py``).
    """
    ctx: UiContext = app.state.ui
    await ctx.ensure_ready(announce=f"http://{host}:{port}")
    gate = gate or ConnectionGate(limits)
    http_protocol, ws_protocol = protocols(gate)
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
                http=http_protocol,
                ws=ws_protocol,
                backlog=gate.limits.backlog,
                timeout_keep_alive=gate.limits.keep_alive_s,
                h11_max_incomplete_event_size=16 * 1024,
                # A backstop only: the gate never lets more connections in than this.
                limit_concurrency=gate.limits.max_connections + gate.limits.kiosk_pool + 1,
                timeout_graceful_shutdown=2,
                server_header=False,
            )
        )
        server.listen_queue = gate.limits.listen_queue
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
