"""Offline authorization (OCPP 1.6 §3.5): the Local Authorization List and the Authorization Cache.

Both live in the journal (tables ``local_auth_list`` and ``auth_cache`` of
:mod:`cloud_sync.store`) and in memory for quick look-ups. The list is owned by the CSMS (SendLocalList)
and is never touched by Authorize answers or ClearCache; the cache learns
from every idTagInfo the CSMS sends. A tag known with a non-Accepted status,
or expired, is refused even offline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cloud_sync.smart import parse_time
from cloud_sync.store import OcppStore, TagRow
from controller.core.journal import Journal

KV_LIST_VERSION = "ocpp.local_list_version"


@dataclass(frozen=True, slots=True)
class TagInfo:
    status: str  # Accepted / Blocked / Expired / Invalid / ConcurrentTx
    expiry: str | None = None  # ISO 8601 as the CSMS sent it
    parent: str | None = None

    @classmethod
    def from_ocpp(cls, info: dict[str, Any]) -> TagInfo:
        """From idTagInfo in either camelCase or snake_case keys."""
        return cls(
            status=str(info["status"]),
            expiry=info.get("expiry_date", info.get("expiryDate")),
            parent=info.get("parent_id_tag", info.get("parentIdTag")),
        )

    def effective_status(self, now_wall: float) -> str:
        if self.status == "Accepted" and self.expiry is not None:
            try:
                if parse_time(self.expiry) <= now_wall:
                    return "Expired"
            except ValueError:
                return "Invalid"
        return self.status


class LocalAuth:
    def __init__(self, journal: Journal, store: OcppStore) -> None:
        self._journal = journal  # the list's version is a kv value of the journal
        self._store = store
        self.version = 0
        self.entries: dict[str, TagInfo] = {}
        self.cache: dict[str, TagInfo] = {}

    async def load(self) -> None:
        self.version = int(await self._journal.kv_get(KV_LIST_VERSION, 0))
        self.entries = {
            r.id_tag: TagInfo(r.status, r.expiry_date, r.parent_id_tag)
            for r in await self._store.local_auth_list()
        }
        self.cache = {
            r.id_tag: TagInfo(r.status, r.expiry_date, r.parent_id_tag)
            for r in await self._store.auth_cache()
        }

    # ------------------------------------------------------------------ local list

    async def send_local_list(
        self,
        version: int,
        update_type: str,
        entries: list[dict[str, Any]],
        *,
        max_send: int,
        max_total: int,
    ) -> str:
        """SendLocalList: Accepted / Failed / VersionMismatch (entries in snake_case keys)."""
        if len(entries) > max_send:
            return "Failed"
        if update_type == "Differential" and version <= self.version:
            return "VersionMismatch"
        new = {} if update_type == "Full" else dict(self.entries)
        for e in entries:
            tag = e["id_tag"]
            info = e.get("id_tag_info")
            if info is None:
                new.pop(tag, None)
            else:
                new[tag] = TagInfo.from_ocpp(info)
        if len(new) > max_total:
            return "Failed"
        await self._store.replace_local_auth_list(
            TagRow(tag, ti.status, ti.expiry, ti.parent) for tag, ti in new.items()
        )
        await self._journal.kv_set(KV_LIST_VERSION, version)
        self.entries = new
        self.version = version
        return "Accepted"

    # ------------------------------------------------------------------ cache

    async def remember(self, tag: str, info: dict[str, Any]) -> None:
        """Update the cache from an idTagInfo the CSMS sent (never for list entries)."""
        if tag in self.entries:
            return
        ti = TagInfo.from_ocpp(info)
        if self.cache.get(tag) == ti:
            return
        self.cache[tag] = ti
        await self._store.cache_tag(TagRow(tag, ti.status, ti.expiry, ti.parent), time.time())

    async def clear_cache(self) -> None:
        await self._store.clear_auth_cache()
        self.cache = {}

    # ------------------------------------------------------------------ look-up

    def lookup(
        self, tag: str, *, list_enabled: bool, cache_enabled: bool
    ) -> tuple[TagInfo, str] | None:
        """The entry for ``tag`` and where it came from; the local list takes precedence."""
        if list_enabled and tag in self.entries:
            return self.entries[tag], "local_list"
        if cache_enabled and tag in self.cache:
            return self.cache[tag], "cache"
        return None
