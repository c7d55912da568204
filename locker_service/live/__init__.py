"""In-process fan-out of live changes to dashboard streams (SSE).

Publishers (the kiosk link, order and alert services) call `hub.publish`; every SSE client holds a
subscription with a bounded queue. A client too slow to keep up loses its oldest messages rather
than holding memory or slowing the publisher; the dashboard re-reads full state on reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
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

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any], site_id: int | None = None) -> None:
        """Call from the event loop's thread only."""
        message = LiveMessage(next(self._ids), kind, site_id, data)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(message)

    async def subscribe(self) -> AsyncIterator[LiveMessage]:
        queue: asyncio.Queue[LiveMessage] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
