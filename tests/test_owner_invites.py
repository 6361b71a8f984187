"""Inviting a member: a one-time, expiring code shown as a QR code; the member chooses a
password and is logged in.

Real station, real journal, the real app (tests.test_api_rig). The code is read
back from the QR code itself (segno's SVG, rasterised and decoded with
zxing-cpp), so a QR code holding anything but the invitation's address fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import httpx
import numpy as np
import zxingcpp

from local_ui import i18n
from local_ui.accounts import LoginLimiter
from local_ui.api_invites import DOMAIN, REFUSALS, TOO_EASY
from local_ui.messages import human
from tests.test_api_rig import PASSWORD, Rig, add_user, api_client, running_station, setup_owner

PUBLIC = "http://station.example:8080"


def qr_text(svg: str) -> str:
    """What a phone's camera reads from the station's SVG QR code: segno's dark runs
    ("M x y", "m dx dy", "h n", in modules) drawn into an image, decoded by zxing-cpp."""
    size = re.search(r'd="M0 0h(\d+)v', svg)
    lines = re.search(r'<path class="qrline"[^>]*d="([^"]+)"', svg)
    assert size and lines, svg[:200]
    n = int(size.group(1))
    img = np.full((n, n), 255, np.uint8)
    x = y = 0.0
    for cmd, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?:\s(-?[\d.]+))?", lines.group(1)):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        else:
            img[int(y), int(x) : int(x + float(a))] = 0
            x += float(a)
    big = cv2.copyMakeBorder(
        cv2.resize(img, (n * 8, n * 8), interpolation=cv2.INTER_NEAREST),
        32,
        32,
        32,
        32,
        cv2.BORDER_CONSTANT,
        value=255,
    )
    found = zxingcpp.read_barcodes(big)
    assert found, "no QR code in the SVG"
    return str(found[0].text)


async def _owner(rig: Rig) -> httpx.AsyncClient:
    client = await api_client(rig.station)
    await setup_owner(client)
    return client


async def _stranger(owner: httpx.AsyncClient, lang: str = "en") -> httpx.AsyncClient:
    c = httpx.AsyncClient(
        transport=owner._transport,
        base_url="http://station.test",
        headers={"Accept-Language": lang},
    )
    await c.get("/api/v1/auth/csrf")
    c.headers["X-CSRF-Token"] = c.cookies["es_csrf"]
    return c


def _journal_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("journal.sqlite3*")))


def _code(url: str) -> str:
    assert url.startswith(PUBLIC + "/invite#"), url
    return url.split("#", 1)[1]


async def test_invite_accept_login_and_the_code_works_once(tmp_path: Path) -> None:
    async with running_station(tmp_path, http={"port": 0, "public_url": PUBLIC}) as rig:
        owner = await _owner(rig)
        r = await owner.post(
            "/api/v1/members/invites", json={"username": "ann", "tokens": ["04A1B2C3", "1234"]}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["cards"] == ["…B2C3", "…"]
        assert body["expires_at"] > rig.station.clock.wall() + 71 * 3600
        assert qr_text(body["qr_svg"]) == body["url"]  # the QR holds the invitation's address
        code = _code(body["url"])
        # Only the code's hash is kept: nowhere in the journal's file.
        assert code.encode() not in _journal_bytes(tmp_path)
        # The owner sees the open invitation (never its code).
        listed = (await owner.get("/api/v1/members/invites")).json()
        assert [i["username"] for i in listed] == ["ann"] and code not in str(listed)
        # The invited member: whose it is, then a password, then logged in as a member.
        ann = await _stranger(owner)
        r = await ann.post("/api/v1/auth/invite/check", json={"code": code})
        assert r.status_code == 200 and r.json()["username"] == "ann" and r.json()["cards"] == 2
        r = await ann.post("/api/v1/auth/invite/accept", json={"code": code, "password": "ann"})
        assert r.status_code == 422 and human(r.json()["message"]), r.text
        r = await ann.post("/api/v1/auth/invite/accept", json={"code": code, "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json() == {"username": "ann", "role": "member"}
        me = (await ann.get("/api/v1/auth/status")).json()["user"]
        assert me == {"username": "ann", "role": "member"}
        assert sorted((await ann.get("/api/v1/me/bays")).json()["cards"]) == ["…", "…B2C3"]
        ui = owner._transport.app.state.ui  # type: ignore[attr-defined]
        assert await ui.accounts.member_tokens("ann") == ["04A1B2C3", "1234"]
        # The password is argon2id, and a normal login works with it.
        assert (await ui.accounts.store.user("ann")).password_hash.startswith("$argon2id$")
        again = await _stranger(owner)
        r = await again.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD})
        assert r.status_code == 200 and r.json()["role"] == "member"
        # A second use is refused with a sentence; nothing changes.
        for path, extra in (
            ("/api/v1/auth/invite/check", {}),
            ("/api/v1/auth/invite/accept", {"password": "another long secret 9"}),
        ):
            r = await again.post(path, json={"code": code, **extra})
            assert r.status_code == 410 and r.json()["error"] == "invite_used", r.text
            assert r.json()["message"] == REFUSALS["used"]
        assert (await owner.get("/api/v1/members/invites")).json() == []
        # The audit says who invited whom and who joined; refusals are security events.
        rows = (await owner.get("/api/v1/audit?category=security")).json()
        texts = [x["text"] for x in rows]
        assert "Invited “ann” as a member with 2 card(s) or code(s)." in texts, texts
        assert "Accepted their invitation and chose a password." in texts, texts
        assert "Someone tried an invitation code that was used already." in texts, texts


async def test_expired_forged_and_withdrawn_codes_are_refused_in_the_persons_language(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path, http={"port": 0, "public_url": PUBLIC}) as rig:
        owner = await _owner(rig)
        ui = owner._transport.app.state.ui  # type: ignore[attr-defined]
        r = await owner.post("/api/v1/members/invites", json={"username": "bob", "valid_hours": 1})
        assert r.status_code == 201, r.text
        code = _code(r.json()["url"])
        de = await _stranger(owner, "de-DE,de;q=0.9,en;q=0.5")
        _ = i18n.translations("de", DOMAIN).gettext
        # Forged: a code the station never made.
        r = await de.post("/api/v1/auth/invite/check", json={"code": code[:-2] + "xx"})
        assert r.status_code == 404 and r.json()["error"] == "invite_unknown"
        assert r.json()["message"] == _(REFUSALS["unknown"]) != REFUSALS["unknown"]
        assert human(r.json()["message"])
        # Expired: an hour and a second later (the accounts' clock).
        real = ui.accounts.clock
        ui.accounts.clock = lambda: real() + 3601
        try:
            r = await de.post(
                "/api/v1/auth/invite/accept", json={"code": code, "password": PASSWORD}
            )
            assert r.status_code == 410 and r.json()["error"] == "invite_expired", r.text
            assert r.json()["message"] == _(REFUSALS["expired"])
            assert r.json()["message"].startswith("Diese Einladung ist abgelaufen.")
            # The page's own choice wins over the browser's.
            r = await de.post("/api/v1/auth/invite/check", json={"code": code, "lang": "en"})
            assert r.json()["message"] == REFUSALS["expired"]
        finally:
            ui.accounts.clock = real
        assert await ui.accounts.get_user("bob") is None
        # Withdrawn: a new invitation replaces the open one; the old code stops working.
        r = await owner.post("/api/v1/members/invites", json={"username": "bob"})
        new_code = _code(r.json()["url"])
        r = await de.post("/api/v1/auth/invite/check", json={"code": code})
        assert r.status_code == 404
        assert (await owner.delete("/api/v1/members/invites/bob")).status_code == 200
        r = await de.post("/api/v1/auth/invite/check", json={"code": new_code})
        assert r.status_code == 404
        r = await owner.delete("/api/v1/members/invites/bob")
        assert r.status_code == 404 and human(r.json()["message"])
        # Five wrong codes from one client: the next try waits, whatever the code.
        r = await owner.post("/api/v1/members/invites", json={"username": "bob"})
        code = _code(r.json()["url"])
        r = await de.post("/api/v1/auth/invite/check", json={"code": code})
        assert r.status_code == 429 and human(r.json()["message"]), r.text
        assert int(r.headers["Retry-After"]) >= 1
        ui.limiter = LoginLimiter()  # as after the wait
        # A weak password in German gets the catalogue's sentence, not zxcvbn's English.
        r = await de.post(
            "/api/v1/auth/invite/accept", json={"code": code, "password": "password12"}
        )
        assert r.status_code == 422 and r.json()["message"] == _(TOO_EASY) != TOO_EASY
        # The page's catalogue in German.
        msgs = (await de.get("/api/v1/auth/messages")).json()
        assert msgs["lang"] == "de" and msgs["messages"]["Invite a member"] == "Mitglied einladen"


async def test_only_the_owner_invites(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await _owner(rig)
        viewer = await add_user(owner, "vic", "viewer")
        member = await add_user(owner, "mia", "member")
        nobody = await _stranger(owner)
        for client, status in ((viewer, 403), (member, 403), (nobody, 401)):
            r = await client.post("/api/v1/members/invites", json={"username": "eve"})
            assert r.status_code == status and human(r.json()["message"]), r.text
            assert (await client.get("/api/v1/members/invites")).status_code == status
        # Not a name that is taken, nor a card that is someone's already.
        r = await owner.post("/api/v1/members/invites", json={"username": "vic"})
        assert r.status_code == 409 and human(r.json()["message"])
        assert (await owner.put("/api/v1/members/mia/tokens", json={"tokens": ["5678"]})).is_success
        r = await owner.post(
            "/api/v1/members/invites", json={"username": "eve", "tokens": ["5678"]}
        )
        assert r.status_code == 409 and "“mia”" in r.json()["message"]
        # Without a public address, the invitation is on the host the owner's browser used.
        r = await owner.post("/api/v1/members/invites", json={"username": "eve"})
        assert r.json()["url"].startswith("http://station.test/invite#")
        assert qr_text(r.json()["qr_svg"]) == r.json()["url"]
        # The owner gives the name to an account meanwhile: the invitation cannot be used.
        code = r.json()["url"].split("#", 1)[1]
        r = await owner.post(
            "/api/v1/users", json={"username": "eve", "password": PASSWORD, "role": "viewer"}
        )
        assert r.status_code == 201, r.text
        r = await nobody.post(
            "/api/v1/auth/invite/accept", json={"code": code, "password": PASSWORD}
        )
        assert r.status_code == 409 and r.json()["error"] == "invite_taken", r.text
        assert "“eve”" in r.json()["message"] and human(r.json()["message"])
        ui = owner._transport.app.state.ui  # type: ignore[attr-defined]
        assert (await ui.accounts.get_user("eve")).role == "viewer"  # nothing changed
