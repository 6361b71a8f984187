"""GetDiagnostics end to end: the development CSMS asks over a real websocket, the bundle goes
to a real HTTP receiver or a real FTP server (pyftpdlib), with retries and status reports."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
from ocpp.v16 import call

from controller.core.bay import StopReason
from controller.core.persist import iso
from tests.support.file_servers import ftp_server, http_files
from tests.test_ocpp_support import CP, Rig, rig

pytestmark = pytest.mark.timeout(90)

SECRET = "ocpp-Pa55word-xyz"
FILES = {
    "manifest.json",
    "config.json",
    "versions.json",
    "nodes.json",
    "health.json",
    "logs/station.jsonl",
    "journal/events.jsonl",
    "journal/audit.jsonl",
    "journal/sessions.jsonl",
}


def _diag_statuses(r: Rig) -> list[str]:
    return [x.payload["status"] for x in r.sim.actions("DiagnosticsStatusNotification")]


async def _final(r: Rig, timeout: float = 30.0) -> list[str]:
    await r.sim.wait_for(
        lambda: any(s in ("Uploaded", "UploadFailed") for s in _diag_statuses(r)), timeout=timeout
    )
    return _diag_statuses(r)


def _bundle(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


async def test_bundle_goes_up_by_http_put_without_secrets(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=2) as r:
            await r.online()
            # What station.toml's [ocpp] holds (the rig builds its client from its own copy).
            ocpp = {"url": r.sim.url, "charge_point_id": CP, "password": SECRET}
            r.station.cfg = r.station.cfg.model_copy(update={"ocpp": ocpp})
            sid = await r.start_session(1, "TAG-1")
            await r.drained()
            resp = await r.sim.call(
                CP, call.GetDiagnostics(location=http.url("/support/"), retries=0)
            )
            assert resp.file_name and resp.file_name.endswith(".zip")
            assert await _final(r) == ["Uploading", "Uploaded"]
            (up,) = http.uploads
            assert (up.method, up.path) == ("PUT", f"/support/{resp.file_name}")
            files = _bundle(up.body)
            assert FILES <= set(files)
            for name, content in files.items():
                assert SECRET.encode() not in content, name
            config = json.loads(files["config.json"])
            assert config["ocpp"]["password"] == "***"
            assert config["ocpp"]["url"].startswith("ws://")  # the rest is kept
            sessions = [json.loads(x) for x in files["journal/sessions.jsonl"].splitlines()]
            assert [s["id"] for s in sessions] == [sid] and sessions[0]["token"] == "***"
            nodes = json.loads(files["nodes.json"])
            assert set(nodes) == {"bay1", "bay2"}
            versions = json.loads(files["versions.json"])
            assert versions["nodes"]["bay1"] == "fake-1.2.3"
            assert "ok" in json.loads(files["health.json"])
            audit = await r.station.journal.audit_log(kind="diagnostics_uploaded")
            assert audit and resp.file_name in audit[0]["detail"]


async def test_a_server_refusing_put_gets_a_multipart_post(tmp_path: Path) -> None:
    with http_files() as http:
        http.refuse_put = True
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            resp = await r.sim.call(CP, call.GetDiagnostics(location=http.url("/in/"), retries=0))
            assert await _final(r) == ["Uploading", "Uploaded"]
            (up,) = http.uploads
            assert (up.method, up.path) == ("POST", f"/in/{resp.file_name}")
            assert "manifest.json" in _bundle(up.body)


async def test_upload_retries_after_failures_then_succeeds(tmp_path: Path) -> None:
    with http_files() as http:
        http.fail_next = 2
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            await r.sim.call(
                CP, call.GetDiagnostics(location=http.url("/x/"), retries=2, retry_interval=1)
            )
            assert await _final(r) == ["Uploading", "Uploaded"]
            assert [m for m, _ in http.attempts] == ["PUT", "PUT", "PUT"]
            assert len(http.uploads) == 1


async def test_upload_fails_after_its_retries(tmp_path: Path) -> None:
    with http_files() as http:
        http.fail_next = 100
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            await r.sim.call(
                CP, call.GetDiagnostics(location=http.url("/x/"), retries=1, retry_interval=0)
            )
            assert await _final(r) == ["Uploading", "UploadFailed"]
            assert len(http.attempts) == 2 and not http.uploads
            (row,) = await r.station.journal.audit_log(kind="diagnostics_upload_failed")
            assert "500" in row["detail"]


async def test_unreachable_server_and_bad_location(tmp_path: Path) -> None:
    async with rig(tmp_path, bays=1) as r:
        await r.online()
        resp = await r.sim.call(CP, call.GetDiagnostics(location="gopher://nowhere/"))
        assert resp.file_name is None
        with http_files() as http:
            dead = http.url("/x/")  # closed once the block ends: nobody listens there
        await r.sim.call(CP, call.GetDiagnostics(location=dead, retries=1, retry_interval=0))
        assert await _final(r) == ["Uploading", "UploadFailed"]


async def test_bundle_goes_up_by_ftp_and_the_password_stays_out_of_the_audit(
    tmp_path: Path,
) -> None:
    (tmp_path / "ftp" / "diag").mkdir(parents=True)
    with ftp_server(tmp_path / "ftp") as ftp:
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            resp = await r.sim.call(CP, call.GetDiagnostics(location=ftp.url("/diag/"), retries=0))
            assert await _final(r) == ["Uploading", "Uploaded"]
            stored = (tmp_path / "ftp" / "diag" / str(resp.file_name)).read_bytes()
            assert FILES <= set(_bundle(stored))
            (row,) = await r.station.journal.audit_log(kind="diagnostics_uploaded")
            assert ftp.password not in row["detail"] and "***" in row["detail"]


async def test_ftp_with_a_wrong_password_fails_after_retries(tmp_path: Path) -> None:
    with ftp_server(tmp_path / "ftp") as ftp:
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            bad = ftp.url("/").replace(ftp.password, "wrong")
            await r.sim.call(CP, call.GetDiagnostics(location=bad, retries=1, retry_interval=0))
            assert await _final(r) == ["Uploading", "UploadFailed"]


async def test_trigger_reports_uploading_while_one_runs_and_idle_after(tmp_path: Path) -> None:
    with http_files() as http:
        http.hold = threading.Event()
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            await r.sim.call(CP, call.GetDiagnostics(location=http.url("/x/"), retries=0))
            await r.sim.wait_for(lambda: _diag_statuses(r) == ["Uploading"])
            resp = await r.sim.call(
                CP, call.TriggerMessage(requested_message="DiagnosticsStatusNotification")
            )
            assert resp.status == "Accepted"
            await r.sim.wait_for(lambda: len(_diag_statuses(r)) >= 2)
            assert _diag_statuses(r) == ["Uploading", "Uploading"]
            http.hold.set()
            assert (await _final(r))[-1] == "Uploaded"
            await r.sim.call(
                CP, call.TriggerMessage(requested_message="DiagnosticsStatusNotification")
            )
            await r.sim.wait_for(lambda: _diag_statuses(r)[-1] == "Idle")
            resp = await r.sim.call(
                CP, call.TriggerMessage(requested_message="FirmwareStatusNotification")
            )
            assert resp.status == "Accepted"
            await r.sim.wait_for(lambda: bool(r.sim.actions("FirmwareStatusNotification")))
            assert r.sim.actions("FirmwareStatusNotification")[-1].payload == {"status": "Idle"}


async def test_the_time_window_limits_the_journal_excerpt(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1) as r:
            await r.online()
            old = await r.start_session(1, "OLD")
            await r.station.commands.stop_session(old, StopReason.LOCAL)
            cut = r.station.clock.wall() + 0.5
            await r.until(lambda: r.station.clock.wall() > cut)
            new = await r.start_session(1, "NEW")
            start = call.GetDiagnostics(
                location=http.url("/x/"),
                retries=0,
                start_time=iso(cut),
            )
            await r.sim.call(CP, start)
            assert (await _final(r))[-1] == "Uploaded"
            files = _bundle(http.uploads[0].body)
            ids = [json.loads(x)["id"] for x in files["journal/sessions.jsonl"].splitlines()]
            assert ids == [new]
            events = [json.loads(x) for x in files["journal/events.jsonl"].splitlines()]
            assert events and all(e["at"] >= cut for e in events)
            assert old not in {e["session_id"] for e in events}


async def test_the_owner_downloads_the_same_bundle_and_others_may_not(tmp_path: Path) -> None:
    from tests.test_api_rig import add_user, api_client, running_station, setup_owner

    async with running_station(tmp_path) as rig_:
        owner = await api_client(rig_.station)
        r = await owner.get("/api/v1/diagnostics/bundle")
        assert r.status_code == 401
        await setup_owner(owner)
        r = await owner.get("/api/v1/diagnostics/bundle", params={"hours": 2})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        name = r.headers["content-disposition"].split('filename="')[1].rstrip('"')
        files = _bundle(r.content)
        assert FILES <= set(files) and name.startswith("diagnostics-")
        manifest = json.loads(files["manifest.json"])
        assert manifest["station_id"] == rig_.station.cfg.station.id
        (row,) = await rig_.station.journal.audit_log(kind="diagnostics_downloaded")
        assert row["actor"] == "user:owner" and name in row["detail"]
        for role in ("installer", "viewer"):
            other = await add_user(owner, f"u-{role}", role)
            r = await other.get("/api/v1/diagnostics/bundle")
            assert r.status_code == 403 and r.json()["error"] == "forbidden", role
        r = await owner.get("/api/v1/diagnostics/bundle", params={"hours": -1})
        assert r.status_code == 422
