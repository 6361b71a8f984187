"""Browser tests: a real station + uvicorn on a free port, driven by headless Debian Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

from local_ui.server import create_app, serve_app
from tests.test_api_rig import Rig, running_station

# Debian ships /usr/bin/chromium; Raspberry Pi OS images may only have chromium-browser.
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
    "/usr/bin/chromium",
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    rig: Rig
    app: FastAPI
    base: str

    @property
    def setup_code(self) -> str:
        code = self.app.state.ui.accounts.setup_code
        assert code
        return str(code)


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http, asyncio.timeout(10):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/api/v1/kiosk/state")).status_code == 200:
                    return
            await asyncio.sleep(0.05)  # the socket has no event to await before it listens


@contextlib.asynccontextmanager
async def live_server(tmp: Path, **cfg_over: Any) -> AsyncIterator[Live]:
    async with running_station(tmp, **cfg_over) as rig:
        port = free_port()
        app = create_app(rig.station)
        task = asyncio.create_task(serve_app(app, "127.0.0.1", port))
        try:
            await _wait_up(f"http://127.0.0.1:{port}")
            yield Live(rig, app, f"http://127.0.0.1:{port}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_server(tmp_path) as lv:
        yield lv


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
