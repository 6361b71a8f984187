"""Live settings, by section: each section is a pydantic model with a getter and an applier.

A change is validated by the section's model, applied to the running station,
kept in the journal (``kv: ui.settings.<section>``, re-applied at start so a
restart keeps it) and audited. The load manager (or any part) adds its own
sections (site limits, circuits, modes, rules) with :meth:`SettingsRegistry.add`
without touching the routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.accounting import Tariff
from controller.station import Station

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    model: type[BaseModel]
    get: Callable[[Station], BaseModel]
    apply: Callable[[Station, BaseModel], Awaitable[None]]
    roles: frozenset[str] = frozenset({"owner"})
    persist: bool = True


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
        return {
            "name": sec.name,
            "title": sec.title,
            "roles": sorted(sec.roles),
            "values": sec.get(station).model_dump(mode="json"),
            "schema": sec.model.model_json_schema(),
        }

    def validate(self, station: Station, name: str, patch: dict[str, Any]) -> BaseModel:
        """Merge ``patch`` into the current values and validate (raises ValidationError)."""
        sec = self.sections[name]
        merged = {**sec.get(station).model_dump(), **patch}
        return sec.model.model_validate(merged)

    async def apply(self, station: Station, name: str, value: BaseModel) -> None:
        sec = self.sections[name]
        await sec.apply(station, value)
        if sec.persist:
            await station.journal.kv_set(f"ui.settings.{name}", value.model_dump(mode="json"))

    async def restore(self, station: Station) -> None:
        for name, sec in self.sections.items():
            if not sec.persist:
                continue
            saved = await station.journal.kv_get(f"ui.settings.{name}")
            if not isinstance(saved, dict):
                continue
            try:
                await sec.apply(station, sec.model.model_validate(saved))
                log.info("ui.settings_restored", section=name)
            except ValidationError as err:
                log.warning("ui.settings_ignored", section=name, error=str(err))


def default_registry() -> SettingsRegistry:
    reg = SettingsRegistry()

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
    return reg
