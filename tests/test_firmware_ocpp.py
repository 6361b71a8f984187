"""UpdateFirmware from the development CSMS (real websocket), the image from a real HTTP server:
download with retries, the Ed25519 signature and the digest checks, installation bay by bay only
when the bay is free, and the FirmwareStatusNotification sequence. The node side is the rig's fake hub taking the image
(the real transfer to a simulated node is tests/test_firmware_node.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ocpp.v16 import call

from controller.core.persist import iso
from controller.core.tokens import b64url_encode, ed25519_raw
from controller.ports import FirmwareProgress, FirmwareUpdateFailed
from tests.support.file_servers import HttpFiles, http_files
from tests.test_ocpp_support import CP, Rig, rig

pytestmark = pytest.mark.timeout(90)

IMAGE = bytes(range(256)) * 40
VERSION = "sim-esp32/2.0.0"
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNED = {"firmware_key": b64url_encode(ed25519_raw(SIGNER.public_key()))}
HASH_ONLY = {"firmware_hash_only": True}


class NodeImages:
    """What the nodes of the rig's hub were given (and whether two ran at once)."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, bytes, str]] = []
        self.running = 0
        self.most_at_once = 0
        self.fail = fail

    async def __call__(
        self, node_id: str, image: bytes, version: str, progress: FirmwareProgress
    ) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            progress("transfer", 0, len(image))
            await asyncio.sleep(0.05)  # a transfer takes a while: another must not start
            self.calls.append((node_id, image, version))
            if self.fail:
                raise FirmwareUpdateFailed(node_id, self.fail, "The new firmware did not start.")
            progress("installed", len(image), len(image))
        finally:
            self.running -= 1


def _publish(
    http: HttpFiles, digest: bytes | None = None, signer: Ed25519PrivateKey | None = SIGNER
) -> str:
    manifest = f"{(digest or hashlib.sha256(IMAGE).digest()).hex()}  {VERSION}\n".encode()
    http.files["/fw/node.bin"] = IMAGE
    http.files["/fw/node.bin.sha256"] = manifest
    if signer is not None:
        http.files["/fw/node.bin.sig"] = signer.sign(manifest)
    return http.url("/fw/node.bin")


def _statuses(r: Rig) -> list[str]:
    return [x.payload["status"] for x in r.sim.actions("FirmwareStatusNotification")]


async def _update(r: Rig, location: str, **kw: int) -> None:
    now = iso(r.station.clock.wall())
    await r.sim.call(CP, call.UpdateFirmware(location=location, retrieve_date=now, **kw))


async def _final(r: Rig, timeout: float = 30.0) -> list[str]:
    ends = ("Installed", "InstallationFailed", "DownloadFailed")
    await r.sim.wait_for(lambda: any(s in ends for s in _statuses(r)), timeout=timeout)
    return _statuses(r)


async def test_update_downloads_checks_and_installs_one_node_at_a_time(tmp_path: Path) -> None:
    with http_files() as http:
        http.fail_next = 1  # the first download attempt fails: retried
        async with rig(tmp_path, bays=2, cfg=SIGNED) as r:
            nodes = NodeImages()
            r.hub.update_firmware = nodes  # type: ignore[attr-defined]
            for n in r.hub.nodes.values():
                n.plugged = False  # no vehicle anywhere
            r.hub.push()
            await r.online()
            await _update(r, _publish(http), retries=1, retry_interval=0)
            assert await _final(r) == ["Downloading", "Downloaded", "Installing", "Installed"]
            assert [c[0] for c in nodes.calls] == ["bay1", "bay2"]
            assert all(c[1] == IMAGE and c[2] == VERSION for c in nodes.calls)
            assert nodes.most_at_once == 1
            assert all(rt.state.available for rt in r.station.bays.values())  # given back
            rows = await r.station.journal.audit_log(kind="firmware_update_installed")
            assert sorted(json.loads(x["detail"])["bay_id"] for x in rows) == ["bay1", "bay2"]
            assert r.up.firmware.progress["bay1"]["state"] == "installed"
            (row,) = await r.station.journal.audit_log(kind="firmware_downloaded")
            assert json.loads(row["detail"])["signed"] is True
            assert r.up.keys.get("SupportedFeatureProfiles").count("FirmwareManagement") == 1
            await r.sim.call(
                CP, call.TriggerMessage(requested_message="FirmwareStatusNotification")
            )
            await r.sim.wait_for(lambda: _statuses(r)[-1] == "Idle")


async def test_an_image_that_does_not_match_its_digest_is_never_installed(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1, cfg=HASH_ONLY) as r:
            nodes = NodeImages()
            r.hub.update_firmware = nodes  # type: ignore[attr-defined]
            await r.online()
            await _update(r, _publish(http, digest=hashlib.sha256(b"other").digest()))
            assert await _final(r) == ["Downloading", "DownloadFailed"]
            assert nodes.calls == []
            (row,) = await r.station.journal.audit_log(kind="firmware_download_failed")
            assert "SHA-256" in row["detail"]


async def test_a_download_that_keeps_failing_reports_download_failed(tmp_path: Path) -> None:
    with http_files() as http:
        http.fail_next = 100
        async with rig(tmp_path, bays=1, cfg=HASH_ONLY) as r:
            r.hub.update_firmware = NodeImages()  # type: ignore[attr-defined]
            await r.online()
            await _update(r, _publish(http), retries=2, retry_interval=0)
            assert await _final(r) == ["Downloading", "DownloadFailed"]
            assert len(http.attempts) == 3


async def test_a_bay_with_a_car_plugged_is_updated_only_once_it_is_free(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1, cfg=HASH_ONLY) as r:
            nodes = NodeImages()
            r.hub.update_firmware = nodes  # type: ignore[attr-defined]
            node = r.hub.node(r.bay(1).cfg.node_id)
            node.pilot = True  # a vehicle is plugged and the node says so (pilot B)
            r.hub.push()
            await r.online()
            await _update(r, _publish(http))
            await r.sim.wait_for(lambda: "Installing" in _statuses(r))
            with pytest.raises(TimeoutError):
                await r.sim.wait_for(lambda: "Installed" in _statuses(r), timeout=1.5)
            assert nodes.calls == [] and r.up.firmware.progress["bay1"]["state"] == "waiting"
            r.hub.plug(node.node_id, False)  # the vehicle leaves
            assert (await _final(r))[-1] == "Installed"
            assert [c[0] for c in nodes.calls] == ["bay1"]


async def test_a_node_that_rolls_back_makes_the_installation_fail(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1, cfg=HASH_ONLY) as r:
            r.hub.update_firmware = NodeImages(fail="rolled_back")  # type: ignore[attr-defined]
            for n in r.hub.nodes.values():
                n.plugged = False
            await r.online()
            await _update(r, _publish(http))
            assert await _final(r) == [
                "Downloading",
                "Downloaded",
                "Installing",
                "InstallationFailed",
            ]
            (row,) = await r.station.journal.audit_log(kind="firmware_update_failed")
            assert json.loads(row["detail"])["stage"] == "rolled_back"
            assert r.bay(1).state.available


async def test_a_forged_signature_is_refused_before_any_node_sees_the_image(
    tmp_path: Path,
) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1, cfg=SIGNED) as r:
            nodes = NodeImages()
            r.hub.update_firmware = nodes  # type: ignore[attr-defined]
            await r.online()
            forger = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
            await _update(r, _publish(http, signer=forger), retries=3, retry_interval=0)
            assert await _final(r) == ["Downloading", "DownloadFailed"]
            assert nodes.calls == [] and r.station.firmware.progress == {}
            assert len([a for a in http.attempts if a[1].endswith("node.bin")]) == 1  # not retried
            (row,) = await r.station.journal.audit_log(kind="firmware_download_failed")
            assert "signature does not match" in json.loads(row["detail"])["error"]


async def test_an_unsigned_image_needs_hash_only_to_be_configured(tmp_path: Path) -> None:
    with http_files() as http:
        async with rig(tmp_path, bays=1) as r:  # no key, hash-only not allowed
            nodes = NodeImages()
            r.hub.update_firmware = nodes  # type: ignore[attr-defined]
            await r.online()
            await _update(r, _publish(http, signer=None))
            assert await _final(r) == ["Downloading", "DownloadFailed"]
            assert nodes.calls == []
            (row,) = await r.station.journal.audit_log(kind="firmware_download_failed")
            assert "No firmware key" in json.loads(row["detail"])["error"]
