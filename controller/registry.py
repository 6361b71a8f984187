"""Adapter registry: drivers, upstreams and services register by name as entry points.

The controller never imports an adapter package; ``pyproject.toml`` declares
each factory under a group, and the composition root (:mod:`controller.assemble`)
asks this registry for it by the name the config uses. A new driver is one
module plus one entry-point line.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station


class Extension(Protocol):
    """An optional part (OCPP, meters, MQTT, camera, GPIO) with its config section.

    ``check`` returns the problems of its section as ``path: message`` lines
    (empty when fine or absent); ``attach`` wires it into a station before it runs.
    The services it adds with ``station.add_service`` are optional: supervised and
    restarted when they fail, never stopping the station (see ``controller.core.services``).
    A service the station must not run without is core, and no extension's.
    """

    name: str

    def check(self, cfg: StationConfig) -> list[str]: ...

    def attach(self, station: Station) -> None: ...


NODE_HUBS = "edge_station.node_hubs"
METERS = "edge_station.meters"
UPSTREAMS = "edge_station.upstreams"
SERVICES = "edge_station.services"
COMMANDS = "edge_station.commands"
EXTENSIONS = "edge_station.extensions"


class UnknownAdapter(LookupError):
    pass


def names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def extensions() -> list[Extension]:
    return [load(EXTENSIONS, name) for name in names(EXTENSIONS)]


def load(group: str, name: str) -> Any:
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    raise UnknownAdapter(
        f"no adapter {name!r} in {group} (installed: {', '.join(names(group)) or 'none'})"
    )
