"""The ``webhooks`` extension: checks ``[webhooks]`` and runs the delivery service.

Entry point ``edge_station.extensions: webhooks = drivers.webhooks.extension:EXTENSION``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from drivers.webhooks.config import WebhooksSection, check_webhooks

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station
    from drivers.webhooks.service import WebhookService

SERVICES: weakref.WeakKeyDictionary[Station, WebhookService] = weakref.WeakKeyDictionary()


class WebhooksExtension:
    name = "webhooks"

    def check(self, cfg: StationConfig) -> list[str]:
        return check_webhooks(cfg.webhooks)

    def attach(self, station: Station) -> None:
        if station.cfg.webhooks is None:
            return
        cfg = WebhooksSection.model_validate(station.cfg.webhooks)
        if not cfg.targets:
            return
        from drivers.webhooks.service import WebhookService

        service = WebhookService(station, cfg)
        SERVICES[station] = service
        station.add_service("webhooks", service.run)


EXTENSION = WebhooksExtension()
