"""Simulated Modbus energy meters (any register map), driven by a building-load profile."""

from .profile import Appliance, BuildingProfile
from .server import ExtraLoad, Fault, MeterSimulator

__all__ = ["Appliance", "BuildingProfile", "ExtraLoad", "Fault", "MeterSimulator"]
