"""A station's side of the site lease: take leases from the broker, send reports back.

Subscribes to its retained lease topic (MQTT 5, so the broker tells how long a
stored lease has left) and hands every lease to the load loop's
:class:`controller.load.lease.StationLease` with the loop's monotonic clock,
then wakes the loop. After each load step it publishes the station's report
(at most every ``report_interval_s``). A broker that is away is this service's
failure: the supervisor restarts it with backoff, while the lease in force
runs out by itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from controller.load.lease import Lease, LeaseError
from drivers.esp32.mqtt_client import client_for
from drivers.esp32.mqtt_config import MqttConfig
from drivers.sitelease.config import SiteLeaseSection, topics

if TYPE_CHECKING:
    from controller.core.station import Station
    from controller.load import StepResult

log = structlog.get_logger(__name__)


def mqtt_client(c: MqttConfig, client_id: str, **extra: Any) -> aiomqtt.Client:
    """The lease clients speak MQTT 5: retained leases carry a message expiry."""
    return client_for(c, client_id, protocol=aiomqtt.ProtocolVersion.V5, **extra)


class SiteLeaseClient:
    def __init__(self, station: Station, cfg: SiteLeaseSection, mqtt: MqttConfig) -> None:
        assert station.load is not None and station.load.site_lease is not None
        self._station = station
        self._load = station.load
        self._holder = station.load.site_lease
        self._cfg = cfg
        self._mqtt = mqtt
        sid = station.cfg.station.id
        t = topics(mqtt.topic_prefix, cfg.site)
        self.lease_topic = t.lease(sid)
        self.report_topic = t.report(sid)
        # Its own client id: the node hub and the other MQTT parts have theirs.
        self.client_id = f"{mqtt.topic_prefix}-{sid}-sitelease"
        self._stepped = asyncio.Event()
        self.connected = asyncio.Event()
        self.received = 0
        self.refused = 0
        self.reports = 0

    def stepped(self, _res: StepResult | None = None) -> None:
        """A load-loop listener: a report is due."""
        self._stepped.set()

    async def run(self) -> None:
        async with mqtt_client(self._mqtt, self.client_id) as client:
            await client.subscribe(self.lease_topic, qos=1)
            self.connected.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._reporter(client), name="site-lease-report")
                    async for message in client.messages:
                        self._on_message(message)
            finally:
                self.connected.clear()

    def _on_message(self, message: aiomqtt.Message) -> None:
        self.received += 1
        raw = message.payload if isinstance(message.payload, bytes | str) else b""
        try:
            lease = Lease.decode(raw)
        except LeaseError as exc:
            self.refused += 1
            log.warning("site_lease.refused", topic=str(message.topic), reason=str(exc))
            return
        remaining = getattr(message.properties, "MessageExpiryInterval", None)
        change = self._holder.offer(
            self._station.clock.monotonic(),
            lease,
            remaining_s=float(remaining) if remaining is not None else None,
            stored=bool(message.retain),
        )
        if change.kind == "refused":
            self.refused += 1
            log.warning("site_lease.refused", topic=str(message.topic), reason=change.detail)
        self._load.wake()

    async def _reporter(self, client: aiomqtt.Client) -> None:
        while True:
            await self._stepped.wait()
            self._stepped.clear()
            rep = self._load.lease_report
            if rep is not None:
                await client.publish(self.report_topic, rep.encode(), qos=0)
                self.reports += 1
            # Steps come with every meter reading and every lease: one report per interval.
            await asyncio.sleep(self._cfg.report_interval_s)
