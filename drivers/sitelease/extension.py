"""The ``site_lease`` extension: checks ``[site_lease]`` and runs the station's lease client.

Entry point ``edge_station.extensions: site_lease = drivers.sitelease.extension:EXTENSION``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from controller.load.lease import StationLease
from drivers.esp32.mqtt_config import check_mqtt, parse_mqtt
from drivers.sitelease.config import check_site_lease, parse_site_lease

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station
    from drivers.sitelease.station import SiteLeaseClient

# Each station's client (for its tests to find).
CLIENTS: weakref.WeakKeyDictionary[Station, SiteLeaseClient] = weakref.WeakKeyDictionary()


class SiteLeaseExtension:
    name = "site_lease"

    def check(self, cfg: StationConfig) -> list[str]:
        if cfg.site_lease is None:
            return []
        problems = check_site_lease(cfg.site_lease)
        if cfg.site is None:
            problems.append(
                "site_lease: a share of a site needs load management; add a [site] section"
            )
        if cfg.mqtt is None:
            problems.append("site_lease: needs the site broker's [mqtt] section")
        else:
            problems += check_mqtt(cfg.mqtt)
        return problems

    def attach(self, station: Station) -> None:
        cfg = station.cfg
        if cfg.site_lease is None or station.load is None or cfg.site is None:
            return
        from drivers.sitelease.station import SiteLeaseClient

        section = parse_site_lease(cfg.site_lease)
        # The fallback is the headroom this station's own safe shares are proven against.
        station.load.site_lease = StationLease(
            cfg.station.id, cfg.site.main_guaranteed_headroom_a, max_lease_s=section.max_lease_s
        )
        client = SiteLeaseClient(station, section, parse_mqtt(cfg.mqtt))
        station.load.step_listeners.append(client.stepped)
        CLIENTS[station] = client
        station.add_service("site-lease", client.run)


EXTENSION = SiteLeaseExtension()
