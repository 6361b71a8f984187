"""The grid operator's control contact on a Pi pin (§14a EnWG), and the service that reports it.

While the contact is active the site is capped at ``[external] grid_operator_kw``
(see :mod:`controller.load.external`). While nothing watches the contact (the
service failed and waits for its restart) the cap holds: the station cannot
know the operator released it, and it never guesses upward.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from drivers.gpio.config import InputPin
from drivers.gpio.io import DebouncedInput

if TYPE_CHECKING:
    from drivers.setpoint.gate import SetpointGate

log = structlog.get_logger(__name__)

SOURCE = "gpio"


async def run_grid_limit_input(gate: SetpointGate, cfg: InputPin, *, factory: Any = None) -> None:
    loop = asyncio.get_running_loop()

    def changed(active: bool) -> None:
        log.warning("gpio.grid_limit", active=active)
        gate.grid_operator(SOURCE, active)

    inp = await asyncio.to_thread(DebouncedInput, cfg, changed, factory=factory, loop=loop)
    try:
        gate.grid_operator(SOURCE, inp.active)
        await asyncio.Future()
    finally:
        # Unwatched, the contact counts as closed until the service is back.
        gate.grid_operator(SOURCE, True)
        await asyncio.to_thread(inp.close)
