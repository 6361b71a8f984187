"""Composition-root factory: ``edge_station.upstreams: ocpp = cloud_sync.assemble:build``."""

from __future__ import annotations

from typing import Any

from cloud_sync.config import OcppConfig
from cloud_sync.upstream import OcppUpstream
from controller.core.station import Station


def build(cfg: OcppConfig, station: Station) -> OcppUpstream:
    """An upstream wired into ``station``: its AuthStep goes first in ``station.authorizer``.

    The caller adds ``upstream.run`` as a station service and may point the
    load manager at ``upstream.current_limits_a``. A change of charging profiles
    wakes the load manager, or, without one, the bays' outputs (which the
    station caps with the profiles itself).
    """
    up = OcppUpstream(cfg, station)
    station.upstream = up
    station.authorizer.add(up.auth_step, first=True)

    def limits_changed() -> None:
        station.load_changed.set()
        if station.load is None:  # the profiles cap the bays directly: resend their outputs now
            for rt in station.bays.values():
                rt.output_changed.set()

    up.on_limits_changed = limits_changed
    return up


def build_from_section(section: dict[str, Any], station: Station) -> OcppUpstream:
    """From the raw ``[ocpp]`` table of station.toml (validated here)."""
    return build(OcppConfig.model_validate(section), station)
