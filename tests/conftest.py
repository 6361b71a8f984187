"""Shared fixtures. Every async test runs its loop in asyncio debug mode, so a blocking call shows up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest


def _debug_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    # Debug mode logs every callback that holds the loop longer than this.
    loop.slow_callback_duration = 0.25
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    # Benchmarks measure the product, not asyncio's debug instrumentation.
    if "bench" in item.path.parts:
        return {"plain": asyncio.new_event_loop}
    return {"debug": _debug_loop}


@pytest.fixture(autouse=True)
def _cli_leaves_logging_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main()`` called in-process configures structlog for a real run: loggers cached on
    first use and a handler on this test's captured stream. Both outlive the test (the next
    tests' ``capture_logs`` then sees nothing, and writes hit a closed file), so in tests the
    command line keeps the logging it finds. Subprocess runs configure it as in production."""
    import controller.cli.main as cli_main

    monkeypatch.setattr(cli_main, "setup_logging", lambda *a, **k: None)
