"""Per-node link bookkeeping shared by the ESP32 transports (serial now, MQTT later).

Owns the node configuration the host pushes, the link counters and the
sequence-number and reboot tracking; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.ports import LinkStats, PermanentError
from drivers.esp32.messages import MAX_NODE_ADDRESS, AckStatus


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
    last_seq: int | None = None
    last_uptime_ms: int | None = None
    last_poll_at: float = float("-inf")

    def note_rx(self, seq: int, now: float) -> None:
        """Count a good frame; track sequence gaps (lost frames) and repeats."""
        self.stats.frames_rx += 1
        self.stats.last_rx_at = now
        if self.last_seq is not None:
            gap = (seq - self.last_seq) & 0xFFFF
            if gap == 0:
                self._bump("seq_repeats")
            elif gap > 1 and gap < 0x8000:
                self._bump("seq_gaps", gap - 1)
        self.last_seq = seq

    def note_uptime(self, uptime_ms: int) -> bool:
        """Record the node's uptime; True when it went backwards (the node rebooted)."""
        rebooted = self.last_uptime_ms is not None and uptime_ms < self.last_uptime_ms
        self.last_uptime_ms = uptime_ms
        return rebooted

    def _bump(self, key: str, n: int = 1) -> None:
        self.stats.extra[key] = self.stats.extra.get(key, 0) + n
