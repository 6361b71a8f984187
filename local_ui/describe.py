"""Audit rows and session events as sentences, and the audit log's categories.

The journal keeps details as JSON for machines; the owner reads them here as
text (no JSON, no internal ids, tokens masked like everywhere else). The four
audit categories split the log for the filter: what people did (``owner``),
what the load manager changed by itself (``load``), logins and accounts
(``security``) and what went wrong (``faults``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from controller.ops.session_csv import mask_token
from local_ui.messages import label

Category = Literal["owner", "load", "security", "faults"]
CATEGORIES: dict[Category, str] = {
    "owner": "Owner and installer actions",
    "load": "Automatic load changes",
    "security": "Logins and accounts",
    "faults": "Faults and safe mode",
}
LOAD_KINDS = frozenset({"throttle", "rule_conflict"})
SECURITY_KINDS = frozenset(
    {
        "login",
        "login_failed",
        "password_changed",
        "owner_created",
        "user_created",
        "user_deleted",
        "member_tokens_changed",
        "member_invited",
        "member_invite_withdrawn",
        "member_joined",
        "invite_refused",
        "token_rejected",
        "auth_rejected",
    }
)
PEOPLE_PREFIX = "user:"


def category(kind: str, actor: str) -> Category:
    if kind in LOAD_KINDS:
        return "load"
    if kind in SECURITY_KINDS:
        return "security"
    if actor.startswith(PEOPLE_PREFIX):
        return "owner"
    return "faults"


def _detail(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def who(actor: str) -> str:
    """The actor as a person reads it."""
    if actor.startswith(PEOPLE_PREFIX):
        return actor[len(PEOPLE_PREFIX) :]
    if actor.startswith("ip:"):
        return "someone at " + actor[3:]
    return {
        "station": "the station",
        "load": "load manager",
        "meter": "meter check",
        "node": "bay node",
        "kiosk": "touchscreen",
        "ocpp": "central system",
        "remote": "central system",
        "owner": "owner",
    }.get(actor, actor.replace("_", " "))


def _a(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "?"
    return f"{f:g} A"


def _bay(d: Mapping[str, Any]) -> str:
    b = d.get("bay_id")
    return f"bay {b}" if b and b != "site" else "the site"


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%a %d %b %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        if v and all(x == v[0] for x in v) and not isinstance(v[0], dict):
            return _value(v[0])
        if all(not isinstance(x, dict | list) for x in v):
            return ", ".join(_value(x) for x in v)
        return f"{len(v)} entries"
    if isinstance(v, dict):
        return "a new entry"
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None or v == "":
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _settings(d: Mapping[str, Any]) -> str:
    changes = d.get("changes") or {}
    parts = []
    for key, ch in list(changes.items())[:6]:
        ch = ch if isinstance(ch, dict) else {}
        title = label(key).title.split(" (")[0]
        old, new = ch.get("old"), ch.get("new")
        if isinstance(old, dict) and isinstance(new, dict):  # bay -> name: what changed in it
            for k in [k for k in new if old.get(k) != new[k]][:6]:
                parts.append(f"{title}: {k} {_value(old.get(k))} → {_value(new[k])}")
            continue
        parts.append(f"{title} {_value(old)} → {_value(new)}")
    section = str(d.get("section", "")).replace("_", " ")
    text = f"Changed the {section} settings" + (": " + "; ".join(parts) if parts else "")
    if d.get("warnings"):
        text += f" (with {len(d['warnings'])} warning(s))"
    return text + "."


_INVITE_REFUSED = {
    "unknown": "Someone tried an invitation code that does not exist.",
    "used": "Someone tried an invitation code that was used already.",
    "expired": "Someone tried an expired invitation code.",
    "taken": "An invitation could not be used: its name belongs to another account now.",
}


def _said(text: Any, fallback: str) -> str:
    return str(text or fallback).strip().rstrip(".") + "."


def _from_to(d: Mapping[str, Any]) -> str:
    old = d.get("from")
    return (f"from {old} " if old else "") + f"to {d.get('version', '?')}"


_AUDIT: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "firmware_downloaded": lambda d: (
        f"Downloaded node firmware {d.get('version', '?')}"
        + (", its signature checked." if d.get("signed") else ", checked by its SHA-256 only.")
    ),
    "firmware_download_failed": lambda d: (
        "Node firmware refused: " + _said(d.get("error"), "the download failed")
    ),
    "firmware_update_waiting": lambda d: (
        f"The firmware update of {_bay(d)} waits until the bay is free"
        " (no vehicle plugged in, no session)."
    ),
    "firmware_update_forced": lambda d: (
        f"Forced the firmware update of {_bay(d)}"
        + (", stopping its session first." if d.get("session") else ".")
    ),
    "firmware_session_stopped": lambda d: (
        f"Stopped the session on {_bay(d)} for the firmware update."
    ),
    "firmware_update_started": lambda d: f"Started updating the node of {_bay(d)} {_from_to(d)}.",
    "firmware_transferred": lambda d: (
        f"Sent firmware {d.get('version', '?')} to the node of {_bay(d)}; it is starting it."
    ),
    "firmware_update_installed": lambda d: f"Updated the node of {_bay(d)} {_from_to(d)}.",
    "firmware_update_failed": lambda d: (
        f"The firmware update of {_bay(d)} failed: " + _said(d.get("message"), "no reason given")
    ),
    "software_updated": lambda d: (
        f"The station's software was updated from {d.get('old', '?')} to {d.get('new', '?')}."
    ),
    "throttle": lambda d: (
        f"Set {_bay(d)} from {_a(d.get('old_a'))} to {_a(d.get('new_a'))}"
        f" ({str(d.get('reason', '')).replace('_', ' ')})."
    ),
    "rule_conflict": lambda d: "Rules disagree: the lower limit applies.",
    "settings_changed": _settings,
    "login": lambda d: f"Logged in from {d.get('ip', 'an unknown address')}.",
    "login_failed": lambda d: f"Wrong password for the user name “{d.get('username', '')}”.",
    "password_changed": lambda d: (
        "Changed their password"
        + (f" and ended {d['ended_sessions']} other login(s)." if d.get("ended_sessions") else ".")
    ),
    "owner_created": lambda d: "Created the owner account with the setup code.",
    "user_created": lambda d: f"Added the {d.get('role', '')} account “{d.get('username', '')}”.",
    "user_deleted": lambda d: f"Deleted the account “{d.get('username', '')}”.",
    "member_tokens_changed": lambda d: (
        f"Gave “{d.get('username', '')}” {d.get('count', 0)} card(s) or code(s)."
    ),
    "member_invited": lambda d: (
        f"Invited “{d.get('username', '')}” as a member"
        + (f" with {d['count']} card(s) or code(s)." if d.get("count") else ".")
    ),
    "member_invite_withdrawn": lambda d: f"Withdrew the invitation of “{d.get('username', '')}”.",
    "member_joined": lambda d: "Accepted their invitation and chose a password.",
    "invite_refused": lambda d: _INVITE_REFUSED.get(
        str(d.get("problem")), "An invitation code was refused."
    ),
    "token_rejected": lambda d: f"A card or code was refused at {_bay(d)}.",
    "auth_rejected": lambda d: f"A card or code was refused at {_bay(d)}.",
    "refused": lambda d: (
        f"Refused a start at {_bay(d)}: {str(d.get('cause', '')).replace('_', ' ')}."
    ),
    "safe_mode_entered": lambda d: str(d.get("message") or "Entered safe mode.").rstrip(".") + ".",
    "safe_mode_left": lambda d: f"Left safe mode ({str(d.get('cause', '')).replace('_', ' ')}).",
    "installer_test": lambda d: (
        f"Ran the {str(d.get('action', '')).replace('_', ' ')} test on {_bay(d)}."
    ),
    "installer_test_ended": lambda d: f"Ended the installer test on {_bay(d)}.",
    "booking_added": lambda d: f"Booked {_bay(d)} from {_when(d.get('start_at'))}.",
    "booking_cancelled": lambda d: "Cancelled a booking.",
    "booking_placed": lambda d: "A booking began: its bay is now held.",
    "booking_missed": lambda d: (
        "A booking could not be placed: "
        + str(d.get("detail") or "the bay was busy").rstrip(".")
        + "."
    ),
    "reading_rejected": lambda d: f"Ignored an impossible energy reading from {_bay(d)}.",
    "meter_reanchored": lambda d: (
        f"The energy counter of {_bay(d)} restarted; the session's energy continues from there."
    ),
    "stop": lambda d: f"Stopped the session on {_bay(d)}.",
    "hold_placed": lambda d: f"Held {_bay(d)}.",
    "hold_cancelled": lambda d: f"Cancelled the hold on {_bay(d)}.",
    "availability": lambda d: (
        f"Made {_bay(d)} " + ("available." if d.get("available") else "unavailable.")
    ),
}


def audit_text(kind: str, detail: Any) -> str:
    d = _detail(detail)
    make = _AUDIT.get(kind)
    if make is not None:
        try:
            return make(d)
        except (KeyError, TypeError, ValueError):
            pass
    text = kind.replace("_", " ").capitalize()
    if d.get("bay_id"):
        text += f" ({_bay(d)})"
    return text + "."


def audit_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An audit row for the page: when, who, what, as text, and its category."""
    kind = str(row.get("kind", ""))
    actor = str(row.get("actor", ""))
    detail = _detail(row.get("detail"))
    if "token" in detail:
        detail["token"] = mask_token(str(detail["token"]))
    return {
        "id": row.get("id"),
        "at": row.get("at"),
        "actor": actor,
        "who": who(actor),
        "kind": kind,
        "category": category(kind, actor),
        "text": audit_text(kind, detail),
        "detail": detail,
    }


# ---------------------------------------------------------------------- session events

_STOP = {
    "Local": "stopped at the station",
    "Remote": "stopped by the central system",
    "EVDisconnected": "the vehicle was unplugged",
    "EmergencyStop": "the emergency stop was pressed",
    "PowerLoss": "the power failed",
    "Reboot": "the station restarted",
    "UnlockCommand": "the central system unlocked the connector",
    "DeAuthorized": "the card or code was withdrawn",
    "QuotaReached": "the limit was reached",
    "ConnectionTimeout": "no vehicle was connected in time",
    "Owner": "stopped by the owner",
    "Fault": "a fault",
    "DoorForced": "the door was forced open",
    "Overcurrent": "it drew more current than allowed",
    "InterruptedTooLong": "an outage lasted too long",
    "FirmwareUpdate": "stopped for a firmware update",
}


def stop_text(reason: Any) -> str:
    return _STOP.get(str(reason), str(reason or "unknown reason"))


def _ev_token(d: Mapping[str, Any]) -> str:
    return (
        f"Card or code {mask_token(str(d.get('token', '')))} presented"
        f" ({d.get('auth_source', 'unknown')}), mode {d.get('mode', 'standard')}."
    )


_EVENTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "token_presented": _ev_token,
    "status": lambda d: f"Status {d.get('old', '?')} → {d.get('new', '?')}.",
    "session_closed": lambda d: (
        f"Session ended: {stop_text(d.get('reason'))}; "
        f"{int(d.get('energy_wh') or 0) / 1000:.3f} kWh."
    ),
    "stop_requested": lambda d: f"Stop asked: {stop_text(d.get('reason'))}.",
    "refused": lambda d: str(d.get("message") or "Refused.").rstrip(".") + ".",
    "door_changed": lambda d: "Door closed." if d.get("closed") else "Door opened.",
    "lock_changed": lambda d: "Locked." if d.get("locked") else "Unlocked.",
    "node_online": lambda d: "Bay node back online." if d.get("online") else "Bay node offline.",
    "fault_raised": lambda d: f"Fault: {str(d.get('code', '')).replace('_', ' ')}.",
    "fault_cleared": lambda d: "Fault cleared.",
    "mode_changed": lambda d: f"Mode changed to {d.get('mode', '?')}.",
    "setpoint_changed": lambda d: f"Current set to {_a(d.get('current_a'))}.",
    "availability_changed": lambda d: (
        "Made available." if d.get("available") else "Made unavailable."
    ),
    "interruption": lambda d: (
        "Interrupted by an outage, then "
        + str(d.get("outcome") or "resumed").replace("_", " ")
        + "."
    ),
    "hold_placed": lambda d: "Bay held.",
    "hold_cancelled": lambda d: "Hold cancelled.",
    "telemetry": lambda d: (
        f"Measured {float(d.get('power_w') or 0) / 1000:.1f} kW, "
        f"{_a(d.get('current_a'))}; meter at {int(d.get('energy_wh') or 0)} Wh."
    ),
    "reconcile": lambda d: "Checked against the bay node after a restart.",
}


def event_text(kind: str, data: Any) -> str:
    d = _detail(data)
    make = _EVENTS.get(kind)
    if make is not None:
        try:
            return make(d)
        except (KeyError, TypeError, ValueError):
            pass
    return kind.replace("_", " ").capitalize() + "."


def event_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A session event for the page: when, what, as text (tokens masked, no JSON)."""
    kind = str(row.get("kind", ""))
    return {"at": row.get("at"), "kind": kind, "text": event_text(kind, row.get("data"))}
