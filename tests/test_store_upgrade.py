"""A journal made before the adapters owned their tables opens with today's code, data intact.

The old journal is built from ``tests/data/journal_schema_v5.sql``: the core
migrations 1-5 exactly as released, when the core itself created the OCPP tables
(migration 2) and the UI tables (migration 3). It holds accounts, logins, a
charging profile, a local authorization list and cache, and a finished session;
then the real station, the real OCPP client against the development CSMS and the
real UI open it and use what is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from ocpp.v16 import call

from cloud_sync.assemble import build
from cloud_sync.config import OcppConfig
from cloud_sync.store import OcppStore
from controller.core.auth import AuthRequest
from controller.core.journal import Journal, JournalError
from controller.core.schema import MIGRATIONS
from controller.ports import AuthStatus
from local_ui.store import MIGRATIONS as UI_MIGRATIONS
from local_ui.store import UiStore
from tests.test_api_rig import PASSWORD, api_client, running_station
from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(90)

OLD_SCHEMA = Path(__file__).parent / "data" / "journal_schema_v5.sql"
OLD_SID = "an-old-login-cookie-from-before-the-upgrade"
PROFILE = {
    "charging_profile_id": 3,
    "stack_level": 0,
    "charging_profile_purpose": "TxDefaultProfile",
    "charging_profile_kind": "Absolute",
    "charging_schedule": {
        "charging_rate_unit": "A",
        "charging_schedule_period": [{"start_period": 0, "limit": 13.0}],
        "start_schedule": "2020-01-01T00:00:00Z",
    },
}


def make_old_journal(path: Path) -> None:
    """A journal as the code before adapter stores left it (core schema version 5)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.executescript(OLD_SCHEMA.read_text(encoding="utf-8"))
        assert con.execute("PRAGMA user_version").fetchone()[0] == 5
        now = time.time()
        hashed = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        con.executemany(
            "INSERT INTO ui_users VALUES (?,?,?,?,?)",
            [("olga", hashed, "owner", now, now), ("ian", hashed, "installer", now, now)],
        )
        con.executemany(
            "INSERT INTO ui_sessions VALUES (?,?,?,?)",
            [
                (hashlib.sha256(OLD_SID.encode()).hexdigest(), "olga", now, now + 3600),
                (hashlib.sha256(b"long gone").hexdigest(), "ian", now - 7200, now - 3600),
            ],
        )
        con.execute(
            "INSERT INTO charging_profiles VALUES (3, 0, 0, 'TxDefaultProfile', NULL, ?, ?)",
            (json.dumps(PROFILE), now),
        )
        con.executemany(
            "INSERT INTO local_auth_list VALUES (?,?,?,?)",
            [("LISTED", "Accepted", None, None), ("BLOCKED", "Blocked", None, "PARENT")],
        )
        con.execute("INSERT INTO kv VALUES ('ocpp.local_list_version', '7')")
        con.execute("INSERT INTO auth_cache VALUES ('CACHED', 'Accepted', NULL, NULL, ?)", (now,))
        con.execute(
            "INSERT INTO sessions(id, bay_id, connector, token, auth_source, mode, state,"
            " started_at, stopped_at, meter_start_wh, meter_stop_wh, meter_wh, energy_wh, tariff,"
            " stop_reason, ocpp_tx_id, sync_state) VALUES ('s-old', 'bay1', 1, 'LISTED', 'local',"
            " 'standard', 'closed', ?, ?, 1000, 5000, 5000, 4000, '{}', 'ev_disconnected', 41,"
            " 'synced')",
            (now - 3600, now - 600),
        )
        con.commit()
    finally:
        con.close()


def _schema(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table with its columns (name, type, not null, default, primary key)."""
    con = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            t: [tuple(c[1:]) for c in con.execute(f"PRAGMA table_info({t})")]
            for t in sorted(tables)
        }
    finally:
        con.close()


async def test_old_journal_keeps_every_row_and_matches_a_new_one(tmp_path: Path) -> None:
    old = tmp_path / "old" / "journal.sqlite3"
    make_old_journal(old)
    journal = await Journal.open(old)
    try:
        ocpp, ui = OcppStore(journal), UiStore(journal)
        await ocpp.open()
        await ui.open()
        assert await journal.schema_version() == len(MIGRATIONS)
        versions = await journal.query("SELECT namespace, version FROM store_versions")
        assert sorted((r["namespace"], r["version"]) for r in versions) == [
            ("ocpp", 1),
            ("ui", len(UI_MIGRATIONS)),
        ]
        (profile,) = await ocpp.charging_profiles()
        assert (profile.id, profile.connector, json.loads(profile.profile_json)) == (3, 0, PROFILE)
        assert {t.id_tag: (t.status, t.parent_id_tag) for t in await ocpp.local_auth_list()} == {
            "LISTED": ("Accepted", None),
            "BLOCKED": ("Blocked", "PARENT"),
        }
        assert [t.id_tag for t in await ocpp.auth_cache()] == ["CACHED"]
        assert [u["username"] for u in await ui.users()] == ["ian", "olga"]
        login = await ui.login(hashlib.sha256(OLD_SID.encode()).hexdigest(), time.time())
        assert login is not None and (login.username, login.role) == ("olga", "owner")
        (session,) = await journal.sessions()
        assert (session["id"], session["ocpp_tx_id"], session["energy_wh"]) == ("s-old", 41, 4000)
    finally:
        await journal.close()

    # A journal made new today, with both stores opened, has the very same tables.
    new = tmp_path / "new" / "journal.sqlite3"
    journal = await Journal.open(new)
    try:
        assert "charging_profiles" not in _schema(new)  # the core alone never makes them
        await OcppStore(journal).open()
        await UiStore(journal).open()
    finally:
        await journal.close()
    assert _schema(new) == _schema(old)


async def test_ocpp_client_uses_the_old_profiles_list_and_cache(tmp_path: Path) -> None:
    make_old_journal(tmp_path / "journal.sqlite3")
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        assert (await r.sim.call(CP, call.GetLocalListVersion())).list_version == 7
        assert r.up.current_limits_a(r.station.clock.wall()) == {0: None, 1: 13.0}
        resp = await r.sim.call(CP, call.GetCompositeSchedule(connector_id=1, duration=600))
        assert resp.charging_schedule["charging_schedule_period"] == [
            {"start_period": 0, "limit": 13.0}
        ]
        assert await r.up.outbox.session_of(41) == "s-old"
        await r.sim.stop()
        await r.offline()
        listed = await r.up.auth_step(AuthRequest("LISTED", "bay1", 1, "kiosk"))
        cached = await r.up.auth_step(AuthRequest("CACHED", "bay1", 1, "kiosk"))
        assert listed is not None and listed.source == "local_list"
        assert cached is not None and cached.source == "cache"
        blocked = await r.up.auth_step(AuthRequest("BLOCKED", "bay1", 1, "kiosk"))
        assert blocked is not None and blocked.status is AuthStatus.BLOCKED


async def test_owner_logs_in_with_the_old_password_and_the_old_cookie(tmp_path: Path) -> None:
    make_old_journal(tmp_path / "journal.sqlite3")
    async with running_station(tmp_path) as station_rig:
        client = await api_client(station_rig.station)
        app = client._transport.app  # type: ignore[attr-defined]
        await app.state.ui.ensure_ready()
        assert app.state.ui.accounts.setup_code is None  # the owner exists: no first-run setup
        kept = httpx.AsyncClient(transport=client._transport, base_url="http://station.test")
        kept.cookies.set("es_session", OLD_SID)
        r = await kept.get("/api/v1/users")
        assert r.status_code == 200, r.text
        assert [(u["username"], u["role"]) for u in r.json()] == [
            ("ian", "installer"),
            ("olga", "owner"),
        ]
        r = await client.post("/api/v1/auth/login", json={"username": "ian", "password": PASSWORD})
        assert r.status_code == 200, r.text
        logins = await station_rig.journal.query("SELECT username FROM ui_sessions ORDER BY 1")
        assert [x["username"] for x in logins] == ["ian", "olga"]  # the expired one was purged


async def test_adapters_refuse_a_journal_from_newer_software_by_name(tmp_path: Path) -> None:
    """A downgrade: the UI and OCPP stores are newer than this code. Each says so; the
    station's own journal works on (the UI and OCPP are optional services)."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await OcppStore(journal).open()
    await UiStore(journal).open()
    await journal.close()
    con = sqlite3.connect(tmp_path / "journal.sqlite3")
    con.execute("UPDATE store_versions SET version = version + 1")
    con.commit()
    con.close()
    async with running_station(tmp_path) as station_rig:
        client = await api_client(station_rig.station)
        ui = client._transport.app.state.ui  # type: ignore[attr-defined]
        newer = len(UI_MIGRATIONS) + 1
        with pytest.raises(JournalError, match=rf"version {newer} of 'ui' is newer than this"):
            await ui.ensure_ready()
        up = build(OcppConfig(url="ws://127.0.0.1:9/ocpp", charge_point_id=CP), station_rig.station)
        with pytest.raises(JournalError, match=r"version 2 of 'ocpp' is newer than this software"):
            await up.load()
        assert station_rig.journal.writable
        out = await station_rig.station.commands.present_token("bay1", "1234", source="kiosk")
        assert out.ok, out  # charging does not depend on either


async def test_a_token_presented_while_the_client_loads_waits_for_its_lists(
    tmp_path: Path,
) -> None:
    """Startup: the OCPP client opens its store (a migration on a new journal), then loads its
    keys and lists. A token presented meanwhile is decided with them, not before them."""
    make_old_journal(tmp_path / "journal.sqlite3")
    async with running_station(tmp_path) as station_rig:
        cfg = OcppConfig(
            url="ws://127.0.0.1:9/ocpp",
            charge_point_id=CP,
            keys={"AllowOfflineTxForUnknownId": "true"},
        )
        up = build(cfg, station_rig.station)
        blocked = asyncio.create_task(up.auth_step(AuthRequest("BLOCKED", "bay1", 1, "kiosk")))
        stranger = asyncio.create_task(up.auth_step(AuthRequest("NEWTAG", "bay1", 1, "kiosk")))
        await asyncio.sleep(0.05)
        assert not blocked.done() and not stranger.done()  # waiting for the client
        await up.load()
        got = await asyncio.wait_for(blocked, 5)
        assert got is not None and got.status is AuthStatus.BLOCKED  # the old list decided
        got = await asyncio.wait_for(stranger, 5)
        assert got is not None and got.source == "offline_unknown"  # the configured key did
