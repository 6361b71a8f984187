"""``edge-station status``: asks a running station over HTTP (``/healthz``, ``/metrics``) and,
when none answers, reads its journal directly (read-only).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from controller.ops.health import EXIT_OK, EXIT_UNHEALTHY, EXIT_UNREACHABLE, METRICS_TOKEN_ENV
from controller.ops.metrics import Samples, read_samples

log = structlog.get_logger(__name__)

# --------------------------------------------------------------------------- status command


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="health of the running station, or of its journal when it is down"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="station.toml: its HTTP address and journal")
    src.add_argument("--url", help="the station's local UI (default http://127.0.0.1:8080)")
    p.add_argument("--token", help=f"bearer token for /metrics (default ${METRICS_TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from controller.core.config import ConfigError, load_config

    url, data_dir = "http://127.0.0.1:8080", None
    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as err:
            print(f"{err.source}: invalid configuration", file=sys.stderr)
            for pr in err.problems:
                print(f"  - {pr}", file=sys.stderr)
            return EXIT_UNREACHABLE
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            cfg.http.host, cfg.http.host
        )
        url = f"http://{'[' + host + ']' if ':' in host else host}:{cfg.http.port}"
        data_dir = cfg.station.data_dir
    elif args.url:
        url = args.url
    url = url.rstrip("/")
    token = args.token or os.environ.get(METRICS_TOKEN_ENV) or None
    try:
        status_code, body = _get(f"{url}/healthz", args.timeout)
        report = json.loads(body)
        if not isinstance(report, dict) or "status" not in report:
            raise ValueError("not an edge-station /healthz answer")
    except (OSError, ValueError) as err:
        print(f"edge-station at {url}: UNREACHABLE ({_reason(err)})")
        if data_dir is not None:
            print_journal_summary(data_dir / "journal.sqlite3")
        return EXIT_UNREACHABLE
    metrics: Samples | None = None
    note = ""
    try:
        code, text = _get(f"{url}/metrics", args.timeout, token)
        if code == 200:
            metrics = read_samples(text)
        else:
            note = f"/metrics answered {code}" + (" (pass --token)" if code == 401 else "")
    except (OSError, ValueError) as err:
        note = f"/metrics: {_reason(err)}"
    print_report(url, status_code, report, metrics, note)
    return EXIT_OK if status_code == 200 and report.get("status") == "ok" else EXIT_UNHEALTHY


def _get(url: str, timeout: float, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Accept": "application/json, text/plain"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode("utf-8")
    except urllib.error.HTTPError as err:  # 503 from /healthz carries the reasons
        with err:
            return int(err.code), err.read().decode("utf-8", "replace")


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _metric(m: Samples, name: str, **labels: str) -> float | None:
    return m.get((name, frozenset(labels.items())))


def print_report(
    url: str,
    code: int,
    h: dict[str, Any],
    m: Samples | None,
    note: str = "",
) -> None:
    verdict = "HEALTHY" if code == 200 and h.get("status") == "ok" else f"UNHEALTHY ({code})"
    print(f"{h.get('station', '?')} at {url}: {verdict}, up {_duration(h.get('uptime_s') or 0)}")
    for r in h.get("reasons", []):
        print(f"  ! {r['code']}: {r['message']}")
    for w in h.get("warnings", []):
        print(f"  ~ {w['code']}: {w['message']}")
    lag = h.get("loop_lag")
    if lag:
        print(
            f"  loop lag    latest {_ms(lag.get('latest_s'))}, max {_ms(lag.get('max_s'))},"
            f" p99 {_ms(lag.get('p99_s'))} (limit {_ms(lag.get('limit_s'))})"
        )
    journal = "writable" if h.get("journal", {}).get("writable") else "NOT WRITABLE"
    if m is not None:
        pend = _metric(m, "edge_station_outbox_messages", state="pending")
        fail = _metric(m, "edge_station_outbox_messages", state="failed")
        if pend is not None:
            journal += f"; outbox {pend:.0f} pending, {fail or 0:.0f} failed"
    print(f"  journal     {journal}")
    nodes = h.get("nodes", {})
    bays = ", ".join(f"{b['id']} {b['status']}" for b in h.get("bays", []))
    print(f"  bays        {nodes.get('online', 0)}/{nodes.get('total', 0)} nodes online: {bays}")
    if m is not None:
        open_n = _metric(m, "edge_station_sessions_open")
        closed = _metric(m, "edge_station_sessions_closed_total")
        wh = _metric(m, "edge_station_energy_delivered_wh_total")
        line = f"{open_n or 0:.0f} open"
        if closed is not None:
            line += f", {closed:.0f} closed"
        if wh is not None:
            line += f", {wh / 1000:.3f} kWh delivered"
        print(f"  sessions    {line}")
        ages = {
            dict(k[1])["meter"]: v
            for k, v in m.items()
            if k[0] == "edge_station_meter_reading_age_seconds"
        }
        fresh = {
            dict(k[1])["meter"]: dict(k[1])["freshness"]
            for k, v in m.items()
            if k[0] == "edge_station_meter_freshness" and v == 1
        }
        if ages:
            print(
                "  meters      "
                + ", ".join(
                    f"{n} {fresh.get(n, '?')} ({a:.1f} s ago)" for n, a in sorted(ages.items())
                )
            )
    ocpp = h.get("ocpp")
    if ocpp is not None:
        print(f"  OCPP        {'connected' if ocpp.get('connected') else 'NOT CONNECTED'}")
    sw = h.get("software")
    if isinstance(sw, dict):
        print(f"  software    edge-station {sw.get('version', '?')}: {_software_state(sw)}")
    fw = h.get("firmware_update")
    if isinstance(fw, dict):
        print(f"  firmware    {_firmware_state(fw)}")
    causes = [c["cause"] for c in h.get("safe_mode", [])]
    print(f"  safe mode   {', '.join(causes) if causes else 'none'}")
    if note:
        print(f"  ({note})")


def _software_state(sw: dict[str, Any]) -> str:
    if sw.get("state") == "restart_needed":
        return f"{sw.get('installed')} is installed, restart to run it"
    if sw.get("previous"):
        return f"up to date (updated from {sw['previous']} on {_iso(sw.get('since'))})"
    return "up to date"


def _firmware_state(fw: dict[str, Any]) -> str:
    """The node firmware update: its stage and each node's, or the last one's outcome."""
    status = str(fw.get("status") or "Idle")
    nodes = fw.get("nodes") or []
    if status == "Idle":
        last = fw.get("last")
        text = "no node update running"
        if isinstance(last, dict):
            text += f"; last {last.get('version')} {last.get('status')} at {_iso(last.get('at'))}"
        return text
    parts = []
    for n in nodes:
        pct = f" {n['percent']:.0f} %" if n.get("state") in ("transfer", "booting") else ""
        parts.append(f"{n['bay_id']} {n['state']}{pct}")
    return f"node update {fw.get('version') or ''} {status}" + (
        ": " + ", ".join(parts) if parts else ""
    )


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 1000:.1f} ms"


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    hh, s = divmod(s, 3600)
    mm, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{hh:d}h{mm:02d}m{s:02d}s"


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def print_journal_summary(path: Path, events: int = 5) -> None:
    """What the journal says while the station is down (opened read-only, nothing created)."""
    if not path.exists():
        print(f"  no journal at {path}")
        return
    from controller.ops.backup import open_readonly

    try:
        conn = open_readonly(path)
    except sqlite3.Error as err:
        print(f"  journal {path}: cannot be read ({err})")
        return
    try:
        conn.row_factory = sqlite3.Row
        ver = conn.execute("PRAGMA user_version").fetchone()[0]
        opened = conn.execute(
            "SELECT id, bay_id, started_at, energy_wh FROM sessions WHERE state='open' ORDER BY started_at"
        ).fetchall()
        depth = dict(
            conn.execute(
                "SELECT state, count(*) FROM outbox WHERE state IN ('pending','failed') GROUP BY state"
            ).fetchall()
        )
        last = conn.execute(
            "SELECT id, at, bay_id, kind FROM events ORDER BY id DESC LIMIT ?", (events,)
        ).fetchall()
        clean = conn.execute("SELECT value FROM kv WHERE key='clean_shutdown'").fetchone()
    except sqlite3.Error as err:
        print(f"  journal {path}: cannot be read ({err})")
        return
    finally:
        conn.close()
    shutdown = "clean" if clean and json.loads(clean[0]) is True else "not clean (or still running)"
    print(f"  journal     {path} (schema {ver}), last shutdown {shutdown}")
    print(f"  outbox      {depth.get('pending', 0)} pending, {depth.get('failed', 0)} failed")
    print(f"  sessions    {len(opened)} open")
    for s in opened:
        print(f"    {s['id']} on {s['bay_id']} since {_iso(s['started_at'])}, {s['energy_wh']} Wh")
    print("  last events")
    for e in last:
        print(f"    {e['id']:>6} {_iso(e['at'])} {e['bay_id'] or '-':8} {e['kind']}")
