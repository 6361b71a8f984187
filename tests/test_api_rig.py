"""A running station for UI tests: real Station + real Journal + a self-driving fake node hub.

:class:`AutoHub` implements :class:`controller.ports.NodeHub`: its nodes obey
the station's commands (relay, current, lock) and report telemetry on their
own, like the ESP32 firmware would; a test plugs a vehicle in or a device
into a locker with :meth:`AutoHub.plug`. Energy runs ``speed`` times faster
than real time; the default is real time, since the station rejects counter
steps above what the bay's power allows (11 kW still gives 3 Wh a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controller.core.auth import Authorizer, local_list_step
from controller.core.config import StationConfig, parse_config
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ports import LinkStats, NodeHello, NodeSink, NodeTelemetry, PilotState
from local_ui.server import create_app

TOKENS = frozenset({"1234", "5678", "2468"})
PASSWORD = "correct horse battery"


@dataclass
class AutoNode:
    node_id: str
    kind: str
    phases: int
    plugged: bool = False
    relay_on: bool = False
    current_a: float = 0.0
    locked: bool | None = None
    door_closed: bool | None = None
    energy_wh: float = 1000.0
    outputs: list[tuple[bool, float]] = field(default_factory=list)
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    link: LinkStats = field(default_factory=lambda: LinkStats(firmware="fake-1.2.3"))

    def __post_init__(self) -> None:
        if self.kind == "locker":
            self.locked, self.door_closed = True, True

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        self.outputs.append((relay_on, current_a))
        self.link.frames_tx += 1
        self.relay_on, self.current_a = relay_on, current_a
        self.kick.set()

    async def set_lock(self, *, locked: bool) -> None:
        self.locked = locked
        self.kick.set()

    def stats(self) -> LinkStats:
        return self.link

    def drawing(self) -> float:
        return self.current_a if self.relay_on and self.plugged else 0.0

    def pilot(self) -> PilotState:
        if self.kind == "locker":
            return PilotState.NONE
        if not self.plugged:
            return PilotState.A
        return PilotState.C if self.drawing() > 0 else PilotState.B


class AutoHub:
    def __init__(
        self, bays: list[tuple[str, str, int]], *, period_s: float = 0.1, speed: float = 1.0
    ):
        self.nodes = {nid: AutoNode(nid, kind, phases) for nid, kind, phases in bays}
        self.period_s = period_s
        self.speed = speed
        self.running = asyncio.Event()
        self.kick = asyncio.Event()
        self.extra_power_w = 0.0

    def node(self, node_id: str) -> AutoNode:
        return self.nodes[node_id]

    def plug(self, node_id: str, plugged: bool = True) -> None:
        self.nodes[node_id].plugged = plugged
        self.kick.set()

    def _frame(self, n: AutoNode, dt: float) -> NodeTelemetry:
        amps = n.drawing()
        currents = (amps, amps if n.phases == 3 else 0.0, amps if n.phases == 3 else 0.0)
        n.energy_wh += sum(currents) * 230.0 * dt / 3600.0 * self.speed
        n.link.frames_rx += 1
        n.link.last_rx_at = time.monotonic()
        return NodeTelemetry(
            node_id=n.node_id,
            at=time.monotonic(),
            current_a=currents,
            voltage_v=(230.0, 230.0, 230.0),
            energy_wh=int(n.energy_wh),
            relay_on=n.relay_on,
            setpoint_a=n.current_a,
            lease_remaining_s=5.0,
            locked=n.locked,
            door_closed=n.door_closed,
            pilot=n.pilot(),
            temperature_c=31.5,
        )

    async def run(self, sink: NodeSink) -> None:
        for n in self.nodes.values():
            sink(NodeHello(n.node_id, time.monotonic(), "fake-1.2.3", 1))
        last = time.monotonic()
        self.running.set()
        while True:
            now = time.monotonic()
            for n in self.nodes.values():
                sink(self._frame(n, now - last))
                n.kick.clear()
            last = now
            self.kick.clear()
            waits = [
                asyncio.ensure_future(e.wait())
                for e in [self.kick, *(n.kick for n in self.nodes.values())]
            ]
            try:
                await asyncio.wait(
                    waits, timeout=self.period_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()


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
    hub: AutoHub
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
    hub = AutoHub([(b.node_id, b.kind, b.phases) for b in cfg.bays])
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
