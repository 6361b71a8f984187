"""MaxEnergyOnInvalidId (OCPP 1.6 §9.1): how much a transaction may still deliver once the
central system has invalidated its idTag (StartTransaction answered other than Accepted).

With the key at 0 (the default) such a transaction stops at once, as before.
Otherwise it goes on until its energy reaches the key's value, then stops with
reason DeAuthorized. The limits in force are kept in the journal's kv table,
so a restart in the middle does not lift them.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from cloud_sync.keys import ConfigKeys
from controller.core.bay import StopReason
from controller.core.outcome import UnknownSession
from controller.core.station import Station

log = structlog.get_logger(__name__)

KV_KEY = "ocpp.invalid_id_limits"


class InvalidIdLimits:
    def __init__(self, station: Station, keys: ConfigKeys) -> None:
        self._station = station
        self._keys = keys
        self.limits: dict[str, int] = {}  # session id -> energy (Wh) at which it stops
        self._changed = asyncio.Event()

    async def load(self) -> None:
        stored = await self._station.journal.kv_get(KV_KEY, {})
        self.limits = {str(k): int(v) for k, v in stored.items()}

    def _energy(self, session_id: str) -> int | None:
        for rt in self._station.bays.values():
            s = rt.state.session
            if s is not None and s.session_id == session_id:
                return s.energy_wh
        return None

    async def invalidated(self, session_id: str) -> bool:
        """True when the session may go on for now (the key allows more than it delivered)."""
        allowed = self._keys.get_int("MaxEnergyOnInvalidId")
        energy = self._energy(session_id)
        if allowed <= 0 or energy is None or energy >= allowed:
            return False
        self.limits[session_id] = allowed
        await self._save()
        log.warning("ocpp.invalid_id_limited", session_id=session_id, max_energy_wh=allowed)
        self._changed.set()
        return True

    async def _save(self) -> None:
        await self._station.journal.kv_set(KV_KEY, dict(self.limits))

    async def run(self) -> None:
        """Stop each limited session once it delivered its allowance (re-checked on updates)."""
        async with self._station.events.subscription(lossy=True) as updates:
            while True:
                await self._check()
                self._changed.clear()
                if not self.limits:
                    await self._changed.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await updates.get()

    async def _check(self) -> None:
        done = []
        for sid, allowed in list(self.limits.items()):
            energy = self._energy(sid)
            if energy is None:
                done.append(sid)  # ended some other way
            elif energy >= allowed:
                log.warning("ocpp.invalid_id_allowance_used", session_id=sid, energy_wh=energy)
                with contextlib.suppress(UnknownSession):
                    await self._station.commands.stop_session(
                        sid, StopReason.DEAUTHORIZED, actor="csms"
                    )
                done.append(sid)
        if done:
            for sid in done:
                self.limits.pop(sid, None)
            await self._save()
