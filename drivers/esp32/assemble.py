"""Factory for the composition root: a serial node hub from a ``[[buses]]`` entry and its bays."""

from __future__ import annotations

from collections.abc import Sequence

from controller.core.config import BayConfig, BusConfig, StationConfig
from drivers.esp32.link import node_configs
from drivers.esp32.serial_hub import HubTiming, SerialNodeHub


def build_serial(
    bus: BusConfig, bays: Sequence[BayConfig], station: StationConfig | None = None
) -> SerialNodeHub:
    nodes = node_configs(bus, bays)
    timing = (
        HubTiming(poll_period_s=bus.poll_period_s)
        if station is None
        else HubTiming(
            poll_period_s=bus.poll_period_s, offline_after_s=station.timers.node_offline_s
        )
    )
    return SerialNodeHub(bus.port, bus.baud, nodes, timing=timing)
