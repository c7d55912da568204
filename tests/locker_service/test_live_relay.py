"""The live relay's batches fit PostgreSQL's 8,000-byte notifications, whatever the messages
(`locker_service.live.relay`); the relay between two replicas is in test_replicas.py."""

from __future__ import annotations

import json
from typing import Any

from locker_service.live import LiveHub
from locker_service.live.relay import MAX_PAYLOAD_BYTES, PgRelay


def test_batches_stay_under_the_notification_limit_and_keep_every_message_in_order() -> None:
    hub = LiveHub()
    relay = PgRelay(None, hub, "replica-é")  # type: ignore[arg-type]  # no database needed
    hub.relay = relay._relay
    sent: list[dict[str, Any]] = []
    for i in range(2_000):
        data = {"kiosk": f"k-{i % 7}", "n": i, "temp_c": 64.5, "note": "ü" * (i % 50)}
        sent.append(data)
        hub.publish("telemetry", data, i % 3 or None)
    hub.publish("event", {"blob": "x" * 9_000}, None)  # too large for any notification
    batches = relay._batches()
    assert len(batches) > 1
    assert all(len(b.encode()) <= MAX_PAYLOAD_BYTES for b in batches)
    received = [m for b in batches for m in json.loads(b)["m"]]
    assert [m[2] for m in received] == sent  # every message once, in order
    assert relay.too_large == 1
