"""Composition-root factory: ``edge_station.upstreams: ocpp = cloud_sync.assemble:build``."""

from __future__ import annotations

from typing import Any

from cloud_sync.config import OcppConfig
from cloud_sync.upstream import OcppUpstream
from controller.core.station import Station


def build(cfg: OcppConfig, station: Station) -> OcppUpstream:
    """An upstream wired into ``station``: its AuthStep goes first in ``station.authorizer``.

    The caller adds ``upstream.run`` as a station service. Its charging profiles
    cap the bays (through the load manager, or directly without one), and a
    change of them makes the station decide again.
    """
    up = OcppUpstream(cfg, station)
    station.connect_upstream(up)
    station.authorizer.add(up.auth_step, first=True)
    up.on_limits_changed = station.caps_changed
    return up


def build_from_section(section: dict[str, Any], station: Station) -> OcppUpstream:
    """From the raw ``[ocpp]`` table of station.toml (validated here)."""
    return build(OcppConfig.model_validate(section), station)
