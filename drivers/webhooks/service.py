"""Delivers notifications to the owner's webhooks: recorded first, then sent, retried, kept.

The recorder takes the station's events from a lossless subscription made when
the extension attaches (so a restart of this service loses none), turns them
into notifications (:mod:`drivers.webhooks.notify`) and writes one outbox row
per notification and target. The sender POSTs what is due at once (well within
30 s), retries a failure with capped exponential backoff and jitter, and keeps
rows in the journal until a target answers 2xx — across station restarts too.
Delivery is at least once: receivers dedupe by the ``id`` in the body (also in
``X-Edge-Delivery``). Nothing here can block the core: it runs as an optional
service, and its only link to the core is the subscription's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from controller.core.journal import JournalError
from drivers.webhooks.config import Target, WebhooksSection
from drivers.webhooks.notify import EVENT_KINDS, Notifier
from drivers.webhooks.store import Pending, WebhookStore

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)

MAX_WAIT_S = 30.0
RECORD_RETRY_S = 2.0


class WebhookService:
    def __init__(
        self, station: Station, cfg: WebhooksSection, *, rng: random.Random | None = None
    ) -> None:
        self._st = station
        self.targets = list(cfg.targets)
        self.store = WebhookStore(station.journal)
        self._sub = station.events.subscribe(lossy=False, kinds=EVENT_KINDS)
        self._notifier = Notifier(station)
        self._notifier.prime()
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._secrets = [t.secret() for t in self.targets]
        self.delivered = 0
        self.failures = 0
        self.dropped = 0

    async def run(self) -> None:
        await self.store.open()
        async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tg:
            tg.create_task(self._record(), name="webhooks-record")
            await self._send_loop(http)

    # ------------------------------------------------------------------ recording

    async def _record(self) -> None:
        while True:
            event = await self._sub.get()
            now = self._st.clock.wall()
            rows: list[tuple[int, str, dict[str, Any], float]] = []
            for n in self._notifier.notifications(event):
                for i, t in enumerate(self.targets):
                    if n.kind in t.events:
                        rows.append((i, n.kind, n.payload(), now))
            while rows:
                try:
                    await self.store.add(rows)
                    break
                except JournalError as exc:
                    # The journal cannot write now: hold the rows (the queue holds the rest).
                    log.warning("webhooks.record_failed", error=str(exc), rows=len(rows))
                    await asyncio.sleep(RECORD_RETRY_S)
            if rows:
                self._wake.set()

    # ------------------------------------------------------------------ sending

    async def _send_loop(self, http: httpx.AsyncClient) -> None:
        while True:
            self._wake.clear()
            for p in await self.store.due(self._st.clock.wall()):
                await self._deliver(http, p)
            nxt = await self.store.next_due()
            wait = MAX_WAIT_S if nxt is None else max(0.0, nxt - self._st.clock.wall())
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, MAX_WAIT_S)):
                        await self._wake.wait()

    async def _deliver(self, http: httpx.AsyncClient, p: Pending) -> None:
        now = self._st.clock.wall()
        if p.target >= len(self.targets):  # the target was removed from the config
            await self.store.delivered(p.id)
            return
        t = self.targets[p.target]
        if now - p.created_at > t.max_age_s:
            log.warning("webhooks.dropped_old", url=t.url, kind=p.kind, attempts=p.attempts)
            await self.store.delivered(p.id)
            self.dropped += 1
            return
        error = await self._post(http, t, self._secrets[p.target], p)
        if error is None:
            await self.store.delivered(p.id)
            self.delivered += 1
            return
        self.failures += 1
        backoff = min(t.retry_max_s, t.retry_initial_s * 2 ** min(p.attempts, 20))
        next_at = now + backoff * self._rng.uniform(0.5, 1.0)
        if p.attempts == 0:
            log.warning("webhooks.failed", url=t.url, kind=p.kind, error=error)
        await self.store.failed(p.id, next_at, error)

    async def _post(
        self, http: httpx.AsyncClient, t: Target, secret: bytes | None, p: Pending
    ) -> str | None:
        body = json.dumps(p.payload, sort_keys=True).encode()
        headers = {
            "content-type": "application/json",
            "x-edge-event": p.kind,
            "x-edge-delivery": str(p.payload.get("id", p.id)),
        }
        if secret:
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers["x-edge-signature"] = f"sha256={digest}"
        try:
            r = await http.post(t.url, content=body, headers=headers, timeout=t.timeout_s)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        if 200 <= r.status_code < 300:
            return None
        return f"HTTP {r.status_code}"
