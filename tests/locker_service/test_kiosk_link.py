"""The service's MQTT link against a real Mosquitto and a scripted kiosk.

Each test has a private broker, so wildcard subscriptions see only its own kiosks.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from firmware_bridge import contract
from locker_service.kiosk_link import (
    CommandTimeout,
    InvalidCommand,
    KioskLink,
    KioskUnreachable,
)
from locker_service.live import LiveHub, LiveMessage
from tests.firmware_bridge import test_mqtt_options
from tests.support.mosquitto import MosquittoProcess
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

# Mosquitto with TLS (a CA made with openssl in the test) and a password file, as the bridge's
# tests use it.
secured_broker = test_mqtt_options.secured_broker


@dataclass
class LinkTestSettings:
    mqtt_url: str
    replica_id: str = field(default_factory=lambda: f"r{uuid.uuid4().hex[:8]}")
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: str | None = None
    mqtt_protocol: str = "auto"
    mqtt_keepalive_s: int = 30


class RecordingHandler:
    """Keeps what the link hands over, and on which thread."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, contract.KioskStatus]] = []
        self.snapshots: list[tuple[str, contract.CompartmentSnapshot]] = []
        self.events: list[tuple[str, contract.Event]] = []
        self.threads: set[int] = set()
        self.fail_on: set[str] = set()  # event types whose handling raises
        self.block_on: set[str] = set()  # event types whose handling never finishes

    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None:
        self.threads.add(threading.get_ident())
        self.statuses.append((kiosk_id, status))

    async def on_snapshots(
        self, kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]
    ) -> None:
        self.threads.add(threading.get_ident())
        self.snapshots.extend((kiosk_id, snap) for snap in snaps)

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None:
        self.threads.add(threading.get_ident())
        if event.type in self.block_on:
            await asyncio.Event().wait()
        self.events.append((kiosk_id, event))
        if event.type in self.fail_on:
            raise RuntimeError(f"story failed on {event.type}")

    def event_types(self, kiosk_id: str) -> list[str]:
        return [e.type for k, e in self.events if k == kiosk_id]


class RecordingSink:
    def __init__(self) -> None:
        self.batches: list[tuple[str, contract.Telemetry]] = []

    def submit(self, kiosk_id: str, telemetry: contract.Telemetry) -> None:
        self.batches.append((kiosk_id, telemetry))

    async def flush(self) -> int:
        return 0  # nothing buffered: each batch is recorded as submitted


async def eventually(predicate: object, timeout_s: float = 10.0, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def broker(private_mosquitto: MosquittoProcess) -> MosquittoProcess:
    return private_mosquitto


@pytest.fixture
def kiosk(broker: MosquittoProcess) -> Iterator[ScriptedKiosk]:
    k = ScriptedKiosk(broker.host, broker.port, compartments=4).start()
    yield k
    k.stop()


@pytest.fixture
async def link_parts(
    broker: MosquittoProcess,
) -> AsyncIterator[tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink]]:
    handler, hub, sink = RecordingHandler(), LiveHub(), RecordingSink()
    link = KioskLink(LinkTestSettings(broker.url), handler, hub, telemetry=sink)
    await link.start()
    yield link, handler, hub, sink
    await link.stop()


async def test_telemetry_sent_again_is_taken_only_as_asked(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    """ADR 0098: a batch marked `resent` is an answer to `report_state`'s `readings_after`;
    unasked, or stamped before what was asked for, it is dropped (a kiosk cannot backdate
    readings into the record), and what was asked for comes through."""
    link, _, _, sink = link_parts
    early = kiosk.publish_telemetry()
    later = kiosk.publish_telemetry()
    await eventually(lambda: len(sink.batches) == 2, what="the live batches")
    unasked = early.model_copy(update={"resent": True})
    kiosk.publish_raw("telemetry", unasked.to_json(), qos=0)
    await eventually(lambda: link.counters.dropped_unasked == 1, what="the unasked one dropped")
    await link.ask_state(kiosk.kiosk_id, readings_after=early.ts)
    await eventually(lambda: len(sink.batches) == 3, what="the one asked for")
    assert sink.batches[2][1] == later.model_copy(update={"resent": True})
    kiosk.publish_raw("telemetry", unasked.to_json(), qos=0)  # not after what was asked
    await eventually(lambda: link.counters.dropped_unasked == 2, what="the early one dropped")
    assert len(sink.batches) == 3


async def test_retained_state_reconciles_on_connect_and_reaches_the_loop_thread(
    broker: MosquittoProcess, kiosk: ScriptedKiosk
) -> None:
    kiosk.set_temperature(2, 64.5)
    handler, hub = RecordingHandler(), LiveHub()
    messages: list[LiveMessage] = []

    async def listen() -> None:
        async for message in hub.subscribe():
            messages.append(message)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    link = KioskLink(LinkTestSettings(broker.url), handler, hub)
    await link.start()
    try:
        assert link.ready and link.protocol_name == "5"
        await eventually(lambda: len({s.n for _, s in handler.snapshots}) == 4, what="snapshots")
        assert handler.statuses[-1] == (kiosk.kiosk_id, handler.statuses[-1][1])
        assert handler.statuses[-1][1].state == "online"
        assert link.kiosk_status(kiosk.kiosk_id) is not None
        temps = {s.n: s.temp_c for _, s in handler.snapshots}
        assert temps[2] == 64.5
        assert handler.threads == {threading.get_ident()}

        # Each compartment's live message comes on its own: wait for compartment 2's.
        def live_of_2() -> LiveMessage | None:
            return next((m for m in messages if m.kind == "compartment" and m.data["n"] == 2), None)

        await eventually(lambda: live_of_2() is not None, what="compartment 2's live message")
        live = live_of_2()
        assert live is not None
        assert live.data["kiosk"] == kiosk.kiosk_id and live.data["temp_c"] == 64.5
    finally:
        listener.cancel()
        await link.stop()


async def test_unlock_command_gets_the_final_reply_on_this_replicas_topic(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, handler, _, _ = link_parts
    reply = await link.command(kiosk.kiosk_id, "unlock", 3, {"pulse_ms": 400}, timeout_s=10)
    assert reply.status == "succeeded"
    assert kiosk.compartments[3].lock_released
    assert not kiosk.compartments[1].lock_released
    sent = kiosk.received[-1].command
    assert sent.reply_to == f"lockers/v1/{kiosk.kiosk_id}/replies/{link.replica_id}"
    assert sent.expires_at > contract.utcnow()
    # The snapshot the kiosk publishes after the unlock reaches the story.
    await eventually(
        lambda: any(s.n == 3 and s.lock_released for _, s in handler.snapshots), what="snapshot"
    )


async def test_refusals_come_back_as_final_replies(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, _, _, _ = link_parts
    kiosk.open_door(1, force=True)
    reply = await link.command(kiosk.kiosk_id, "start_disinfection", 1, {}, timeout_s=10)
    assert (reply.status, reply.detail) == ("failed", "interlock: door open")
    kiosk.script("set_heater", "rejected", "board offline")
    reply = await link.command(kiosk.kiosk_id, "set_heater", 2, {"setpoint_c": 65}, timeout_s=10)
    assert (reply.status, reply.detail) == ("rejected", "board offline")
    assert kiosk.compartments[2].setpoint_c is None


async def test_silent_kiosk_is_unreachable_and_a_stuck_one_times_out(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, _, _, _ = link_parts
    kiosk.script("unlock", "accept_only")
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=1.0)
    assert time.monotonic() - started < 5
    kiosk.go_silent()
    with pytest.raises(KioskUnreachable, match="did not answer"):
        await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=1.0)
    assert not kiosk.compartments[1].lock_released


async def test_a_command_that_breaks_the_contract_is_refused_before_sending(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, _, _, _ = link_parts
    with pytest.raises(InvalidCommand):
        await link.command(kiosk.kiosk_id, "explode", 1, {}, timeout_s=5)
    with pytest.raises(InvalidCommand):
        await link.command(kiosk.kiosk_id, "set_heater", 1, {"setpoint_c": 300}, timeout_s=5)
    with pytest.raises(InvalidCommand):
        await link.command(kiosk.kiosk_id, "unlock", 0, {}, timeout_s=5)
    await asyncio.sleep(0.3)
    assert kiosk.received == []


def _state(link: KioskLink, kiosk_id: str) -> str | None:
    status = link.kiosk_status(kiosk_id)
    return None if status is None else status.state


async def test_kiosk_crash_reports_offline_and_refuses_new_commands_at_once(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], broker: MosquittoProcess
) -> None:
    link, handler, _, _ = link_parts
    kiosk = ScriptedKiosk(broker.host, broker.port, compartments=2).start()
    await eventually(lambda: link.kiosk_status(kiosk.kiosk_id) is not None, what="status")
    kiosk.crash()
    # keepalive 30 s x 1.5 is the worst case for the broker to give its will; usually ms
    await eventually(lambda: handler.statuses[-1][1].state == "offline", 60, "the will")
    # Refused before sending ("is offline"), not at the deadline ("did not answer").
    with pytest.raises(KioskUnreachable, match=f"kiosk {kiosk.kiosk_id} is offline"):
        await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=30)


async def test_a_command_in_flight_when_its_kiosk_goes_offline_waits_for_its_answer(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    """Only the command's deadline (its `expires_at`) makes "never done" true: a bridge cut off
    after the command reached it may carry it out and answer once it is back (ADR 0087)."""
    link, _, _, _ = link_parts
    kiosk.go_silent()
    waiting = asyncio.create_task(link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=60))
    await kiosk.wait_until(lambda: len(kiosk.received) == 1, what="the unlock")
    kiosk.publish_status("offline")
    await eventually(lambda: _state(link, kiosk.kiosk_id) == "offline", what="offline")
    await asyncio.sleep(0.3)  # an offline status once failed the waiting command here
    assert not waiting.done()
    kiosk.publish_status("online")
    kiosk.answer(kiosk.received[0].command.request_id, "succeeded")
    assert (await waiting).status == "succeeded"


async def test_a_kiosk_whose_clock_is_behind_is_waited_for_until_its_own_deadline(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink],
    broker: MosquittoProcess,
) -> None:
    """A kiosk 20 s behind still takes a copy of a command as unexpired for 20 s past the
    service's deadline. Its earlier answers, stamped by its clock, told the link so: "it never
    had the command" waits for the kiosk's deadline, and an answer before then counts (ADR 0089).
    """
    link, _, _, _ = link_parts
    kiosk = ScriptedKiosk(broker.host, broker.port, compartments=4, clock_behind_s=20.0).start()
    try:
        assert (await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=10)).status == (
            "succeeded"
        )
        clock = link.clocks.clock(kiosk.kiosk_id, time.time())
        assert clock is not None and 20.0 <= clock.behind_at_most_s < 25.0
        kiosk.go_silent()
        waiting = asyncio.create_task(link.command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=0.5))
        await kiosk.wait_until(lambda: len(kiosk.received) == 2, what="the second unlock")
        late = kiosk.received[1].command
        # Past the service's deadline, by the machine's clock.
        await asyncio.sleep((late.expires_at - contract.utcnow()).total_seconds() + 0.05)
        assert late.expired()
        assert not late.expired(kiosk.now())  # by the kiosk's clock the copy is still good
        assert not waiting.done()
        kiosk.answer(late.request_id, "succeeded")  # it ran the copy
        assert (await waiting).status == "succeeded"
    finally:
        kiosk.stop()


async def test_a_kiosk_whose_clock_is_right_is_not_waited_for_past_the_deadline(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, _, _, _ = link_parts
    await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=10)
    clock = link.clocks.clock(kiosk.kiosk_id, time.time())
    assert clock is not None and clock.wait_s < 5.0  # the latency of this machine, at most
    kiosk.go_silent()
    with pytest.raises(KioskUnreachable, match="did not answer"):
        await link.command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=0.3)


async def test_a_kiosk_clock_is_not_judged_by_its_retained_reports_or_its_will(
    broker: MosquittoProcess,
) -> None:
    """A retained snapshot and the will were stamped long before they arrive (here by a kiosk
    whose clock is days behind, which sends nothing else): alone, they would say the kiosk is
    days behind, page on-call and make every command to it wait 30 s more."""
    kiosk = ScriptedKiosk(
        broker.host, broker.port, compartments=2, clock_behind_s=3 * 86_400.0
    ).start()
    handler = RecordingHandler()
    link = KioskLink(LinkTestSettings(broker.url), handler, LiveHub())
    await link.start()  # subscribing: the kiosk's retained status and snapshots come
    try:
        await eventually(
            lambda: {s.n for k, s in handler.snapshots if k == kiosk.kiosk_id} == {1, 2},
            what="its retained snapshots",
        )
        kiosk.crash()
        await eventually(lambda: _state(link, kiosk.kiosk_id) == "offline", what="its will")
        assert link.clocks.clock(kiosk.kiosk_id, time.time()) is None
        assert link.clock_behind_s(kiosk.kiosk_id) == 0.0
    finally:
        await link.stop()


async def test_malformed_payloads_are_dropped_and_the_link_keeps_going(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, handler, _, sink = link_parts
    kiosk.publish_raw("events", b"{not json")
    kiosk.publish_raw("events", b'{"event_id": "x", "type": "self_destruct"}')
    kiosk.publish_raw("compartments/1/state", b'{"n": 1}')
    kiosk.publish_raw("compartments/2/state", kiosk.compartments[3].snapshot().to_json())
    kiosk.publish_raw("telemetry", b'{"readings": [{"n": 0}]}', qos=0)
    kiosk.publish_raw(f"replies/{link.replica_id}", b"[]")
    kiosk.scan("hello")
    await eventually(lambda: "scan" in handler.event_types(kiosk.kiosk_id), what="scan event")
    await eventually(lambda: link.counters.dropped_malformed == 6, what="drops")
    assert handler.event_types(kiosk.kiosk_id) == ["scan"]
    assert handler.events[-1][1].data == {"text": "hello"}
    assert sink.batches == []
    reply = await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=10)
    assert reply.status == "succeeded"


async def test_events_arrive_in_order_and_a_failing_handler_does_not_block_the_kiosk(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    link, handler, _, _ = link_parts
    handler.fail_on.add("item_placed")
    await link.command(kiosk.kiosk_id, "unlock", 4, {}, timeout_s=10)
    kiosk.open_door(4)
    kiosk.place_item(4)
    kiosk.close_door(4)
    await eventually(lambda: len(handler.event_types(kiosk.kiosk_id)) == 3, what="events")
    assert handler.event_types(kiosk.kiosk_id) == ["door_opened", "item_placed", "door_closed"]
    assert link.counters.handler_errors == 1


async def test_a_scan_is_handled_while_an_earlier_event_of_its_kiosk_is_still_handled(
    broker: MosquittoProcess, kiosk: ScriptedKiosk
) -> None:
    """Scans have a lane of their own: a purchaser's scan does not wait for the door event
    before it; scans keep their order, and so do the other events."""
    handler = RecordingHandler()
    handler.block_on.add("door_closed")
    waits: list[str] = []
    link = KioskLink(
        LinkTestSettings(broker.url),
        handler,
        LiveHub(),
        wait_observer=lambda lane, _s: waits.append(lane),
    )
    await link.start()
    try:
        kiosk.publish_event("door_closed", 1)
        kiosk.scan("first")
        kiosk.scan("second")
        kiosk.publish_event("item_placed", 2)
        await eventually(lambda: len(handler.event_types(kiosk.kiosk_id)) == 2, what="the scans")
        await asyncio.sleep(0.3)  # item_placed, were it (wrongly) in the scans' lane, is here now
        assert [e.data.get("text") for _, e in handler.events] == ["first", "second"]
        assert handler.event_types(kiosk.kiosk_id) == ["scan", "scan"]
        assert waits.count("scans") == 2  # each scan's wait is observed, under its lane
    finally:
        await link.stop()


async def test_telemetry_goes_to_the_ingest_and_the_live_hub(
    link_parts: tuple[KioskLink, RecordingHandler, LiveHub, RecordingSink], kiosk: ScriptedKiosk
) -> None:
    _, _, hub, sink = link_parts
    seen: list[LiveMessage] = []

    async def listen() -> None:
        async for message in hub.subscribe():
            if message.kind == "telemetry":
                seen.append(message)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    kiosk.set_temperature(1, 66.0)
    sent = kiosk.publish_telemetry()
    await eventually(lambda: len(sink.batches) == 1 and len(seen) == 1, what="telemetry")
    listener.cancel()
    kiosk_id, batch = sink.batches[0]
    assert kiosk_id == kiosk.kiosk_id and batch == sent
    assert seen[0].data["readings"][0] == {
        "n": 1,
        "temp_c": 66.0,
        "setpoint_c": None,
        "heater": False,
    }


async def test_broker_restart_reconnects_resubscribes_and_reconciles(
    broker: MosquittoProcess,
) -> None:
    handler = RecordingHandler()
    link = KioskLink(LinkTestSettings(broker.url), handler, LiveHub())
    await link.start()
    kiosk = ScriptedKiosk(broker.host, broker.port, compartments=2).start()
    try:
        await eventually(lambda: len(handler.snapshots) >= 2, what="first snapshots")
        connects = link.counters.connects
        broker.restart(down_s=0.5)  # persistence off: the broker forgets everything
        await eventually(lambda: link.ready and link.counters.connects > connects, 45, "reconnect")
        # The kiosk reconnects too and re-publishes its retained state; the link takes it in.
        before = len(handler.snapshots)
        await eventually(lambda: kiosk._client.is_connected(), 45, "kiosk reconnect")
        await eventually(lambda: len(handler.snapshots) >= before + 2, 20, "reconciled snapshots")
        reply = await link.command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=10)
        assert reply.status == "succeeded"
    finally:
        kiosk.stop()
        await link.stop()


async def test_mqtt_311_works(broker: MosquittoProcess, kiosk: ScriptedKiosk) -> None:
    handler = RecordingHandler()
    link = KioskLink(LinkTestSettings(broker.url, mqtt_protocol="3.1.1"), handler, LiveHub())
    await link.start()
    try:
        assert link.ready and link.protocol_name == "3.1.1"
        await eventually(lambda: len(handler.snapshots) == 4, what="snapshots")
        reply = await link.command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=10)
        assert reply.status == "succeeded"
        kiosk.scan("x")
        await eventually(lambda: handler.event_types(kiosk.kiosk_id) == ["scan"], what="event")
    finally:
        await link.stop()


async def test_each_replica_gets_its_own_replies_and_every_snapshot(
    broker: MosquittoProcess, kiosk: ScriptedKiosk
) -> None:
    """Without a lease keeper a link handles every kiosk (which replica handles which kiosk is
    the leases' business, tests/locker_service/test_replicas.py); replies still find their
    replica."""
    handlers = [RecordingHandler(), RecordingHandler()]
    links = [KioskLink(LinkTestSettings(broker.url), h, LiveHub()) for h in handlers]
    for link in links:
        await link.start()
    try:
        for i in range(20):
            kiosk.scan(f"code-{i}")
        expected = [f"code-{i}" for i in range(20)]
        for h in handlers:
            await eventually(
                lambda h=h: [e.data["text"] for _, e in h.events] == expected,
                what="every event, in order",
            )
        # Both replicas see every retained snapshot (each feeds its own dashboards).
        assert all(len({s.n for _, s in h.snapshots}) == 4 for h in handlers)
        replies = await asyncio.gather(
            links[0].command(kiosk.kiosk_id, "unlock", 1, {}, timeout_s=10),
            links[1].command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=10),
        )
        assert [r.status for r in replies] == ["succeeded", "succeeded"]
        reply_tos = {item.command.reply_to for item in kiosk.received}
        assert reply_tos == {
            links[0].reply_topic(kiosk.kiosk_id),
            links[1].reply_topic(kiosk.kiosk_id),
        }
    finally:
        for link in links:
            await link.stop()


async def test_events_sent_while_the_service_is_down_arrive_after_restart(
    broker: MosquittoProcess, kiosk: ScriptedKiosk
) -> None:
    settings = LinkTestSettings(broker.url)
    link = KioskLink(settings, RecordingHandler(), LiveHub())
    await link.start()
    await link.stop()
    kiosk.scan("while-down")
    await asyncio.sleep(0.3)
    handler = RecordingHandler()
    link = KioskLink(settings, handler, LiveHub())
    await link.start()
    try:
        await eventually(
            lambda: handler.event_types(kiosk.kiosk_id) == ["scan"], what="queued event"
        )
        assert handler.events[0][1].data == {"text": "while-down"}
    finally:
        await link.stop()


async def test_an_event_whose_handling_never_finished_is_delivered_again(
    broker: MosquittoProcess, kiosk: ScriptedKiosk
) -> None:
    """Acks follow the handler: a service stopped mid-event gets the event again."""
    settings = LinkTestSettings(broker.url)
    stuck = RecordingHandler()
    stuck.block_on.add("door_closed")
    link = KioskLink(settings, stuck, LiveHub())
    await link.start()
    event = kiosk.publish_event("door_closed", 1)
    await asyncio.sleep(1.0)
    assert stuck.events == []
    await link.stop()  # the story never finished with the event: it is not acknowledged
    handler = RecordingHandler()
    link = KioskLink(settings, handler, LiveHub())
    await link.start()
    try:
        await eventually(lambda: len(handler.events) == 1, 20, what="redelivered event")
        assert handler.events[0][1].event_id == event.event_id
    finally:
        await link.stop()


async def test_a_broker_that_is_down_at_start_is_found_later(broker: MosquittoProcess) -> None:
    broker.stop()
    handler = RecordingHandler()
    link = KioskLink(LinkTestSettings(broker.url, mqtt_protocol="5"), handler, LiveHub())
    await link.start()  # does not raise: the service starts, /readyz says not ready
    try:
        assert not link.ready
        with pytest.raises(KioskUnreachable, match="not connected"):
            await link.command("k1", "unlock", 1, {}, timeout_s=1)
        broker.start()
        await eventually(lambda: link.ready, 45, what="connection once the broker is up")
    finally:
        await link.stop()


@pytest.mark.slow  # a broker killed and brought back, and its autosave waited for
async def test_a_command_published_as_the_connection_died_is_answered_once_back(
    durable_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """ADR 0110: an unlock published after the socket died, before the loop heard so, is kept by
    paho and sent once the broker is back; the kiosk may still run it until its deadline. The
    caller must wait for that answer, not be told at once that nothing was sent. The link is made
    to believe it is connected for the publish, as in that moment. The kiosk keeps a session on a
    broker that keeps it (saved each second; killed, it sends no will). It comes back and answers
    while the service's reply connection is still away: the broker keeps the answer for it."""
    broker = durable_broker
    kiosk = ScriptedKiosk(broker.host, broker.port, compartments=2, persistent=True).start()
    handler = RecordingHandler()
    link = KioskLink(LinkTestSettings(broker.url), handler, LiveHub())
    await link.start()
    connection = link._connection
    try:
        await eventually(lambda: len(handler.snapshots) >= 2, what="the kiosk's snapshots")
        saved, subscribed = tmp_path / "broker" / "mosquitto.db", time.time()
        await eventually(
            lambda: saved.exists() and saved.stat().st_mtime > subscribed + 0.01,
            what="the broker's autosave of the kiosk's session",
        )
        broker.kill()
        kiosk.stay_away()
        await eventually(
            lambda: not connection.connected and not connection._replies_ready,
            20,
            "the link hears of the outage on both connections",
        )
        replies = connection._reply_client
        assert replies is not None
        await asyncio.to_thread(replies.loop_stop)  # the reply connection stays away a while
        connects = link.counters.connects
        connection._connected = connection._replies_ready = True  # as before it heard
        unlock = asyncio.create_task(link.command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=90))
        await eventually(
            lambda: unlock.done() or link.counters.commands_sent == 1, what="the unlock handed on"
        )
        if unlock.done():
            unlock.result()  # raises what the caller was told
        connection._connected = connection._replies_ready = False  # what the loop then hears
        broker.start()
        await eventually(
            lambda: connection.connected and link.counters.connects > connects, 45, "main back"
        )
        kiosk.come_back()
        await eventually(
            lambda: any(r.handled for r in kiosk.received), 45, "the kiosk ran the unlock"
        )
        assert not unlock.done()
        replies.loop_start()
        reply = await unlock
        assert reply.status == "succeeded"
        unlocks = [r for r in kiosk.received if r.command.action == "unlock"]
        assert [r.command.request_id for r in unlocks] == [reply.request_id]  # sent once
    finally:
        if not unlock.done():
            unlock.cancel()
        kiosk.stop()
        await link.stop()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="replica id"):
        KioskLink(LinkTestSettings("mqtt://h", replica_id="a/b"), RecordingHandler(), LiveHub())
    with pytest.raises(ValueError, match="mqtt://"):
        KioskLink(LinkTestSettings("http://h"), RecordingHandler(), LiveHub())
    with pytest.raises(ValueError, match="protocol"):
        KioskLink(LinkTestSettings("mqtt://h", mqtt_protocol="4"), RecordingHandler(), LiveHub())


async def test_auto_falls_back_to_mqtt_311_on_a_broker_without_mqtt_5(tmp_path: Path) -> None:
    """amqtt (the embedded broker of `lockerctl up`) speaks MQTT 3.1.1 only."""
    from locker_service.stack.broker import EmbeddedBroker
    from locker_service.stack.up import BROKER_PASSWORD_FILE, broker_accounts
    from tests.support.mosquitto import free_port

    accounts = broker_accounts(tmp_path, ["demo-1"])
    broker = EmbeddedBroker(tmp_path / BROKER_PASSWORD_FILE, "127.0.0.1", free_port())
    await broker.start()
    kiosk = None
    handler = RecordingHandler()
    settings = LinkTestSettings(
        broker.url,
        mqtt_username="locker-service",
        mqtt_password=SecretStr(accounts.service_password),
    )
    link = KioskLink(settings, handler, LiveHub())
    try:
        kiosk = await asyncio.to_thread(
            lambda: ScriptedKiosk(
                "127.0.0.1",
                broker.port,
                "demo-1",
                compartments=2,
                username="demo-1",
                password=accounts.kiosk_passwords["demo-1"],
                client_id="locker-bridge-demo-1",
            ).start()
        )
        await link.start()
        assert link.ready and link.protocol_name == "3.1.1"
        await eventually(lambda: len(handler.snapshots) >= 2, what="retained snapshots")
        reply = await link.command(kiosk.kiosk_id, "unlock", 2, {}, timeout_s=10)
        assert reply.status == "succeeded"
        kiosk.scan("amqtt")
        await eventually(lambda: handler.event_types(kiosk.kiosk_id) == ["scan"], what="event")
    finally:
        await link.stop()
        if kiosk is not None:
            await asyncio.to_thread(kiosk.stop)
        await broker.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_handlers_awaiting_commands_do_not_starve_the_replies(
    broker: MosquittoProcess, protocol: str
) -> None:
    """Events stay unacknowledged while their handler runs; a scan handler waits for its unlock
    reply. With every slot of the broker's in-flight window (20 in Mosquitto) held by such an
    event, the replies must still arrive."""
    kiosks = [ScriptedKiosk(broker.host, broker.port, compartments=1).start() for _ in range(30)]
    release = asyncio.Event()
    handler = RecordingHandler()

    async def held(kiosk_id: str, event: contract.Event) -> None:
        await release.wait()
        handler.events.append((kiosk_id, event))

    handler.on_event = held  # type: ignore[method-assign]
    link = KioskLink(LinkTestSettings(broker.url, mqtt_protocol=protocol), handler, LiveHub())
    await link.start()
    try:
        await eventually(lambda: len(handler.snapshots) == 30, what="retained snapshots")
        for k in kiosks:
            k.scan("code")
        await eventually(lambda: link.counters.received.get("event", 0) >= 20, what="20 events")
        await asyncio.sleep(0.3)  # whatever the broker will deliver before an ack is here now
        replies = await asyncio.gather(
            *(link.command(k.kiosk_id, "unlock", 1, {}, timeout_s=8) for k in kiosks[:5])
        )
        assert [r.status for r in replies] == ["succeeded"] * 5
        release.set()
        await eventually(lambda: len(handler.events) == 30, what="the rest of the events")
    finally:
        release.set()
        await link.stop()
        for k in kiosks:
            k.stop()


async def test_tls_with_a_private_ca_and_a_password(
    secured_broker: tuple[MosquittoProcess, Path],
) -> None:
    broker, ca = secured_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    url = f"mqtts://127.0.0.1:{port}"
    good = LinkTestSettings(
        url, mqtt_username="kiosk", mqtt_password=SecretStr("s3cret-kiosk"), mqtt_tls_ca=str(ca)
    )
    link = KioskLink(good, RecordingHandler(), LiveHub())
    await link.start()
    try:
        assert link.ready
    finally:
        await link.stop()
    wrong = LinkTestSettings(
        url, mqtt_username="kiosk", mqtt_password=SecretStr("wrong"), mqtt_tls_ca=str(ca)
    )
    link = KioskLink(wrong, RecordingHandler(), LiveHub())
    await link.start()  # refused: logged, retried in the background, never raises
    try:
        assert not link.ready
        with pytest.raises(KioskUnreachable):
            await link.command("k1", "unlock", 1, {}, timeout_s=1)
    finally:
        await link.stop()


def test_the_default_replica_id_survives_a_restart_and_fits_a_topic() -> None:
    """A restarted service must come back under the same MQTT client id to get its session."""
    from locker_service.config import Settings
    from locker_service.kiosk_link.config import REPLICA_ID_PATTERN

    first = Settings(database_url="postgresql://db/locker").replica_id
    again = Settings(database_url="postgresql://db/locker").replica_id
    other = Settings(database_url="sqlite:///elsewhere.db").replica_id
    assert first == again != other
    assert REPLICA_ID_PATTERN.match(first)
    assert Settings(replica_id="service-1").replica_id == "service-1"
