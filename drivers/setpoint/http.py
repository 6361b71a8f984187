"""External limits over HTTP: a small server of its own for the energy manager.

::

    POST /limit/site            {"a": 16} | {"w": 11000} [, "lease_s": 30]
    POST /limit/<bay_id>        the same, for one bay
    POST /grid_operator         {"active": true}
    GET  /limit                 what is in force (JSON)

Every request carries ``Authorization: Bearer <token>`` (``token_file``); a
wrong or missing token is 401, a bad body 422 with a sentence, a refused value
(out of bounds, unknown bay) 422 with the reason. It listens on its own port so
the owner UI's logins and the energy manager's token never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Callable, Generator
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from drivers.setpoint.gate import SetpointGate
from drivers.setpoint.payload import PayloadError, parse_limit, parse_switch

log = structlog.get_logger(__name__)

SOURCE = "http"
MAX_BODY = 1024


def build_app(gate: SetpointGate, token: str) -> Starlette:
    expected = f"Bearer {token}".encode()

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def denied() -> JSONResponse:
        return JSONResponse({"ok": False, "message": "A valid token is required."}, 401)

    async def body(request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise PayloadError("the request body is too large")
        return raw

    async def limit(request: Request) -> JSONResponse:
        if not authorized(request):
            return denied()
        scope = request.path_params["scope"]
        try:
            req = parse_limit(await body(request))
        except PayloadError as exc:
            return JSONResponse({"ok": False, "message": str(exc)}, 422)
        change = gate.offer(
            scope=scope, source=SOURCE, amps=req.amps, watts=req.watts, lease_s=req.lease_s
        )
        if change.kind == "refused":
            return JSONResponse({"ok": False, "message": change.detail}, 422)
        return JSONResponse({"ok": True, "limit_a": change.new_a})

    async def grid_operator(request: Request) -> JSONResponse:
        if not authorized(request):
            return denied()
        try:
            active = parse_switch(await body(request))
        except PayloadError as exc:
            return JSONResponse({"ok": False, "message": str(exc)}, 422)
        gate.grid_operator(SOURCE, active)
        return JSONResponse({"ok": True, "active": active})

    async def state(request: Request) -> JSONResponse:
        if not authorized(request):
            return denied()
        return JSONResponse(gate.limits.status(gate.now()))

    return Starlette(
        routes=[
            Route("/limit", state, methods=["GET"]),
            Route("/limit/{scope}", limit, methods=["POST"]),
            Route("/grid_operator", grid_operator, methods=["POST"]),
        ]
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[Any], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started(self.servers[0].sockets[0])

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The station handles SIGTERM/SIGINT and cancels this service.
        yield


class HttpSetpoints:
    def __init__(self, gate: SetpointGate, *, host: str, port: int, token: str) -> None:
        self.app = build_app(gate, token)
        self._host = host
        self.port = port
        self.ready = asyncio.Event()

    def _started(self, sock: Any) -> None:
        self.port = int(sock.getsockname()[1])
        log.info("external.http_serving", host=self._host, port=self.port)
        self.ready.set()

    async def run(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self._host,
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        server = _Server(config, self._started)
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn exits when it cannot bind: the supervisor retries with backoff.
            raise OSError(f"cannot listen on {self._host}:{self.port}") from exc
        except asyncio.CancelledError:
            if server.started:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await server.shutdown()
            raise
        finally:
            self.ready.clear()
