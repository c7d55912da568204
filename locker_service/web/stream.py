"""The operators' live stream: `GET /api/v1/operator/stream`, Server-Sent Events over the hub.

One stream per dashboard carries every change the operator may see (compartment snapshots,
telemetry, kiosk events and status, order and alert changes), so the dashboard never polls per
compartment. The stream starts with a `hello` event (the dashboard then reads full state once),
sends a comment line while quiet so proxies keep it open and a dead client is noticed, and sends
`resync` when this client fell behind and lost messages, so the dashboard re-reads full state
instead of showing stale values.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from locker_service.live import LiveMessage, Subscription

HEARTBEAT_S = 15.0  # under the 30-60 s idle timeouts of common proxies and load balancers
RETRY_MS = 3000  # the browser's reconnect delay after a dropped stream


def format_event(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE event; `data` is one line of JSON, so no payload can break the framing."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=_json_default))
    return ("\n".join(lines) + "\n\n").encode()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def event_stream(
    subscription: Subscription,
    visible: Callable[[LiveMessage], bool],
    heartbeat_s: float = HEARTBEAT_S,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = HEARTBEAT_S,
) -> AsyncIterator[bytes]:
    """The bytes of one client's stream until the client goes away (the server cancels us),
    or, every `recheck_s`, `still_allowed` says its credential no longer is (revoked,
    expired): then a `bye` event and the end (ADR 0074)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    yield format_event("hello", {"ts": datetime.now(UTC).isoformat()})
    dropped_seen = 0
    checked = time.monotonic()
    while True:
        if still_allowed is not None and time.monotonic() - checked >= recheck_s:
            checked = time.monotonic()
            if not await still_allowed():
                yield format_event("bye", {"reason": "credential_no_longer_valid"})
                return
        message = await subscription.next(min(heartbeat_s, recheck_s))
        if subscription.dropped != dropped_seen:
            dropped_seen = subscription.dropped
            yield format_event("resync", {"lost": dropped_seen})
        if message is None:
            yield b": keep-alive\n\n"
            continue
        if visible(message):
            payload = {"site_id": message.site_id, **message.data}
            yield format_event(message.kind, payload, message.id)
