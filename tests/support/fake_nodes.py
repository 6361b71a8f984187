"""The one fake node hub of the controller tests (the real serial/MQTT adapters have their own).

:class:`FakeHub` implements :class:`controller.ports.NodeHub`. Every
:class:`FakeNode` records what the station commanded (:attr:`FakeNode.outputs`,
:attr:`FakeNode.locks`) and can be told to fail (:attr:`FakeNode.fail_commands`).
Two ways to run it:

- **passive** (``FakeHub()``): it reports nothing by itself; a test says what the
  nodes report with :meth:`FakeHub.telemetry` and :meth:`FakeHub.emit`;
- **self-driving** (``FakeHub(nodes, period_s=...)``): each node says hello, obeys
  the commands (relay, current, lock) like the firmware would and reports
  telemetry every ``period_s`` and at once after a command or :meth:`FakeHub.plug`.
  A plugged vehicle draws ``min(setpoint, ev_max_a)`` on its ``phases``; energy
  counts up from those currents at 230 V, ``speed`` times faster than real time
  (the station rejects counter steps above what the bay's power allows).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.ports import (
    DriverTimeout,
    LinkStats,
    NodeHello,
    NodeSink,
    NodeTelemetry,
    NodeUpdate,
    PilotState,
)

Output = tuple[bool, float, float]  # relay_on, current_a, lease_s
VOLTAGE_V = 230.0


@dataclass
class FakeNode:
    """One node. ``pilot=False``: it reports no control pilot (``PilotState.NONE``) even on
    an EVSE, and so never says whether a vehicle is there; ``plugged`` still lets it draw."""

    node_id: str
    kind: str = "evse"
    phases: int = 3
    plugged: bool = False
    ev_max_a: float = math.inf
    pilot: bool = True
    relay_on: bool = False
    setpoint_a: float = 0.0
    locked: bool | None = None
    door_closed: bool | None = None
    energy_wh: float = 1000.0
    soc_pct: float | None = None
    temperature_c: float | None = 31.5
    fail_commands: bool = False
    outputs: list[Output] = field(default_factory=list)
    locks: list[bool] = field(default_factory=list)
    link: LinkStats = field(default_factory=lambda: LinkStats(firmware="fake-1.2.3"))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.kind == "locker" and self.locked is None:
            self.locked, self.door_closed = True, True  # a locker starts shut and latched

    # ------------------------------------------------------------------ BayNode

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        if self.fail_commands:
            raise DriverTimeout("fake timeout")
        self.outputs.append((relay_on, current_a, lease_s))
        self.link.frames_tx += 1
        self.relay_on, self.setpoint_a = relay_on, current_a
        self.changed.set()

    async def set_lock(self, *, locked: bool) -> None:
        if self.fail_commands:
            raise DriverTimeout("fake timeout")
        self.locks.append(locked)
        self.locked = locked
        self.changed.set()

    def stats(self) -> LinkStats:
        return self.link

    # ------------------------------------------------------------------ the test's side

    async def wait_output(self, pred: Callable[..., bool], timeout: float = 5.0) -> Output:
        """Wait until the last commanded output satisfies ``pred`` and return it."""
        async with asyncio.timeout(timeout):
            while True:
                if self.outputs and pred(self.outputs[-1]):
                    return self.outputs[-1]
                self.changed.clear()
                await self.changed.wait()

    def drawing_a(self) -> float:
        return min(self.setpoint_a, self.ev_max_a) if self.relay_on and self.plugged else 0.0

    def pilot_state(self) -> PilotState:
        if self.kind == "locker" or not self.pilot:
            return PilotState.NONE
        if not self.plugged:
            return PilotState.A
        return PilotState.C if self.drawing_a() > 0 else PilotState.B

    def report(self, speed: float = 1.0) -> NodeTelemetry:
        """What the node measures now; energy counted since its previous report."""
        now = time.monotonic()
        amps = self.drawing_a()
        currents = (amps, amps if self.phases == 3 else 0.0, amps if self.phases == 3 else 0.0)
        self.energy_wh += sum(currents) * VOLTAGE_V * (now - self._at) / 3600.0 * speed
        self._at = now
        self.link.frames_rx += 1
        self.link.last_rx_at = now
        return NodeTelemetry(
            node_id=self.node_id,
            at=now,
            current_a=currents,
            voltage_v=(VOLTAGE_V, VOLTAGE_V, VOLTAGE_V),
            energy_wh=int(self.energy_wh),
            relay_on=self.relay_on,
            setpoint_a=self.setpoint_a,
            lease_remaining_s=5.0,
            locked=self.locked,
            door_closed=self.door_closed,
            pilot=self.pilot_state(),
            temperature_c=self.temperature_c,
            soc_pct=self.soc_pct,
        )


class FakeHub:
    """Passive without ``period_s``; self-driving with it (see the module docstring)."""

    def __init__(
        self, nodes: Iterable[FakeNode] = (), *, period_s: float | None = None, speed: float = 1.0
    ) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.period_s = period_s
        self.speed = speed
        self.sink: NodeSink | None = None
        self.running = asyncio.Event()
        self._kick = asyncio.Event()

    def node(self, node_id: str) -> FakeNode:
        return self.nodes.setdefault(node_id, FakeNode(node_id))

    async def run(self, sink: NodeSink) -> None:
        self.sink = sink
        if self.period_s is None:
            self.running.set()
            await asyncio.Event().wait()
        for n in self.nodes.values():
            sink(NodeHello(n.node_id, time.monotonic(), n.link.firmware, 1))
        self.running.set()
        while True:
            self._kick.clear()
            for n in self.nodes.values():
                n.changed.clear()
                sink(n.report(self.speed))
            waits = [
                asyncio.ensure_future(e.wait())
                for e in [self._kick, *(n.changed for n in self.nodes.values())]
            ]
            try:
                await asyncio.wait(
                    waits, timeout=self.period_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()

    # ------------------------------------------------------------------ what the nodes report

    def plug(self, node_id: str, plugged: bool = True) -> None:
        """A vehicle arrives at (or leaves) an EVSE, a device is plugged into a locker outlet."""
        self.nodes[node_id].plugged = plugged
        self.push()

    def push(self) -> None:
        """Self-driving: report now instead of at the end of the period."""
        self._kick.set()

    def emit(self, update: NodeUpdate) -> None:
        assert self.sink is not None, "hub not running yet"
        self.sink(update)

    def telemetry(
        self,
        node_id: str,
        *,
        current_a: float = 0.0,
        energy_wh: int = 0,
        relay_on: bool = False,
        pilot: PilotState = PilotState.NONE,
        door_closed: bool | None = None,
        locked: bool | None = None,
        phases: int = 3,
        plug_count: int | None = None,
        boot_id: int | None = None,
    ) -> None:
        """Passive: one telemetry frame exactly as given (not from the node's own state)."""
        currents = (current_a, current_a if phases == 3 else 0.0, current_a if phases == 3 else 0.0)
        self.emit(
            NodeTelemetry(
                node_id=node_id,
                at=time.monotonic(),
                current_a=currents,
                voltage_v=(VOLTAGE_V, VOLTAGE_V, VOLTAGE_V),
                energy_wh=energy_wh,
                relay_on=relay_on,
                setpoint_a=0.0,
                lease_remaining_s=5.0,
                locked=locked,
                door_closed=door_closed,
                pilot=pilot,
                plug_count=plug_count,
                boot_id=boot_id,
            )
        )
