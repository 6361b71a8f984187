"""A receipt after every way of stopping, for the kiosk to show: a code shown to the camera
that stops a session started elsewhere, a remote stop, the owner's stop, nothing plugged in
in time, an emergency stop. The kiosk's public stream carries, with each session, a key that
opens its receipt and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from controller.core.bay_model import StopReason
from local_ui.server import create_app, serve_app
from tests.test_api_kiosk import connect_live, free_port
from tests.test_api_rig import Rig, api_client, running_station, setup_owner

LAN_URL = "http://192.168.1.20:8080"


@contextlib.asynccontextmanager
async def _kiosk_stream(rig: Rig) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The kiosk's live stream and its API on a real server (a free port)."""
    port = free_port()
    server = asyncio.create_task(serve_app(create_app(rig.station), "127.0.0.1", port))
    try:
        ws = await connect_live(port)
        async with ws, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.get("/api/v1/auth/csrf")
            http.headers["X-CSRF-Token"] = http.cookies["es_csrf"]
            yield ws, http
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def _next(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while (msg := json.loads(await ws.recv()))["type"] != kind:
            pass
    return msg  # type: ignore[no-any-return]


async def test_a_code_shown_to_the_camera_stops_a_session_started_elsewhere_with_a_receipt(
    tmp_path: Path,
) -> None:
    http_cfg = {"host": "0.0.0.0", "port": 0, "public_url": LAN_URL}
    async with running_station(tmp_path, http=http_cfg) as rig:
        # Started by the central system (RemoteStartTransaction), not at this kiosk.
        out = await rig.station.commands.present_token(
            "locker1", "1234", source="csms", preauthorized="csms"
        )
        assert out.ok and out.session_id
        sid = out.session_id
        rig.hub.plug("locker1")
        async with _kiosk_stream(rig) as (ws, kiosk):
            bay = rig.station.bays["locker1"]  # the e-bike charged a few Wh meanwhile
            await rig.until(
                lambda: bay.state.session is not None and bay.state.session.energy_wh > 0
            )
            snap = json.loads(await ws.recv())
            shown = next(b for b in snap["bays"] if b["id"] == "locker1")["session"]
            assert shown["id"] == sid and "token" not in shown
            # The driver taps the bay on the kiosk and shows their QR code to the camera.
            assert (await kiosk.post("/api/v1/kiosk/bays/locker1/focus", json={})).is_success
            stop = await rig.station.commands.code_scanned("1234", camera="cam")
            assert (stop.ok, stop.code, stop.session_id) == (True, "stopped", sid)
            scan = await _next(ws, "scan")
            assert scan["code"] == "stopped" and scan["session_id"] == sid
            rkey = scan["receipt_key"]
            assert rkey == shown["receipt_key"]  # the key the stream showed with the session
            r = await kiosk_receipt(kiosk, sid, rkey)
            row = await rig.journal.session(sid)
            assert row is not None and row["state"] == "closed" and row["stop_reason"] == "Local"
            assert r["energy_wh"] == row["energy_wh"] > 0
            assert r["text"]["energy"] == f"{row['energy_wh']} Wh"  # an e-bike: Wh, not 0.00 kWh
            assert r["text"]["cost"] == f"€{row['cost']:.2f}"
            assert r["text"]["tariff"] == "€0.30 per kWh"
            assert (r["text"]["title"], r["text"]["note"]) == ("Thank you!", "")
            assert re.fullmatch(r"\d+:\d\d", r["text"]["duration"])
            assert f"Test Station, Bay locker1 · Session {sid}" in r["text"]["meta"]
            url = f"{LAN_URL}/api/v1/kiosk/sessions/{sid}/receipt.html?key={rkey}&lang=en"
            assert r["qr_url"] == url  # the receipt on the driver's phone
            # The receipt key opens the receipt and nothing else: it cannot stop or steer.
            assert (await kiosk.get(url.removeprefix(LAN_URL))).status_code == 200
            again = await rig.station.commands.present_token("bay1", "5678")
            assert again.ok and again.session_id
            while not (b := (await _next(ws, "bay"))["bay"])["id"] == "bay1" or not b["session"]:
                pass
            key = b["session"]["receipt_key"]
            for verb, body in (("stop", {}), ("mode", {"mode": "eco"})):
                r2 = await kiosk.post(
                    f"/api/v1/kiosk/bays/bay1/{verb}",
                    json={"session_id": again.session_id, "key": key, **body},
                )
                assert r2.status_code == 403 and r2.json()["error"] == "not_your_session"
            assert rig.station.bays["bay1"].state.session is not None
            # Nor does it open another session's receipt.
            other = await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key})
            assert other.status_code == 404


async def kiosk_receipt(
    kiosk: httpx.AsyncClient, sid: str, key: str, lang: str = "en"
) -> dict[str, Any]:
    r = await kiosk.get(f"/api/v1/kiosk/sessions/{sid}/receipt", params={"key": key, "lang": lang})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


STOPPED = "Charging stopped"
# How a session ended -> its stop reason, the receipt's title and note, the note in German.
WAYS = {
    "remote": (
        "Remote",
        STOPPED,
        "Stopped remotely, by the app or the operator.",
        "Aus der Ferne beendet, über die App oder vom Betreiber.",
    ),
    "owner": (
        "Owner",
        STOPPED,
        "Stopped by the station's staff.",
        "Vom Personal der Station beendet.",
    ),
    "nothing_plugged_in": (
        "ConnectionTimeout",
        STOPPED,
        "Nothing was plugged in in time, so the session has ended.",
        "Es wurde nicht rechtzeitig etwas eingesteckt, daher wurde der Ladevorgang beendet.",
    ),
    "emergency_stop": (
        "EmergencyStop",
        "Emergency stop",
        "Charging stopped; staff have been notified.",
        "Laden gestoppt; das Personal ist informiert.",
    ),
}


async def test_every_way_of_stopping_has_a_receipt_that_says_what_happened(
    tmp_path: Path,
) -> None:
    """Remote stop, the owner's stop, nothing plugged in in time, emergency stop: each
    session's receipt opens with the key the kiosk saw with it, and says what happened."""
    timers = {"tick_s": 0.1, "lease_s": 3.0, "exit_grace_s": 60, "connection_timeout_s": 0.5}
    async with running_station(tmp_path, timers=timers) as rig:
        kiosk = await api_client(rig.station)
        await setup_owner(kiosk)  # the owner's stop, from the owner's sessions page
        commands = rig.station.commands

        async def start(bay: str, plug: bool = True) -> tuple[str, str]:
            out = await commands.present_token(bay, "1234", source="csms", preauthorized="csms")
            assert out.ok and out.session_id, out
            if plug:
                rig.hub.plug(bay)
                await rig.until(lambda: rig.status(bay) == "Charging")
            state = (await kiosk.get("/api/v1/kiosk/state")).json()
            shown = next(b for b in state["bays"] if b["id"] == bay)["session"]
            assert shown["id"] == out.session_id
            return out.session_id, shown["receipt_key"]

        async def ended(bay: str) -> None:
            await rig.until(lambda: rig.station.bays[bay].state.session is None)

        async def free(bay: str) -> None:
            rig.hub.plug(bay, False)
            await rig.until(lambda: rig.status(bay) == "Available")

        stopped: dict[str, tuple[str, str]] = {}
        stopped["remote"] = await start("bay1")  # what RemoteStopTransaction does:
        assert (await commands.stop_session(stopped["remote"][0], StopReason.REMOTE)).ok
        await ended("bay1")
        stopped["owner"] = await start("locker1")
        assert (await kiosk.post(f"/api/v1/sessions/{stopped['owner'][0]}/stop")).is_success
        await ended("locker1")
        await free("bay1")
        stopped["nothing_plugged_in"] = await start("bay1", plug=False)
        await ended("bay1")  # after connection_timeout_s
        stopped["emergency_stop"] = await start("bay1")
        await rig.station.safety.emergency_stop(True)
        await ended("bay1")
        for how, (sid, rkey) in stopped.items():
            reason, title, note, german = WAYS[how]
            row = await rig.journal.session(sid)
            assert row is not None and row["stop_reason"] == reason, how
            r = await kiosk_receipt(kiosk, sid, rkey)
            assert r["stop_reason"] == reason
            assert (r["text"]["title"], r["text"]["note"]) == (title, note)
            if r["kind"] == "locker":
                assert r["text"]["energy"] == f"{row['energy_wh']} Wh"
            else:
                assert r["text"]["energy"] == f"{row['energy_wh'] / 1000:.2f} kWh"
            page = await kiosk.get(
                f"/api/v1/kiosk/sessions/{sid}/receipt.html", params={"key": rkey, "lang": "de"}
            )
            assert german in page.text, how
