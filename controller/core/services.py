"""The station's services: core ones, whose failure stops the station, and optional ones,
which are supervised and restarted.

**Core**: the bays and their output loops, the node hubs, the update consumer,
the timer tick, the journal and its guard, the load manager. Without any of
them the station cannot keep its promises (limits, leases, records), so the
failure of one stops the station (systemd restarts it; the nodes fall back to
their safe share meanwhile).

**Optional**: everything an extension or the composition root adds — the UI
and HTTP API, OCPP, MQTT, meters, the camera, GPIO inputs, the loop-lag
monitor, the watchdog pinger, the simulators' helpers. Charging continues
without them. When one raises, the failure is logged once (with its traceback),
the service is restarted after a capped exponential backoff, repeats in the
same streak stay quiet, and its recovery is logged once when it has run for
``stable_s``. A service that returns is over and is not restarted. A service
may name a safe-mode message: from its failure until it has run for
``stable_s`` again, the station is in safe mode with that message (cause
``service:<name>``: new sessions refused, and, as for every cause not known
to keep them, outputs off) — for the emergency-stop input, for instance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Service = Callable[[], Coroutine[Any, Any, None]]

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_S = 10.0  # running this long after a restart: recovered (backoff starts over)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    run: Service
    core: bool = False
    refuse_while_down: str | None = None  # safe-mode message while this service is down


@dataclass(slots=True)
class ServiceState:
    name: str
    core: bool
    state: str = "starting"  # starting, running, restarting, ended
    restarts: int = 0  # since the station started
    streak: int = 0  # failures since it last ran for stable_s
    last_error: str | None = None
    since: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "core": self.core,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class Supervisor:
    """Runs services: core ones as they are, optional ones under :meth:`supervise`."""

    def __init__(
        self,
        *,
        on_down: Callable[[ServiceSpec], None] | None = None,
        on_up: Callable[[ServiceSpec], None] | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.states: dict[str, ServiceState] = {}
        self._stopping = stopping
        self.backoff_min_s = BACKOFF_MIN_S
        self.backoff_max_s = BACKOFF_MAX_S
        self.stable_s = STABLE_S
        self._on_down = on_down
        self._on_up = on_up

    def failing(self) -> list[ServiceState]:
        return [s for s in self.states.values() if s.state == "restarting"]

    async def core(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """A core part: its failure is logged once here and stops the station."""
        st = self.states.setdefault(name, ServiceState(name, core=True))
        st.state = "running"
        try:
            await work
        except Exception as err:
            st.state, st.last_error = "ended", _describe(err)
            log.error("station.core_failed", service=name, error=st.last_error, exc_info=err)
            raise
        st.state = "ended"

    async def supervise(self, spec: ServiceSpec) -> None:
        """Run an optional service until cancelled, restarting it whenever it fails."""
        st = self.states.setdefault(spec.name, ServiceState(spec.name, core=False))
        backoff = self.backoff_min_s
        loop = asyncio.get_running_loop()
        while True:
            st.state, st.since = "running", time.monotonic()
            # A timer, not a task: after a failure streak, running for stable_s is a recovery.
            timer = loop.call_later(self.stable_s, self._recovered, spec, st) if st.streak else None
            try:
                await spec.run()
            except Exception as err:
                error: Exception | None = err
            else:
                error = None
            finally:
                if timer is not None:
                    timer.cancel()
            if self._stopping is not None and self._stopping():
                # The station stops, though the service ended otherwise: a library swallowed
                # the cancel (asyncio.wait_for on Python 3.11). A restart would outlive the stop.
                st.state = "ended"
                raise asyncio.CancelledError
            if error is None:
                st.state = "ended"
                log.info("service.ended", service=spec.name)
                return
            if time.monotonic() - st.since >= self.stable_s:
                backoff = self.backoff_min_s  # it had been running well: a new streak
            st.streak += 1
            st.restarts += 1
            st.state, st.last_error = "restarting", _describe(error)
            if st.streak == 1:
                log.error(
                    "service.failed",
                    service=spec.name,
                    error=st.last_error,
                    restart_in_s=backoff,
                    exc_info=error,
                )
                if self._on_down is not None:
                    self._on_down(spec)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _recovered(self, spec: ServiceSpec, st: ServiceState) -> None:
        log.info("service.recovered", service=spec.name, restarts=st.streak)
        st.streak = 0
        if self._on_up is not None:
            self._on_up(spec)


def _describe(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    return f"{type(err).__name__}: {err}"[:300]
