"""The driver's receipt in their language: its figures as text, its QR code, its own page.

A receipt names the station and bay, the session id and the operator, and gives energy
(Wh for a locker: an e-bike takes a few hundred), duration, tariff and cost, formatted
by :mod:`local_ui.i18n`. Its QR code is a link to the same receipt when the station
has a public address (``[http] public_url``), else the receipt as text.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from controller.core.station import Station
from local_ui import i18n


def N_(msgid: str) -> str:
    """Marks a msgid for the catalogues; translated where it is shown."""
    return msgid


_THANKS, _STOPPED = N_("Thank you!"), N_("Charging stopped")
_PROBLEM = N_("The charger had a problem and stopped charging. Please ask staff for help.")
# Why a session ended, as its receipt heads it: (title, what happened or "").
OUTCOMES: dict[str, tuple[str, str]] = {
    "Local": (_THANKS, ""),
    "EVDisconnected": (_THANKS, ""),
    "QuotaReached": (_THANKS, N_("Your energy or time limit was reached.")),
    "EmergencyStop": (N_("Emergency stop"), N_("Charging stopped; staff have been notified.")),
    "Remote": (_STOPPED, N_("Stopped remotely, by the app or the operator.")),
    "Owner": (_STOPPED, N_("Stopped by the station's staff.")),
    "ConnectionTimeout": (
        _STOPPED,
        N_("Nothing was plugged in in time, so the session has ended."),
    ),
    "DeAuthorized": (_STOPPED, N_("Your code is no longer accepted here.")),
    "UnlockCommand": (_STOPPED, N_("The operator released the cable.")),
    "DoorForced": (_STOPPED, N_("The door was opened while charging.")),
    "Fault": (_STOPPED, _PROBLEM),
    "Overcurrent": (_STOPPED, _PROBLEM),
    "InterruptedTooLong": (_STOPPED, _PROBLEM),
    "PowerLoss": (_STOPPED, _PROBLEM),
    "Reboot": (_STOPPED, _PROBLEM),
    "SoftReset": (_STOPPED, _PROBLEM),
    "HardReset": (_STOPPED, _PROBLEM),
}


def outcome(stop_reason: str | None, lang: str) -> tuple[str, str]:
    """The receipt's title and what happened (may be empty), in ``lang``."""
    _ = i18n.translations(lang).gettext
    title, note = OUTCOMES.get(stop_reason or "", (_THANKS, ""))
    return _(title), _(note) if note else ""


def bay_title(station: Station, bay_id: str, lang: str) -> str:
    """The bay as the kiosk names it: its configured name, else "Bay <id>"."""
    rt = station.bays.get(bay_id)
    if rt is not None and rt.cfg.name:
        return rt.cfg.name
    return i18n.translations(lang).gettext("Bay {name}").format(name=bay_id)


def duration(seconds: float | None) -> str:
    s = int(seconds or 0)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def tariff_text(tariff: dict[str, Any], lang: str) -> str:
    _ = i18n.translations(lang).gettext
    cur = str(tariff.get("currency") or "EUR")
    parts = [_("{price} per kWh").format(price=i18n.money(float(tariff["per_kwh"]), cur, lang))]
    if tariff.get("per_minute"):
        fee = i18n.money(float(tariff["per_minute"]), cur, lang)
        parts.append(_("{price} per minute").format(price=fee))
    if tariff.get("per_session"):
        fee = i18n.money(float(tariff["per_session"]), cur, lang)
        parts.append(_("{price} per session").format(price=fee))
    return " + ".join(parts)


def texts(station: Station, r: dict[str, Any], tariff: dict[str, Any], lang: str) -> dict[str, str]:
    """The receipt's lines, formatted for ``lang``."""
    _ = i18n.translations(lang).gettext
    wh = int(r["energy_wh"])
    energy = (
        f"{i18n.decimal(wh, lang, 0)} Wh"
        if r["kind"] == "locker"
        else f"{i18n.decimal(wh / 1000, lang, 2)} kWh"
    )
    meta = [
        _("{station}, {bay}").format(
            station=station.cfg.station.name, bay=bay_title(station, str(r["bay_id"]), lang)
        ),
        _("Session {id}").format(id=r["session_id"]),
        i18n.when(r.get("started_at"), lang),
    ]
    if station.cfg.station.contact:
        meta.append(_("Operator: {contact}").format(contact=station.cfg.station.contact))
    title, note = outcome(r.get("stop_reason"), lang)
    return {
        "title": title,
        "note": note,
        "energy": energy,
        "duration": duration(r.get("duration_s")),
        "cost": i18n.money(r.get("cost"), str(r["currency"]), lang),
        "tariff": tariff_text(tariff, lang),
        "meta": " · ".join(meta),
    }


def page_url(public_url: str, session_id: str, key: str, lang: str) -> str:
    return (
        f"{public_url}/api/v1/kiosk/sessions/{quote(session_id)}/receipt.html"
        f"?key={quote(key)}&lang={lang}"
    )


def qr_text(r: dict[str, Any], t: dict[str, str], lang: str) -> str:
    """The receipt as plain text (when the station has no public address for a link)."""
    _ = i18n.translations(lang).gettext
    return "\n".join(
        [
            _("Receipt"),
            t["meta"],
            f"{_('Energy')}: {t['energy']}",
            f"{_('Time')}: {t['duration']}",
            f"{_('Price')}: {t['tariff']}",
            f"{_('Cost')}: {t['cost']}",
        ]
    )


def page(r: dict[str, Any], t: dict[str, str], lang: str) -> str:
    """A small page a driver can keep on their phone (no script, no external file)."""
    _ = i18n.translations(lang).gettext
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
        for k, v in (
            (_("Energy"), t["energy"]),
            (_("Time"), t["duration"]),
            (_("Price"), t["tariff"]),
            (_("Cost"), t["cost"]),
        )
    )
    title = _("Receipt")
    note = f"<p><strong>{e(t['title'])}</strong> {e(t['note'])}</p>" if t.get("note") else ""
    return (
        f'<!doctype html><html lang="{e(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>body{{font:18px/1.4 system-ui,sans-serif;"
        "margin:16px;max-width:32em}th{text-align:left;padding-right:1em}</style></head>"
        f"<body><h1>{e(title)}</h1>{note}<p>{e(t['meta'])}</p><table>{rows}</table>"
        "</body></html>"
    )
