"""The names drivers read, changed live in the owner's settings: the station's and each bay's.

Section ``names``: ``station_name`` and ``bay_names`` (bay id -> name; empty: the kiosk's own
"Bay <id>" in the driver's language). A change is applied to the running config, where the
kiosk, its receipts and the reports read names, and the kiosk's live stream carries it (no
restart); it is kept and audited like every live setting. Refusals are sentences in the
owner's language (the ``owner`` catalogue of :mod:`local_ui.i18n`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controller.core.config import BayConfig, StationSection
from controller.core.station import Station
from local_ui.settings import Section, SettingRefused, SettingsRegistry, SettingWarning


def N_(msgid: str) -> str:
    """Marks a msgid of the ``owner`` catalogue (translated where the refusal is shown)."""
    return msgid


def _max_length(field: Any) -> int:
    return next(int(m.max_length) for m in field.metadata if hasattr(m, "max_length"))


# What station.toml allows (the kiosk's cards and receipts are laid out for these).
STATION_MAX = _max_length(StationSection.model_fields["name"])
BAY_MAX = _max_length(BayConfig.model_fields["name"])


class NamesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    station_name: str = Field(default="", json_schema_extra={"maxLength": STATION_MAX})
    bay_names: dict[str, str] = Field(default_factory=dict)


def _refused(msgid: str, field: str, **params: Any) -> SettingRefused:
    return SettingRefused(msgid.format(**params), field, msgid=msgid, params=params)


def current(station: Station) -> NamesSettings:
    return NamesSettings(
        station_name=station.cfg.station.name,
        bay_names={b.id: b.name for b in station.cfg.bays},
    )


def check(station: Station, value: BaseModel) -> list[SettingWarning]:
    """Raises :class:`SettingRefused` for an empty or too long name, or two bays named alike."""
    assert isinstance(value, NamesSettings)
    if not value.station_name:
        raise _refused(
            N_("Give the station a name: drivers see it on the touchscreen and on receipts."),
            "station_name",
        )
    if len(value.station_name) > STATION_MAX:
        raise _refused(
            N_("The station's name can have at most {n} characters."),
            "station_name",
            n=STATION_MAX,
        )
    bays = {b.id: b for b in station.cfg.bays}
    if any(bay_id not in bays for bay_id in value.bay_names):
        raise _refused(
            N_("The form named a bay this station does not have; reload the page and try again."),
            "bay_names",
        )
    taken: set[str] = set()
    for bay_id, bay in bays.items():
        name = value.bay_names.get(bay_id, bay.name)
        if not name:
            continue  # the kiosk's "Bay <id>", in the driver's language
        if len(name) > BAY_MAX:
            raise _refused(
                N_("A bay's name can have at most {n} characters: “{name}” is longer."),
                f"bay_names.{bay_id}",
                n=BAY_MAX,
                name=name,
            )
        if name.casefold() in taken:
            raise _refused(
                N_("Two bays are called “{name}”: give each its own name."),
                f"bay_names.{bay_id}",
                name=name,
            )
        taken.add(name.casefold())
    return []


async def apply(station: Station, value: BaseModel) -> None:
    assert isinstance(value, NamesSettings)
    station.cfg.station.name = value.station_name
    for bay in station.cfg.bays:
        bay.name = value.bay_names.get(bay.id, bay.name)
    for rt in station.bays.values():  # the runtime's config is the same object, or a copy
        rt.cfg.name = value.bay_names.get(rt.cfg.id, rt.cfg.name)


def adapt(station: Station, saved: dict[str, Any]) -> dict[str, Any]:
    """Names kept before the installer removed a bay: the others still apply."""
    names = saved.get("bay_names")
    if isinstance(names, dict):
        known = {b.id for b in station.cfg.bays}
        saved = {**saved, "bay_names": {k: v for k, v in names.items() if k in known}}
    return saved


def add_name_section(reg: SettingsRegistry) -> None:
    reg.add(
        Section(
            "names",
            "Names",
            NamesSettings,
            current,
            apply,
            frozenset({"owner", "installer"}),
            check=check,
            adapt=adapt,
            description="The names drivers see on the touchscreen and on their receipts.",
        )
    )
