"""The bays at run time: each bay's state, its node and what its loops should send.

:class:`Bays` is the station's table of them (by id, in config order), shared by
its collaborators; a bay's state changes only through the runner's ``apply``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from controller.core.accounting import Tariff
from controller.core.bay import BayState
from controller.core.config import BayConfig
from controller.core.outputs import TestOutput
from controller.ports import BayNode, LinkStats, NodeTelemetry


class UnknownBay(LookupError):
    pass


@dataclass(slots=True)
class BayRuntime:
    cfg: BayConfig
    state: BayState
    node: BayNode | None = None
    want_relay: bool = False
    want_locked: bool | None = None
    output_changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock_changed: asyncio.Event = field(default_factory=asyncio.Event)
    reconciled: bool = True
    telemetry: NodeTelemetry | None = None
    firmware: str = ""
    last_ack_at: float | None = None
    last_output: tuple[bool, float] | None = None
    output_errors: int = 0
    load_setpoint_a: float = 0.0  # nothing until the load manager has decided
    tariff: Tariff | None = None  # the running session's tariff snapshot
    test_output: TestOutput | None = None  # an installer's test output on the idle bay
    source: str = field(init=False)  # the node's name as a source of meter figures

    def __post_init__(self) -> None:
        self.source = f"node:{self.cfg.node_id}"


class Bays(dict[str, BayRuntime]):
    """Bay id -> :class:`BayRuntime`, with the look-ups every part needs."""

    def require(self, bay_id: str) -> BayRuntime:
        rt = self.get(bay_id)
        if rt is None:
            raise UnknownBay(bay_id)
        return rt

    def by_connector(self, connector: int) -> BayRuntime:
        for rt in self.values():
            if rt.cfg.connector == connector:
                return rt
        raise UnknownBay(str(connector))

    def with_session(self, session_id: str) -> BayRuntime | None:
        for rt in self.values():
            if rt.state.session is not None and rt.state.session.session_id == session_id:
                return rt
        return None

    def outputs_changed(self) -> None:
        """Every bay's output loop decides again now (a safety input changed)."""
        for rt in self.values():
            rt.output_changed.set()

    def link_stats(self) -> dict[str, LinkStats]:
        return {bay_id: rt.node.stats() for bay_id, rt in self.items() if rt.node is not None}


__all__ = ["BayRuntime", "Bays", "UnknownBay"]
