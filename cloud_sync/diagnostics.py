"""GetDiagnostics: build the bundle (:mod:`controller.ops.diagnostics`) and upload it.

One request at a time, in the order they came (at most :data:`MAX_QUEUED`
waiting; more are refused with no file name). Each is tried ``retries + 1``
times, ``retryInterval`` seconds apart; the central system hears Uploading when
the first attempt starts, then Uploaded or UploadFailed
(DiagnosticsStatusNotification). A TriggerMessage for that notification gets
Uploading while one runs, Idle otherwise. Every outcome is in the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from cloud_sync.transfer import TransferError, check_location, safe_location, upload
from controller.core.station import Station
from controller.ops.diagnostics import build_bundle, stamp

log = structlog.get_logger(__name__)

MAX_QUEUED = 2
DEFAULT_RETRIES = 1
DEFAULT_RETRY_INTERVAL_S = 30.0
UPLOAD_TIMEOUT_S = 120.0

SendStatus = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DiagnosticsJob:
    location: str
    name: str
    retries: int
    retry_interval_s: float
    since: float | None
    until: float | None


class DiagnosticsUploads:
    def __init__(self, station: Station, send_status: SendStatus) -> None:
        self._station = station
        self._send_status = send_status
        self._queue: asyncio.Queue[DiagnosticsJob] = asyncio.Queue(maxsize=MAX_QUEUED)
        self.status = "Idle"  # what a TriggerMessage answers: Uploading while one runs
        self.last: tuple[str, str] | None = None  # (file name, final status) of the last one
        self.timeout_s = UPLOAD_TIMEOUT_S

    def request(
        self,
        location: str,
        *,
        retries: int | None = None,
        retry_interval_s: float | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> str | None:
        """Queue an upload; its file name, or None when refused (bad location, queue full)."""
        try:
            check_location(location)
        except TransferError as err:
            log.warning("ocpp.diagnostics_refused", why=str(err))
            return None
        st = self._station
        name = f"diagnostics-{st.cfg.station.id}-{stamp(st.clock.wall())}.zip"
        job = DiagnosticsJob(
            location,
            name,
            max(0, retries if retries is not None else DEFAULT_RETRIES),
            max(
                0.0, retry_interval_s if retry_interval_s is not None else DEFAULT_RETRY_INTERVAL_S
            ),
            since,
            until,
        )
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("ocpp.diagnostics_refused", why="busy")
            return None
        return name

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            self.status = "Uploading"
            try:
                final = await self._do(job)
            finally:
                self.status = "Idle"
            self.last = (job.name, final)
            await self._tell(final)

    async def _do(self, job: DiagnosticsJob) -> str:
        st = self._station
        where = safe_location(job.location)
        await self._tell("Uploading")
        bundle = await build_bundle(st, since=job.since, until=job.until)
        error = ""
        for attempt in range(job.retries + 1):
            if attempt:
                await st.clock.sleep(job.retry_interval_s)
            try:
                await asyncio.to_thread(
                    upload, job.location, job.name, bundle.data, timeout_s=self.timeout_s
                )
            except TransferError as err:
                error = str(err)
                log.warning(
                    "ocpp.diagnostics_upload_failed",
                    location=where,
                    attempt=attempt + 1,
                    error=error,
                )
                continue
            log.info(
                "ocpp.diagnostics_uploaded", location=where, name=job.name, size=len(bundle.data)
            )
            await st.audit.record(
                "diagnostics_uploaded",
                "csms",
                {"location": where, "file": job.name, "bytes": len(bundle.data)},
            )
            return "Uploaded"
        await st.audit.record(
            "diagnostics_upload_failed",
            "csms",
            {"location": where, "file": job.name, "attempts": job.retries + 1, "error": error},
        )
        return "UploadFailed"

    async def _tell(self, status: str) -> None:
        try:
            await self._send_status(status)
        except Exception as err:  # the upload's outcome stands even if the CSMS cannot hear it
            log.info("ocpp.diagnostics_status_unsent", status=status, error=repr(err))
