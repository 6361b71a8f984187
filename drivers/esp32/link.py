"""Per-node link bookkeeping shared by the ESP32 transports (serial and MQTT).

Owns the node configuration the host pushes, the link counters, the
sequence-number and reboot tracking (with :mod:`drivers.esp32.guard`: one
device per address), and the controller-facing :class:`LinkBayNode` both
hubs hand out; no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from controller.core.config import BayConfig, BusConfig
from controller.ports import (
    LinkStats,
    NodeConflict,
    NodeEvent,
    NodeHello,
    NodeTelemetry,
    NodeUpdate,
    PermanentError,
)
from drivers.esp32.guard import Finding, FrameGuard, StepKind
from drivers.esp32.messages import (
    MAX_NODE_ADDRESS,
    Ack,
    AckStatus,
    Command,
    Event,
    Heartbeat,
    Hello,
    Message,
    SetLock,
    SetOutput,
    Telemetry,
)

log = structlog.get_logger(__name__)

CONFLICT_EVERY_S = 5.0  # a conflict that goes on is reported again at most this often
MAX_HELD = 64  # reports held back while a restarted sequence is on probation


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What the host knows about one node and pushes to it with ``configure``.

    ``safe_current_a``: the current the node falls to when its lease expires or
    the host goes silent past ``host_timeout_s`` (below 6 A an EVSE opens its relay).
    """

    node_id: str
    address: int
    safe_current_a: float
    host_timeout_s: float = 5.0
    telemetry_period_s: float = 1.0
    serial: str | None = None  # the identity the node must announce, when configured

    def __post_init__(self) -> None:
        if not 1 <= self.address <= MAX_NODE_ADDRESS:
            raise PermanentError(f"{self.node_id}: bus address must be 1..{MAX_NODE_ADDRESS}")
        if self.safe_current_a < 0 or self.host_timeout_s <= 0 or self.telemetry_period_s <= 0:
            raise PermanentError(f"{self.node_id}: invalid safe current or timeouts")


class CommandRejected(PermanentError):
    """The node answered a command with a non-OK status."""

    def __init__(self, node_id: str, command: str, status: AckStatus) -> None:
        super().__init__(f"{node_id}: {command} rejected: {status.name}")
        self.node_id = node_id
        self.status = status


@dataclass(slots=True)
class NodeState:
    """Mutable per-node state of a hub."""

    cfg: NodeConfig
    stats: LinkStats = field(default_factory=LinkStats)
    online: bool | None = None  # None: not heard from yet
    needs_config: bool = True
    last_uptime_ms: int | None = None
    last_poll_at: float = float("-inf")
    guard: FrameGuard = field(init=False)
    held: list[NodeUpdate] = field(default_factory=list)
    conflict_at: float | None = None

    def __post_init__(self) -> None:
        self.guard = FrameGuard(
            expected_serial=self.cfg.serial,
            probation_s=max(1.0, 2.5 * self.cfg.telemetry_period_s),
        )

    def accept(
        self, seq: int, msg: Message, now: float, *, redelivery_window: int = 0
    ) -> list[NodeUpdate]:
        """One good frame from the node's address: the updates for the controller, in order.

        Repeats are dropped; a restarted sequence is held back while on probation; a
        second sender or a wrong identity is reported as :class:`NodeConflict` first.
        ``redelivery_window``: see :meth:`FrameGuard.sequence`.
        """
        self.stats.frames_rx += 1
        self.stats.last_rx_at = now
        restart = isinstance(msg, Hello) and seq == 1
        step = self.guard.sequence(seq, now, redelivery_window, restart=restart)
        if step.kind is StepKind.REPEAT:
            self._bump("seq_repeats")
            return []
        if step.gaps:
            self._bump("seq_gaps", step.gaps)
        finding = step.finding
        if isinstance(msg, Hello):
            finding = self.guard.identity(msg.serial, msg.firmware, restart=restart) or finding
        update = self.on_message(msg, now)
        out: list[NodeUpdate] = self._conflict(finding, now) if finding is not None else []
        if self.guard.on_probation:
            if update is not None:
                if len(self.held) >= MAX_HELD:
                    del self.held[0]  # bounded: a node that keeps restarting is not believed
                self.held.append(update)
                self._bump("held_frames")
            return out
        out += self.held
        self.held.clear()
        if update is not None:
            out.append(update)
        return out

    def went_offline(self) -> None:
        """Silence: the next frame starts a new sequence line; nothing held is delivered."""
        self.guard.forget_sequence()
        self.held.clear()

    def _conflict(self, finding: Finding, now: float) -> list[NodeUpdate]:
        self._bump("conflicts")
        dropped, self.held = len(self.held), []
        self.guard.end_probation()
        if self.conflict_at is not None and now - self.conflict_at < CONFLICT_EVERY_S:
            return []
        self.conflict_at = now
        log.error(
            "esp32.address_conflict",
            node=self.cfg.node_id,
            address=self.cfg.address,
            reason=finding.reason.value,
            detail=finding.detail,
            dropped_reports=dropped,
        )
        return [NodeConflict(self.cfg.node_id, now, finding.reason, finding.detail)]

    def note_uptime(self, uptime_ms: int) -> bool:
        """Record the node's uptime; True when it went backwards (the node rebooted)."""
        rebooted = self.last_uptime_ms is not None and uptime_ms < self.last_uptime_ms
        self.last_uptime_ms = uptime_ms
        return rebooted

    def on_message(self, msg: Message, now: float) -> NodeUpdate | None:
        """Book-keep a message from the node; the update for the controller, if any."""
        node_id = self.cfg.node_id
        if isinstance(msg, Telemetry):
            return NodeTelemetry(
                node_id=node_id,
                at=now,
                current_a=msg.current_a,
                voltage_v=msg.voltage_v,
                energy_wh=msg.energy_wh,
                relay_on=msg.relay_on,
                setpoint_a=msg.setpoint_a,
                lease_remaining_s=msg.lease_remaining_s,
                locked=msg.locked,
                door_closed=msg.door_closed,
                pilot=msg.pilot,
                temperature_c=msg.temperature_c,
                soc_pct=None if msg.soc_pct is None else float(msg.soc_pct),
                plug_count=msg.plug_count,
                boot_id=msg.boot_id,
            )
        if isinstance(msg, Event):
            return NodeEvent(node_id, now, msg.kind, msg.detail)
        if isinstance(msg, Hello):
            self.stats.firmware = msg.firmware
            self.needs_config = True
            return NodeHello(
                node_id,
                now,
                msg.firmware,
                msg.protocol_version,
                msg.capabilities,
                msg.boot_id,
                msg.serial,
            )
        if isinstance(msg, Heartbeat):
            if self.note_uptime(msg.uptime_ms):
                self.needs_config = True  # the node rebooted
        elif not isinstance(msg, Ack):
            self._bump("unexpected")  # a command sent by a node
        return None

    def _bump(self, key: str, n: int = 1) -> None:
        self.stats.extra[key] = self.stats.extra.get(key, 0) + n


def node_configs(bus: BusConfig, bays: Sequence[BayConfig]) -> list[NodeConfig]:
    """What the host pushes to each node of a ``[[buses]]`` entry (any transport)."""
    return [
        NodeConfig(
            node_id=b.node_id,
            address=b.address,
            safe_current_a=b.safe_current_a,
            host_timeout_s=bus.host_timeout_s,
            telemetry_period_s=bus.telemetry_period_s,
            serial=b.node_serial,
        )
        for b in bays
    ]


T = TypeVar("T", contravariant=True)


class Commander(Protocol[T]):
    """A hub's command path: send one command to ``target``, wait for the ack (retried);
    ``command_budget_s``: the longest that can take before it fails (every retry's timeout)."""

    async def command(self, target: T, build: Callable[[int], Command], /) -> None: ...

    @property
    def command_budget_s(self) -> float: ...


class LinkBayNode(Generic[T]):
    """One node as the controller sees it (``controller.ports.BayNode``), over any transport."""

    def __init__(self, hub: Commander[T], target: T, state: NodeState) -> None:
        self._hub = hub
        self._target = target
        self._state = state
        self.node_id = state.cfg.node_id

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        if current_a < 0 or lease_s <= 0:
            raise PermanentError(f"{self.node_id}: current_a >= 0 and lease_s > 0 required")
        await self._hub.command(
            self._target, lambda cmd_id: SetOutput(cmd_id, relay_on, current_a, lease_s)
        )

    async def set_lock(self, *, locked: bool) -> None:
        await self._hub.command(self._target, lambda cmd_id: SetLock(cmd_id, locked))

    @property
    def command_budget_s(self) -> float:
        """``controller.ports.CommandBudget``: the hub's ack timeout times its attempts."""
        return self._hub.command_budget_s

    def stats(self) -> LinkStats:
        s = self._state.stats
        return dataclasses.replace(s, extra=dict(s.extra))
