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
