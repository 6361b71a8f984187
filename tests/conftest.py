"""Shared fixtures. Every async test runs its loop in asyncio debug mode, so a blocking call shows up."""

from __future__ import annotations

import asyncio

import pytest


class _DebugLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.set_debug(True)
        # Debug mode logs any callback that holds the loop longer than this.
        loop.slow_callback_duration = 0.25
        return loop


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    return _DebugLoopPolicy()
