"""Shared access: members start and stop with their own cards and see only their sessions.

Real station, real journal, the real app; two members and the owner. A member
must not see, stop or even learn about another person's session, nor read the
station-wide views (history, live stream, audit).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.core.bay import StopReason
from controller.core.journal import Journal
from controller.core.store import Store
from local_ui import store as ui_store
from local_ui.messages import human
from local_ui.store import UiStore
from tests.test_api_rig import Rig, add_user, api_client, running_station, setup_owner


async def _owner(rig: Rig) -> httpx.AsyncClient:
    client = await api_client(rig.station)
    await setup_owner(client)
    return client


async def _members(rig: Rig) -> tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient]:
    owner = await _owner(rig)
    ann = await add_user(owner, "ann", "member")
    bob = await add_user(owner, "bob", "member")
    r = await owner.put("/api/v1/members/ann/tokens", json={"tokens": ["1234"]})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == ["…"]  # masked on the way back too
    r = await owner.put("/api/v1/members/bob/tokens", json={"tokens": ["5678", "2468"]})
    assert r.status_code == 200, r.text
    return owner, ann, bob


async def test_a_member_sees_and_stops_only_their_own_sessions(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner, ann, bob = await _members(rig)
        # A card belongs to one member.
        r = await owner.put("/api/v1/members/bob/tokens", json={"tokens": ["1234"]})
        assert r.status_code == 409 and human(r.json()["message"]), r.text
        # Ann starts at bay1 with her card; Bob's session runs at the locker.
        rig.hub.plug("bay1")
        r = await ann.post("/api/v1/me/bays/bay1/start", json={})
        assert r.status_code == 200, r.text
        ann_sid = r.json()["session_id"]
        await rig.until(lambda: rig.status("bay1") == "Charging")
        out = await rig.station.commands.present_token("locker1", "5678")
        assert out.ok, out
        bob_sid = out.session_id
        assert bob_sid is not None
        # Bob cannot start at Ann's bay, nor learn her session's figures.
        r = await bob.post("/api/v1/me/bays/bay1/start", json={})
        assert r.status_code == 409 and "someone else" in r.json()["message"]
        bays = {b["id"]: b for b in (await bob.get("/api/v1/me/bays")).json()["bays"]}
        assert bays["bay1"]["session"] is None and bays["bay1"]["busy"]
        assert ann_sid not in (await bob.get("/api/v1/me/bays")).text
        # Nor stop it: answered as if it did not exist.
        r = await bob.post(f"/api/v1/me/sessions/{ann_sid}/stop")
        assert r.status_code == 404 and human(r.json()["message"]), r.text
        assert rig.status("bay1") == "Charging"
        # The station-wide views are not a member's.
        for path in ("/api/v1/sessions", f"/api/v1/sessions/{ann_sid}", "/api/v1/audit"):
            r = await bob.get(path)
            assert r.status_code == 403 and human(r.json()["message"]), (path, r.text)
        r = await bob.post(f"/api/v1/sessions/{ann_sid}/stop")
        assert r.status_code == 403
        r = await bob.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 403
        # Each sees their own list.
        ann_list = (await ann.get("/api/v1/me/sessions")).json()
        bob_list = (await bob.get("/api/v1/me/sessions")).json()
        assert [s["id"] for s in ann_list["items"]] == [ann_sid] and ann_list["total"] == 1
        assert [s["id"] for s in bob_list["items"]] == [bob_sid] and bob_list["total"] == 1
        assert all(s["token"] == "…" for s in ann_list["items"])
        # Ann stops her own.
        r = await ann.post(f"/api/v1/me/sessions/{ann_sid}/stop")
        assert r.status_code == 200, r.text
        await rig.until(lambda: rig.station.bays["bay1"].state.session is None)
        assert (await rig.journal.session(ann_sid) or {}).get("stop_reason") == "Local"
        assert rig.station.bays["locker1"].state.session is not None  # Bob's runs on
        await rig.station.commands.stop_session(bob_sid, StopReason.OWNER, actor="test")
        # The owner's audit says who gave which member cards.
        rows = (await owner.get("/api/v1/audit?category=security")).json()
        assert any(r["text"] == "Gave “bob” 2 card(s) or code(s)." for r in rows), rows


async def test_a_member_is_refused_the_live_stream_of_every_bay(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner, ann, _bob = await _members(rig)
        app = owner._transport.app  # type: ignore[attr-defined]
        with TestClient(app, base_url="http://station.test") as tc:
            tc.cookies.set("es_session", owner.cookies["es_session"])
            with tc.websocket_connect("/api/v1/live") as ws:  # the owner's: every bay
                assert ws.receive_json()["type"] == "snapshot"
            tc.cookies.set("es_session", ann.cookies["es_session"])
            with pytest.raises(WebSocketDisconnect) as info:
                with tc.websocket_connect("/api/v1/live") as ws:
                    ws.receive_json()
            assert info.value.code == 4403


async def test_pages_send_members_to_their_own_page(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        _owner_c, ann, _bob = await _members(rig)
        r = await ann.get("/owner")
        assert r.status_code == 303 and r.headers["location"] == "/member"
        r = await ann.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/member"
        assert (await ann.get("/member")).status_code == 200


async def test_members_migration_keeps_existing_accounts(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.sqlite3")
    try:
        # A journal from before members: the ui namespace at version 1 with an owner.
        v1 = Store(journal, ui_store.NAMESPACE, ui_store.MIGRATIONS[:1])
        await v1.open()
        await v1.execute(
            "INSERT INTO ui_users(username, password_hash, role, created_at, updated_at)"
            " VALUES ('olga', 'h', 'owner', 1, 1)"
        )
        store = UiStore(journal)
        await store.open()
        assert (await store.user("olga")) is not None
        await store.add_user("mia", "h", "member", 2)
        await store.set_member_tokens("mia", ["04A1B2C3"], 2)
        assert await store.token_owner("04A1B2C3") == "mia"
        assert await store.delete_user("mia")
        assert await store.token_owner("04A1B2C3") is None
    finally:
        await journal.close()
