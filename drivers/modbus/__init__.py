"""Modbus energy meters (TCP and RTU) driven by register maps kept as data files."""

from .bus import ModbusBus, SerialEndpoint, SystemClock, TcpEndpoint
from .config import MeterConfig, SerialBusConfig, TcpBusConfig, build_meters
from .errors import ModbusDeviceBusy, ModbusRejected
from .maps import MapError, RegisterMap, available_maps, load_map, parse_map
from .meter import ModbusMeter
from .planner import ReadBlock, plan_reads

__all__ = [
    "MapError",
    "MeterConfig",
    "ModbusBus",
    "ModbusDeviceBusy",
    "ModbusMeter",
    "ModbusRejected",
    "ReadBlock",
    "RegisterMap",
    "SerialBusConfig",
    "SerialEndpoint",
    "SystemClock",
    "TcpBusConfig",
    "TcpEndpoint",
    "available_maps",
    "build_meters",
    "load_map",
    "parse_map",
    "plan_reads",
]
