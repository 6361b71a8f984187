"""Node firmware at run time: which node gets an image when, its progress, and the audit.

An image (checked by whoever fetched it, see ``cloud_sync.firmware``) goes to
every node whose hub takes firmware (``controller.ports.NodeFirmware``), one
node at a time, each only while its bay is free: no session, no hold, no
vehicle at the plug. A bay that is not free waits; the others go first.

The installer may **force** a waiting bay (owner UI or ``edge-station
firmware force``, audited with their name). Forcing never updates a node under
load: a running session is stopped first (its journal record says why, stop
reason ``FirmwareUpdate``), the bay is taken out of service, and the update
starts only once the node itself reports its relay open and no current; if it
does not within :attr:`NodeUpdates.quiet_timeout_s`, the update of that bay
fails and the bay is given back. A held bay still waits for its hold.

:attr:`NodeUpdates.progress` holds, per bay, what the owner UI shows: the
state, the percentage sent, the version before and after, and what went wrong
as a sentence. Each step goes to the audit log. :attr:`NodeUpdates.status` is
the update's state as OCPP names it (``Idle``, ``Downloading`` ... ``Installed``),
set by the fetcher and shown with :attr:`NodeUpdates.last` (the previous
update's outcome) and :class:`Software` (this program's own version).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import structlog

from controller.core.audit import AuditLog
from controller.core.bay_model import CURRENT_DETECT_A, Phase, StopReason
from controller.core.bays import BayRuntime, Bays
from controller.core.commands import Commands
from controller.core.events import EventBus
from controller.core.journal import Journal, JournalError
from controller.core.outcome import Outcome
from controller.ports import Clock, DriverError, NodeFirmware, NodeHub, PilotState

log = structlog.get_logger(__name__)

ACTOR = "firmware"
QUIET_TIMEOUT_S = 30.0  # a forced bay must report relay open and no current within this
DIST = "edge-station"
SOFTWARE_KEY = "software_version"
INSTALLED_TTL_S = 30.0  # how long the installed package's version is taken as read


def _dist_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown"


RUNNING_VERSION = _dist_version()  # what this process runs: read once, at import


def bay_is_free(rt: BayRuntime) -> bool:
    """No session, no hold, and no vehicle at the plug (as far as the node says)."""
    s = rt.state
    if s.session is not None or s.phase is not Phase.IDLE or not s.node_online:
        return False
    if rt.test_output is not None:
        return False
    tel = rt.telemetry
    return tel is None or tel.pilot in (PilotState.A, PilotState.NONE)


def bay_is_quiet(rt: BayRuntime, since: float) -> bool:
    """No session, and the node reports (after ``since``) its relay open and no current."""
    s = rt.state
    if s.session is not None or not s.node_online or rt.test_output is not None:
        return False
    if s.phase not in (Phase.IDLE, Phase.FINISHING):
        return False
    tel = rt.telemetry
    if tel is None or tel.at < since:
        return False
    return not tel.relay_on and tel.max_current_a < CURRENT_DETECT_A


@dataclass(slots=True)
class NodeProgress:
    """One bay's node in the update running (or the last one), for the owner UI."""

    bay_id: str
    node_id: str
    version_before: str
    version_target: str
    state: str = "waiting"  # waiting, stopping, transfer, booting, installed, failed
    done: int = 0
    total: int = 0
    version_after: str | None = None
    message: str = "Waiting for the bay to be free (no vehicle plugged in, no session)."
    forced_by: str | None = None
    waiting_since: float | None = None  # since when it waits for its bay to be free
    updated_at: float = 0.0

    def view(self) -> dict[str, Any]:
        pct = round(100.0 * self.done / self.total, 1) if self.total else 0.0
        return {
            "bay_id": self.bay_id,
            "node_id": self.node_id,
            "state": self.state,
            "percent": 100.0 if self.state == "installed" else pct,
            "bytes_done": self.done,
            "bytes_total": self.total,
            "version_before": self.version_before or None,
            "version_target": self.version_target,
            "version_after": self.version_after,
            "message": self.message,
            "forced_by": self.forced_by,
            "waiting_since": self.waiting_since,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class Software:
    """This program's version: what runs, what is installed on disk, what ran before."""

    running: str = RUNNING_VERSION
    since: float | None = None  # when this version first started here
    previous: str | None = None  # the version that ran before it, if it changed
    _installed: tuple[float, str] | None = field(default=None, repr=False)

    def installed(self) -> str:
        """The package on disk now (read at most every :data:`INSTALLED_TTL_S`)."""
        now = time.monotonic()
        if self._installed is None or now - self._installed[0] > INSTALLED_TTL_S:
            self._installed = (now, _dist_version())
        return self._installed[1]

    def view(self) -> dict[str, Any]:
        installed = self.installed()
        restart = installed not in (self.running, "unknown")
        if restart:
            message = f"Version {installed} is installed: restart the station to run it."
        elif self.previous:
            message = f"Updated from {self.previous} to {self.running}."
        else:
            message = f"Running {self.running}."
        return {
            "version": self.running,
            "installed": installed,
            "state": "restart_needed" if restart else "up_to_date",
            "since": self.since,
            "previous": self.previous,
            "message": message,
        }


class NodeUpdates:
    def __init__(
        self,
        bays: Bays,
        hubs: dict[str, NodeHub],
        *,
        commands: Commands,
        audit: AuditLog,
        events: EventBus,
        clock: Clock,
    ) -> None:
        self._bays = bays
        self._hubs = hubs
        self._commands = commands
        self._audit = audit
        self._events = events
        self._clock = clock
        self.status = "Idle"  # the update's state, as OCPP's FirmwareStatus names it
        self.version: str | None = None  # the image being installed
        self.last: dict[str, Any] | None = None  # the previous update's outcome
        self.progress: dict[str, NodeProgress] = {}
        self.software = Software()
        self.quiet_timeout_s = QUIET_TIMEOUT_S
        self._forced: dict[str, str] = {}  # bay id -> who forced it
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one image at a time, one node at a time

    # ------------------------------------------------------------------ software version

    async def note_start(self, journal: Journal) -> None:
        """Remember which version runs now, and which ran before it (journal key-value)."""
        sw = self.software
        try:
            saved = await journal.kv_get(SOFTWARE_KEY)
            if isinstance(saved, dict) and saved.get("version") == sw.running:
                sw.since = saved.get("since")
                sw.previous = saved.get("previous")
                return
            sw.since = self._clock.wall()
            sw.previous = saved.get("version") if isinstance(saved, dict) else None
            await journal.kv_set(
                SOFTWARE_KEY, {"version": sw.running, "since": sw.since, "previous": sw.previous}
            )
        except JournalError as err:
            log.warning("firmware.version_unrecorded", error=repr(err))
            return
        if sw.previous is not None:
            await self._audit.record(
                "software_updated", "station", {"old": sw.previous, "new": sw.running}
            )

    # ------------------------------------------------------------------ what the UI reads

    def set_status(self, status: str, version: str | None = None) -> None:
        """The fetcher's stage (Downloading, Downloaded, Installing, the failures, Idle)."""
        if status != "Idle" and self.status == "Idle":
            self.progress.clear()
        self.status = status
        if version is not None:
            self.version = version
        if status in ("Installed", "InstallationFailed", "DownloadFailed"):
            self.last = {"status": status, "version": self.version, "at": self._clock.wall()}

    def view(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "last": self.last,
            "nodes": [p.view() for p in self.progress.values()],
        }

    def node_versions(self) -> list[dict[str, Any]]:
        out = []
        for bay_id, rt in self._bays.items():
            hub = self._hubs.get(rt.cfg.bus)
            out.append(
                {
                    "bay_id": bay_id,
                    "node_id": rt.cfg.node_id,
                    "firmware": _running(rt) or None,
                    "updatable": isinstance(hub, NodeFirmware),
                }
            )
        return out

    # ------------------------------------------------------------------ forcing

    async def force(self, bay_id: str, *, actor: str) -> Outcome:
        """Update a waiting bay now: a running session is stopped first (audited)."""
        self._bays.require(bay_id)
        p = self.progress.get(bay_id)
        if p is None or p.state != "waiting" or not self._lock.locked():
            return Outcome(False, "not_waiting", "No firmware update is waiting for this bay.")
        if bay_id in self._forced:
            return Outcome(True, "forced", "The update of this bay is already forced.")
        self._forced[bay_id] = actor
        p.forced_by = actor
        await self._audit.record(
            "firmware_update_forced",
            actor,
            {"bay_id": bay_id, "version": p.version_target, "session": self._has_session(bay_id)},
        )
        self._wake.set()
        if self._has_session(bay_id):
            message = (
                "The session on this bay is stopped and its node updated as soon as it is off."
            )
        else:
            message = "The bay's node is updated as soon as it is off."
        return Outcome(True, "forced", message)

    def _has_session(self, bay_id: str) -> bool:
        return self._bays[bay_id].state.session is not None

    # ------------------------------------------------------------------ installing

    def targets(self) -> list[tuple[BayRuntime, NodeFirmware]]:
        out: list[tuple[BayRuntime, NodeFirmware]] = []
        for rt in self._bays.values():
            hub = self._hubs.get(rt.cfg.bus)
            if isinstance(hub, NodeFirmware):
                out.append((rt, hub))
        return out

    async def install_all(self, image: bytes, version: str) -> bool:
        """Every updatable node gets ``image``, one at a time, as each bay is free (or forced)."""
        async with self._lock:
            self.version = version
            todo = self.targets()
            now = self._clock.wall()
            self.progress.clear()
            for rt, _ in todo:
                self.progress[rt.cfg.id] = NodeProgress(
                    rt.cfg.id, rt.cfg.node_id, _running(rt), version, updated_at=now
                )
            self._forced.clear()
            ok = True
            try:
                while todo:
                    pick = await self._next(todo)
                    done = await self._install(*pick, image, version)
                    if done is not None:  # None: someone came just then, it waits again
                        todo.remove(pick)
                        ok = done and ok
            finally:
                self._forced.clear()
            return ok

    async def _next(
        self, todo: list[tuple[BayRuntime, NodeFirmware]]
    ) -> tuple[BayRuntime, NodeFirmware]:
        """The first bay that is free or forced, waiting for one if none is."""
        waited: set[str] = set()
        async with self._events.subscription(lossy=True) as updates:
            while True:
                for item in todo:
                    rt = item[0]
                    forced = rt.cfg.id in self._forced and rt.state.phase is not Phase.HELD
                    if forced or bay_is_free(rt):  # a forced bay still waits for its hold
                        return item
                for rt, _ in todo:
                    if rt.cfg.id not in waited:
                        waited.add(rt.cfg.id)
                        self.progress[rt.cfg.id].waiting_since = self._clock.wall()
                        await self._audit.record(
                            "firmware_update_waiting",
                            ACTOR,
                            {
                                "bay_id": rt.cfg.id,
                                "version": self.progress[rt.cfg.id].version_target,
                            },
                        )
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                news = asyncio.ensure_future(updates.get())
                try:
                    await asyncio.wait({wake, news}, timeout=1.0, return_when="FIRST_COMPLETED")
                finally:
                    wake.cancel()
                    news.cancel()

    def _step(self, p: NodeProgress, state: str, message: str, **kw: Any) -> None:
        p.state, p.message, p.updated_at = state, message, self._clock.wall()
        for k, v in kw.items():
            setattr(p, k, v)

    async def _take(self, rt: BayRuntime, p: NodeProgress, forced: str | None) -> bool | None:
        """Take the bay out of service, stopping its session first when forced; False if the
        node does not come to rest (relay open, no current) in time, None if a session
        started just as the bay was taken (not forced: it waits again)."""
        bay_id = rt.cfg.id
        await self._commands.set_availability(bay_id, False, actor=ACTOR)
        if forced is None:
            return True if bay_is_free(rt) else None
        since = self._clock.monotonic()
        s = rt.state.session
        if s is not None:
            self._step(p, "stopping", "Stopping the session on this bay for the update.")
            await self._commands.stop_session(
                s.session_id, StopReason.FIRMWARE_UPDATE, actor=forced
            )
            await self._audit.record(
                "firmware_session_stopped",
                forced,
                {"bay_id": bay_id, "session_id": s.session_id, "version": p.version_target},
            )
            await self._commands.set_availability(bay_id, False, actor=ACTOR)  # applies now
        self._step(p, "stopping", "Waiting for the bay's node to switch off.")
        with contextlib.suppress(TimeoutError):
            async with (
                self._events.subscription(lossy=True) as updates,
                asyncio.timeout(self.quiet_timeout_s),
            ):
                while not bay_is_quiet(rt, since):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await updates.get()
        return bay_is_quiet(rt, since)

    async def _install(
        self, rt: BayRuntime, hub: NodeFirmware, image: bytes, version: str
    ) -> bool | None:
        """True: installed; False: failed (audited); None: the bay was busy after all."""
        bay_id = rt.cfg.id
        p = self.progress[bay_id]
        forced = self._forced.get(bay_id)
        was_available = rt.state.available or rt.state.pending_unavailable
        before = _running(rt)
        p.version_before = before
        try:
            taken = await self._take(rt, p, forced)
            if taken is None:
                return None
            if not taken:
                why = "The bay did not switch off in time, so its node was not updated."
                self._step(p, "failed", why, version_after=before or None)
                await self._audit.record(
                    "firmware_update_failed",
                    ACTOR,
                    {"bay_id": bay_id, "version": version, "stage": "not_off", "message": why},
                )
                return False
            await self._audit.record(
                "firmware_update_started",
                forced or ACTOR,
                {
                    "bay_id": bay_id,
                    "version": version,
                    "from": before,
                    "forced": forced is not None,
                },
            )
            self._step(p, "transfer", "Sending the new firmware to the node.", total=len(image))
            booting = asyncio.Event()

            def progress(stage: str, done: int, total: int) -> None:
                p.done, p.total, p.updated_at = done, total, self._clock.wall()
                if stage == "booting" and not booting.is_set():
                    p.state, p.message = "booting", "The node is starting the new firmware."
                    booting.set()

            async def transferred() -> None:  # audited when it happens, before the outcome
                await booting.wait()
                await self._audit.record(
                    "firmware_transferred", ACTOR, {"bay_id": bay_id, "version": version}
                )

            watcher = asyncio.ensure_future(transferred())
            try:
                await hub.update_firmware(rt.cfg.node_id, image, version, progress)
            except DriverError as err:  # FirmwareUpdateFailed, or the hub cannot reach the node
                await _settle(watcher, booting)
                stage = str(getattr(err, "stage", "driver"))
                now = _running(rt)
                self._step(p, "failed", _sentence(str(err)), version_after=now or None)
                await self._audit.record(
                    "firmware_update_failed",
                    ACTOR,
                    {
                        "bay_id": bay_id,
                        "version": version,
                        "stage": stage,
                        "message": p.message,
                        "running": now,
                    },
                )
                return False
            finally:
                await _settle(watcher, booting)
            self._step(
                p,
                "installed",
                f"Updated from {before or 'an unknown version'} to {version}.",
                version_after=version,
                done=len(image),
            )
            await self._audit.record(
                "firmware_update_installed",
                ACTOR,
                {"bay_id": bay_id, "version": version, "from": before},
            )
            return True
        finally:
            if was_available:
                await self._commands.set_availability(bay_id, True, actor=ACTOR)


async def _settle(watcher: asyncio.Future[None], booting: asyncio.Event) -> None:
    """Let the boot's audit record be written (if the node got that far), else drop it."""
    if booting.is_set():
        await watcher
    else:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _running(rt: BayRuntime) -> str:
    if rt.firmware:
        return rt.firmware
    return rt.node.stats().firmware if rt.node is not None else ""


def _sentence(text: str) -> str:
    text = text.strip() or "The update failed."
    return text if text.endswith(".") else text + "."


__all__ = ["NodeProgress", "NodeUpdates", "Software", "bay_is_free", "bay_is_quiet"]
