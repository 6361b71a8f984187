"""The diagnostics bundle: one zip of what remote support needs to see, secrets removed.

Built for OCPP GetDiagnostics (uploaded by ``cloud_sync.diagnostics``) and for
the owner's download in the UI, the same way for both. It holds, for a time
window (the last 24 h unless asked otherwise):

- ``manifest.json``: station id, window, when built, what each file is;
- ``journal/events.jsonl``, ``journal/audit.jsonl``, ``journal/sessions.jsonl``:
  the journal's rows in the window (at most :data:`MAX_ROWS` each, newest kept);
- ``logs/station.jsonl``: the log lines kept in memory for the window, and
  ``logs/journalctl.txt`` when the system journal can be read;
- ``config.json``: the configuration with every secret replaced by ``***``;
- ``versions.json``: this software, Python, libraries, the nodes' firmware;
- ``nodes.json``: each bay's state and its node's link counters;
- ``health.json``: the health verdict ``/healthz`` gives.

Secrets: any value under a name that says password, secret, token, key, pin or
salt is replaced, as are credentials inside URLs; a session's idTag is a token
too. Reading the journal goes through its own read methods (no writes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import platform
import re
import shutil
import sqlite3
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import structlog

from controller.core.journal import JournalError
from controller.core.station import Station
from controller.ops.diagnostics_logs import RING
from controller.ops.health import health

log = structlog.get_logger(__name__)

DEFAULT_WINDOW_S = 24 * 3600.0
MAX_ROWS = 20_000
REDACTED = "***"
SECRET_NAME = re.compile(r"pass|secret|token|key|(^|_)pin($|_)|salt|credential", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/:@\s]*):[^/@\s]*@", re.I)
LIBRARIES = ("ocpp", "websockets", "fastapi", "uvicorn", "pydantic", "pymodbus", "aiomqtt")
SYSTEMD_UNIT = "edge-station"


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    data: bytes
    since: float
    until: float


def redact(value: Any, name: str = "") -> Any:
    """``value`` with secrets replaced: by the name they are stored under, or inside URLs."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name) for v in value]
    if name and SECRET_NAME.search(name) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    return value


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, default=str).encode() + b"\n" for r in rows)


async def _rows(station: Station, table: str, since: float, until: float) -> list[dict[str, Any]]:
    # Newest rows kept when there are more than MAX_ROWS; written oldest first.
    sql = {
        "events": "SELECT * FROM events WHERE at>=? AND at<=? ORDER BY id DESC LIMIT ?",
        "audit": "SELECT * FROM audit WHERE at>=? AND at<=? ORDER BY id DESC LIMIT ?",
    }[table]
    rows = await station.journal.query(sql, (since, until, MAX_ROWS))
    rows.reverse()
    for r in rows:
        for col in ("data", "detail"):
            if isinstance(r.get(col), str):
                try:
                    r[col] = json.loads(r[col])
                except ValueError:
                    pass
    return [redact(r) for r in rows]


async def _sessions(station: Station, since: float, until: float) -> list[dict[str, Any]]:
    rows = await station.journal.sessions(
        since=since, until=until, limit=MAX_ROWS, newest_first=False
    )
    return [redact(r) for r in rows]


async def _journalctl(since: float, until: float) -> bytes | None:
    exe = shutil.which("journalctl")
    if exe is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-u",
            SYSTEMD_UNIT,
            "--since",
            f"@{int(since)}",
            "--until",
            f"@{int(until) + 1}",
            "-o",
            "short-iso",
            "--no-pager",
            "-n",
            str(MAX_ROWS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(10.0):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out if proc.returncode == 0 and out.strip() else None


def versions(station: Station) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    stats = station.bays.link_stats()
    return {
        "edge_station": version("edge-station"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: version(name) for name in LIBRARIES},
        "nodes": {
            bay_id: rt.firmware or (stats[bay_id].firmware if bay_id in stats else "") or None
            for bay_id, rt in station.bays.items()
        },
    }


def nodes(station: Station) -> dict[str, Any]:
    stats = station.bays.link_stats()
    out: dict[str, Any] = {}
    for bay_id, rt in station.bays.items():
        ls = stats.get(bay_id)
        out[bay_id] = {
            "node_id": rt.cfg.node_id,
            "bus": rt.cfg.bus,
            "snapshot": station.snapshots.bay(rt),
            "link": dataclasses.asdict(ls) if ls else None,
            "output_errors": rt.output_errors,
        }
    clean: dict[str, Any] = redact(json.loads(json.dumps(out, default=str)))
    return clean


def health_view(station: Station) -> dict[str, Any]:
    h = health(station)
    view: dict[str, Any] = json.loads(
        json.dumps(
            {
                "ok": h.ok,
                "reasons": [dataclasses.asdict(p) for p in h.reasons],
                "warnings": [dataclasses.asdict(p) for p in h.warnings],
                "body": h.body,
            },
            default=str,
        )
    )
    return view


async def build_bundle(
    station: Station, *, since: float | None = None, until: float | None = None
) -> Bundle:
    """The bundle for [since, until] (wall clock; the last 24 h by default)."""
    now = station.clock.wall()
    until = now if until is None else min(until, now)
    since = until - DEFAULT_WINDOW_S if since is None else since
    if since > until:
        since, until = until, since
    files: dict[str, bytes] = {}
    notes: list[str] = []
    try:
        for table in ("events", "audit"):
            files[f"journal/{table}.jsonl"] = _jsonl(await _rows(station, table, since, until))
        files["journal/sessions.jsonl"] = _jsonl(await _sessions(station, since, until))
    except (JournalError, sqlite3.Error) as err:
        notes.append(f"The journal could not be read: {err}")
        log.warning("diagnostics.journal_unreadable", error=str(err))
    files["logs/station.jsonl"] = "".join(line + "\n" for line in RING.lines(since, until)).encode()
    system_log = await _journalctl(since, until)
    if system_log is not None:
        files["logs/journalctl.txt"] = system_log
    config = redact(station.cfg.model_dump(mode="json"))
    files["config.json"] = json.dumps(config, indent=2, default=str).encode()
    files["versions.json"] = json.dumps(versions(station), indent=2).encode()
    files["nodes.json"] = json.dumps(nodes(station), indent=2).encode()
    files["health.json"] = json.dumps(health_view(station), indent=2).encode()
    station_id = station.cfg.station.id
    manifest = {
        "station_id": station_id,
        "built_at": _iso(now),
        "window": {"since": _iso(since), "until": _iso(until)},
        "files": sorted(files),
        "notes": notes,
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    data = await asyncio.to_thread(_zip, files)
    name = f"diagnostics-{station_id}-{stamp(now)}.zip"
    return Bundle(name, data, since, until)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(name, files[name])
    return buf.getvalue()
