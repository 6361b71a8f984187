"""UpdateFirmware: download a node image, check it, and install it on the bays' nodes.

The location names the image; ``<location>.sha256`` next to it holds its
SHA-256 in hex, optionally followed by the version (the image's file name
without its extension otherwise). An image whose digest differs is refused
before any node sees it. The image then goes to every node whose hub takes
firmware (``controller.ports.NodeFirmware``), one node at a time, each only
while its bay has no vehicle and no session: the bay is taken out of service
for the update (no session can start meanwhile) and put back as it was.

The central system hears Downloading, then Downloaded or DownloadFailed (after
``retries``, ``retryInterval`` apart), then Installing, then Installed or
InstallationFailed (FirmwareStatusNotification). A TriggerMessage gets the
status of the update running, Idle otherwise. Each node's start and outcome
go to the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import structlog

from cloud_sync.transfer import TransferError, check_location, download, safe_location
from controller.core.bays import BayRuntime
from controller.core.station import Station
from controller.ports import DriverError, NodeFirmware, PilotState

log = structlog.get_logger(__name__)

DEFAULT_RETRIES = 1
DEFAULT_RETRY_INTERVAL_S = 60.0
DOWNLOAD_TIMEOUT_S = 300.0
ACTOR = "firmware"

SendStatus = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FirmwareJob:
    location: str
    retrieve_at: float
    retries: int
    retry_interval_s: float


class ImageRefused(Exception):
    """The downloaded image does not match its published digest."""


def parse_digest(text: str, location: str) -> tuple[bytes, str]:
    """``<hex sha256> [version]`` -> (digest, version)."""
    parts = text.split()
    if not parts:
        raise ImageRefused("The image's checksum file is empty.")
    try:
        digest = bytes.fromhex(parts[0])
    except ValueError:
        raise ImageRefused("The image's checksum file holds no SHA-256.") from None
    if len(digest) != 32:
        raise ImageRefused("The image's checksum file holds no SHA-256.")
    stem = PurePosixPath(urllib.parse.urlsplit(location).path).stem
    return digest, (parts[1] if len(parts) > 1 else stem)[:32]


def bay_is_free(rt: BayRuntime) -> bool:
    """No session, no hold, and no vehicle at the plug (as far as the node says)."""
    s = rt.state
    if s.session is not None or s.phase.value != "idle" or not s.node_online:
        return False
    tel = rt.telemetry
    return tel is None or tel.pilot in (PilotState.A, PilotState.NONE)


class FirmwareUpdates:
    def __init__(self, station: Station, send_status: SendStatus) -> None:
        self._station = station
        self._send_status = send_status
        self._queue: asyncio.Queue[FirmwareJob] = asyncio.Queue(maxsize=1)
        self.status = "Idle"  # what a TriggerMessage answers while nothing runs
        self.progress: dict[str, dict[str, object]] = {}  # bay id -> stage and bytes (the UI)
        self.timeout_s = DOWNLOAD_TIMEOUT_S

    def request(
        self,
        location: str,
        retrieve_at: float,
        *,
        retries: int | None = None,
        retry_interval_s: float | None = None,
    ) -> bool:
        """Queue an update; False when refused (bad location, one already waiting)."""
        try:
            check_location(location)
        except TransferError as err:
            log.warning("ocpp.firmware_refused", why=str(err))
            return False
        job = FirmwareJob(
            location,
            retrieve_at,
            max(0, DEFAULT_RETRIES if retries is None else retries),
            max(0.0, DEFAULT_RETRY_INTERVAL_S if retry_interval_s is None else retry_interval_s),
        )
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("ocpp.firmware_refused", why="an update is already waiting")
            return False
        return True

    def targets(self) -> list[tuple[BayRuntime, NodeFirmware]]:
        out: list[tuple[BayRuntime, NodeFirmware]] = []
        for rt in self._station.bays.values():
            hub = self._station.hubs.get(rt.cfg.bus)
            if isinstance(hub, NodeFirmware):
                out.append((rt, hub))
        return out

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._do(job)
            finally:
                self.status = "Idle"

    async def _tell(self, status: str) -> None:
        self.status = status
        try:
            await self._send_status(status)
        except Exception as err:  # the update goes on even if the CSMS cannot hear it
            log.info("ocpp.firmware_status_unsent", status=status, error=repr(err))

    async def _do(self, job: FirmwareJob) -> None:
        st = self._station
        wait = job.retrieve_at - st.clock.wall()
        if wait > 0:
            await st.clock.sleep(wait)
        await self._tell("Downloading")
        fetched = await self._download(job)
        if fetched is None:
            await self._tell("DownloadFailed")
            return
        image, version = fetched
        await self._tell("Downloaded")
        await self._tell("Installing")
        ok = True
        for rt, hub in self.targets():
            ok = await self._install(rt, hub, image, version) and ok
        await self._tell("Installed" if ok else "InstallationFailed")

    async def _download(self, job: FirmwareJob) -> tuple[bytes, str] | None:
        st = self._station
        where = safe_location(job.location)
        error = ""
        for attempt in range(job.retries + 1):
            if attempt:
                await st.clock.sleep(job.retry_interval_s)
            try:
                image = await asyncio.to_thread(download, job.location, timeout_s=self.timeout_s)
                digest_text = await asyncio.to_thread(
                    download, job.location + ".sha256", timeout_s=self.timeout_s, limit=4096
                )
                digest, version = parse_digest(digest_text.decode("utf-8", "replace"), job.location)
            except TransferError as err:
                error = str(err)
                log.warning("ocpp.firmware_download_failed", location=where, error=error)
                continue
            except ImageRefused as err:
                error = str(err)
                break
            if hashlib.sha256(image).digest() != digest:
                error = "The downloaded image does not match its SHA-256: it was not installed."
                break
            await st.audit.record(
                "firmware_downloaded", ACTOR, {"location": where, "version": version}
            )
            return image, version
        log.warning("ocpp.firmware_refused", location=where, error=error)
        await st.audit.record(
            "firmware_download_failed", ACTOR, {"location": where, "error": error}
        )
        return None

    async def _wait_free(self, rt: BayRuntime) -> None:
        async with self._station.events.subscription(lossy=True) as updates:
            while not bay_is_free(rt):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await updates.get()

    async def _install(self, rt: BayRuntime, hub: NodeFirmware, image: bytes, version: str) -> bool:
        st = self._station
        bay_id = rt.cfg.id
        self.progress[bay_id] = {"stage": "waiting", "done": 0, "total": len(image)}
        while True:
            await self._wait_free(rt)
            was_available = rt.state.available
            await st.commands.set_availability(bay_id, False, actor=ACTOR)
            if bay_is_free(rt):
                break
            if was_available:  # someone came just then: give the bay back and wait again
                await st.commands.set_availability(bay_id, True, actor=ACTOR)
        await st.audit.record(
            "firmware_update_started", ACTOR, {"bay_id": bay_id, "version": version}
        )

        def progress(stage: str, done: int, total: int) -> None:
            self.progress[bay_id] = {"stage": stage, "done": done, "total": total}

        try:
            await hub.update_firmware(rt.cfg.node_id, image, version, progress)
        except DriverError as err:  # FirmwareUpdateFailed, or the hub cannot reach the node
            stage = str(getattr(err, "stage", "driver"))
            self.progress[bay_id] = {"stage": "failed", "message": str(err)}
            await st.audit.record(
                "firmware_update_failed",
                ACTOR,
                {"bay_id": bay_id, "version": version, "stage": stage, "message": str(err)},
            )
            return False
        finally:
            if was_available:
                await st.commands.set_availability(bay_id, True, actor=ACTOR)
        await st.audit.record(
            "firmware_update_installed", ACTOR, {"bay_id": bay_id, "version": version}
        )
        return True
