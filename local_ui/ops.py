"""Operational endpoints: ``GET /healthz`` and ``GET /metrics``, beside the UI, outside ``/api/v1``.

Both answer without a login: a supervisor, a load balancer or Prometheus must
reach them without a browser session, and they reveal no token, user or
session detail (bay ids, counts, states and timings only). ``/metrics`` can be
closed by setting ``EDGE_STATION_METRICS_TOKEN`` in the service environment
(a drop-in: ``Environment=EDGE_STATION_METRICS_TOKEN=...``); it then wants
``Authorization: Bearer <token>``. ``/healthz`` stays open: it says only
"ok" or why not. Neither is in the OpenAPI schema of the REST API.
"""

from __future__ import annotations

import hmac
import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from controller.ops.health import METRICS_TOKEN_ENV, health
from controller.ops.metrics import collector_for
from local_ui.context import get_ctx

router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    """200 with the station's figures when healthy, 503 with the reasons otherwise (no I/O)."""
    h = health(get_ctx(request).station)
    return JSONResponse(h.body, status_code=200 if h.ok else 503, headers=_NO_STORE)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text exposition format 0.0.4."""
    token = os.environ.get(METRICS_TOKEN_ENV)
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse(
                {"error": "unauthorized", "message": "A bearer token is required."},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", **_NO_STORE},
            )
    body = await collector_for(get_ctx(request).station).render()
    # 0.0.4 rather than the library's newest (1.0.0): every Prometheus version reads it.
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers=_NO_STORE)
