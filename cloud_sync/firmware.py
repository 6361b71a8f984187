"""UpdateFirmware: download a node image, check its signature and hash, and install it.

The location names the image; ``<location>.sha256`` next to it is its
manifest: the image's SHA-256 in hex, optionally followed by the version (the
image's file name without its extension otherwise). ``<location>.sig`` is the
Ed25519 signature of the manifest's exact bytes (raw 64 bytes, or base64), made
with the key whose public half is ``[ocpp] firmware_key``: the signature binds
the version and, through the hash, the image. An image is accepted with its
hash alone only when ``firmware_hash_only`` is set (development). A bad or
missing signature, a hash that differs, or no key configured: the image is
refused before any node sees it, audited, and the central system hears
DownloadFailed (OCPP 1.6 has no InvalidSignature, and Downloaded would announce
an image the station will not install).

The nodes' side (one at a time, each only while its bay is free or when the
installer forces it, progress and audit) is :mod:`controller.core.firmware`.

The central system hears Downloading, then Downloaded or DownloadFailed (after
``retries``, ``retryInterval`` apart), then Installing, then Installed or
InstallationFailed (FirmwareStatusNotification). A TriggerMessage gets the
status of the update running, Idle otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_sync.transfer import TransferError, check_location, download, safe_location
from controller.core.station import Station

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


def parse_signature(data: bytes) -> bytes:
    """A 64-byte Ed25519 signature, raw or in base64."""
    if len(data) == 64:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("The image's signature file cannot be read.") from None
    if len(raw) != 64:
        raise ImageRefused("The image's signature file cannot be read.")
    return raw


class FirmwareUpdates:
    def __init__(
        self,
        station: Station,
        send_status: SendStatus,
        *,
        key: Ed25519PublicKey | None = None,
        hash_only: bool = False,
    ) -> None:
        self._station = station
        self._send_status = send_status
        self._queue: asyncio.Queue[FirmwareJob] = asyncio.Queue(maxsize=1)
        self.key = key
        self.hash_only = hash_only
        self.timeout_s = DOWNLOAD_TIMEOUT_S

    @property
    def status(self) -> str:
        """What a TriggerMessage answers: the update's stage, Idle while nothing runs."""
        return self._station.firmware.status

    @property
    def progress(self) -> dict[str, dict[str, object]]:
        """Bay id -> the node's progress (as the owner UI shows it)."""
        return {b: p.view() for b, p in self._station.firmware.progress.items()}

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

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._do(job)
            finally:
                self._station.firmware.set_status("Idle")

    async def _tell(self, status: str, version: str | None = None) -> None:
        self._station.firmware.set_status(status, version)
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
        await self._tell("Downloaded", version)
        await self._tell("Installing")
        ok = await st.firmware.install_all(image, version)
        await self._tell("Installed" if ok else "InstallationFailed")

    def _check(self, image: bytes, manifest: bytes, signature: bytes | None, location: str) -> str:
        """The version, once the image passes its checks; :class:`ImageRefused` otherwise."""
        if self.key is not None and signature is not None:
            try:
                self.key.verify(parse_signature(signature), manifest)
            except InvalidSignature:
                raise ImageRefused(
                    "The image's signature does not match the station's firmware key:"
                    " it was not installed."
                ) from None
        elif not self.hash_only:
            raise ImageRefused(
                "No firmware key is configured to check the image's signature: it was not"
                " installed."
            )
        digest, version = parse_digest(manifest.decode("utf-8", "replace"), location)
        if hashlib.sha256(image).digest() != digest:
            raise ImageRefused(
                "The downloaded image does not match its SHA-256: it was not installed."
            )
        return version

    async def _download(self, job: FirmwareJob) -> tuple[bytes, str] | None:
        st = self._station
        where = safe_location(job.location)
        error = ""

        def fetch(suffix: str, limit: int | None = None) -> Awaitable[bytes]:
            kw = {} if limit is None else {"limit": limit}
            return asyncio.to_thread(
                download, job.location + suffix, timeout_s=self.timeout_s, **kw
            )

        for attempt in range(job.retries + 1):
            if attempt:
                await st.clock.sleep(job.retry_interval_s)
            try:
                image = await fetch("")
                manifest = await fetch(".sha256", 4096)
                signature = await fetch(".sig", 4096) if self.key is not None else None
                version = self._check(image, manifest, signature, job.location)
            except TransferError as err:
                error = str(err)
                log.warning("ocpp.firmware_download_failed", location=where, error=error)
                continue
            except ImageRefused as err:
                error = str(err)
                break
            await st.audit.record(
                "firmware_downloaded",
                ACTOR,
                {"location": where, "version": version, "signed": signature is not None},
            )
            return image, version
        log.warning("ocpp.firmware_refused", location=where, error=error)
        await st.audit.record(
            "firmware_download_failed", ACTOR, {"location": where, "error": error}
        )
        return None
