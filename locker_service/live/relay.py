"""Live changes shared by every replica through PostgreSQL's LISTEN/NOTIFY (ADR 0069).

Each replica's hub only sees what that replica did: the kiosks it holds (ADR 0044), the orders
and alerts of the requests it served. A dashboard's stream is served by one replica, so without
this it showed a part of the fleet. The relay sends what its hub publishes on the channel
`locker_live`, in batches (a NOTIFY carries under 8,000 bytes), tagged with the replica's id;
each replica listens on one connection of its own, sends on it too (one pipelined executemany
per wake: no pool checkout, no ping) and delivers the others' batches to its hub, skipping its
own: every change reaches every dashboard once. NOTIFY is delivered after the
sending transaction commits, in commit order; a listener that was disconnected misses what was
sent meanwhile, as a dashboard that reconnects re-reads full state anyway.

SQLite has one process: no relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from locker_service.live import LiveHub, LiveMessage

log = logging.getLogger(__name__)

CHANNEL = "locker_live"
MAX_PAYLOAD_BYTES = 7_800  # PostgreSQL's limit is 8,000 bytes per notification
MAX_WAITING = 10_000  # a database too slow to take them: the oldest go (dashboards re-read)
CHECK_LISTENER_S = 5.0  # a listening connection lost (a failover) is opened again this soon
SEND_TIMEOUT_S = 10.0  # a NOTIFY not through by then: the connection is taken for lost
MAX_UNSENT_BATCHES = 100  # kept for the next try while the database does not take them
_COMPACT = (",", ":")  # what the sizes below count: no spaces


class PgRelay:
    def __init__(self, engine: AsyncEngine, hub: LiveHub, origin: str) -> None:
        self._engine = engine
        self._hub = hub
        self._origin = origin
        self._waiting: deque[LiveMessage] = deque(maxlen=MAX_WAITING)
        self._wake = asyncio.Event()
        self._listening: AsyncConnection | None = None
        self._driver: Any = None
        self._sender: asyncio.Task[None] | None = None
        self.sent = 0
        self.received = 0
        self.too_large = 0
        self.listens = 0  # connections listened on: 1, and one more after each loss
        self._unsent: deque[str] = deque(maxlen=MAX_UNSENT_BATCHES)  # a failed NOTIFY's batches

    @property
    def backend_pid(self) -> int | None:
        """The database session it listens and notifies on (`pg_stat_activity.pid`)."""
        return None if self._driver is None else int(self._driver.get_server_pid())

    async def start(self) -> None:
        await self._listen()
        self._hub.relay = self._relay
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="live-relay")

    async def stop(self) -> None:
        self._hub.relay = None
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._driver is not None:
            try:
                await self._driver.remove_listener(CHANNEL, self._on_notify)
            except Exception:  # the connection may be gone already
                log.debug("could not remove the live listener", exc_info=True)
        if self._listening is not None:
            await self._listening.close()

    async def _listen(self) -> None:
        if self._listening is not None:
            with contextlib.suppress(Exception):
                await self._listening.close()
        self._listening = await self._engine.connect()
        raw = await self._listening.get_raw_connection()
        self._driver = raw.driver_connection  # asyncpg's connection
        await self._driver.add_listener(CHANNEL, self._on_notify)
        self.listens += 1

    async def _keep_listening(self) -> None:
        if self._driver is None or self._driver.is_closed():
            log.warning("the live listener's connection was lost; listening again")
            try:
                await self._listen()
            except Exception:
                log.warning("could not listen for live changes yet", exc_info=True)
                return
            # What the others sent meanwhile is lost here: this replica's streams re-read.
            self._hub.mark_all_dropped()

    def _relay(self, message: LiveMessage) -> None:
        self._waiting.append(message)
        self._wake.set()

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            batch = json.loads(payload)
            if batch["o"] == self._origin:
                return
            for kind, site_id, data in batch["m"]:
                self._hub.deliver(str(kind), dict(data), site_id)
                self.received += 1
        except Exception:
            log.warning("dropped a live notification that does not read", exc_info=True)

    def _batches(self) -> list[str]:
        """What waits, as notifications: each message serialised once (ASCII: a character is a
        byte) and joined into `{"o": origin, "m": [...]}` under the size limit."""
        batches: list[str] = []
        items: list[str] = []
        size = 0
        head = len(self._dump([]))
        while self._waiting:
            message = self._waiting.popleft()
            item = json.dumps(
                [message.kind, message.site_id, message.data], default=str, separators=_COMPACT
            )
            item_size = len(item) + 1  # the comma
            if head + item_size > MAX_PAYLOAD_BYTES:
                self.too_large += 1  # its dashboards see it on their next full read
                continue
            if size + item_size + head > MAX_PAYLOAD_BYTES and items:
                batches.append(self._dump(items))
                items, size = [], 0
            items.append(item)
            size += item_size
        if items:
            batches.append(self._dump(items))
        return batches

    def _dump(self, items: list[str]) -> str:
        return '{"o":' + json.dumps(self._origin) + ',"m":[' + ",".join(items) + "]}"

    async def _send_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_LISTENER_S):  # not wait_for: background.py
                    await self._wake.wait()
            self._wake.clear()
            await self._keep_listening()
            self._unsent.extend(self._batches())
            if not self._unsent:
                continue
            try:
                if self._driver is None:
                    raise ConnectionError("no connection to notify on")
                # On the listening connection, in one executemany: asyncpg sends the batches in
                # one pipeline and one transaction, in order; no pool checkout, no ping.
                await self._driver.executemany(
                    "SELECT pg_notify($1, $2)",
                    [(CHANNEL, payload) for payload in self._unsent],
                    timeout=SEND_TIMEOUT_S,
                )
                self.sent += len(self._unsent)
                self._unsent.clear()
            except Exception:  # kept for the next round (the oldest go past the bound)
                log.warning("could not relay %d live batches", len(self._unsent), exc_info=True)
                # The connection listens too: a half-open one would hang both. Closed, it is
                # opened again next round, and this replica's streams re-read.
                with contextlib.suppress(Exception):
                    if self._driver is not None:
                        self._driver.terminate()
                await asyncio.sleep(1.0)
