"""Simulated ESP32 bay nodes speaking the real wire protocol over a pseudo-terminal.

``SimulatedBus`` (pty + addressed nodes), ``SimNode`` (firmware + physics,
control API ``plug_in``/``unplug``/``open_door``/``close_door``/``set_knobs``),
and a JSON-lines control socket for other processes (``control.py``).
"""

from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus, specs
from simulators.esp32_node.node import Knobs, SimNode

__all__ = ["Knobs", "SimNode", "SimNodeSpec", "SimulatedBus", "specs"]
