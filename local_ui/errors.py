"""Errors of the local UI: every failure answers JSON ``{"error": code, "message": text}``.

Routes raise :class:`ApiError`; the handlers here also turn FastAPI's
validation errors, Starlette's 404/405 and any unexpected exception into the
same shape, so a client (or a fuzzer) never sees an HTML error page or a
stack trace.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from local_ui.messages import validation_message

log = structlog.get_logger(__name__)

_CODES = {
    400: "bad_request",
    401: "login_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_attempts",
    500: "internal",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    message: str


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Each error with where it is (for a client to mark the field) and a sentence for people."""
    details = []
    for e in exc.errors()[:20]:
        loc = [str(p) for p in e.get("loc", ())]
        details.append({"loc": loc, "msg": validation_message(e), "type": str(e.get("type", ""))})
    return details


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        message = details[0]["msg"] if details else "The station could not read the form."
        log.info("ui.invalid_request", path=request.url.path, details=details)
        return error_response(422, "invalid_request", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 400 and not message.endswith("."):
            message = "The request body could not be read."  # FastAPI's wording has no period
        elif exc.status_code == 404 and message == "Not Found":
            message = "There is nothing at this address on the station."
        elif exc.status_code == 405:
            message = "This address does not take that kind of request."
        return error_response(exc.status_code, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("ui.unhandled", path=request.url.path, method=request.method)
        return error_response(500, "internal", "The station could not handle this request.")
