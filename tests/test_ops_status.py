"""``edge-station status`` against a station served over real HTTP, and against a stopped one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from controller.cli.main import build_parser
from controller.core import firmware
from controller.core.firmware import RUNNING_VERSION
from controller.core.journal import Journal
from controller.ops.looplag import LoopLagMonitor
from local_ui.server import create_app
from tests.test_api_rig import Rig, api_client, running_station, setup_owner
from tests.test_ops_backup import _close, _open


def status(*argv: str) -> int:
    args = build_parser().parse_args(["status", *argv])
    return int(args.func(args))


@contextlib.asynccontextmanager
async def served(rig: Rig) -> AsyncIterator[str]:
    # The socket listens before the server runs: connections wait in its backlog.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(rig.station), log_config=None, lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        sock.close()


async def test_status_of_a_running_station(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_station(tmp_path) as rig, served(rig) as url:
        # A frozen clock: this monitor is not running, and a loaded machine must not make it
        # look stalled between its one sample and the status call.
        mon = LoopLagMonitor(clock=lambda: 1000.0)
        rig.station.loop_lag = mon  # type: ignore[attr-defined]
        mon.record(0.003, mon.now())
        assert await asyncio.to_thread(status, "--url", url) == 0
        out = capsys.readouterr().out
        assert f"ui-test at {url}: HEALTHY" in out
        assert "2/2 nodes online: bay1 Available, locker1 Available" in out
        assert "journal     writable; outbox 0 pending, 0 failed" in out
        assert "sessions    0 open, 0 closed, 0.000 kWh delivered" in out
        assert "loop lag    latest 3.0 ms" in out and "safe mode   none" in out

        await rig.station.safety.emergency_stop(True)
        assert await asyncio.to_thread(status, "--url", url + "/") == 1
        out = capsys.readouterr().out
        assert "UNHEALTHY (503)" in out and "! emergency_stop: Emergency stop" in out
        assert "safe mode   emergency_stop" in out


async def test_status_of_a_stopped_station_reads_its_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    journal = await Journal.open(data / "journal.sqlite3")
    try:
        await journal.commit(_open(1, "b1", 1_700_000_000.0))
        await journal.commit(_open(2, "b2", 1_700_000_010.0))
        await journal.commit(_close("s000001", "b1", 1_700_000_020.0))
    finally:
        await journal.close()
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "station.toml"
    cfg.write_text(f'[station]\ndata_dir = "data"\n[http]\nhost = "0.0.0.0"\nport = {port}\n')
    before = sorted(p.name for p in data.iterdir())

    assert status("--config", str(cfg), "--timeout", "1") == 2
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}: UNREACHABLE" in out
    assert "outbox      3 pending, 0 failed" in out  # 2 starts, 1 stop
    assert "sessions    1 open" in out and "s000002 on b2 since 2023-11-14T22:13:30+00:00" in out
    assert "session_closed" in out
    assert sorted(p.name for p in data.iterdir()) == before  # read-only: nothing created

    assert status("--url", f"http://127.0.0.1:{port}", "--timeout", "1") == 2
    cfg.write_text("[station]\nnope = 1\n")
    assert status("--config", str(cfg)) == 2
    assert "invalid configuration" in capsys.readouterr().err


async def test_status_shows_the_software_version_and_the_node_firmware_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:  # the station ran 0.0.9 until now
        await journal.kv_set("software_version", {"version": "0.0.9", "since": 1.7e9})
    finally:
        await journal.close()
    async with running_station(tmp_path) as rig, served(rig) as url:
        st = rig.station
        assert await asyncio.to_thread(status, "--url", url) == 0
        out = capsys.readouterr().out
        assert (
            f"software    edge-station {RUNNING_VERSION}: up to date (updated from 0.0.9 on " in out
        )
        assert "firmware    no node update running" in out
        (row,) = await st.journal.audit_log(kind="software_updated")
        assert row["actor"] == "station"

        # A node update half-way through bay1's transfer, the locker waiting its turn.
        halfway, release = asyncio.Event(), asyncio.Event()

        async def update(node_id: str, image: bytes, version: str, progress: Any) -> None:
            progress("transfer", len(image) // 2, len(image))
            halfway.set()
            await release.wait()

        rig.hub.update_firmware = update  # type: ignore[attr-defined]
        st.firmware.set_status("Installing", "fake-2.0.0")
        task = asyncio.create_task(st.firmware.install_all(b"x" * 1000, "fake-2.0.0"))
        await asyncio.wait_for(halfway.wait(), 5)
        await asyncio.to_thread(status, "--url", url)
        out = capsys.readouterr().out
        assert (
            "firmware    node update fake-2.0.0 Installing: bay1 transfer 50 %, locker1 waiting"
            in out
        )
        release.set()
        assert await task is True
        st.firmware.set_status("Installed")
        st.firmware.set_status("Idle")

        # A newer version installed on disk while this one runs: a restart is due.
        monkeypatch.setattr(firmware, "_dist_version", lambda: "99.0.0")
        st.firmware.software._installed = None
        await asyncio.to_thread(status, "--url", url)
        out = capsys.readouterr().out
        assert "99.0.0 is installed, restart to run it" in out
        assert "no node update running; last fake-2.0.0 Installed at " in out
        client = await api_client(st)
        await setup_owner(client)
        sw = (await client.get("/api/v1/firmware")).json()["software"]
        assert sw["state"] == "restart_needed" and sw["installed"] == "99.0.0"
        assert sw["message"] == "Version 99.0.0 is installed: restart the station to run it."
        assert sw["previous"] == "0.0.9" and sw["version"] == RUNNING_VERSION
