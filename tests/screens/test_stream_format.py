"""The operators' SSE stream over the live hub: framing, filtering, heartbeats and resync."""

from __future__ import annotations

import asyncio
import json

from locker_service.live import SUBSCRIBER_QUEUE_SIZE, LiveHub, LiveMessage
from locker_service.web.stream import event_stream, format_event


def parse(chunk: bytes) -> tuple[str | None, dict[str, object] | None]:
    event, data = None, None
    for line in chunk.decode().splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
    return event, data


def test_a_payload_with_newlines_stays_one_event() -> None:
    chunk = format_event("alert", {"message": "line one\nline two\n\ndata: fake"}, 5)
    assert chunk.endswith(b"\n\n") and chunk.count(b"\n\n") == 1
    assert parse(chunk) == ("alert", {"message": "line one\nline two\n\ndata: fake"})
    assert chunk.startswith(b"id: 5\n")


async def test_stream_says_hello_then_passes_only_visible_messages() -> None:
    hub = LiveHub()
    with hub.subscription() as subscription:
        stream = event_stream(subscription, lambda m: m.site_id == 1, heartbeat_s=5.0)
        assert (await anext(stream)).startswith(b"retry: ")
        assert parse(await anext(stream))[0] == "hello"
        hub.publish("compartment", {"kiosk": "K2", "n": 3}, site_id=2)  # another site: hidden
        hub.publish("telemetry", {"kiosk": "K1", "readings": [{"n": 1, "temp_c": 64.5}]}, 1)
        event, data = parse(await asyncio.wait_for(anext(stream), 2.0))
        assert event == "telemetry"
        assert data == {"site_id": 1, "kiosk": "K1", "readings": [{"n": 1, "temp_c": 64.5}]}
        await stream.aclose()
    assert hub.subscriber_count == 0


async def test_quiet_stream_sends_keepalive_and_stays_subscribed() -> None:
    hub = LiveHub()
    with hub.subscription() as subscription:
        stream = event_stream(subscription, lambda m: True, heartbeat_s=0.05)
        await anext(stream)
        await anext(stream)
        assert await asyncio.wait_for(anext(stream), 2.0) == b": keep-alive\n\n"
        assert hub.subscriber_count == 1
        hub.publish("alert", {"id": 9}, 1)
        assert parse(await asyncio.wait_for(anext(stream), 2.0))[0] == "alert"
        await stream.aclose()


async def test_a_client_that_fell_behind_is_told_to_resync() -> None:
    hub = LiveHub()
    with hub.subscription() as subscription:
        stream = event_stream(subscription, lambda m: True, heartbeat_s=5.0)
        await anext(stream)
        await anext(stream)
        for i in range(SUBSCRIBER_QUEUE_SIZE + 3):
            hub.publish("telemetry", {"i": i}, 1)
        assert subscription.dropped == 3
        event, data = parse(await asyncio.wait_for(anext(stream), 2.0))
        assert (event, data) == ("resync", {"lost": 3})
        event, data = parse(await asyncio.wait_for(anext(stream), 2.0))
        assert event == "telemetry" and data is not None and data["i"] == 3  # oldest were lost
        await stream.aclose()


async def test_subscription_times_out_without_closing() -> None:
    hub = LiveHub()
    with hub.subscription() as subscription:
        assert await subscription.next(0.01) is None
        hub.publish("kiosk", {"state": "online"})
        message = await subscription.next(1.0)
        assert isinstance(message, LiveMessage) and message.data == {"state": "online"}
