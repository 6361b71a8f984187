"""Kiosk API (driver actions only), live WebSocket, and the uvicorn service's life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from controller.ports import NodeLink, PilotState
from local_ui import live as live_module
from local_ui.server import create_app, serve_app
from tests.test_api_rig import api_client, running_station, setup_owner
from tests.test_station import running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def connect_live(port: int) -> Any:
    """The kiosk's live stream on ``port``, once the server there listens."""
    async with asyncio.timeout(10):
        while True:
            try:
                return await websockets.connect(f"ws://127.0.0.1:{port}/api/v1/kiosk/live")
            except OSError:
                await asyncio.sleep(0.05)  # the socket has no event to await


async def test_kiosk_driver_flow_locker(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        state = (await kiosk.get("/api/v1/kiosk/state")).json()
        assert {b["id"] for b in state["bays"]} == {"bay1", "locker1"}
        assert state["kiosk"]["idle_timeout_s"] == 60
        r = await kiosk.post("/api/v1/kiosk/bays/locker1/token", json={"token": "1234"})
        assert r.status_code == 200, r.text
        out = r.json()
        sid, key = out["session_id"], out["key"]
        assert key and out["code"] == "started"
        await rig.until(lambda: rig.hub.nodes["locker1"].locked is False)
        rig.hub.plug("locker1")  # the e-bike is plugged into the outlet
        await rig.until(lambda: rig.status("locker1") == "Charging")
        state = (await kiosk.get("/api/v1/kiosk/state")).json()
        sess = next(b for b in state["bays"] if b["id"] == "locker1")["session"]
        assert sess["id"] == sid and "token" not in sess  # the kiosk never sees tokens
        # Nobody else can stop it: a wrong key, a wrong bay, or someone else's code.
        r = await kiosk.post(
            "/api/v1/kiosk/bays/locker1/stop", json={"session_id": sid, "key": "0" * 32}
        )
        assert r.status_code == 403 and r.json()["error"] == "not_your_session"
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/stop", json={"session_id": sid, "key": key})
        assert r.status_code == 409
        r = await kiosk.post("/api/v1/kiosk/bays/locker1/token", json={"token": "5678"})
        assert r.status_code == 409 and r.json()["error"] == "bay_in_use"
        r = await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": "bad"})
        assert r.status_code == 404
        r = await kiosk.post(
            "/api/v1/kiosk/bays/locker1/stop", json={"session_id": sid, "key": key}
        )
        assert r.status_code == 200 and r.json()["code"] == "stopped"
        rc = (await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key})).json()
        assert rc["state"] == "closed" and rc["kind"] == "locker" and rc["exit_grace_s"] == 60
        assert rc["qr_svg"].startswith("<svg") and rc["cost"] is not None
        assert rig.status("locker1") == "Finishing"  # exit grace: door open to take the bike
        qr = await kiosk.get("/api/v1/kiosk/bays/locker1/qr.svg")
        assert qr.headers["content-type"].startswith("image/svg+xml")
        # The kiosk cannot reach owner functions.
        assert (await kiosk.get("/api/v1/sessions")).status_code == 401


async def test_kiosk_same_code_stops_own_session(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/token", json={"token": "2468", "mode": "eco"})
        assert r.status_code == 200
        r = await kiosk.post(
            "/api/v1/kiosk/bays/bay1/token", json={"token": "2468", "mode": "boost"}
        )
        assert r.status_code == 200 and r.json()["code"] == "stopped" and r.json()["key"]


async def test_kiosk_wrong_codes_are_slowed_down(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        codes = []
        for i in range(12):
            r = await kiosk.post("/api/v1/kiosk/bays/bay1/token", json={"token": f"00{i}"})
            codes.append(r.status_code)
        assert codes[:10] == [409] * 10 and codes[-1] == 429


async def _ws_messages(url: str, cookie: str | None = None) -> Any:
    headers = {"Cookie": cookie} if cookie else None
    return websockets.connect(url, additional_headers=headers, open_timeout=5)


async def test_live_websocket_and_service_lifecycle(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        port = free_port()
        app = create_app(rig.station)
        server = asyncio.create_task(serve_app(app, "127.0.0.1", port))
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as http:
                async with asyncio.timeout(5):
                    while True:
                        with contextlib.suppress(httpx.ConnectError):
                            if (await http.get("/api/v1/kiosk/state")).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
                # The owner's stream needs a login.
                with contextlib.suppress(websockets.InvalidStatus, websockets.ConnectionClosed):
                    async with websockets.connect(f"ws://127.0.0.1:{port}/api/v1/live") as ws:
                        await ws.recv()
                        raise AssertionError("owner stream without login")
                http.headers["X-CSRF-Token"] = (await http.get("/api/v1/auth/csrf")).json()[
                    "csrf_token"
                ]
                code = app.state.ui.accounts.setup_code
                r = await http.post(
                    "/api/v1/auth/setup",
                    json={"code": code, "username": "o", "password": "correct horse battery"},
                )
                assert r.status_code == 201
                cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
                async with (
                    websockets.connect(
                        f"ws://127.0.0.1:{port}/api/v1/live", additional_headers={"Cookie": cookie}
                    ) as ws,
                    websockets.connect(f"ws://127.0.0.1:{port}/api/v1/kiosk/live") as kws,
                ):
                    snap = json.loads(await ws.recv())
                    assert snap["type"] == "snapshot" and len(snap["bays"]) == 2
                    assert json.loads(await kws.recv())["type"] == "snapshot"
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    r = await http.post("/api/v1/bays/bay1/token", json={"token": "1234"})
                    assert r.status_code == 200
                    for sock, public in ((ws, False), (kws, True)):
                        async with asyncio.timeout(1.0):  # within 1 s of the change
                            while True:
                                msg = json.loads(await sock.recv())
                                if msg["type"] == "bay" and msg["bay"]["session"]:
                                    break
                        assert ("token" in msg["bay"]["session"]) is not public
                    assert loop.time() - t0 < 1.0
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 5)
        assert server.cancelled()
        with socket.socket() as s:  # nothing listens any more after cancellation
            assert s.connect_ex(("127.0.0.1", port)) != 0


async def test_service_retries_when_port_is_taken(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            app = create_app(rig.station)
            task = asyncio.create_task(serve_app(app, "127.0.0.1", port, retry_s=0.2))
            done, _ = await asyncio.wait([task], timeout=1.5)
            assert not done, "the service must keep retrying, not exit the station"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_extra_routers_are_mounted(tmp_path: Path) -> None:
    from fastapi import APIRouter

    demo = APIRouter()

    @demo.get("/demo/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station, extra_routers=[demo])
        assert (await client.get("/demo/ping")).json() == {"pong": "yes"}
        await setup_owner(client)


async def test_kiosk_mode_switch_needs_the_session_key_and_boost_confirmation(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        started = (await kiosk.post("/api/v1/kiosk/bays/bay1/token", json={"token": "5678"})).json()
        assert started.get("key"), started
        sid, key = started["session_id"], started["key"]
        url = "/api/v1/kiosk/bays/bay1/mode"
        wrong = await kiosk.post(url, json={"session_id": sid, "key": "x" * 32, "mode": "eco"})
        assert wrong.status_code == 403
        boost = await kiosk.post(url, json={"session_id": sid, "key": key, "mode": "boost"})
        assert boost.status_code == 409 and boost.json()["error"] == "confirm_boost"
        eco = await kiosk.post(url, json={"session_id": sid, "key": key, "mode": "eco"})
        assert eco.status_code == 200, eco.text
        row = await rig.station.journal.session(sid)
        assert row is not None and row["mode"] == "eco"


async def test_kiosk_focus_sends_camera_codes_to_the_bay_on_screen(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        nobody = await rig.station.commands.code_scanned("5678", camera="cam")
        assert (nobody.ok, nobody.code) == (False, "choose_bay")
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/focus", json={})
        assert r.status_code == 200
        assert (await kiosk.post("/api/v1/kiosk/bays/nope/focus", json={})).status_code == 404
        out = await rig.station.commands.code_scanned("5678", camera="cam")
        assert out.ok and out.code == "started"
        assert rig.station.bays["bay1"].state.session is not None


async def test_kiosk_figures_carry_their_age_and_an_offline_node_has_none(tmp_path: Path) -> None:
    """Every figure says when it was measured; a silent node's last kW/A are not passed off as live."""
    async with running(tmp_path) as rig:
        hub, st = rig.hub, rig.station
        kiosk = await api_client(st)
        hub.telemetry("b1", energy_wh=1000, pilot=PilotState.B)
        await rig.status("b1", "Available")
        out = await st.commands.present_token("b1", "CARD-1")
        assert out.ok
        hub.telemetry("b1", current_a=16, energy_wh=1010, relay_on=True, pilot=PilotState.C)
        await rig.status("b1", "Charging")

        async def bay() -> dict[str, Any]:
            state = (await kiosk.get("/api/v1/kiosk/state")).json()
            return next(b for b in state["bays"] if b["id"] == "b1")

        live = await bay()
        assert live["power_w"] == pytest.approx(3 * 16 * 230.0)
        assert live["current_a"] == [16.0, 16.0, 16.0] and live["relay_on"] is True
        assert 0.0 <= live["measured_age_s"] < 5.0  # fresh: seconds, not the minutes of a stale one
        assert live["at"] - live["measured_at"] == pytest.approx(live["measured_age_s"], abs=0.01)
        measured_at = live["measured_at"]

        hub.emit(NodeLink("b1", time.monotonic(), online=False, reason="heartbeat timeout"))
        await rig.until("b1", lambda s: s["node_online"] is False)
        gone = await bay()
        # Unknown, not the last telemetry's 11 kW and 16 A.
        assert gone["power_w"] is None and gone["current_a"] is None and gone["relay_on"] is None
        assert gone["measured_at"] == pytest.approx(measured_at, abs=0.01)  # when it last spoke
        assert gone["measured_age_s"] >= live["measured_age_s"]
        assert gone["session"]["energy_wh"] == 10  # as of measured_at

        hub.telemetry("b1", current_a=16, energy_wh=1020, relay_on=True, pilot=PilotState.C)
        back = await rig.until("b1", lambda s: s["node_online"] is True)
        assert back["power_w"] == pytest.approx(3 * 16 * 230.0)
        assert back["measured_at"] > measured_at


async def test_kiosk_tick_carries_when_each_bay_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bay whose figures do not change publishes nothing; the tick still tells their age."""
    monkeypatch.setattr(live_module, "TICK_S", 0.2)
    async with running_station(tmp_path) as rig:
        port = free_port()
        server = asyncio.create_task(serve_app(create_app(rig.station), "127.0.0.1", port))
        try:
            ws = await connect_live(port)
            async with ws, asyncio.timeout(5):
                assert json.loads(await ws.recv())["type"] == "snapshot"
                while (msg := json.loads(await ws.recv()))["type"] != "tick":
                    pass
                wall = time.time()
                assert set(msg["measured_at"]) == {"bay1", "locker1"}
                for at in msg["measured_at"].values():
                    assert wall - 2.0 < at <= wall + 0.01  # the hub reports every 0.1 s
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server


async def test_kiosk_stop_retried_while_unrecorded_is_recorded_not_called_ended(
    tmp_path: Path,
) -> None:
    """A stop the journal could not record is retried by the kiosk: the retry records it."""
    async with running_station(tmp_path) as rig:
        kiosk = await api_client(rig.station)
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/token", json={"token": "2468"})
        assert r.status_code == 200, r.text
        sid, key = r.json()["session_id"], r.json()["key"]
        journal = rig.station.journal
        await journal._w.execute("PRAGMA query_only=ON")  # the disk refuses every write
        stop = {"session_id": sid, "key": key}
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/stop", json=stop)
        assert r.status_code == 409 and r.json()["error"] == "not_recorded", r.text
        assert sid in rig.station.backlog.closing()
        # The kiosk retries while the disk is still refusing: still not recorded, never "ended".
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/stop", json=stop)
        assert r.status_code == 409 and r.json()["error"] == "not_recorded", r.text
        row = await journal.session(sid)
        assert row is not None and row["state"] == "open"
        await journal._w.execute("PRAGMA query_only=OFF")
        r = await kiosk.post("/api/v1/kiosk/bays/bay1/stop", json=stop)
        assert r.status_code == 200 and r.json()["code"] == "stopped", r.text
        row = await journal.session(sid)
        assert row is not None and row["state"] == "closed" and row["stop_reason"] == "Local"
