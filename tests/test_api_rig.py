"""A running station for UI tests: real Station + real Journal + a self-driving fake node hub.

The hub is :class:`tests.support.fake_nodes.FakeHub` in its self-driving mode: its
nodes obey the station's commands (relay, current, lock) and report telemetry on
their own, like the ESP32 firmware would; a test plugs a vehicle in or a device
into a locker with :meth:`FakeHub.plug`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controller.core.auth import Authorizer, local_list_step
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from local_ui.server import create_app
from tests.support.fake_nodes import FakeHub, FakeNode

TOKENS = frozenset({"1234", "5678", "2468"})
PASSWORD = "correct horse battery"


def make_cfg(tmp: Path, **over: Any) -> StationConfig:
    data: dict[str, Any] = {
        "station": {"id": "ui-test", "name": "Test Station", "data_dir": str(tmp)},
        "http": {"host": "127.0.0.1", "port": 0},
        "timers": {"tick_s": 0.1, "lease_s": 3.0, "exit_grace_s": 60},
        "tariff": {"per_kwh": 0.30, "currency": "EUR"},
        "buses": [{"id": "bus1", "port": "/dev/null"}],
        "bays": [
            {"id": "bay1", "connector": 1, "kind": "evse", "bus": "bus1", "address": 1},
            {
                "id": "locker1",
                "connector": 2,
                "kind": "locker",
                "bus": "bus1",
                "address": 2,
                "phases": 1,
                "phase": "L1",
                "max_current_a": 10,
            },
        ],
    }
    data.update(over)
    return parse_config(data)


@dataclass
class Rig:
    station: Station
    hub: FakeHub
    journal: Journal

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for a station update after which ``pred()`` holds (no polling sleeps)."""
        async with self.station.events.subscription(lossy=True) as q, asyncio.timeout(timeout):
            while not pred():
                await q.get()

    def status(self, bay_id: str) -> str:
        return str(self.station.snapshots.bay(self.station.bays[bay_id])["status"])


@contextlib.asynccontextmanager
async def running_station(tmp: Path, **cfg_over: Any) -> AsyncIterator[Rig]:
    cfg = make_cfg(tmp, **cfg_over)
    journal = await Journal.open(tmp / "journal.sqlite3", synchronous="NORMAL")
    hub = FakeHub([FakeNode(b.node_id, b.kind, b.phases) for b in cfg.bays], period_s=0.1)
    station = Station(
        cfg, journal, hubs={"bus1": hub}, authorizer=Authorizer([local_list_step(TOKENS)])
    )
    await station.restore()
    lcfg = load_manager_config(cfg)
    if lcfg is not None:  # as controller.assemble does when station.toml has a [site]
        station.attach_load(lcfg)
    task = asyncio.create_task(station.run())
    rig = Rig(station, hub, journal)
    try:
        await rig.until(lambda: all(rt.state.node_online for rt in station.bays.values()))
        yield rig
    finally:
        station.request_stop("test")
        await asyncio.wait_for(task, 10)
        await journal.close()


async def api_client(station: Station, **app_kw: Any) -> httpx.AsyncClient:
    app = create_app(station, **app_kw)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://station.test"
    )
    await client.get("/api/v1/auth/csrf")
    client.headers["X-CSRF-Token"] = client.cookies["es_csrf"]
    return client


async def setup_owner(client: httpx.AsyncClient, username: str = "owner") -> None:
    ui = client._transport.app.state.ui  # type: ignore[attr-defined]
    await ui.ensure_ready()
    code = ui.accounts.setup_code
    r = await client.post(
        "/api/v1/auth/setup", json={"code": code, "username": username, "password": PASSWORD}
    )
    assert r.status_code == 201, r.text


async def add_user(client: httpx.AsyncClient, username: str, role: str) -> httpx.AsyncClient:
    """Create a user (as the logged-in owner) and return a new client logged in as them."""
    r = await client.post(
        "/api/v1/users", json={"username": username, "password": PASSWORD, "role": role}
    )
    assert r.status_code == 201, r.text
    other = httpx.AsyncClient(transport=client._transport, base_url="http://station.test")
    await other.get("/api/v1/auth/csrf")
    other.headers["X-CSRF-Token"] = other.cookies["es_csrf"]
    r = await other.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return other
