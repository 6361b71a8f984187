"""Bays wired straight to the Pi's pins: ``GpioHub`` (``NodeHub``) and ``GpioBayNode`` (``BayNode``).

The same port as an ESP32 node, a second adapter: ``[[buses]] transport =
"gpio"`` puts a bay here instead of on a node. Per bay: an outlet relay, a
lock with feedback, a door sensor, a status LED and a buzzer, each optional
(``drivers/gpio/config.py``). The hub reports telemetry every
``telemetry_period_s`` and at once after a change (current is the bay's
configured ``current_a`` while the relay is on, else 0; energy 0: there is
no meter), and events for door, lock, lease expiry and tamper.

The relay is a lease like a node's setpoint: if the controller does not
renew it within ``lease_s``, the bay's lease task (in the hub's TaskGroup)
opens the relay, unless the bay has a safe share. What the lease cannot
cover — the event loop hung, the process killed — is covered outside the
process (``drivers/gpio/FAILSAFE.md``): systemd's watchdog kills a hung
station, the kernel returns a dead process's pins to inputs, the relay's
failsafe pull resistor then holds it off, and the Pi's hardware watchdog
resets a Pi whose kernel hangs (after a reset every pin is an input).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from controller.ports import (
    ConnectionLost,
    DriverError,
    LinkStats,
    NodeEvent,
    NodeEventKind,
    NodeHello,
    NodeLink,
    NodeSink,
    NodeTelemetry,
    NodeUpdate,
    PermanentError,
    PilotState,
)
from drivers.gpio.config import GpioBay, GpioConfig
from drivers.gpio.io import Output
from drivers.gpio.lock import GpioDoorLock

log = structlog.get_logger(__name__)

FIRMWARE = "pi-gpio"
PROTOCOL_VERSION = 1


class GpioBayNode:
    """One bay on the Pi's pins, as the controller sees it (``controller.ports.BayNode``)."""

    def __init__(
        self,
        hub: GpioHub,
        cfg: GpioBay,
        *,
        safe_current_a: float = 0.0,
        factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = cfg.node
        self.cfg = cfg
        self.safe_current_a = safe_current_a
        self._hub = hub
        self._factory = factory
        self._clock = clock
        self.door_lock = GpioDoorLock(
            cfg.node, cfg.lock, cfg.door, factory=factory, on_tamper=self.alarm, clock=clock
        )
        self._relay: Output | None = None
        self._led: Output | None = None
        self._buzzer: Output | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lease_until: float | None = None  # on the hub's clock
        self._lease_changed = asyncio.Event()
        self._alarm_end: asyncio.TimerHandle | None = None
        self.setpoint_a = 0.0
        self.alarming = False
        self._stats = LinkStats(firmware=FIRMWARE)

    # ------------------------------------------------------------------ lifecycle (hub)

    def open(self, sink: NodeSink, loop: asyncio.AbstractEventLoop) -> None:
        """Claim the pins (runs in a worker thread)."""
        self._loop = loop
        try:
            if self.cfg.relay is not None:
                self._relay = Output(
                    self.cfg.relay, factory=self._factory, failsafe=self.cfg.relay.failsafe
                )
            if self.cfg.led is not None:
                self._led = Output(self.cfg.led, factory=self._factory)
            if self.cfg.buzzer is not None:
                self._buzzer = Output(self.cfg.buzzer, factory=self._factory)
            self.door_lock.open(sink, loop)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Relay open, alarm off, pins released (runs in a worker thread, lease task ended)."""
        self._lease_until = None
        self.door_lock.close()
        for out in (self._relay, self._led, self._buzzer):
            if out is not None:
                with contextlib.suppress(Exception):
                    out.close()
        self._relay = self._led = self._buzzer = None

    # ------------------------------------------------------------------ BayNode

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        if current_a < 0 or lease_s <= 0:
            raise PermanentError(f"{self.node_id}: current_a >= 0 and lease_s > 0 required")
        relay = self._relay
        if relay is None:
            if self.cfg.relay is None:
                if relay_on:
                    raise PermanentError(f"{self.node_id}: no relay is wired")
                return  # nothing to switch off
            raise ConnectionLost(f"{self.node_id}: the GPIO hub is not running")
        self._stats.frames_tx += 1
        if not relay_on:
            self._cancel_lease()
            relay.set(False)
            self.setpoint_a = 0.0
        else:
            self._renew_lease(lease_s)
            relay.set(True)
            self.setpoint_a = current_a
        self._show_status()
        self._hub.report(self)

    async def set_lock(self, *, locked: bool) -> None:
        self._stats.frames_tx += 1
        try:
            await self.door_lock.set_locked(locked)
        except DriverError:
            self._stats.timeouts += 1
            raise
        finally:
            self._hub.report(self)

    def stats(self) -> LinkStats:
        s = self._stats
        s.extra["lock_faults"] = self.door_lock.faults
        s.extra["tampers"] = self.door_lock.tampers
        return dataclasses.replace(s, extra=dict(s.extra))

    # ------------------------------------------------------------------ lease

    def _renew_lease(self, lease_s: float) -> None:
        self._lease_until = self._clock() + lease_s
        self._lease_changed.set()

    def _cancel_lease(self) -> None:
        self._lease_until = None
        self._lease_changed.set()

    async def run_lease(self) -> None:
        """The relay's lease, a task of the hub's TaskGroup: on expiry the relay falls to
        the bay's safe share (off without one)."""
        while True:
            self._lease_changed.clear()
            until = self._lease_until
            if until is None:
                await self._lease_changed.wait()
                continue
            left = until - self._clock()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._lease_changed.wait()
                continue
            self._lease_expired()

    def _lease_expired(self) -> None:
        self._lease_until = None
        relay = self._relay
        if self.safe_current_a <= 0:
            if relay is not None:
                relay.set(False)
            self.setpoint_a = 0.0
        else:
            self.setpoint_a = min(self.setpoint_a, self.safe_current_a)
        self._stats.extra["lease_expired"] = self._stats.extra.get("lease_expired", 0) + 1
        log.warning("gpio.lease_expired", node=self.node_id)
        self._hub.emit(NodeEvent(self.node_id, self._clock(), NodeEventKind.LEASE_EXPIRED))
        self._show_status()

    # ------------------------------------------------------------------ LED, buzzer

    def alarm(self) -> None:
        """Tamper alarm: buzzer on and LED blinking for ``alarm_s`` (on the loop)."""
        self.alarming = True
        if self._buzzer is not None:
            self._buzzer.set(True)
        if self._led is not None:
            self._led.blink(0.2, 0.2)
        if self._loop is not None:
            if self._alarm_end is not None:
                self._alarm_end.cancel()
            self._alarm_end = self._loop.call_later(self.cfg.alarm_s, self.clear_alarm)

    def clear_alarm(self) -> None:
        self.alarming = False
        if self._alarm_end is not None:
            self._alarm_end.cancel()
            self._alarm_end = None
        if self._buzzer is not None:
            self._buzzer.set(False)
        self._show_status()

    def _show_status(self) -> None:
        if self._led is not None and not self.alarming:
            self._led.set(self.relay_on)

    # ------------------------------------------------------------------ telemetry

    @property
    def relay_on(self) -> bool:
        return self._relay is not None and self._relay.is_on

    def telemetry(self) -> NodeTelemetry:
        now = self._clock()
        on = self.relay_on
        until = self._lease_until
        return NodeTelemetry(
            node_id=self.node_id,
            at=now,
            current_a=(self.cfg.current_a if on else 0.0, 0.0, 0.0),
            voltage_v=(self.cfg.voltage_v, 0.0, 0.0),
            energy_wh=0,
            relay_on=on,
            setpoint_a=self.setpoint_a if on else 0.0,
            lease_remaining_s=0.0 if until is None else max(0.0, until - now),
            locked=self.door_lock.locked,
            door_closed=self.door_lock.door_closed,
            pilot=PilotState.NONE,
        )


class GpioHub:
    """All the bays wired to this Pi (``controller.ports.NodeHub``)."""

    def __init__(
        self,
        cfg: GpioConfig,
        nodes: Sequence[tuple[str, float]],
        *,
        factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``nodes``: ``(node_id, safe_current_a)`` of the bays on this bus."""
        self.cfg = cfg
        self._clock = clock
        self._nodes = {
            node_id: GpioBayNode(
                self, cfg.bay(node_id), safe_current_a=safe, factory=factory, clock=clock
            )
            for node_id, safe in nodes
        }
        self._sink: NodeSink | None = None
        self.running = asyncio.Event()

    def node(self, node_id: str) -> GpioBayNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise PermanentError(f"no GPIO bay for node {node_id!r}") from None

    async def run(self, sink: NodeSink) -> None:
        loop = asyncio.get_running_loop()
        self._sink = sink
        opened: list[GpioBayNode] = []
        try:
            for n in self._nodes.values():
                await asyncio.to_thread(n.open, self.emit, loop)
                opened.append(n)
            now = self._clock()
            for n in opened:
                self.emit(NodeHello(n.node_id, now, FIRMWARE, PROTOCOL_VERSION, _caps(n.cfg)))
                self.emit(NodeLink(n.node_id, now, online=True, reason="gpio opened"))
            self.running.set()
            async with asyncio.TaskGroup() as tg:
                for n in opened:
                    if n.cfg.relay is not None:
                        tg.create_task(n.run_lease(), name=f"gpio-lease:{n.node_id}")
                tg.create_task(self._report(opened), name="gpio-telemetry")
        finally:
            self.running.clear()
            self._sink = None
            for n in opened:
                await asyncio.to_thread(n.close)

    async def _report(self, nodes: list[GpioBayNode]) -> None:
        while True:
            for n in nodes:
                self.emit(n.telemetry())
            await asyncio.sleep(self.cfg.telemetry_period_s)

    def report(self, node: GpioBayNode) -> None:
        """Telemetry of ``node`` now (after a command or an input change)."""
        self.emit(node.telemetry())

    def emit(self, update: NodeUpdate) -> None:
        sink = self._sink
        if sink is None:
            return
        node = self._nodes.get(update.node_id)
        if node is not None:
            node._stats.frames_rx += 1
            node._stats.last_rx_at = update.at
        try:
            sink(update)
        except Exception:
            log.exception("gpio.sink_failed", update=type(update).__name__)
        if isinstance(update, NodeEvent) and node is not None:
            # an input changed: the telemetry follows at once
            with contextlib.suppress(Exception):
                sink(node.telemetry())


def _caps(cfg: GpioBay) -> frozenset[str]:
    caps = {"locker"} if cfg.lock is not None or cfg.door is not None else {"evse"}
    if cfg.lock is not None:
        caps.add("lock")
    if cfg.door is not None:
        caps.add("door")
    return frozenset(caps)
