"""Logging: structlog, JSON lines under systemd (or when asked), readable in a terminal.

Every line about a session carries ``session_id`` and ``bay_id`` (the station
binds both); library loggers go through the same renderer.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from controller.ops.diagnostics_logs import RING


def _want_json() -> bool:
    fmt = os.environ.get("EDGE_STATION_LOG_FORMAT", "").lower()
    if fmt in ("json", "console"):
        return fmt == "json"
    # systemd sets INVOCATION_ID / JOURNAL_STREAM for its services.
    if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"):
        return True
    return not sys.stderr.isatty()


def setup_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    use_json = _want_json() if json_lines is None else json_lines
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    # The last lines, as JSON, for a diagnostics bundle (controller.ops.diagnostics).
    RING.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler, RING]
    root.setLevel(level.upper())
    for noisy in ("aiosqlite", "websockets", "uvicorn.access", "pymodbus", "asyncio", "ocpp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _identity(_: Any, __: str, event: Any) -> Any:
    return event
