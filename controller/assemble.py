"""The composition root: builds a running station from a config.

Adapters are found by name through :mod:`controller.registry` (entry points),
so this module, like the rest of the controller, imports no driver.

What it adds is optional (supervised and restarted, see
:mod:`controller.core.services`) except the load manager, which is core: the
station cannot keep the site within its limits without it. An extension that
cannot even be set up is logged and left out; the station runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog

from controller import registry
from controller.core.auth import Authorizer, free_vend_step, local_list_step
from controller.core.config import StationConfig, load_token_keys
from controller.core.journal import Journal
from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.ops import heap, looplag
from controller.ops.sdnotify import Notifier, watchdog_interval, watchdog_loop
from controller.ports import NodeHub

log = structlog.get_logger(__name__)

JOURNAL_FILE = "journal.sqlite3"


def _bind(
    make: Callable[[Station], Awaitable[None]], station: Station
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run() -> None:
        await make(station)

    return run


def build_authorizer(cfg: StationConfig) -> Authorizer:
    auth = Authorizer()
    if cfg.auth.local_tokens:
        auth.add(local_list_step(frozenset(cfg.auth.local_tokens)))
    return auth


def build_hubs(cfg: StationConfig) -> dict[str, NodeHub]:
    hubs: dict[str, NodeHub] = {}
    for bus in cfg.buses:
        factory = registry.load(registry.NODE_HUBS, bus.transport)
        hubs[bus.id] = factory(bus, [b for b in cfg.bays if b.bus == bus.id], cfg)
    return hubs


async def open_station(
    cfg: StationConfig,
    *,
    hubs: dict[str, NodeHub] | None = None,
    http: bool = True,
) -> Station:
    data = cfg.station.data_dir
    data.mkdir(parents=True, exist_ok=True)
    journal = await Journal.open(data / JOURNAL_FILE)
    station = Station(
        cfg,
        journal,
        hubs=hubs if hubs is not None else build_hubs(cfg),
        authorizer=build_authorizer(cfg),
    )
    station.commands.token_keys = load_token_keys(cfg)
    looplag.attach(station)  # station.loop_lag, read by /healthz and /metrics
    await station.restore()
    lcfg = load_manager_config(cfg)
    if lcfg is not None:
        station.attach_load(lcfg)
    else:
        log.warning(
            "station.no_load_management", note="no [site] in the config: bays get their maximum"
        )
    for ext in registry.extensions():
        try:
            ext.attach(station)
        except Exception as err:
            # An optional part that cannot be set up (a device or library missing, no
            # file descriptors left): charging does not depend on it.
            log.error("extension.attach_failed", extension=ext.name, error=str(err), exc_info=err)
    if cfg.auth.free_vend:
        station.authorizer.add(free_vend_step())
    if http and "http" in registry.names(registry.SERVICES):
        serve = registry.load(registry.SERVICES, "http")(station)
        station.add_service("http", serve)
    elif http:
        log.warning("station.no_http", note="the local_ui package is not installed")
    return station


async def run_station(
    cfg: StationConfig,
    *,
    hubs: dict[str, NodeHub] | None = None,
    station_services: Sequence[tuple[str, Callable[[Station], Awaitable[None]]]] = (),
    station_ready: Callable[[Station], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT or a reset; returns the process exit code.

    ``station_services`` are extra long-running coroutines (the simulators'
    helpers, for instance) started in the station's TaskGroup.
    """
    station = await open_station(cfg, hubs=hubs)
    for name, make in station_services:
        station.add_service(name, _bind(make, station))
    notifier = Notifier.from_env(unset_environment=True)
    station.stop_listeners.append(notifier.stopping)
    interval = watchdog_interval()
    if interval is not None:
        station.add_service(
            "watchdog", lambda: watchdog_loop(notifier, interval, lambda: station.healthy())
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, station.request_stop, f"signal {sig.name}")

    def ready() -> None:
        heap.settle()  # a full collection would otherwise hold the loop for ~0.2 s
        notifier.ready()
        log.info("station.ready", station=cfg.station.id, bays=len(cfg.bays))
        if station_ready:
            station_ready(station)

    try:
        await station.run(on_ready=ready)
    finally:
        await station.journal.close()
    return station.exit_code
