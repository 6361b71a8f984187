"""A simulated OCPP 1.6J wallbox with a car, for ``simulate --ocpp-wallboxes N`` and the tests.

Written from the OCPP 1.6 specification on the ``ocpp`` library's charge-point
side; it shares no code with the station's wallbox server (``drivers.ocpp_wallbox``),
so a misreading of the spec shows up as a disagreement between the two.
"""

from simulators.wallbox.car import Car
from simulators.wallbox.wallbox import WallboxSim

__all__ = ["Car", "WallboxSim"]
