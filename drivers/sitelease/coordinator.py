"""The site coordinator as a process: reports in, leases out, over the site's broker.

It computes (:class:`controller.load.coordinate.SiteCoordinator`) whenever the
site meter's station reports, and at least every ``period_s``, and publishes
each station's lease retained, QoS 1, with an MQTT 5 message expiry of the
lease time: a lease the coordinator no longer renews disappears from the
broker by itself. Its status topic is retained ``online``, ``offline`` being
its last will. A lost broker is retried with capped exponential backoff; the
epoch (its start time in ms) stays for the life of the process.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.load.coordinate import CoordinatorConfig, Round, SiteCoordinator
from controller.load.lease import LeaseError, Report
from drivers.esp32.mqtt_config import MqttConfig
from drivers.sitelease.config import topics
from drivers.sitelease.station import mqtt_client

log = structlog.get_logger(__name__)


class CoordinatorService:
    def __init__(self, cfg: CoordinatorConfig, mqtt: MqttConfig) -> None:
        self.cfg = cfg
        self.mqtt = mqtt
        self.core = SiteCoordinator(cfg, epoch=int(time.time() * 1000), started=time.monotonic())
        self.topics = topics(mqtt.topic_prefix, cfg.site)
        self.client_id = mqtt.client_id or f"{mqtt.topic_prefix}-site-{cfg.site}-coordinator"
        self._due = asyncio.Event()
        self._backoff = mqtt.backoff_initial_s
        self.rounds = 0
        self.refused = 0

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                # The session's TaskGroup wraps the broker's error; anything else is ours.
                log.warning(
                    "coordinator.broker_lost",
                    error=str(group.exceptions[0]),
                    retry_in_s=self._backoff,
                )
            else:
                continue
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, self.mqtt.backoff_max_s)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True)
        async with mqtt_client(self.mqtt, self.client_id, will=will) as client:
            await client.publish(self.topics.status, b"online", qos=1, retain=True)
            await client.subscribe(self.topics.all_reports(), qos=0)
            log.info("coordinator.connected", site=self.cfg.site, epoch=self.core.epoch)
            self._backoff = self.mqtt.backoff_initial_s
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._rounds(client), name="coordinator-rounds")
                async for message in client.messages:
                    self._on_report(str(message.topic), message.payload)

    def _on_report(self, topic: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes | str) else b""
        try:
            rep = Report.decode(raw)
        except LeaseError as exc:
            self.refused += 1
            log.warning("coordinator.report_refused", topic=topic, reason=str(exc))
            return
        if topic != self.topics.report(rep.station) or not self.core.report(time.monotonic(), rep):
            self.refused += 1
            log.warning("coordinator.report_refused", topic=topic, reason="unknown station")
            return
        if rep.station == self.cfg.site_meter:
            self._due.set()

    async def _rounds(self, client: aiomqtt.Client) -> None:
        # At most four rounds a period: a lease wakes a station, whose report wakes us.
        spacing = self.cfg.period_s / 4
        while True:
            try:
                async with asyncio.timeout(self.cfg.period_s):
                    await self._due.wait()
            except TimeoutError:
                pass
            self._due.clear()
            rnd = self.core.compute(time.monotonic(), time.time())
            await self._publish(client, rnd)
            self.rounds += 1
            await asyncio.sleep(spacing)

    async def _publish(self, client: aiomqtt.Client, rnd: Round) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = math.ceil(self.cfg.lease_s)
        for station, lease in rnd.leases.items():
            await client.publish(
                self.topics.lease(station), lease.encode(), qos=1, retain=True, properties=props
            )
