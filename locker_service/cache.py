"""A short-lived cache of credential lookups (merchant API keys), keyed by the key's SHA-256.

Creating an order is the service's hottest write path, and looking the caller up cost a session,
a transaction and a query of its own on every request. API keys carry 256 random bits, so their
plain SHA-256 is a safe dictionary key (nothing to guess offline, no slow hash needed). Only
hits are cached: a key created a moment ago works at once. A revoked key (row deleted, hash
changed) keeps working for at most `ttl_s` real seconds on each replica, then the database is
asked again; every replica reaches the same answer within that bound without talking to the
others. Order creation also keeps its site code -> id lookups here, under the same bound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 10_000  # a bound on memory; merchants number in the tens or hundreds


@dataclass
class TtlCache(Generic[T]):
    ttl_s: float
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, tuple[float, T]] = field(default_factory=dict)

    async def get(self, key: str, load: Callable[[], Awaitable[T | None]]) -> T | None:
        """The cached value for `key` while it is younger than `ttl_s`, else `load()`'s (cached
        only when it found something)."""
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        value = await load()
        if value is None or self.ttl_s <= 0:
            self._entries.pop(key, None)
            return value
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if now < v[0]}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        self._entries[key] = (now + self.ttl_s, value)
        return value

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


@dataclass
class AtMostEvery:
    """Says whether something keyed by `key` is due again: at most once per `every_s` (a
    key's `last_used_at` is written at most once a minute per replica, not per request)."""

    every_s: float
    clock: Callable[[], float] = time.monotonic
    _last: dict[Any, float] = field(default_factory=dict)

    def due(self, key: Any) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if len(self._last) >= MAX_ENTRIES:
            self._last.clear()
        self._last[key] = now
        return True
