"""The ``[ocpp]`` section: the OCPP 1.6J link to the central system, wired into the station.

The upstream answers authorizations first, runs as a station service, and
feeds its charging-profile limits to the load manager as an extra cap (never
above the site's own limits); without a load manager the station caps each bay
with them directly (:mod:`controller.core.directcaps`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from cloud_sync.assemble import build
from cloud_sync.config import OcppConfig
from controller.core.config import StationConfig

if TYPE_CHECKING:
    from controller.core.station import Station


class OcppExtension:
    name = "ocpp"

    def check(self, cfg: StationConfig) -> list[str]:
        if cfg.ocpp is None:
            return []
        try:
            OcppConfig.model_validate(cfg.ocpp)
        except ValidationError as err:
            return [f"ocpp.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        return []

    def attach(self, station: Station) -> None:
        if station.cfg.ocpp is None:
            return
        up = build(OcppConfig.model_validate(station.cfg.ocpp), station)
        station.add_service("ocpp", up.run)


EXTENSION = OcppExtension()
