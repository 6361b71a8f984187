"""The installer forces a node firmware update on a bay in use: the session is stopped and
journaled, the node reports itself off, only then is it updated; progress and versions in the
owner API, each step in the audit log. A real Station and Journal with the UI rig's self-driving
node hub (the transfer itself to a simulated node is tests/test_firmware_node.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from controller.cli.main import build_parser
from controller.core.firmware import RUNNING_VERSION
from controller.ports import FirmwareProgress, NodeHello, PilotState
from tests.support.fake_nodes import FakeHub
from tests.test_api_rig import PASSWORD, add_user, api_client, running_station, setup_owner
from tests.test_ops_status import served

pytestmark = pytest.mark.timeout(60)

IMAGE = bytes(range(256)) * 20
NEW = "fake-2.0.0"


def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


class NodeImages:
    """The hub's ``update_firmware``: what each node's relay and current were when it began."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.calls: list[tuple[str, bool, float]] = []

    async def __call__(
        self, node_id: str, image: bytes, version: str, progress: FirmwareProgress
    ) -> None:
        node = self.hub.nodes[node_id]
        self.calls.append((node_id, node.relay_on, node.drawing_a()))
        for done in range(0, len(image) + 1, len(image) // 4):
            progress("transfer", done, len(image))
            await asyncio.sleep(0)
        progress("booting", len(image), len(image))
        node.link.firmware = version
        self.hub.emit(NodeHello(node_id, time.monotonic(), version, 1))
        progress("installed", len(image), len(image))


async def test_a_forced_update_stops_the_session_waits_for_the_node_off_then_updates(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        owner = await api_client(st)
        await setup_owner(owner)
        installer = await add_user(owner, "ina", "installer")
        viewer = await add_user(owner, "vic", "viewer")
        nodes = NodeImages(rig.hub)
        rig.hub.update_firmware = nodes  # type: ignore[attr-defined]
        rig.hub.plug("bay1")
        r = await owner.post("/api/v1/bays/bay1/token", json={"token": "1234"})
        assert r.status_code == 200, r.text
        await rig.until(lambda: rig.status("bay1") == "Charging")
        session = st.bays["bay1"].state.session
        assert session is not None

        r = await installer.post("/api/v1/firmware/bays/bay1/force")
        assert r.status_code == 409 and r.json()["message"] == (
            "No firmware update is waiting for this bay."
        )

        task = asyncio.create_task(st.firmware.install_all(IMAGE, NEW))
        progress = st.firmware.progress
        # The free locker goes first; the charging bay waits, still charging.
        await rig.until(lambda: "bay1" in progress and progress["bay1"].waiting_since is not None)
        assert progress["bay1"].state == "waiting" and progress["locker1"].state == "installed"
        assert [c[0] for c in nodes.calls] == ["locker1"]
        assert rig.hub.nodes["bay1"].drawing_a() > 0

        r = await viewer.get("/api/v1/firmware")
        assert r.status_code == 200, r.text
        fw = r.json()
        assert fw["software"]["version"] == RUNNING_VERSION != "unknown"
        assert fw["software"]["state"] == "up_to_date"
        assert fw["update"]["version"] == NEW
        by_bay = {n["bay_id"]: n for n in fw["update"]["nodes"]}
        assert by_bay["locker1"]["state"] == "installed" and by_bay["locker1"]["percent"] == 100
        assert by_bay["locker1"]["version_before"] == "fake-1.2.3"
        assert by_bay["locker1"]["version_after"] == NEW
        assert by_bay["locker1"]["message"] == f"Updated from fake-1.2.3 to {NEW}."
        assert by_bay["bay1"]["state"] == "waiting" and by_bay["bay1"]["percent"] == 0
        assert by_bay["bay1"]["message"].startswith("Waiting for the bay to be free")
        versions = {n["bay_id"]: n["firmware"] for n in fw["nodes"]}
        assert versions == {"bay1": "fake-1.2.3", "locker1": NEW}

        r = await viewer.post("/api/v1/firmware/bays/bay1/force")
        assert r.status_code == 403
        assert not task.done() and st.bays["bay1"].state.session is not None

        r = await installer.post("/api/v1/firmware/bays/bay1/force")
        assert r.status_code == 200, r.text
        assert r.json()["message"] == (
            "The session on this bay is stopped and its node updated as soon as it is off."
        )
        assert await asyncio.wait_for(task, 10) is True

        # Updated only once the node itself was off: relay open, nothing drawn.
        assert nodes.calls[-1] == ("bay1", False, 0.0)
        row = await st.journal.session(session.session_id)
        assert row is not None and row["stop_reason"] == "FirmwareUpdate"
        assert st.bays["bay1"].state.session is None and st.bays["bay1"].state.available
        assert st.bays["bay1"].firmware == NEW

        audit = [
            (a["kind"], a["actor"], a["text"])
            for a in reversed((await owner.get("/api/v1/audit?limit=100")).json())
            if a["detail"].get("bay_id") == "bay1" and "firmware" in a["kind"]
        ]
        assert audit == [
            (
                "firmware_update_waiting",
                "firmware",
                "The firmware update of bay bay1 waits until the bay is free"
                " (no vehicle plugged in, no session).",
            ),
            (
                "firmware_update_forced",
                "user:ina",
                "Forced the firmware update of bay bay1, stopping its session first.",
            ),
            (
                "firmware_session_stopped",
                "user:ina",
                "Stopped the session on bay bay1 for the firmware update.",
            ),
            (
                "firmware_update_started",
                "user:ina",
                f"Started updating the node of bay bay1 from fake-1.2.3 to {NEW}.",
            ),
            (
                "firmware_transferred",
                "firmware",
                f"Sent firmware {NEW} to the node of bay bay1; it is starting it.",
            ),
            (
                "firmware_update_installed",
                "firmware",
                f"Updated the node of bay bay1 from fake-1.2.3 to {NEW}.",
            ),
        ]
        detail = (await st.journal.audit_log(kind="firmware_update_forced"))[0]["detail"]
        assert json.loads(detail)["session"] is True


async def test_a_forced_bay_whose_node_stays_on_is_not_updated(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        st = rig.station
        nodes = NodeImages(rig.hub)
        rig.hub.update_firmware = nodes  # type: ignore[attr-defined]
        st.firmware.quiet_timeout_s = 0.5
        rig.hub.plug("bay1")
        out = await st.commands.present_token("bay1", "1234")
        assert out.ok, out
        await rig.until(lambda: rig.status("bay1") == "Charging")
        task = asyncio.create_task(st.firmware.install_all(IMAGE, NEW))
        await rig.until(lambda: "bay1" in st.firmware.progress)
        rig.hub.nodes["bay1"].fail_commands = True  # it no longer obeys: its relay stays closed
        assert (await st.firmware.force("bay1", actor="user:ina")).ok
        assert await asyncio.wait_for(task, 10) is False
        assert [c[0] for c in nodes.calls] == ["locker1"]  # never bay1, still drawing
        p = st.firmware.progress["bay1"]
        assert p.state == "failed" and p.message == (
            "The bay did not switch off in time, so its node was not updated."
        )
        (row,) = await st.journal.audit_log(kind="firmware_update_failed")
        assert json.loads(row["detail"])["stage"] == "not_off"


async def test_a_forced_bay_waits_for_its_hold_then_updates(tmp_path: Path) -> None:
    """Someone holds the bay (a reservation): forcing does not take it from them; once the
    hold is cancelled, the forced update goes ahead."""
    async with running_station(tmp_path) as rig:
        st = rig.station
        nodes = NodeImages(rig.hub)
        rig.hub.update_firmware = nodes  # type: ignore[attr-defined]
        held = await st.commands.place_hold("bay1", "CARD-9", 600)
        assert held.ok, held
        await rig.until(lambda: rig.status("bay1") == "Reserved")
        task = asyncio.create_task(st.firmware.install_all(IMAGE, NEW))
        await rig.until(lambda: [c[0] for c in nodes.calls] == ["locker1"])
        await rig.until(lambda: st.firmware.progress["bay1"].state == "waiting")
        assert (await st.firmware.force("bay1", actor="user:ina")).ok
        for _ in range(20):  # the station re-checks on every event and every second
            await asyncio.sleep(0.05)
        assert [c[0] for c in nodes.calls] == ["locker1"]  # bay1 is still held: not updated
        assert st.firmware.progress["bay1"].state == "waiting"
        cancelled = await st.commands.cancel_hold("bay1", held.data["hold_id"])
        assert cancelled.ok, cancelled
        assert await asyncio.wait_for(task, 10) is True
        assert [c[0] for c in nodes.calls] == ["locker1", "bay1"]
        assert st.firmware.progress["bay1"].state == "installed"


async def test_the_installer_forces_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_station(tmp_path) as rig, served(rig) as url:
        st = rig.station
        owner = await api_client(st)
        await setup_owner(owner)
        await add_user(owner, "ina", "installer")
        nodes = NodeImages(rig.hub)
        rig.hub.update_firmware = nodes  # type: ignore[attr-defined]
        rig.hub.plug("bay1")  # a car is plugged in, no session: the bay is not free
        await rig.until(lambda: st.bays["bay1"].state.pilot is PilotState.B)
        task = asyncio.create_task(st.firmware.install_all(IMAGE, NEW))
        progress = st.firmware.progress
        await rig.until(lambda: "bay1" in progress and progress["bay1"].waiting_since is not None)
        monkeypatch.setenv("EDGE_STATION_PASSWORD", PASSWORD)
        force = ("firmware", "force", "bay1", "--url", url, "--user", "ina")
        assert await asyncio.to_thread(cli, *force) == 0
        said = capsys.readouterr().out.splitlines()  # the station's own log lines come first
        assert said[-1] == "The bay's node is updated as soon as it is off."
        assert await asyncio.wait_for(task, 10) is True
        assert [c for c in nodes.calls if c[0] == "bay1"] == [("bay1", False, 0.0)]
        (row,) = await st.journal.audit_log(kind="firmware_update_forced")
        assert row["actor"] == "user:ina" and json.loads(row["detail"])["session"] is False

        assert await asyncio.to_thread(cli, *force) == 1  # nothing waits any more
        assert capsys.readouterr().err.splitlines()[-1] == (
            "No firmware update is waiting for this bay."
        )
        monkeypatch.setenv("EDGE_STATION_PASSWORD", "wrong password")
        assert await asyncio.to_thread(cli, *force) == 1
        assert capsys.readouterr().err.splitlines()[-1] == "Wrong user name or password."
