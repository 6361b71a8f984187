"""The station on its broker: retained state, bay commands, notifications, HA discovery.

One client (``<prefix>-<station_id>-state``) with the ``[mqtt]`` account. Its
last will sets ``<p>/state/availability`` to ``offline`` (retained), so Home
Assistant greys the entities out when the station dies; it says ``online``
when it connects and ``offline`` when it stops in order.

State is latest-wins: a lossy subscription to bay and station changes, and a
document is published only when it differs from the last one sent.
Notifications (``<p>/event/<kind>``) come from a lossless subscription while
connected; the durable path for them is the webhooks (``drivers/webhooks``).
Commands are authorised by the broker's ACL (only the ``homeassistant``
account may write ``<p>/cmd/#``) and each result is published on
``<p>/event/command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from controller.core.bay_model import StopReason
from controller.core.events import BayChanged, StationChanged
from controller.core.outcome import Outcome, UnknownSession
from drivers.esp32.mqtt_client import client_for
from drivers.esp32.mqtt_config import MqttConfig
from drivers.homeassistant.discovery import MODES, BayInfo, bay_of, messages
from drivers.mqtt_state.config import HomeAssistantSection, MqttStateSection
from drivers.mqtt_state.state import bay_state, site_state
from drivers.mqtt_state.topics import Topics
from drivers.webhooks.notify import EVENT_KINDS, Notifier

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)

ACTOR = "mqtt"
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


class MqttStateService:
    def __init__(
        self,
        station: Station,
        mqtt: MqttConfig,
        cfg: MqttStateSection,
        ha: HomeAssistantSection | None,
        version: str = "",
    ) -> None:
        self._st = station
        self._mqtt = mqtt
        self._cfg = cfg
        self._ha = ha if ha is not None and ha.discovery else None
        self.topics = Topics(mqtt.topic_prefix, station.cfg.station.id)
        self.client_id = f"{mqtt.topic_prefix}-{station.cfg.station.id}-state"
        self._version = version
        self._sent: dict[str, str] = {}
        self._discovery: dict[str, str] = {}
        self.connected = asyncio.Event()
        self.commands_done = 0
        self.removed_configs = 0

    def _client(self) -> aiomqtt.Client:
        return client_for(
            self._mqtt,
            self.client_id,
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
        )

    async def run(self) -> None:
        # A broker that is away is this service's failure: the supervisor restarts it.
        notifier = Notifier(self._st)
        notifier.prime()
        events = self._st.events.subscribe(lossy=False, kinds=EVENT_KINDS)
        changes = self._st.events.subscribe(lossy=True, kinds=(BayChanged, StationChanged))
        self._sent.clear()
        try:
            async with self._client() as client:
                await client.publish(self.topics.availability, b"online", qos=1, retain=True)
                if self._ha is not None:
                    await self._publish_discovery(client)
                if self._cfg.commands:
                    await client.subscribe(self.topics.commands, qos=1)
                await self._publish_all(client)
                self.connected.set()
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._state_loop(client, changes), name="mqtt-state")
                        tg.create_task(
                            self._event_loop(client, events, notifier), name="mqtt-events"
                        )
                        async for message in client.messages:
                            await self._on_message(client, str(message.topic), message.payload)
                finally:
                    self.connected.clear()
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        async with asyncio.timeout(2):
                            await client.publish(
                                self.topics.availability, b"offline", qos=1, retain=True
                            )
        finally:
            self._st.events.unsubscribe(events)
            self._st.events.unsubscribe(changes)

    # ------------------------------------------------------------------ state

    async def _send(self, client: aiomqtt.Client, topic: str, doc: dict[str, Any]) -> None:
        payload = json.dumps(doc, sort_keys=True)
        if self._sent.get(topic) == payload:
            return
        await client.publish(topic, payload, qos=1, retain=True)
        self._sent[topic] = payload

    async def _publish_all(self, client: aiomqtt.Client) -> None:
        await self._send(client, self.topics.site_state, site_state(self._st))
        for rt in self._st.bays.values():
            await self._send(client, self.topics.bay_state(rt.cfg.id), bay_state(self._st, rt))

    async def _state_loop(self, client: aiomqtt.Client, changes: Any) -> None:
        while True:
            event = await changes.get()
            bays: set[str] = set()
            while True:  # take what piled up: one document per bay, the latest
                if isinstance(event, BayChanged):
                    bays.add(event.bay_id)
                if changes.empty():
                    break
                event = changes.get_nowait()
            for bay_id in sorted(bays):
                rt = self._st.bays.get(bay_id)
                if rt is not None:
                    await self._send(client, self.topics.bay_state(bay_id), bay_state(self._st, rt))
            await self._send(client, self.topics.site_state, site_state(self._st))

    async def _event_loop(self, client: aiomqtt.Client, events: Any, notifier: Notifier) -> None:
        while True:
            event = await events.get()
            for n in notifier.notifications(event):
                await client.publish(
                    self.topics.event(n.kind), json.dumps(n.payload(), sort_keys=True), qos=1
                )

    # ------------------------------------------------------------------ Home Assistant

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        assert self._ha is not None
        bays = [BayInfo(b.id, b.connector, b.kind, b.max_current_a) for b in self._st.cfg.bays]
        self._discovery = messages(
            self.topics,
            station_name=self._st.cfg.station.name,
            bays=bays,
            prefix=self._ha.prefix,
            version=self._version,
        )
        # What an earlier configuration announced (a bay since removed) comes back as
        # retained messages on this subscription and is cleared in _on_message.
        await client.subscribe(f"{self._ha.prefix}/+/{self.topics.station_id}/+/config", qos=1)
        for topic, payload in self._discovery.items():
            await client.publish(topic, payload, qos=1, retain=True)

    async def _forget_stale(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        if not payload or topic in self._discovery:
            return
        object_id = topic.split("/")[-2]
        log.info("homeassistant.entity_removed", topic=topic, bay=bay_of(object_id))
        await client.publish(topic, b"", qos=1, retain=True)
        self.removed_configs += 1

    # ------------------------------------------------------------------ commands

    async def _on_message(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        if self._ha is not None and topic.startswith(self._ha.prefix + "/"):
            await self._forget_stale(client, topic, payload)
            return
        parsed = self.topics.parse_command(topic)
        if parsed is None:
            return
        bay_id, verb = parsed
        raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        try:
            out = await self._command(bay_id, verb, raw.strip())
        except Exception as exc:  # a command must never stop the service
            log.exception("mqtt_state.command_failed", bay=bay_id, command=verb)
            out = Outcome(False, "error", f"The command could not be carried out: {exc}")
        self.commands_done += 1
        log.info("mqtt_state.command", bay=bay_id, command=verb, ok=out.ok, code=out.code)
        result = {
            "bay": bay_id,
            "command": verb,
            "ok": out.ok,
            "code": out.code,
            "message": out.message,
        }
        await client.publish(self.topics.event("command"), json.dumps(result), qos=1)

    async def _command(self, bay_id: str, verb: str, arg: str) -> Outcome:
        rt = self._st.bays.get(bay_id)
        if rt is None:
            return Outcome(False, "unknown_bay", f"There is no charging point {bay_id}.")
        cmds = self._st.commands
        sess = rt.state.session
        match verb:
            case "start":
                if not arg:
                    return Outcome(False, "no_token", "A start needs a token.")
                return await cmds.present_token(bay_id, arg, source=ACTOR)
            case "stop":
                if sess is None:
                    return Outcome(False, "not_running", "No session is running there.")
                return await cmds.stop_session(sess.session_id, StopReason.REMOTE, actor=ACTOR)
            case "mode":
                mode = arg.lower()
                if mode not in MODES:
                    return Outcome(
                        False, "bad_mode", f"The mode must be one of: {', '.join(MODES)}."
                    )
                if sess is None:
                    return Outcome(False, "not_running", "No session is running there.")
                try:
                    return await cmds.set_mode(sess.session_id, mode, actor=ACTOR)
                except UnknownSession:
                    return Outcome(False, "not_running", "No session is running there.")
            case "available":
                value = arg.lower()
                if value not in _TRUE | _FALSE:
                    return Outcome(False, "bad_value", "Send true or false.")
                return await cmds.set_availability(bay_id, value in _TRUE, actor=ACTOR)
        return Outcome(False, "unknown_command", f"There is no command {verb!r}.")
