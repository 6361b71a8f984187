"""The ``gpio`` extension: checks the ``[gpio]`` section and runs the emergency-stop input.

Entry point ``edge_station.extensions: gpio = drivers.gpio.extension:EXTENSION``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.gpio.config import InputPin, check_gpio, parse_gpio
from drivers.gpio.estop import GpioStopInput, run_stop_input
from drivers.gpio.gridlimit import SOURCE as GRID_LIMIT_SOURCE
from drivers.gpio.gridlimit import run_grid_limit_input
from drivers.gpio.io import pin_factory

if TYPE_CHECKING:
    from controller.core.config import StationConfig
    from controller.core.station import Station

GPIO_TRANSPORT = "gpio"


class GpioExtension:
    name = "gpio"

    def check(self, cfg: StationConfig) -> list[str]:
        problems = check_gpio(cfg.gpio)
        gpio_buses = {b.id for b in cfg.buses if b.transport == GPIO_TRANSPORT}
        if problems:
            return problems
        if cfg.gpio is None:
            if gpio_buses:
                problems.append("gpio: section missing (a bus uses transport 'gpio')")
            return problems
        g = parse_gpio(cfg.gpio)
        if g.grid_limit is not None and cfg.site is None:
            problems.append(
                "gpio.grid_limit: the grid operator's limit needs load management; "
                "add a [site] section"
            )
        wired = {b.node for b in g.bays}
        node_ids = {b.node_id for b in cfg.bays}
        for i, b in enumerate(g.bays):
            if b.node not in node_ids:
                problems.append(f"gpio.bays[{i}].node: no bay with node id {b.node!r}")
        for i, bay in enumerate(cfg.bays):
            if bay.bus in gpio_buses and bay.node_id not in wired:
                problems.append(f"bays[{i}]: on GPIO bus {bay.bus!r} but not in [[gpio.bays]]")
        return problems

    def attach(self, station: Station) -> None:
        if station.cfg.gpio is None:
            return
        g = parse_gpio(station.cfg.gpio)
        if g.grid_limit is not None:
            self._attach_grid_limit(station, g.grid_limit, g.pin_factory)
        if g.emergency_stop is None:
            return
        stop = GpioStopInput(g.emergency_stop, factory=pin_factory(g.pin_factory))
        station.add_service(
            "gpio-emergency-stop",
            lambda: run_stop_input(station, stop),
            # A button nobody watches is no button: safe mode (outputs off, sessions paused,
            # none may start) until the restarted service has run for a while.
            refuse_while_down="The emergency-stop button is not being watched: charging is "
            "paused and no session can start. Please call the operator.",
        )

    def _attach_grid_limit(self, station: Station, pin: InputPin, factory: str) -> None:
        from drivers.setpoint.gate import external_gate

        gate = external_gate(station)
        if gate is None:
            return
        # Until the contact is read, the cap holds (the station never guesses upward).
        gate.assume_grid_operator(GRID_LIMIT_SOURCE)
        station.add_service(
            "gpio-grid-limit",
            lambda: run_grid_limit_input(gate, pin, factory=pin_factory(factory)),
        )


EXTENSION = GpioExtension()
