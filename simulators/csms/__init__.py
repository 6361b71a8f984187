"""A small development central system (OCPP 1.6J) for the station's client and its tests."""

from simulators.csms.server import CsmsSim, Received

__all__ = ["CsmsSim", "Received"]
