"""The kiosk link's two MQTT connections, and the subscriptions that follow the kiosk leases.

- The main connection: a persistent session with manual acks (events a kiosk sends while the
  service restarts wait in the broker; a message is acknowledged only once handled), the
  MQTT 5 -> 3.1.1 probe of `ProtocolProbe`, the retained status and snapshots of every kiosk,
  and the events and telemetry of the kiosks this replica follows (all of them when it is alone
  or has no lease keeper).
- The reply connection: a persistent session (a reply sent while it reconnects waits for it;
  kept `REPLY_SESSION_EXPIRY_S` on MQTT 5, ADR 0110) subscribed to this replica's reply topics.
  On the main one, every slot of the broker's in-flight window (20 in Mosquitto) can be held
  by an event whose handler waits for a command's reply, and the reply would then never be
  delivered.

paho-mqtt runs each connection's network loop in a thread of its own. Its callbacks only copy
what they were given and hand it to the event loop with `call_soon_threadsafe`; every decision
and every piece of state (connected, ready, the pending (UN)SUBACKs) lives on the loop. The loop
handles a connection's callbacks in the order paho made them, so a message handed over before
a disconnect is routed before the loop hears of the disconnect. Subscriptions are made when the
loop takes the CONNACK, so a reconnect resubscribes, and the broker then re-sends the retained
status and snapshots: the reconciliation after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge import contract
from firmware_bridge.contract import client as mqtt_setup
from firmware_bridge.contract.broker import BrokerEndpoint
from locker_service.kiosk_link.counters import LinkCounters

log = logging.getLogger(__name__)

# The probe's silence window, and time for the TCP connect and TLS handshake that come before
# the socket counts as open (a later socket gets the rest of its window, see `_open`).
CONNECT_PROBE_TIMEOUT_S = mqtt_setup.CONNACK_WAIT_S + 0.5
SUBACK_TIMEOUT_S = 5.0  # a broker answers SUBSCRIBE in milliseconds; beyond this: not ready
# A subscription the broker refused is asked for again, sooner first: a clustered broker's node
# refuses while its cluster settles after losing a node; an ACL's refusal is not retried often.
RESUBSCRIBE_FIRST_S = 0.5
RESUBSCRIBE_MAX_S = 30.0
SESSION_EXPIRY_S = 3600  # restarts and deploys take minutes; see ADR 0040 for why not longer
# The reply connection's session outlives a dropped connection by this much on MQTT 5 (3.1.1
# has no expiry: the broker's own limit), so a reply sent while it reconnects waits for it: a
# command paho sent again as the main connection came back may be answered before the reply
# connection is back (ADR 0110). Longer than the commands' deadlines (seconds by default);
# replies to commands nobody waits for any more are dropped as they come.
REPLY_SESSION_EXPIRY_S = 300

# "closed": the broker took the TCP connection but dropped it without a CONNACK, which is how
# some MQTT 3.1.1-only brokers answer an MQTT 5 CONNECT; "unreachable": no TCP connection.
ConnectOutcome = Literal["connected", "refused", "refused_protocol", "closed", "unreachable"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What acknowledging one received message takes: its packet id and QoS, and the socket
    that delivered it. A packet id means something only on its own connection: after a
    reconnect the broker re-sends what was not acknowledged, and an ack of an old id on the
    new socket could acknowledge a different message."""

    mid: int
    qos: int
    socket: object | None  # None: nothing to acknowledge
    retained: bool = False  # the broker's kept copy, sent on subscribing: not news


NOTHING_TO_ACK = Delivery(0, 0, None)  # QoS 0, replies, and reports replayed from memory

# (topic, payload, delivery) of a message received on either connection, on the loop.
MessageSink = Callable[[str, bytes, Delivery], None]

# Every kiosk's retained status and compartment snapshots: every replica's live hub needs them.
_STATE_TOPICS = [
    (contract.Topics.wildcard("status"), 1),
    (f"{contract.TOPIC_ROOT}/+/compartments/+/state", 1),
]
# Every kiosk's events and telemetry: a replica without leases, or alone among the live ones.
EVERY_KIOSK = [
    (contract.Topics.wildcard("events"), 1),
    (contract.Topics.wildcard("telemetry"), 0),
    (contract.Topics.wildcard("telemetry/minutes"), 1),
]


def kiosk_topics(kiosk_id: str) -> list[tuple[str, int]]:
    """What a replica subscribes to for a kiosk it holds or awaits: events QoS 1, telemetry 0,
    and the telemetry its bridge kept while cut off QoS 1 (acknowledged once stored)."""
    topics = contract.Topics(kiosk_id)
    return [(topics.events, 1), (topics.telemetry, 0), (topics.telemetry_minutes, 1)]


class KioskConnection:
    """The main and the reply connection of one replica. Every method runs on the event loop."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        protocol: str,
        replica_id: str,
        *,
        keepalive_s: int,
        per_kiosk: bool,
        on_message: MessageSink,
        counters: LinkCounters,
    ) -> None:
        self._probe = mqtt_setup.ProtocolProbe(protocol)  # checks the choice
        self._protocol = protocol
        self._endpoint = endpoint
        self._replica_id = replica_id
        self._keepalive_s = keepalive_s
        # With a lease keeper, events and telemetry are subscribed kiosk by kiosk (ADR 0044).
        self._per_kiosk = per_kiosk
        self._sink = on_message
        self._counters = counters

        # Set in `start` before any client exists and never changed while one runs: the one
        # attribute paho's threads read.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._reply_client: mqtt.Client | None = None
        self._connected = False
        self._subscribed = asyncio.Event()
        self._subscribe_mid: int | None = None
        self._replies_ready = False
        self._replies_subscribed = asyncio.Event()
        self._refusals = {"main": 0, "replies": 0}  # subscriptions refused in a row, per client
        # The one retry planned per connection: a new connection or a grant cancels it.
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._replies_mid: int | None = None  # the reply connection's SUBSCRIBE awaited
        self._connect_outcome: asyncio.Future[ConnectOutcome] | None = None
        self._acks: dict[int, asyncio.Future[bool]] = {}  # (UN)SUBACKs awaited, by packet id
        self._stopping = False
        self._followed: frozenset[str] = frozenset()  # kiosks whose events this replica takes
        self._follow_every = False  # the wildcards instead of `_followed` (a replica alone)

    # -- state ----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ready(self) -> bool:
        """Connected and subscribed on the main connection, and replies can arrive."""
        return self._connected and self._subscribed.is_set() and self._replies_ready

    @property
    def can_command(self) -> bool:
        """A command can go out and its replies come back."""
        return self._connected and self._replies_ready

    @property
    def protocol_name(self) -> str:
        return self._probe.version

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe; if the broker is down, keep trying in the background."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # A fresh probe: the broker may have changed since a previous start.
        self._probe = mqtt_setup.ProtocolProbe(self._protocol)
        await self._open()
        if self._probe.fall_back_due():
            log.info(
                "broker %s:%s does not speak MQTT 5, using 3.1.1",
                self._endpoint.host,
                self._endpoint.port,
            )
            await self._close_main()
            self._probe.fall_back()
            await self._open()
        self._open_replies()
        if self._connected:
            try:
                async with asyncio.timeout(SUBACK_TIMEOUT_S):
                    await self._subscribed.wait()
            except TimeoutError:
                log.error("broker did not acknowledge the subscriptions in %s s", SUBACK_TIMEOUT_S)
            try:
                async with asyncio.timeout(SUBACK_TIMEOUT_S):
                    await self._replies_subscribed.wait()
            except TimeoutError:
                log.error("the reply connection was not ready in %s s", SUBACK_TIMEOUT_S)
        else:
            log.warning(
                "MQTT broker %s:%s not reachable yet; retrying in the background",
                self._endpoint.host,
                self._endpoint.port,
            )

    async def stop(self) -> None:
        self._stopping = True
        for which in ("main", "replies"):
            self._cancel_retry(which)
        await self._close_main()
        client, self._reply_client = self._reply_client, None
        self._replies_ready = False
        self._replies_subscribed.clear()
        if client is not None:
            await asyncio.to_thread(_shut_down, client)

    # -- what the link does with it -------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> str | None:
        """Publish (QoS 1 unless told) on the main connection; None when handed to paho, else
        why not.

        A QoS 1 publish made after the socket died but before the loop heard so is kept by
        paho and sent once the connection is back (`kept_for_sending`): handed over, not
        refused, so a command's caller waits for its answer until its deadline (ADR 0110)
        rather than being told at once that it was not sent."""
        client = self._client
        if client is None:
            return "the kiosk link is not started"
        info = client.publish(topic, payload, qos=qos, retain=False)
        if not mqtt_setup.kept_for_sending(info, qos):
            return mqtt.error_string(info.rc)
        return None

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a handled message, if the connection that delivered it still stands."""
        client = self._client
        # paho's `ack` is thread-safe. The socket is paho's, read here as it is at this moment:
        # after a reconnect it is a new one, and the old packet id must not be acknowledged.
        if (
            delivery.qos > 0
            and client is not None
            and self._connected
            and delivery.socket is not None
            and delivery.socket is client.socket()
        ):
            client.ack(delivery.mid, delivery.qos)

    # -- kiosk subscriptions (called by the lease keeper through the link) ----------------------

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        """Subscribe to the kiosk's events and telemetry; True once the broker granted both."""
        client = self._client
        if client is None or not self._connected:
            return False
        self._followed = self._followed | {kiosk_id}
        if self._follow_every:
            return True  # the wildcards bring it already
        if not await self._subscribe(client, kiosk_topics(kiosk_id)):
            self._followed = self._followed - {kiosk_id}
            return False
        return True

    async def unfollow_kiosk(self, kiosk_id: str) -> None:
        """Unsubscribe from the kiosk's events and telemetry. Once the broker has confirmed,
        everything it sent before has been handed to the loop (one connection keeps its order)."""
        self._followed = self._followed - {kiosk_id}
        client = self._client
        if client is None or not self._connected or self._follow_every:
            return
        await self._unsubscribe(client, [topic for topic, _ in kiosk_topics(kiosk_id)])

    async def follow_every_kiosk(self, every: bool) -> bool:
        """Switch between the wildcards (a replica alone) and one subscription per followed
        kiosk: the new ones first, so that no event falls between the two."""
        client = self._client
        if client is None or not self._connected:
            return False
        per_kiosk = [topic for kiosk in sorted(self._followed) for topic in kiosk_topics(kiosk)]
        new, old = (EVERY_KIOSK, per_kiosk) if every else (per_kiosk, EVERY_KIOSK)
        if new and not await self._subscribe(client, new):
            return False
        self._follow_every = every
        if old:
            await self._unsubscribe(client, [topic for topic, _ in old])
        return True

    async def _subscribe(self, client: mqtt.Client, topics: list[tuple[str, int]]) -> bool:
        result, mid = client.subscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return False
        return await self._acked(mid)

    async def _unsubscribe(self, client: mqtt.Client, topics: list[str]) -> None:
        result, mid = client.unsubscribe(topics)
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            await self._acked(mid)

    async def _acked(self, mid: int) -> bool:
        # Registered before the loop can take the (UN)SUBACK: that comes as a later callback.
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        try:
            async with asyncio.timeout(SUBACK_TIMEOUT_S):
                return await future
        except TimeoutError:
            log.error("broker did not acknowledge (un)subscribing in %s s", SUBACK_TIMEOUT_S)
            return False
        finally:
            self._acks.pop(mid, None)

    def _settle_ack(self, mid: int, ok: bool) -> None:
        future = self._acks.get(mid)
        if future is not None and not future.done():
            future.set_result(ok)

    # -- opening and closing --------------------------------------------------------------------

    async def _open(self) -> ConnectOutcome:
        """Start a client with the probe's protocol and wait for the broker's first answer."""
        assert self._loop is not None
        self._subscribed.clear()
        outcome: asyncio.Future[ConnectOutcome] = self._loop.create_future()
        self._connect_outcome = outcome
        # A persistent session, so events published while this replica was down wait for it.
        client = mqtt_setup.new_client(
            self._endpoint,
            f"locker-service-{self._replica_id}",
            self._probe.version,
            persistent=True,
            manual_ack=True,
            probe=self._probe,
            on_connect_fail=self._on_connect_fail,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        self._client = client
        mqtt_setup.connect_async(
            client,
            self._endpoint,
            self._probe.version,
            keepalive_s=self._keepalive_s,
            session_expiry_s=SESSION_EXPIRY_S,
        )
        wait_s = CONNECT_PROBE_TIMEOUT_S
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    return await asyncio.shield(outcome)
            except TimeoutError:
                # A CONNACK paho took just before the timeout may still wait in the loop's
                # queue: let it be handled before judging the broker silent.
                await asyncio.sleep(0)
                if outcome.done():
                    return outcome.result()
                if client.socket() is None:
                    return "unreachable"
                # Connected over TCP but no CONNACK: some MQTT 3.1.1 brokers wait forever on an
                # MQTT 5 CONNECT with properties, which they cannot parse. A socket that opened
                # late in the wait gets the rest of the probe's silence window.
                wait_s = self._probe.silence_left_s()
                if wait_s <= 0:
                    return "closed"

    async def _close_main(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        self._subscribed.clear()
        if client is not None:
            await asyncio.to_thread(_shut_down, client)  # joins paho's thread: not on the loop

    def _open_replies(self) -> None:
        """The reply connection: same broker and protocol, a persistent session (kept for
        `REPLY_SESSION_EXPIRY_S` on MQTT 5), acks as it receives."""
        client = mqtt_setup.new_client(
            self._endpoint,
            f"locker-service-{self._replica_id}-replies",
            self._probe.version,
            persistent=True,
        )
        client.on_connect = self._on_replies_connect
        client.on_disconnect = self._on_replies_disconnect
        client.on_subscribe = self._on_replies_subscribe
        client.on_message = self._on_reply_message
        self._reply_client = client
        mqtt_setup.connect_async(
            client,
            self._endpoint,
            self._probe.version,
            keepalive_s=self._keepalive_s,
            session_expiry_s=REPLY_SESSION_EXPIRY_S,
        )

    # -- paho's threads: copy what came and hand it to the loop, nothing else -------------------

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._connack, client, reason_code, flags.session_present)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._to_loop(self._unreachable, client)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._suback, client, mid, tuple(reason_codes))

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._unsuback, client, mid)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._disconnected, client, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # The socket is paho's own, read on its own thread: the connection the message came on.
        delivery = Delivery(message.mid, message.qos, client.socket(), bool(message.retain))
        self._to_loop(self._sink, message.topic, bytes(message.payload), delivery)

    def _on_replies_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._replies_connack, client, reason_code)

    def _on_replies_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._replies_suback, client, mid, tuple(reason_codes))

    def _on_replies_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._replies_lost, client)

    def _on_reply_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        # The reply connection acknowledges as it receives (no manual acks): nothing to keep.
        self._to_loop(self._sink, message.topic, bytes(message.payload), NOTHING_TO_ACK)

    # -- the event loop: what the callbacks mean ------------------------------------------------

    def _connack(self, client: mqtt.Client, reason_code: ReasonCode, session_present: bool) -> None:
        if client is not self._client:
            return  # a late callback of a client given up during the protocol probe
        verdict = self._probe.connack(reason_code)
        if verdict != "accepted":
            log.error("MQTT broker refused the connection: %s", reason_code)
            self._set_outcome(verdict)
            return
        self._connected = True
        self._counters.connects += 1
        self._refusals["main"] = 0
        self._cancel_retry("main")  # this connection asks afresh
        self._subscribe_main(client)
        log.info(
            "connected to MQTT %s:%s (MQTT %s, session present: %s)",
            client.host,  # the node reached: a cluster's URL names several
            client.port,
            self.protocol_name,
            session_present,
        )
        self._set_outcome("connected")

    def _subscribe_main(self, client: mqtt.Client) -> None:
        """Everything the main connection listens to, in one SUBSCRIBE (its SUBACK makes the
        connection ready)."""
        if client is not self._client or not self._connected or self._subscribed.is_set():
            return  # gone, reconnecting (its CONNACK subscribes) or granted meanwhile
        topics = list(_STATE_TOPICS)
        if not self._per_kiosk or self._follow_every:  # one replica: every kiosk is ours
            topics += EVERY_KIOSK
        else:
            for kiosk_id in sorted(self._followed):
                topics += kiosk_topics(kiosk_id)
        result, mid = client.subscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("subscribe failed: %s", mqtt.error_string(result))
        self._subscribe_mid = mid

    def _retry_refused(self, which: Literal["main", "replies"], again: Callable[[], None]) -> None:
        """Ask again for a subscription the broker refused, after a wait that doubles."""
        assert self._loop is not None
        refused = self._refusals[which] = self._refusals[which] + 1
        delay = min(RESUBSCRIBE_MAX_S, RESUBSCRIBE_FIRST_S * 2 ** (refused - 1))
        log.warning("asking the broker again in %.1f s (%s connection)", delay, which)
        self._cancel_retry(which)
        self._retries[which] = self._loop.call_later(delay, again)

    def _cancel_retry(self, which: str) -> None:
        handle = self._retries.pop(which, None)
        if handle is not None:
            handle.cancel()

    def _unreachable(self, client: mqtt.Client) -> None:
        if client is self._client:
            self._set_outcome("unreachable")

    def _suback(self, client: mqtt.Client, mid: int, reason_codes: tuple[ReasonCode, ...]) -> None:
        if client is not self._client:
            return
        failed = [code for code in reason_codes if code.is_failure]
        if mid != self._subscribe_mid:
            self._settle_ack(mid, not failed)
            return
        if failed:
            log.error(
                "broker refused %d of %d subscriptions (%s)",
                len(failed),
                len(reason_codes),
                ", ".join(str(code) for code in failed),
            )
            # Not ready while a kiosk's events or the kiosks' states could go unheard.
            self._retry_refused("main", lambda: self._subscribe_main(client))
            return
        self._refusals["main"] = 0
        self._subscribed.set()

    def _unsuback(self, client: mqtt.Client, mid: int) -> None:
        if client is self._client:
            self._settle_ack(mid, True)

    def _disconnected(self, client: mqtt.Client, reason_code: ReasonCode) -> None:
        if client is not self._client:
            return
        self._probe.closed()
        self._cancel_retry("main")
        was_connected, self._connected = self._connected, False
        if not self._stopping and was_connected:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason_code)
        self._subscribed.clear()
        self._set_outcome("closed")

    def _set_outcome(self, outcome: ConnectOutcome) -> None:
        future = self._connect_outcome
        if future is not None and not future.done():
            future.set_result(outcome)

    def _replies_connack(self, client: mqtt.Client, reason_code: ReasonCode) -> None:
        if client is not self._reply_client:
            return
        if not mqtt_setup.connack_accepted(reason_code):
            log.error("MQTT broker refused the reply connection: %s", reason_code)
            return
        self._refusals["replies"] = 0
        self._cancel_retry("replies")  # this connection asks afresh
        self._subscribe_replies(client)

    def _subscribe_replies(self, client: mqtt.Client) -> None:
        if client is not self._reply_client or self._replies_ready:
            return
        _, self._replies_mid = client.subscribe(
            f"{contract.TOPIC_ROOT}/+/replies/{self._replica_id}", qos=1
        )

    def _replies_suback(
        self, client: mqtt.Client, mid: int, reason_codes: tuple[ReasonCode, ...]
    ) -> None:
        if client is not self._reply_client or mid != self._replies_mid:
            return  # another connection's, or an earlier SUBSCRIBE's
        if any(code.is_failure for code in reason_codes):
            log.error("broker refused the reply subscription: %s", list(reason_codes))
            self._retry_refused("replies", lambda: self._subscribe_replies(client))
            return
        self._refusals["replies"] = 0
        self._replies_ready = True
        self._replies_subscribed.set()

    def _replies_lost(self, client: mqtt.Client) -> None:
        if client is not self._reply_client:
            return
        self._cancel_retry("replies")
        self._replies_ready = False
        self._replies_subscribed.clear()


def _shut_down(client: mqtt.Client) -> None:
    """Disconnect and join paho's thread (blocking: run it off the loop)."""
    client.disconnect()
    client.loop_stop()
