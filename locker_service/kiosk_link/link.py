"""The service's MQTT client: kiosk reports in, commands out, replies matched to their commands.

paho-mqtt runs its network loop in its own thread; every callback only copies the message and
hands it to the event loop with `call_soon_threadsafe`, so the database and the story are touched
on the loop alone. Subscriptions are made in `on_connect`, so a reconnect resubscribes, and the
broker then re-sends the retained kiosk status and compartment snapshots: that is the
reconciliation after an outage.

Delivery is at least once end to end: the session is persistent (events a kiosk sends while the
service restarts wait in the broker), and QoS 1 messages are acknowledged only after the handler
has finished with them, so a service killed mid-event gets that event again.

Replicas (ADR 0044): each kiosk is handled by the replica that holds its lease in the database
(`lease_keeper.LeaseKeeper`). The link subscribes to a kiosk's events and telemetry only while
its replica holds or awaits the kiosk's lease (plain topics, no `$share`, so any MQTT 3.1.1
broker will do), and each handler call runs under the lease's fence. Status and snapshots reach
every replica for its live hub, but only the holder hands them to the story. Without a lease
keeper the link handles every kiosk (one replica). Each replica has its own reply topic under the
kiosk's prefix, `lockers/v1/<kiosk>/replies/<replica>`, so a kiosk's broker ACL
(`lockers/v1/<kiosk>/#`) covers its replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError

from firmware_bridge import contract
from firmware_bridge.contract import MessageKind, classify_topic
from firmware_bridge.contract import client as mqtt_setup
from firmware_bridge.contract.broker import BrokerEndpoint
from locker_service.kiosk_link.config import REPLICA_ID_PATTERN, LinkSettings
from locker_service.kiosk_link.errors import CommandTimeout, InvalidCommand, KioskUnreachable
from locker_service.kiosk_link.fencing import CURRENT_FENCE, LeaseLost
from locker_service.kiosk_link.handler import KioskHandler, SiteResolver, TelemetrySink
from locker_service.kiosk_link.lease_keeper import LeaseKeeper, Standing
from locker_service.live import LiveHub

log = logging.getLogger(__name__)

# The probe's silence window, and time for the TCP connect and TLS handshake that come before
# the socket counts as open (a later socket gets the rest of its window, see `_open`).
CONNECT_PROBE_TIMEOUT_S = mqtt_setup.CONNACK_WAIT_S + 0.5
SUBACK_TIMEOUT_S = 5.0  # a broker answers SUBSCRIBE in milliseconds; beyond this: not ready
SESSION_EXPIRY_S = 3600  # restarts and deploys take minutes; see ADR 0040 for why not longer

# "closed": the broker took the TCP connection but dropped it without a CONNACK, which is how
# some MQTT 3.1.1-only brokers answer an MQTT 5 CONNECT; "unreachable": no TCP connection.
ConnectOutcome = Literal["connected", "refused", "refused_protocol", "closed", "unreachable"]


def reply_topic(kiosk_id: str, replica_id: str) -> str:
    return contract.Topics(kiosk_id).replies(replica_id)


MODEL_BY_KIND: dict[MessageKind, type[BaseModel]] = {
    "status": contract.KioskStatus,
    "snapshot": contract.CompartmentSnapshot,
    "event": contract.Event,
    "telemetry": contract.Telemetry,
    "reply": contract.Reply,
}


@dataclass(slots=True)
class _Inbound:
    """One validated message waiting for its kiosk's worker, with what is needed to ack it."""

    kiosk_id: str
    kind: MessageKind
    payload: BaseModel
    mid: int
    qos: int
    session: int  # acks belong to the connection that delivered the message
    received_at: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class _PendingCommand:
    kiosk_id: str
    action: str
    future: asyncio.Future[contract.Reply]
    last_status: str | None = None  # the last non-final status seen (accepted/in_progress)


@dataclass(slots=True)
class LinkCounters:
    """Plain counters for /metrics and tests."""

    received: dict[str, int] = field(default_factory=dict)
    dropped_malformed: int = 0
    # Events of kiosks this replica does not hold (or whose lease it lost while they waited).
    dropped_not_held: int = 0
    # Events handed to the story, per kiosk: with leases, one replica per kiosk has any.
    handled_events: dict[str, int] = field(default_factory=dict)
    handler_errors: int = 0
    commands_sent: int = 0
    connects: int = 0


class KioskLink:
    def __init__(
        self,
        settings: LinkSettings,
        handler: KioskHandler,
        hub: LiveHub,
        *,
        telemetry: TelemetrySink | None = None,
        sites: SiteResolver | None = None,
        wait_observer: Callable[[str, float], None] | None = None,
        leases: LeaseKeeper | None = None,
    ) -> None:
        if not REPLICA_ID_PATTERN.match(settings.replica_id):
            raise ValueError(
                f"replica id {settings.replica_id!r} must match {REPLICA_ID_PATTERN.pattern}"
            )
        self._probe = mqtt_setup.ProtocolProbe(settings.mqtt_protocol)  # checks the choice
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        self._endpoint = BrokerEndpoint.parse(
            settings.mqtt_url,
            username=settings.mqtt_username,
            password=password,
            ca_file=settings.mqtt_tls_ca,
        )
        self._settings = settings
        self._handler = handler
        self._hub = hub
        self._telemetry = telemetry
        self._sites = sites
        self._wait_observer = wait_observer  # (lane, seconds a message waited for its worker)
        self.replica_id = settings.replica_id
        self.counters = LinkCounters()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        # Replies have a connection of their own: on the main one, every slot of the broker's
        # in-flight window (20 in Mosquitto) can be held by an event whose handler is waiting
        # for a command's reply, and the reply would then never be delivered.
        self._reply_client: mqtt.Client | None = None
        self._replies_ready = False
        self._replies_subscribed = asyncio.Event()
        self._session = 0  # incremented on every CONNACK; acks from an older one are void
        self._connected = False
        self._subscribed = asyncio.Event()
        self._subscribe_mid: int | None = None
        self._connect_outcome: asyncio.Future[ConnectOutcome] | None = None
        self._queues: dict[str, asyncio.Queue[_Inbound]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, _PendingCommand] = {}
        self._kiosk_status: dict[str, contract.KioskStatus] = {}
        # The last retained snapshot of every compartment, replayed to the story when this
        # replica takes a kiosk's lease: the reconciliation a resubscription would bring.
        self._snapshots: dict[tuple[str, int], contract.CompartmentSnapshot] = {}
        self._stopping = False
        self._leases = leases
        # Kiosks whose events and telemetry this replica subscribes to; replaced, never
        # mutated, because `_on_connect` reads it on paho's thread.
        self._followed: frozenset[str] = frozenset()
        self._follow_every = False  # the wildcards instead of `_followed` (a replica alone)
        self._acks: dict[int, asyncio.Future[bool]] = {}  # (UN)SUBACKs awaited, by packet id
        if leases is not None:
            leases.bind(self)

    # -- public -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ready(self) -> bool:
        """Connected to the broker and subscribed: what /readyz reports for MQTT."""
        settled = self._leases is None or self._leases.settled
        return self._connected and self._subscribed.is_set() and self._replies_ready and settled

    @property
    def protocol_name(self) -> str:
        return self._probe.version

    def kiosk_status(self, kiosk_id: str) -> contract.KioskStatus | None:
        """The last status the kiosk reported (retained), None if it never did."""
        return self._kiosk_status.get(kiosk_id)

    async def start(self) -> None:
        """Connect and subscribe; if the broker is down, keep trying in the background."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # A fresh probe: the broker may have changed since a previous start.
        self._probe = mqtt_setup.ProtocolProbe(self._settings.mqtt_protocol)
        await self._open()
        if self._probe.fall_back_due():
            log.info(
                "broker %s:%s does not speak MQTT 5, using 3.1.1",
                self._endpoint.host,
                self._endpoint.port,
            )
            await asyncio.to_thread(self._close_client)
            self._probe.fall_back()
            await self._open()
        self._open_replies()
        if self._connected:
            try:
                await asyncio.wait_for(self._subscribed.wait(), SUBACK_TIMEOUT_S)
            except TimeoutError:
                log.error("broker did not acknowledge the subscriptions in %s s", SUBACK_TIMEOUT_S)
            try:
                await asyncio.wait_for(self._replies_subscribed.wait(), SUBACK_TIMEOUT_S)
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
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(KioskUnreachable("the service is shutting down"))
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
        await asyncio.to_thread(self._close_client)
        await asyncio.to_thread(self._close_replies)

    def reply_topic(self, kiosk_id: str) -> str:
        return reply_topic(kiosk_id, self.replica_id)

    async def command(
        self,
        kiosk_id: str,
        action: str,
        compartment: int,
        args: dict[str, Any],
        timeout_s: float,
    ) -> contract.Reply:
        """Send a command and wait for its final reply (succeeded/failed/rejected/timed_out).

        Raises KioskUnreachable when the command cannot be sent or nothing answered it,
        CommandTimeout when the kiosk accepted it but did not finish in `timeout_s`.
        """
        if self._loop is None or self._client is None:
            raise KioskUnreachable("the kiosk link is not started")
        if not (self._connected and self._replies_ready):
            raise KioskUnreachable("the service is not connected to the MQTT broker")
        status = self._kiosk_status.get(kiosk_id)
        if status is not None and status.state == "offline":
            raise KioskUnreachable(f"kiosk {kiosk_id} is offline")
        await self._check_lease(kiosk_id)
        request_id = uuid.uuid4().hex
        try:
            command = contract.command_from_dict(
                {
                    "request_id": request_id,
                    # Checked by the contract: an unknown action, or args that do not fit the
                    # action, are InvalidCommand and nothing is sent.
                    "action": action,
                    "compartment": compartment,
                    "args": args,
                    "expires_at": contract.utcnow() + timedelta(seconds=timeout_s),
                    "reply_to": self.reply_topic(kiosk_id),
                }
            )
        except ValidationError as exc:
            raise InvalidCommand(f"{action} for compartment {compartment}: {exc}") from exc

        pending = _PendingCommand(kiosk_id, action, self._loop.create_future())
        self._pending[request_id] = pending
        try:
            info = self._client.publish(
                contract.Topics(kiosk_id).cmd, command.to_json(), qos=1, retain=False
            )
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise KioskUnreachable(
                    f"could not publish {action} to kiosk {kiosk_id}: {mqtt.error_string(info.rc)}"
                )
            self.counters.commands_sent += 1
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
            except TimeoutError:
                if pending.last_status is None:
                    raise KioskUnreachable(
                        f"kiosk {kiosk_id} did not answer {action} within {timeout_s:g} s"
                    ) from None
                raise CommandTimeout(
                    f"kiosk {kiosk_id} accepted {action} on compartment {compartment} "
                    f"but did not finish it within {timeout_s:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _check_lease(self, kiosk_id: str) -> None:
        """A command sent while handling a kiosk's message (a scan's unlock) goes out only if
        this replica still holds the kiosk's lease at the epoch the message was handled under,
        and the lease has not run past its last renewal's TTL (a replica that slept through
        its lease must not unlock anything). Commands from requests and timers were decided
        by compare-and-set in the database and may come from any replica."""
        if self._leases is None:
            return
        fence = CURRENT_FENCE.get()
        if fence is None:
            await self._leases.settle(kiosk_id)
            return
        held = self._leases.fence(kiosk_id)
        if held is None or held.epoch != fence.epoch or not held.valid_now():
            raise KioskUnreachable(f"replica {self.replica_id} no longer holds kiosk {kiosk_id}")

    # -- kiosk subscriptions (loop thread; called by the lease keeper) ---------------------------

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        """Subscribe to the kiosk's events and telemetry; True once the broker granted both."""
        client = self._client
        if client is None or not self._connected:
            return False
        self._followed = self._followed | {kiosk_id}
        if self._follow_every:
            return True  # the wildcards bring it already
        result, mid = client.subscribe(_kiosk_topics(kiosk_id))
        granted = result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None
        if not granted or mid is None or not await self._acked(mid):
            self._followed = self._followed - {kiosk_id}
            return False
        return True

    async def unfollow_kiosk(self, kiosk_id: str) -> None:
        """Unsubscribe from the kiosk's events and telemetry. Once the broker has confirmed,
        everything it sent before is in the kiosk's queue (one connection keeps its order)."""
        self._followed = self._followed - {kiosk_id}
        client = self._client
        if client is None or not self._connected or self._follow_every:
            return
        await self._unsubscribe(client, [topic for topic, _ in _kiosk_topics(kiosk_id)])

    async def follow_every_kiosk(self, every: bool) -> bool:
        """Switch between the wildcards (a replica alone) and one subscription per followed
        kiosk: the new ones first, so that no event falls between the two."""
        client = self._client
        if client is None or not self._connected:
            return False
        per_kiosk = [topic for kiosk in sorted(self._followed) for topic in _kiosk_topics(kiosk)]
        new, old = (_EVERY_KIOSK, per_kiosk) if every else (per_kiosk, _EVERY_KIOSK)
        if new:
            result, mid = client.subscribe(new)
            granted = result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None
            if not granted or mid is None or not await self._acked(mid):
                return False
        self._follow_every = every
        if old:
            await self._unsubscribe(client, [topic for topic, _ in old])
        return True

    async def _unsubscribe(self, client: mqtt.Client, topics: list[str]) -> None:
        result, mid = client.unsubscribe(topics)
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            await self._acked(mid)

    async def drain_kiosk(self, kiosk_id: str) -> None:
        for lane in (kiosk_id, kiosk_id + SCAN_LANE):
            queue = self._queues.get(lane)
            if queue is not None:
                await queue.join()

    def reconcile_kiosk(self, kiosk_id: str) -> None:
        """Hand the story the kiosk's last retained status and snapshots (held just now)."""
        status = self._kiosk_status.get(kiosk_id)
        if status is not None:
            self._enqueue(_Inbound(kiosk_id, "status", status, 0, 0, self._session))
        for (kiosk, _), snapshot in sorted(self._snapshots.items()):
            if kiosk == kiosk_id:
                self._enqueue(_Inbound(kiosk_id, "snapshot", snapshot, 0, 0, self._session))

    async def _acked(self, mid: int) -> bool:
        assert self._loop is not None
        future = self._acks[mid] = self._loop.create_future()
        try:
            return await asyncio.wait_for(future, SUBACK_TIMEOUT_S)
        except TimeoutError:
            log.error("broker did not acknowledge (un)subscribing in %s s", SUBACK_TIMEOUT_S)
            return False
        finally:
            self._acks.pop(mid, None)

    def _settle_ack(self, mid: int, ok: bool) -> None:
        future = self._acks.get(mid)
        if future is not None and not future.done():
            future.set_result(ok)

    def _standing(self, kiosk_id: str) -> Standing:
        return "held" if self._leases is None else self._leases.standing(kiosk_id)

    # -- connection (paho thread unless noted) --------------------------------------------------

    async def _open(self) -> ConnectOutcome:
        """Start a client with the probe's protocol and wait for the broker's first answer."""
        assert self._loop is not None
        self._subscribed.clear()
        self._connect_outcome = self._loop.create_future()
        client = self._build_client()
        self._client = client
        mqtt_setup.connect_async(
            client,
            self._endpoint,
            self._probe.version,
            keepalive_s=self._settings.mqtt_keepalive_s,
            session_expiry_s=SESSION_EXPIRY_S,
        )
        wait_s = CONNECT_PROBE_TIMEOUT_S
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(self._connect_outcome), wait_s)
            except TimeoutError:
                if client.socket() is None:
                    return "unreachable"
                # Connected over TCP but no CONNACK: some MQTT 3.1.1 brokers wait forever on an
                # MQTT 5 CONNECT with properties, which they cannot parse. A socket that opened
                # late in the wait gets the rest of the probe's silence window.
                wait_s = self._probe.silence_left_s()
                if wait_s <= 0:
                    return "closed"

    def _build_client(self) -> mqtt.Client:
        # A persistent session, so events published while this replica was down wait for it.
        client = mqtt_setup.new_client(
            self._endpoint,
            f"locker-service-{self.replica_id}",
            self._probe.version,
            persistent=True,
            manual_ack=True,
            probe=self._probe,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    def _close_client(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _close_replies(self) -> None:
        client, self._reply_client = self._reply_client, None
        self._replies_ready = False
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _open_replies(self) -> None:
        """The reply connection: same broker and protocol, clean session, acks as it receives."""
        # Replies are only useful to the commands waiting now: nothing to keep across reconnects.
        client = mqtt_setup.new_client(
            self._endpoint,
            f"locker-service-{self.replica_id}-replies",
            self._probe.version,
            persistent=False,
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
            keepalive_s=self._settings.mqtt_keepalive_s,
            session_expiry_s=None,
        )

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
        if client is not self._client:
            return  # a late callback of a client given up during the protocol probe
        verdict = self._probe.connack(reason_code)
        if verdict != "accepted":
            log.error("MQTT broker refused the connection: %s", reason_code)
            self._to_loop(self._set_outcome, verdict)
            return
        self._connected = True
        self._session += 1
        self.counters.connects += 1
        topics = [
            (contract.Topics.wildcard("status"), 1),
            (f"{contract.TOPIC_ROOT}/+/compartments/+/state", 1),
        ]
        if self._leases is None or self._follow_every:  # one replica: every kiosk is ours
            topics += _EVERY_KIOSK
        else:
            for kiosk_id in sorted(self._followed):
                topics += _kiosk_topics(kiosk_id)
        result, mid = client.subscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("subscribe failed: %s", mqtt.error_string(result))
        self._subscribe_mid = mid
        log.info(
            "connected to MQTT %s:%s (MQTT %s, session present: %s)",
            self._endpoint.host,
            self._endpoint.port,
            self.protocol_name,
            flags.session_present,
        )
        self._to_loop(self._set_outcome, "connected")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if mid != self._subscribe_mid:
            self._to_loop(self._settle_ack, mid, not failed)
            return
        if failed:
            log.error(
                "broker refused %d of %d subscriptions (%s)",
                len(failed),
                len(reason_codes),
                ", ".join(str(code) for code in failed),
            )
        self._to_loop(self._subscribed.set)

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._settle_ack, mid, True)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._probe.closed()
        was_connected, self._connected = self._connected, False
        if not self._stopping and was_connected:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason_code)
        self._to_loop(self._on_disconnected_loop)

    def _on_replies_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not mqtt_setup.connack_accepted(reason_code):
            log.error("MQTT broker refused the reply connection: %s", reason_code)
            return
        client.subscribe(f"{contract.TOPIC_ROOT}/+/replies/{self.replica_id}", qos=1)

    def _on_replies_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("broker refused the reply subscription: %s", reason_codes)
            return
        self._replies_ready = True
        self._to_loop(self._replies_subscribed.set)

    def _on_replies_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._replies_ready = False
        self._to_loop(self._replies_subscribed.clear)

    def _on_reply_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        payload = bytes(message.payload)
        self._to_loop(self._route, message.topic, payload, message.mid, 0, self._session)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        self._to_loop(self._set_outcome, "unreachable")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        self._to_loop(self._route, message.topic, payload, message.mid, message.qos, self._session)

    # -- event loop side ------------------------------------------------------------------------

    def _set_outcome(self, outcome: ConnectOutcome) -> None:
        future = self._connect_outcome
        if future is not None and not future.done():
            future.set_result(outcome)

    def _on_disconnected_loop(self) -> None:
        self._subscribed.clear()
        self._set_outcome("closed")

    def _ack(self, mid: int, qos: int, session: int) -> None:
        client = self._client
        # After a reconnect the broker re-sends what was not acknowledged; an ack on the new
        # connection for an old packet id could acknowledge a different message.
        if qos > 0 and client is not None and session == self._session and self._connected:
            client.ack(mid, qos)

    def _route(self, topic: str, payload: bytes, mid: int, qos: int, session: int) -> None:
        classified = classify_topic(topic)
        if classified is None:
            log.warning("dropped message on unexpected topic %s", topic)
            self._ack(mid, qos, session)
            return
        kiosk_id, kind = classified
        if not payload:  # a cleared retained message: nothing to reconcile from
            self._ack(mid, qos, session)
            return
        try:
            model = MODEL_BY_KIND[kind].model_validate_json(payload)
        except ValidationError as exc:
            self.counters.dropped_malformed += 1
            log.warning(
                "dropped malformed %s from kiosk %s on %s: %s",
                kind,
                kiosk_id,
                topic,
                exc.errors(include_url=False)[:3],
            )
            self._ack(mid, qos, session)
            return
        self.counters.received[kind] = self.counters.received.get(kind, 0) + 1
        if isinstance(model, contract.CompartmentSnapshot) and str(model.n) != topic.split("/")[4]:
            self.counters.dropped_malformed += 1
            log.warning("dropped snapshot for compartment %s on topic %s", model.n, topic)
            self._ack(mid, qos, session)
            return
        if isinstance(model, contract.Reply):
            self._ack(mid, qos, session)
            self._resolve(kiosk_id, model)
            return
        if self._leases is not None:
            self._leases.noticed(kiosk_id)  # a kiosk created since the last round: look now
        standing = self._standing(kiosk_id)
        if isinstance(model, contract.Telemetry):
            # Only the holder writes; telemetry is QoS 0 and a reading missed at a handover
            # is one point of a series.
            if self._telemetry is not None and standing in ("held", "releasing"):
                self._telemetry.submit(kiosk_id, model)
            self._publish_live(kiosk_id, "telemetry", model)
            return
        if isinstance(model, contract.KioskStatus):
            self._kiosk_status[kiosk_id] = model
            if model.state == "offline":
                self._fail_pending(kiosk_id)
        elif isinstance(model, contract.CompartmentSnapshot):
            self._snapshots[(kiosk_id, model.n)] = model
        if standing == "foreign" or (standing != "held" and kind != "event"):
            # Status and snapshots of a kiosk this replica does not hold (yet) only feed the
            # live hub: the holder has them (retained), and on taking a lease this replica
            # hands the last ones it saw to the story (`reconcile_kiosk`), so they need not
            # wait unacknowledged in the broker's in-flight window. Events of an awaited kiosk
            # do wait. A releasing holder still handles the events the broker sent before its
            # unsubscription was confirmed; the next holder listens already, so the overlap is
            # handled once (by `event_id`).
            self._ack(mid, qos, session)
            if kind == "event":
                self._drop_not_held(kiosk_id, model)
            else:
                self._publish_live(kiosk_id, kind, model)
            return
        self._enqueue(_Inbound(kiosk_id, kind, model, mid, qos, session))

    def _drop_not_held(self, kiosk_id: str, model: BaseModel) -> None:
        self.counters.dropped_not_held += 1
        log.debug("dropped %s of kiosk %s: its lease is not held here", model, kiosk_id)

    def _resolve(self, kiosk_id: str, reply: contract.Reply) -> None:
        pending = self._pending.get(reply.request_id)
        if pending is None:
            log.debug("reply %s for no waiting command (late or duplicate)", reply.request_id)
            return
        if pending.kiosk_id != kiosk_id:
            log.warning(
                "kiosk %s answered request %s sent to kiosk %s; ignored",
                kiosk_id,
                reply.request_id,
                pending.kiosk_id,
            )
            return
        if reply.final:
            if not pending.future.done():
                pending.future.set_result(reply)
        else:
            pending.last_status = reply.status

    def _fail_pending(self, kiosk_id: str) -> None:
        for pending in self._pending.values():
            if pending.kiosk_id == kiosk_id and not pending.future.done():
                pending.future.set_exception(
                    KioskUnreachable(f"kiosk {kiosk_id} went offline during {pending.action}")
                )

    def _enqueue(self, item: _Inbound) -> None:
        lane = _lane_of(item)
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = asyncio.Queue()
            self._workers[lane] = asyncio.get_running_loop().create_task(
                self._kiosk_worker(queue, "scans" if lane.endswith(SCAN_LANE) else "other"),
                name=f"kiosk-link-{lane}",
            )
        queue.put_nowait(item)

    async def _kiosk_worker(self, queue: asyncio.Queue[_Inbound], lane: str) -> None:
        """Hands one lane's messages to the handler in arrival order, acking each when done."""
        while True:
            item = await queue.get()
            try:
                standing = await self._standing_settled(item.kiosk_id)
                if self._wait_observer is not None:
                    self._wait_observer(lane, time.perf_counter() - item.received_at)
                if standing in ("held", "releasing"):
                    await self._handle(item)
                elif isinstance(item.payload, contract.Event):
                    self._drop_not_held(item.kiosk_id, item.payload)
                self._ack(item.mid, item.qos, item.session)
                await self._publish_live_async(item.kiosk_id, item.kind, item.payload)
            finally:
                queue.task_done()

    async def _standing_settled(self, kiosk_id: str) -> Standing:
        """The kiosk's standing once decided: a message of a kiosk whose lease this replica
        awaits waits (unacknowledged, so a crash leaves it to the broker) until it is taken."""
        while True:
            standing = self._standing(kiosk_id)
            if standing not in ("unsettled", "awaited") or self._leases is None:
                return standing
            await self._leases.changed()

    async def _handle(self, item: _Inbound) -> None:
        fence = self._leases.fence(item.kiosk_id) if self._leases is not None else None
        token = CURRENT_FENCE.set(fence)
        try:
            if isinstance(item.payload, contract.KioskStatus):
                await self._handler.on_status(item.kiosk_id, item.payload)
            elif isinstance(item.payload, contract.CompartmentSnapshot):
                await self._handler.on_snapshot(item.kiosk_id, item.payload)
            elif isinstance(item.payload, contract.Event):
                await self._handler.on_event(item.kiosk_id, item.payload)
                handled = self.counters.handled_events
                handled[item.kiosk_id] = handled.get(item.kiosk_id, 0) + 1
        except LeaseLost as lost:
            # Taken over while this message waited (the replica was paused past its TTL):
            # the transaction changed nothing; the new holder has the kiosk.
            log.debug("%s: %s dropped", lost, item.kind)
            if isinstance(item.payload, contract.Event):
                self.counters.dropped_not_held += 1
            if self._leases is not None:
                self._leases.wake()
        except Exception:
            self.counters.handler_errors += 1
            log.exception("handling %s from kiosk %s failed", item.kind, item.kiosk_id)
        finally:
            CURRENT_FENCE.reset(token)

    def _publish_live(self, kiosk_id: str, kind: MessageKind, payload: BaseModel) -> None:
        if self._hub.subscriber_count == 0:
            return  # nobody watching: spare the serialisation (telemetry is hundreds a second)
        if self._sites is None:
            self._hub.publish(_live_kind(kind), _live_data(kiosk_id, payload), None)
            return
        task = asyncio.get_running_loop().create_task(
            self._publish_live_async(kiosk_id, kind, payload)
        )
        task.add_done_callback(_log_task_error)

    async def _publish_live_async(
        self, kiosk_id: str, kind: MessageKind, payload: BaseModel
    ) -> None:
        if self._hub.subscriber_count == 0:
            return
        site_id = None
        if self._sites is not None:
            try:
                site_id = await self._sites.site_of(kiosk_id)
            except Exception:
                log.exception("could not resolve the site of kiosk %s", kiosk_id)
        self._hub.publish(_live_kind(kind), _live_data(kiosk_id, payload), site_id)


SCAN_LANE = "/scans"  # a suffix no kiosk id has: "/" cannot occur in an MQTT topic level


def _lane_of(item: _Inbound) -> str:
    """The queue a message waits in: each kiosk has two, one for its scans and one for the rest.

    A purchaser waits on a scan, so it must not wait behind the snapshots, status and door
    events her kiosk sent just before (each a transaction of its own). The events a scan causes
    (the door opening) come after its unlock, which leaves only once the scan's decision has
    committed, so they cannot overtake it; scans keep their order among themselves, so a code
    scanned twice opens once and refuses once, in that order (ADR 0043).
    """
    if isinstance(item.payload, contract.Event) and item.payload.type == "scan":
        return item.kiosk_id + SCAN_LANE
    return item.kiosk_id


# Every kiosk's events and telemetry: a replica without leases, or alone among the live ones.
_EVERY_KIOSK = [(contract.Topics.wildcard("events"), 1), (contract.Topics.wildcard("telemetry"), 0)]


def _kiosk_topics(kiosk_id: str) -> list[tuple[str, int]]:
    """What a replica subscribes to for a kiosk it holds or awaits (events QoS 1, telemetry 0)."""
    topics = contract.Topics(kiosk_id)
    return [(topics.events, 1), (topics.telemetry, 0)]


def _live_kind(kind: MessageKind) -> str:
    return {"status": "kiosk", "snapshot": "compartment"}.get(kind, kind)


def _live_data(kiosk_id: str, payload: BaseModel) -> dict[str, Any]:
    return {"kiosk": kiosk_id, **payload.model_dump(mode="json")}


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("live update failed", exc_info=task.exception())
