"""A fake node hub for controller tests (the real serial/MQTT adapters have their own tests).

It implements :class:`controller.ports.NodeHub`; tests push telemetry with
:meth:`FakeHub.telemetry` and read what the station commanded from
:attr:`FakeNode.outputs`.
"""

from __future__ import annotations

import asyncio
import time

from controller.ports import (
    DriverTimeout,
    LinkStats,
    NodeSink,
    NodeTelemetry,
    NodeUpdate,
    PilotState,
)


class FakeNode:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.outputs: list[tuple[bool, float, float]] = []
        self.locks: list[bool] = []
        self.fail_commands = False
        self.changed = asyncio.Event()
        self._stats = LinkStats()

    async def set_output(self, *, relay_on: bool, current_a: float, lease_s: float) -> None:
        if self.fail_commands:
            raise DriverTimeout("fake timeout")
        self.outputs.append((relay_on, current_a, lease_s))
        self.changed.set()

    async def set_lock(self, *, locked: bool) -> None:
        if self.fail_commands:
            raise DriverTimeout("fake timeout")
        self.locks.append(locked)
        self.changed.set()

    def stats(self) -> LinkStats:
        return self._stats

    async def wait_output(self, pred: object, timeout: float = 5.0) -> tuple[bool, float, float]:
        """Wait until the last commanded output satisfies ``pred`` and return it."""
        assert callable(pred)
        async with asyncio.timeout(timeout):
            while True:
                if self.outputs and pred(self.outputs[-1]):
                    return self.outputs[-1]
                self.changed.clear()
                await self.changed.wait()


class FakeHub:
    def __init__(self) -> None:
        self.nodes: dict[str, FakeNode] = {}
        self.sink: NodeSink | None = None
        self.running = asyncio.Event()

    def node(self, node_id: str) -> FakeNode:
        return self.nodes.setdefault(node_id, FakeNode(node_id))

    async def run(self, sink: NodeSink) -> None:
        self.sink = sink
        self.running.set()
        await asyncio.Event().wait()

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
        currents = (current_a, current_a if phases == 3 else 0.0, current_a if phases == 3 else 0.0)
        self.emit(
            NodeTelemetry(
                node_id=node_id,
                at=time.monotonic(),
                current_a=currents,
                voltage_v=(230.0, 230.0, 230.0),
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
