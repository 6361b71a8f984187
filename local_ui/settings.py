"""Live settings, by section: each section is a pydantic model with a getter and an applier.

A change is validated by the section's model, applied to the running station,
kept in the journal (``kv: ui.settings.<section>``, re-applied at start so a
restart keeps it) and audited. The load manager (or any part) adds its own
sections (site limits, circuits, modes, rules) with :meth:`SettingsRegistry.add`
without touching the routes; :func:`local_ui.server.default_registry` puts them
together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.accounting import Tariff
from controller.core.station import Station
from local_ui import i18n
from local_ui.messages import LABELS

log = structlog.get_logger(__name__)
OWNER_DOMAIN = "owner"
"""The catalogue of the owner pages' sentences that are translated (local_ui/locale)."""


class SettingRefused(Exception):
    """A value that is well-formed but cannot be used here (cross-checks); ``field`` names it.

    With a ``msgid`` (a sentence of the ``owner`` catalogue, ``{name}`` placeholders filled
    from ``params``) the refusal can be told in the owner's language: :meth:`text`.
    """

    def __init__(
        self,
        message: str,
        field: str = "",
        *,
        msgid: str = "",
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.msgid = msgid
        self.params = dict(params or {})

    def text(self, lang: str) -> str:
        """The refusal in ``lang`` (English when it has no msgid or no translation)."""
        if not self.msgid:
            return self.message
        return i18n.translations(lang, OWNER_DOMAIN).gettext(self.msgid).format(**self.params)


SettingWarning = dict[str, Any]
"""A warning shown before and after saving: at least ``kind`` and ``message``."""


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    model: type[BaseModel]
    get: Callable[[Station], BaseModel]
    apply: Callable[[Station, BaseModel], Awaitable[None]]
    roles: frozenset[str] = frozenset({"owner"})
    persist: bool = True
    check: Callable[[Station, BaseModel], list[SettingWarning]] | None = None
    """Cross-checks against the running station: raises :class:`SettingRefused`, returns warnings."""
    unavailable: Callable[[Station], str | None] | None = None
    """Why the section cannot be changed on this station (shown instead of a form), or None."""
    description: str = ""
    adapt: Callable[[Station, dict[str, Any]], dict[str, Any]] | None = None
    """Fits values kept by an earlier start to this station's config before they are restored."""


class KioskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_timeout_s: int = Field(default=60, ge=15, le=600, description="back to idle after")
    welcome_text: str = Field(default="Tap a bay to start charging", max_length=80)


class SettingsRegistry:
    def __init__(self) -> None:
        self.sections: dict[str, Section] = {}
        self.kiosk = KioskSettings()

    def add(self, section: Section) -> None:
        self.sections[section.name] = section

    def describe(self, station: Station, name: str) -> dict[str, Any]:
        sec = self.sections[name]
        note = self.unavailable(station, name)
        value = sec.get(station)
        warnings: list[SettingWarning] = []
        if note is None and sec.check is not None:
            try:
                warnings = sec.check(station, value)
            except SettingRefused as err:  # the running values no longer pass (config edited)
                warnings = [{"kind": "invalid", "message": err.message, "field": err.field}]
        return {
            "name": sec.name,
            "title": sec.title,
            "description": sec.description,
            "roles": sorted(sec.roles),
            "available": note is None,
            "note": note,
            "values": dump(value),
            "warnings": warnings,
            "schema": labelled_schema(sec.model),
        }

    def unavailable(self, station: Station, name: str) -> str | None:
        sec = self.sections[name]
        return sec.unavailable(station) if sec.unavailable is not None else None

    def validate(self, station: Station, name: str, patch: dict[str, Any]) -> BaseModel:
        """Merge ``patch`` into the current values and validate (raises ValidationError)."""
        sec = self.sections[name]
        current = dump(sec.get(station))
        merged = {**current, **patch}
        for key, value in patch.items():  # a mapping (bay -> name) changes only what it names
            if isinstance(value, dict) and isinstance(current.get(key), dict):
                merged[key] = {**current[key], **value}
        return sec.model.model_validate(merged)

    def check(self, station: Station, name: str, value: BaseModel) -> list[SettingWarning]:
        """Cross-checks of a validated value: raises :class:`SettingRefused`, returns warnings."""
        sec = self.sections[name]
        return sec.check(station, value) if sec.check is not None else []

    async def apply(self, station: Station, name: str, value: BaseModel) -> None:
        sec = self.sections[name]
        await sec.apply(station, value)
        if sec.persist:
            await station.journal.kv_set(f"ui.settings.{name}", dump(value))

    async def restore(self, station: Station) -> None:
        for name, sec in self.sections.items():
            if not sec.persist or self.unavailable(station, name) is not None:
                continue
            saved = await station.journal.kv_get(f"ui.settings.{name}")
            if not isinstance(saved, dict):
                continue
            if sec.adapt is not None:
                saved = sec.adapt(station, saved)
            try:
                value = sec.model.model_validate(saved)
                self.check(station, name, value)
                await sec.apply(station, value)
                log.info("ui.settings_restored", section=name)
            except ValidationError as err:
                log.warning("ui.settings_ignored", section=name, error=str(err))
            except SettingRefused as err:
                log.warning("ui.settings_ignored", section=name, error=err.message)


def labelled_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every field titled by hand (not from its name)."""
    schema = model.model_json_schema(by_alias=True)
    for key, prop in schema.get("properties", {}).items():
        lab = LABELS.get(key)
        if lab is None:  # a field without a written label would show its name: say so in logs
            log.warning("ui.setting_unlabelled", field=key)
            continue
        prop["title"] = lab.title
        if lab.hint is not None:
            prop["description"] = lab.hint
    return schema


def dump(value: BaseModel) -> dict[str, Any]:
    """A section's values as JSON (aliases: rules keep ``from``/``to``)."""
    return value.model_dump(mode="json", by_alias=True)


def add_station_sections(reg: SettingsRegistry) -> None:
    """The station's own sections: the tariff and the touchscreen."""

    async def apply_tariff(station: Station, value: BaseModel) -> None:
        assert isinstance(value, Tariff)
        # Sessions snapshot the tariff when they open: running ones keep their price.
        station.cfg.tariff = value

    async def apply_kiosk(station: Station, value: BaseModel) -> None:
        assert isinstance(value, KioskSettings)
        reg.kiosk = value

    reg.add(
        Section(
            "tariff",
            "Tariff",
            Tariff,
            lambda st: st.cfg.tariff,
            apply_tariff,
            frozenset({"owner"}),
        )
    )
    reg.add(
        Section(
            "kiosk",
            "Touchscreen",
            KioskSettings,
            lambda st: reg.kiosk,
            apply_kiosk,
            frozenset({"owner", "installer"}),
        )
    )
