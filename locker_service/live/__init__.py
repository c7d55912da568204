"""In-process fan-out of live changes to dashboard streams (SSE).

Publishers (the kiosk link, order and alert services) call `hub.publish`; every SSE client holds a
subscription with a bounded queue. A client too slow to keep up loses its oldest messages rather
than holding memory or slowing the publisher; the dashboard re-reads full state on reconnect.

With several replicas, `relay` (set by `live.relay.PgRelay`) hands each message published here
to the others, and what they publish comes in through `deliver`: every dashboard sees every
change, whichever replica made it, once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

SUBSCRIBER_QUEUE_SIZE = 1000  # about a minute of a 48-compartment kiosk's changes


@dataclass(frozen=True, slots=True)
class LiveMessage:
    id: int
    kind: str  # "compartment", "telemetry", "event", "kiosk", "order", "alert"
    site_id: int | None
    data: dict[str, Any] = field(default_factory=dict)


class LiveHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[LiveMessage]] = set()
        self._ids = itertools.count(1)
        self._dropped: dict[int, int] = {}  # queue id -> messages lost to a full queue
        self.relay: Callable[[LiveMessage], None] | None = None  # to the other replicas

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def watched(self) -> bool:
        """Someone may see what is published: a stream here, or another replica's."""
        return bool(self._subscribers) or self.relay is not None

    def publish(self, kind: str, data: dict[str, Any], site_id: int | None = None) -> None:
        """A change made here: to this replica's streams and, through `relay`, the others'.
        Call from the event loop's thread only."""
        message = self.deliver(kind, data, site_id)
        if self.relay is not None:
            self.relay(message)

    def deliver(self, kind: str, data: dict[str, Any], site_id: int | None = None) -> LiveMessage:
        """A change to show on this replica's streams only (one another replica made)."""
        message = LiveMessage(next(self._ids), kind, site_id, data)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self._dropped[id(queue)] = self._dropped.get(id(queue), 0) + 1
            queue.put_nowait(message)
        return message

    def mark_all_dropped(self) -> None:
        """Changes were lost before they reached this hub (the relay's listener was cut):
        every stream tells its client to re-read full state, as for a full queue."""
        for queue in self._subscribers:
            self._dropped[id(queue)] = self._dropped.get(id(queue), 0) + 1

    def subscription(self) -> Subscription:
        """A subscription to use as a context manager, with a timed `next()` (SSE heartbeats)."""
        return Subscription(self)

    async def subscribe(self) -> AsyncIterator[LiveMessage]:
        queue: asyncio.Queue[LiveMessage] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
            self._dropped.pop(id(queue), None)


class Subscription:
    """One client's queue on the hub, entered with `with`; `next()` waits with a timeout.

    Unlike `LiveHub.subscribe()`, waiting here can time out without closing the subscription, so
    a stream can send a heartbeat while it is quiet. `dropped` counts messages lost because the
    client was too slow: a stream seeing it grow tells its client to re-read full state.
    """

    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[LiveMessage] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)

    @property
    def dropped(self) -> int:
        return self._hub._dropped.get(id(self._queue), 0)

    def __enter__(self) -> Subscription:
        self._hub._subscribers.add(self._queue)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hub._subscribers.discard(self._queue)
        self._hub._dropped.pop(id(self._queue), None)

    async def next(self, timeout_s: float) -> LiveMessage | None:
        """The next message, or None when none came within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None
