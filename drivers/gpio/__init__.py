"""Door locks, door sensors, outlet relays, LEDs, buzzers and the emergency stop on the Pi's GPIO.

``build_gpio`` is the ``edge_station.node_hubs: gpio`` factory (a bay wired
to the Pi instead of an ESP32 node); ``extension.EXTENSION`` checks the
``[gpio]`` section and runs the emergency-stop input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.ports import PermanentError
from drivers.gpio.config import GpioBay, GpioConfig, InputPin, LockConfig, OutputPin, parse_gpio
from drivers.gpio.estop import GpioStopInput, run_stop_input
from drivers.gpio.hub import GpioBayNode, GpioHub
from drivers.gpio.io import pin_factory
from drivers.gpio.lock import GpioDoorLock

if TYPE_CHECKING:
    from controller.core.config import BayConfig, BusConfig, StationConfig

__all__ = [
    "GpioBay",
    "GpioBayNode",
    "GpioConfig",
    "GpioDoorLock",
    "GpioHub",
    "GpioStopInput",
    "InputPin",
    "LockConfig",
    "OutputPin",
    "build_gpio",
    "pin_factory",
    "run_stop_input",
]


def build_gpio(
    bus: BusConfig, bays: list[BayConfig], station: StationConfig | None = None
) -> GpioHub:
    """Entry point ``edge_station.node_hubs: gpio``: the hub for the bays wired to this Pi.

    The pins come from the station's ``[gpio]`` section, so the composition
    root passes the whole config as the third argument.
    """
    if station is None:
        raise PermanentError(
            f"bus {bus.id}: the gpio transport needs the [gpio] section; "
            "call build_gpio(bus, bays, station_config)"
        )
    g = parse_gpio(station.gpio)
    return GpioHub(
        g, [(b.node_id, b.safe_current_a) for b in bays], factory=pin_factory(g.pin_factory)
    )
