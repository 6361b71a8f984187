"""External limits over MQTT, on the station's broker (``[mqtt]``) with the controller's account.

Topics (``<p>`` is ``<topic_prefix>/<station_id>``)::

    <p>/limit/site/set        energy manager -> station: a site limit (payload.py)
    <p>/limit/<bay_id>/set    energy manager -> station: one bay's limit
    <p>/grid_operator/set     energy manager -> station: the grid operator's signal
    <p>/limit/state           station -> all, retained: what is in force (JSON)

Who may write the ``set`` topics is the broker's ACL (``systemd/mosquitto/acl``:
the ``hems`` account). The state is republished on every change and on every
(re)connect, so a late subscriber sees what holds now.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
import structlog

from controller.load.external import ExternalCaps
from drivers.esp32.mqtt_client import client_for
from drivers.esp32.mqtt_config import MqttConfig
from drivers.setpoint.gate import SetpointGate
from drivers.setpoint.payload import PayloadError, parse_limit, parse_switch

log = structlog.get_logger(__name__)

SOURCE = "mqtt"


class MqttSetpoints:
    def __init__(self, gate: SetpointGate, cfg: MqttConfig, station_id: str) -> None:
        self._gate = gate
        self._cfg = cfg
        self.base = f"{cfg.topic_prefix}/{station_id}"
        self.client_id = f"{cfg.topic_prefix}-{station_id}-setpoints"
        self._changed = asyncio.Event()
        self.connected = asyncio.Event()
        self.received = 0
        self.refused = 0

    def changed(self, _caps: ExternalCaps | None = None) -> None:
        """A load-loop listener: republish the state."""
        self._changed.set()

    def state(self) -> dict[str, Any]:
        return self._gate.limits.status(self._gate_now())

    def _gate_now(self) -> float:
        return self._gate.now()

    async def run(self) -> None:
        client = client_for(self._cfg, self.client_id)
        # A broker that is away is the service's failure: the supervisor restarts it with backoff.
        async with client:
            await client.subscribe(f"{self.base}/limit/+/set", qos=1)
            await client.subscribe(f"{self.base}/grid_operator/set", qos=1)
            self.connected.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._publisher(client), name="setpoint-state")
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            finally:
                self.connected.clear()

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            payload = json.dumps(self.state(), sort_keys=True)
            await client.publish(f"{self.base}/limit/state", payload, qos=1, retain=True)
            await self._changed.wait()
            self._changed.clear()

    def _on_message(self, topic: str, payload: Any) -> None:
        self.received += 1
        raw = payload if isinstance(payload, bytes | str) else b""
        rest = topic.removeprefix(self.base + "/")
        try:
            if rest == "grid_operator/set":
                self._gate.grid_operator(SOURCE, parse_switch(raw))
                return
            parts = rest.split("/")
            if len(parts) != 3 or parts[0] != "limit" or parts[2] != "set":
                raise PayloadError(f"unknown topic {topic}")
            req = parse_limit(raw)
            change = self._gate.offer(
                scope=parts[1],
                source=SOURCE,
                amps=req.amps,
                watts=req.watts,
                lease_s=req.lease_s,
            )
            if change.kind == "refused":
                self.refused += 1
            self._changed.set()
        except PayloadError as exc:
            self.refused += 1
            log.warning("external.mqtt_refused", topic=topic, reason=str(exc))
