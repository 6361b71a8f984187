"""Login throttling per client, password changes that end other logins, password strength.

Clients on different hosts are httpx clients on the same app with different
client addresses (ASGI ``scope["client"]``), as uvicorn reports them.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from local_ui.server import create_app
from tests.test_api_rig import PASSWORD, Rig, running_station

OWNER = "owner"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def host_client(transport_app: object, host: str) -> httpx.AsyncClient:
    """A browser on ``host``: its own cookies and CSRF token."""
    transport = httpx.ASGITransport(app=transport_app, client=(host, 40000))  # type: ignore[arg-type]
    c = httpx.AsyncClient(transport=transport, base_url="http://station.test")
    await c.get("/api/v1/auth/csrf")
    c.headers["X-CSRF-Token"] = c.cookies["es_csrf"]
    return c


async def setup(rig: Rig) -> tuple[object, FakeClock]:
    app = create_app(rig.station)
    ui = app.state.ui
    await ui.ensure_ready()
    clock = FakeClock()
    ui.limiter.clock = clock
    owner = await host_client(app, "192.168.1.10")
    r = await owner.post(
        "/api/v1/auth/setup",
        json={"code": ui.accounts.setup_code, "username": OWNER, "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    return app, clock


async def login(c: httpx.AsyncClient, password: str, user: str = OWNER) -> httpx.Response:
    return await c.post("/api/v1/auth/login", json={"username": user, "password": password})


async def test_a_stranger_cannot_lock_the_owner_out(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        app, clock = await setup(rig)
        attacker = await host_client(app, "192.168.1.66")
        owner = await host_client(app, "192.168.1.10")
        wrong = 0
        while wrong < 9:  # paced: each try waits out the delay the last one earned
            r = await login(attacker, "wrong guess")
            if r.status_code == 429:
                clock.now += float(r.headers["Retry-After"])
                continue
            assert r.status_code == 401, r.text
            wrong += 1
        r = await login(attacker, "wrong guess")
        assert r.status_code == 429 and "Try again in" in r.json()["message"]
        assert int(r.headers["Retry-After"]) >= 16
        # Even the right password does not get through from the attacker's host while throttled,
        r = await login(attacker, PASSWORD)
        assert r.status_code == 429
        # but the owner, on another host, logs in at once.
        r = await login(owner, PASSWORD)
        assert r.status_code == 200, r.text
        assert (await owner.get("/api/v1/bays")).status_code == 200


async def test_one_host_guessing_many_user_names_is_throttled(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        app, _ = await setup(rig)
        attacker = await host_client(app, "192.168.1.66")
        statuses = [(await login(attacker, "x" * 12, f"user{i}")).status_code for i in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
        r = await login(await host_client(app, "192.168.1.10"), PASSWORD)
        assert r.status_code == 200


async def test_setup_code_is_limited_per_client(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        app = create_app(rig.station)
        ui = app.state.ui
        await ui.ensure_ready()
        attacker = await host_client(app, "192.168.1.66")
        body = {"code": "AAAA-AAAA-AAAA", "username": OWNER, "password": PASSWORD}
        statuses = [
            (await attacker.post("/api/v1/auth/setup", json=body)).status_code for _ in range(7)
        ]
        assert statuses[-1] == 429, statuses
        installer = await host_client(app, "192.168.1.20")
        r = await installer.post(
            "/api/v1/auth/setup", json={**body, "code": ui.accounts.setup_code}
        )
        assert r.status_code == 201, r.text


async def test_password_change_ends_every_other_login_of_that_user(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        app, _ = await setup(rig)
        laptop = await host_client(app, "192.168.1.10")
        phone = await host_client(app, "192.168.1.11")
        assert (await login(laptop, PASSWORD)).status_code == 200
        assert (await login(phone, PASSWORD)).status_code == 200
        r = await laptop.post(
            "/api/v1/users", json={"username": "vic", "password": PASSWORD, "role": "viewer"}
        )
        assert r.status_code == 201
        viewer = await host_client(app, "192.168.1.12")
        assert (await login(viewer, PASSWORD, "vic")).status_code == 200

        new = "a brand new passphrase"
        r = await laptop.post(
            "/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": new}
        )
        assert r.status_code == 200, r.text
        assert (await laptop.get("/api/v1/bays")).status_code == 200  # this login stays
        r = await phone.get("/api/v1/bays")
        assert r.status_code == 401, "the phone's login outlived the password change"
        assert (await viewer.get("/api/v1/bays")).status_code == 200  # other users keep theirs
        assert (await login(phone, PASSWORD)).status_code == 401
        assert (await login(phone, new)).status_code == 200
        rows = await rig.journal.query(
            "SELECT count(*) AS n FROM ui_sessions WHERE username=?", (OWNER,)
        )
        assert rows[0]["n"] == 2  # the laptop's and the phone's new one (setup's login ended too)
        audit = await rig.journal.audit_log(kind="password_changed")
        assert len(audit) == 1 and '"ended_sessions":2' in audit[0]["detail"], audit


@pytest.mark.parametrize("weak", ["aaaaaaaaaa", "1234567890", "password123", "qwertyuiop"])
async def test_weak_passwords_are_refused_with_a_sentence(tmp_path: Path, weak: str) -> None:
    async with running_station(tmp_path) as rig:
        app = create_app(rig.station)
        ui = app.state.ui
        await ui.ensure_ready()
        c = await host_client(app, "192.168.1.10")
        r = await c.post(
            "/api/v1/auth/setup",
            json={"code": ui.accounts.setup_code, "username": OWNER, "password": weak},
        )
        assert r.status_code == 422, r.text
        msg = r.json()["message"]
        assert r.json()["error"] == "weak_password"
        assert msg.startswith("This password is too easy to guess.") and msg.endswith("."), msg
        assert "score" not in msg and "password:" not in msg
        assert ui.accounts.setup_code is not None  # nothing was created
        r = await c.post(
            "/api/v1/auth/setup",
            json={"code": ui.accounts.setup_code, "username": OWNER, "password": PASSWORD},
        )
        assert r.status_code == 201
        r = await c.post(
            "/api/v1/users", json={"username": "vic", "password": weak, "role": "viewer"}
        )
        assert r.status_code == 422 and r.json()["error"] == "weak_password"
        r = await c.post(
            "/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": weak}
        )
        assert r.status_code == 422 and r.json()["error"] == "weak_password"
        assert (await login(c, PASSWORD)).status_code == 200  # unchanged


async def test_long_passwords_are_weighed_by_their_start(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        app, _ = await setup(rig)
        c = await host_client(app, "192.168.1.10")
        assert (await login(c, PASSWORD)).status_code == 200
        for username, password, status in (
            ("long", "x7!Qp" * 51, 201),  # 255 characters: zxcvbn alone would refuse to look
            ("longweak", "a" * 256, 422),
        ):
            r = await c.post(
                "/api/v1/users", json={"username": username, "password": password, "role": "viewer"}
            )
            assert r.status_code == status, r.text
