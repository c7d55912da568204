"""The kiosk link's connection against a real Mosquitto: what paho's threads hand to the event
loop, and the subscriptions that follow the kiosk leases (`locker_service.kiosk_link.connection`).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge import contract
from firmware_bridge.contract.broker import BrokerEndpoint
from locker_service.kiosk_link import connection as connection_module
from locker_service.kiosk_link.connection import Delivery, KioskConnection
from locker_service.kiosk_link.counters import LinkCounters
from tests.support.mosquitto import MosquittoProcess

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

WAIT_S = 10.0  # a message on a local broker arrives in milliseconds


class Received:
    """The sink: every message handed over, with the thread it was handed over on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, Delivery]] = []
        self.threads: set[int] = set()

    def __call__(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        self.threads.add(threading.get_ident())
        self.messages.append((topic, payload, delivery))

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.messages]


async def until(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def publisher(broker: MosquittoProcess) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def connection(
    broker: MosquittoProcess, sink: Received, counters: LinkCounters | None = None
) -> KioskConnection:
    """A connection as a replica with a lease keeper has: events subscribed kiosk by kiosk."""
    return KioskConnection(
        BrokerEndpoint.parse(broker.url),
        "auto",
        f"r{uuid.uuid4().hex[:8]}",
        keepalive_s=30,
        per_kiosk=True,
        on_message=sink,
        counters=counters or LinkCounters(),
    )


def event_json(text: str) -> bytes:
    return contract.Event(event_id=uuid.uuid4().hex, type="scan", data={"text": text}).to_json()


async def test_messages_reach_the_loop_and_subscriptions_follow_the_kiosks(
    private_mosquitto: MosquittoProcess,
) -> None:
    sink = Received()
    conn = connection(private_mosquitto, sink)
    pub = publisher(private_mosquitto)
    await conn.start()
    try:
        assert conn.ready and conn.protocol_name == "5"
        assert await conn.follow_kiosk("k1")
        mine, theirs = contract.Topics("k1"), contract.Topics("k2")
        pub.publish(theirs.events, event_json("not followed"), qos=1).wait_for_publish()
        pub.publish(mine.events, event_json("followed"), qos=1).wait_for_publish()
        # Every kiosk's status reaches every replica; it comes after both events from one
        # publisher, so once it is here the events that were going to come have come.
        pub.publish(theirs.status, b'{"state": "online"}', qos=1).wait_for_publish()
        await until(lambda: theirs.status in sink.topics(), "k2's status")
        assert sink.topics() == [mine.events, theirs.status]
        assert sink.threads == {threading.get_ident()}  # handed over, never called from paho

        await conn.unfollow_kiosk("k1")
        pub.publish(mine.events, event_json("no longer followed"), qos=1).wait_for_publish()
        pub.publish(mine.status, b'{"state": "online"}', qos=1).wait_for_publish()
        await until(lambda: mine.status in sink.topics(), "k1's status")
        assert sink.topics()[2:] == [mine.status]

        # Alone, a replica takes every kiosk's events by wildcard.
        assert await conn.follow_every_kiosk(True)
        pub.publish(theirs.events, event_json("every kiosk"), qos=1).wait_for_publish()
        await until(lambda: sink.topics()[-1:] == [theirs.events], "k2's event by wildcard")
    finally:
        pub.loop_stop()
        pub.disconnect()
        await conn.stop()


async def test_a_reconnect_counts_resubscribes_and_starts_a_new_ack_scope(
    private_mosquitto: MosquittoProcess,
) -> None:
    """After the broker restarts, the loop hears of it (not ready, then ready again, one more
    connect), and the followed kiosks are subscribed again. Each delivery names the socket it
    came on, so `ack` can tell a packet id of the old connection from one of the new."""
    sink = Received()
    counters = LinkCounters()
    conn = connection(private_mosquitto, sink, counters)
    await conn.start()
    pub: mqtt.Client | None = None
    try:
        assert await conn.follow_kiosk("k1")
        before = publisher(private_mosquitto)
        before.publish(contract.Topics("k1").events, event_json("before"), qos=1)
        await until(lambda: len(sink.messages) == 1, "the first event")
        before.loop_stop()
        before.disconnect()
        old = sink.messages[0][2]
        assert old.qos == 1 and old.socket is not None

        connects = counters.connects
        private_mosquitto.restart(down_s=0.2)  # persistence off: it forgets the subscriptions
        await until(lambda: not conn.ready, "the loop to see the outage")
        await until(lambda: conn.ready and counters.connects > connects, "reconnect")
        pub = publisher(private_mosquitto)
        pub.publish(contract.Topics("k1").events, event_json("after"), qos=1)
        await until(lambda: len(sink.messages) == 2, "the event after the reconnect")
        new = sink.messages[1][2]
        assert new.socket is not None and new.socket is not old.socket
    finally:
        if pub is not None:
            pub.loop_stop()
            pub.disconnect()
        await conn.stop()


async def test_the_main_connection_moves_to_the_next_node_when_its_node_dies(
    private_mosquitto: MosquittoProcess,
) -> None:
    """A clustered broker (`mqtt://n1,n2`): the node the replica is on goes away for good, and
    the main connection (the one kiosks' events come on) carries on on the other node, with
    its kiosks subscribed again there."""
    with MosquittoProcess() as second:
        sink = Received()
        counters = LinkCounters()
        conn = KioskConnection(
            BrokerEndpoint.parse(f"{private_mosquitto.url},{second.host}:{second.port}"),
            "3.1.1",
            f"r{uuid.uuid4().hex[:8]}",
            keepalive_s=30,
            per_kiosk=True,
            on_message=sink,
            counters=counters,
        )
        await conn.start()
        pub: mqtt.Client | None = None
        try:
            assert conn.ready and await conn.follow_kiosk("k1")
            connects = counters.connects
            private_mosquitto.stop()  # the first node is gone, and stays gone
            await until(lambda: not conn.ready, "the loop to see the node go")
            await until(lambda: conn.ready and counters.connects > connects, "the next node")
            pub = publisher(second)
            pub.publish(contract.Topics("k1").events, event_json("on n2"), qos=1)
            await until(lambda: sink.topics() == [contract.Topics("k1").events], "the event")
        finally:
            if pub is not None:
                pub.loop_stop()
                pub.disconnect()
            await conn.stop()


class RefusingClient:
    """Stands in for paho on the loop's side: records each SUBSCRIBE, answers nothing by
    itself (the test plays the broker's SUBACKs)."""

    host, port = "127.0.0.1", 1883

    def __init__(self) -> None:
        self.subscribes: list[tuple[int, object]] = []

    def subscribe(self, topics: object, qos: int = 0) -> tuple[MQTTErrorCode, int]:
        mid = len(self.subscribes) + 1
        self.subscribes.append((mid, topics))
        return MQTTErrorCode.MQTT_ERR_SUCCESS, mid


async def test_subscriptions_the_broker_refused_are_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that refuses a SUBSCRIBE (a cluster's node while the cluster settles after
    losing a node): the connection is not ready and asks again, waiting twice as long each
    time, until the broker grants it; the reply connection the same."""
    monkeypatch.setattr(connection_module, "RESUBSCRIBE_FIRST_S", 0.05)
    conn = KioskConnection(
        BrokerEndpoint.parse("mqtt://127.0.0.1"),
        "3.1.1",
        "r1",
        keepalive_s=30,
        per_kiosk=True,
        on_message=Received(),
        counters=LinkCounters(),
    )
    conn._loop = asyncio.get_running_loop()
    main, replies = RefusingClient(), RefusingClient()
    conn._client, conn._reply_client = main, replies  # type: ignore[assignment]
    refused = ReasonCode(PacketTypes.SUBACK, "Unspecified error")
    granted = ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")

    conn._connack(main, ReasonCode(PacketTypes.CONNACK, "Success"), False)  # type: ignore[arg-type]
    conn._replies_connack(replies, ReasonCode(PacketTypes.CONNACK, "Success"))  # type: ignore[arg-type]
    for attempt in range(3):  # refused three times: asked again each time, later each time
        mid, topics = main.subscribes[-1]
        asked = time.monotonic()  # before the refusal starts its wait: a later read is short
        conn._suback(main, mid, (refused,) * len(topics))  # type: ignore[arg-type]
        conn._replies_suback(replies, replies.subscribes[-1][0], (refused,))  # type: ignore[arg-type]
        assert not conn.ready and not conn.can_command
        await until(lambda a=attempt: len(main.subscribes) == a + 2, "asked again")
        await until(lambda a=attempt: len(replies.subscribes) == a + 2, "replies asked again")
        assert time.monotonic() - asked >= 0.05 * 2**attempt * 0.9
        assert main.subscribes[-1][1] == topics  # the same subscriptions, all of them
    (mid, topics) = main.subscribes[-1]
    conn._suback(main, mid, (granted,) * len(topics))  # type: ignore[arg-type]
    conn._replies_suback(replies, 1, (granted,))  # type: ignore[arg-type]
    assert not conn.can_command  # the SUBACK of an earlier SUBSCRIBE says nothing of this one
    conn._replies_suback(replies, replies.subscribes[-1][0], (granted,))  # type: ignore[arg-type]
    assert conn.ready and conn.can_command
    await asyncio.sleep(0.5)
    assert len(main.subscribes) == 4 and len(replies.subscribes) == 4  # nothing more asked

    # Refused, then the connection is made again before the retry: the new CONNACK's
    # SUBSCRIBE is the only one; the retry planned for the old connection never comes.
    conn._disconnected(main, ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"))  # type: ignore[arg-type]
    conn._connack(main, ReasonCode(PacketTypes.CONNACK, "Success"), False)  # type: ignore[arg-type]
    mid, topics = main.subscribes[-1]
    conn._suback(main, mid, (refused,) * len(topics))  # type: ignore[arg-type]
    conn._connack(main, ReasonCode(PacketTypes.CONNACK, "Success"), False)  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    assert len(main.subscribes) == 6
