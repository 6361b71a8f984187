"""A small development central system (OCPP 1.6J) for the station's client and its tests."""

from simulators.csms.process import CsmsProcess
from simulators.csms.server import CsmsSim, Received

__all__ = ["CsmsProcess", "CsmsSim", "Received"]
