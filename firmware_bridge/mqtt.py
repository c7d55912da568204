"""The bridge's MQTT side: one paho-mqtt 2.x client, the kiosk's topics, and the event outbox pump.

- The client is made by the contract's one MQTT client setup (`firmware_bridge.contract.client`:
  broker URL, account, TLS, TCP_NODELAY, backoff, the MQTT 5 -> 3.1.1 probe).
- Connects in the background and reconnects with backoff by itself (paho's loop thread); the
  serial loop never waits for the network.
- Subscribes to `cmd` in `on_connect`, so a reconnect resubscribes. Each connection then
  publishes the retained `status` afresh (once the bridge has one: not before its first try at
  the board, so a start never claims the board offline) and asks the bridge to republish its
  snapshots, from the pump thread once the broker has acknowledged every retained message
  paho kept from before and sent again: the fresh state is the last one retained
  (docs/adr/0111).
- The last will is the retained `offline` status.
- A persistent session (clean session off in 3.1.1, a session expiry in 5), so commands sent
  while the kiosk's link was down are delivered when it is back (and rejected if expired by then).
- Events go through the on-disk outbox (`BridgeStore`): a pump thread hands them to paho in order
  and marks each sent only when the broker acknowledged it (PUBACK); the last sent ones are
  kept, and sent again when a replica that has just taken the kiosk asks (`resend_after`,
  docs/adr/0092). An event the broker refuses
  (MQTT 5 PUBACK reason code 0x80 or above, e.g. 0x87 not authorized by its ACL) would be
  refused again on every retry and block the events behind it: it is logged as an error and
  moved to the store's refused events, and the outbox goes on. (MQTT 3.1.1 has no way to say
  no: a broker drops a refused publish and acknowledges it.)
- Telemetry the bridge keeps while cut off (`keep_telemetry`: folded into buckets on disk) goes
  out from the same pump thread once the bridge releases it (`release_backlog`): closed buckets
  oldest first on `telemetry/minutes`, QoS 1, at most `BACKLOG_WINDOW` unacknowledged and
  `telemetry_backlog_per_s` a second, each deleted from disk only on the broker's PUBACK. A
  refused one is dropped with an error: it would be refused again.
- Telemetry published (QoS 0) is kept in memory for `SENT_TELEMETRY_KEPT_S` (at most
  `SENT_TELEMETRY_KEPT_MAX` batches) and sent again, marked `resent`, when a replica that has
  just taken the kiosk asks for the readings after its record (`resend_telemetry_after`,
  docs/adr/0098): a batch published while nobody held the kiosk reached nobody.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.config import BridgeSettings
from firmware_bridge.contract import (
    TELEMETRY_KEPT_SENT_S,
    CompartmentSnapshot,
    Event,
    KioskStatus,
    Reply,
    Telemetry,
    TelemetryMinutes,
    Topics,
    utcnow,
)
from firmware_bridge.contract import client as mqtt_setup
from firmware_bridge.contract.backlog import BucketReading
from firmware_bridge.store import BridgeStore, KeptBucket

log = logging.getLogger(__name__)

OUTBOX_WINDOW = 50  # events handed to paho but not yet acknowledged; bounds memory, keeps order
SESSION_EXPIRY_S = 24 * 3600  # a kiosk offline for a day still gets its queued commands
KEEPALIVE_S = 30  # the broker declares us dead (and sends the will) after 1.5x this
ACK_POLL_S = 0.5  # the pump re-checks acknowledgements (and the protocol probe) this often
# After a reconnect, the fresh retained state waits for the old copies paho sends again to be
# acknowledged (docs/adr/0111), but not longer than this: a broker that never acknowledges
# them must not keep the kiosk's state from it for the whole connection.
RETAINED_RESENT_WAIT_S = 10.0
# A subscription the broker refused is asked for again by the pump, the wait doubling: a
# clustered broker's node refuses while its cluster settles after losing a node.
RESUBSCRIBE_FIRST_S = 0.5
RESUBSCRIBE_MAX_S = 30.0
# Kept telemetry buckets handed to paho but not yet acknowledged: paho's own in-flight window
# (20), so the backlog never queues in paho's memory ahead of the events.
BACKLOG_WINDOW = 20
# Telemetry published lately, kept in memory to be sent again (docs/adr/0098): a takeover takes
# seconds, and a new holder asks only after its record; the count bounds a scaled clock's.
SENT_TELEMETRY_KEPT_S = TELEMETRY_KEPT_SENT_S
SENT_TELEMETRY_KEPT_MAX = 360


def kept_once_sent(payload: bytes) -> bytes:
    """An event as the outbox keeps it once the broker has it (docs/adr/0092): a scan without
    its text (a QR token or a typed code), so that no code stays on the kiosk's disk once it has
    been delivered; sent again, such a scan is recorded and opens nothing. Others unchanged."""
    try:
        event = Event.model_validate_json(payload)
    except ValueError:
        return payload
    return event.model_copy(update={"data": {}}).to_json() if event.type == "scan" else payload


def _queued(info: paho.MQTTMessageInfo) -> paho.MQTTMessageInfo:
    """A QoS 1 publish's info, for the pumps to watch. paho queues a message published while
    its connection is down (the link lost it a moment before it heard so) and sends it once
    back, but the info keeps `MQTT_ERR_NO_CONN`, for which `is_published` raises ever after:
    the pump failed at that message every round and sent nothing more until a restart. Seen
    as queued, it is published once the broker acknowledges it, like any other."""
    if mqtt_setup.kept_for_sending(info, qos=1):
        info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    return info


@dataclass(slots=True)
class _InFlight:
    seq: int
    info: paho.MQTTMessageInfo


@dataclass(slots=True)
class _BucketInFlight:
    start_ms: int
    seconds: float
    info: paho.MQTTMessageInfo


class MqttLink:
    def __init__(
        self,
        settings: BridgeSettings,
        store: BridgeStore,
        on_command: Callable[[bytes], None],
        on_connected: Callable[[], None],
        on_supply: Callable[[bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.kiosk_id)
        self.store = store
        self._on_command = on_command
        self._on_connected = on_connected
        self._on_supply = on_supply
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # None until the bridge has tried the board: an `online` status must say truly
        # whether the board answers, and until then the retained status stays as it was.
        self._status: KioskStatus | None = None
        # Held while a retained message (status, snapshot) is chosen and handed to paho, so one
        # set by the board thread while the pump republishes can never be overtaken on the
        # wire by an older one.
        self._status_lock = threading.Lock()
        # The retained messages handed to paho and not yet acknowledged (kept across an outage
        # and sent again by paho once back), and whether this connection has yet to publish
        # the fresh state after them (docs/adr/0111). Under `_status_lock`.
        self._retained_unacked: list[paho.MQTTMessageInfo] = []
        self._fresh_due = False
        self._connected_at = 0.0  # monotonic
        self._inflight: deque[_InFlight] = deque()
        # mid -> reason, for publishes the broker refused; written on paho's thread, read by
        # the pump, which forgets what is not one of its events (replies, snapshots, status).
        self._refused: dict[int, str] = {}
        self._refused_lock = threading.Lock()
        self._cursor = 0  # highest outbox seq handed to paho
        # Kept events numbered after this go again (`resend_after`); set by the board thread,
        # taken by the pump.
        self._resend_lock = threading.Lock()
        self._resend_after: int | None = None
        # A refused SUBSCRIBE: when to ask again (monotonic; None: nothing to ask), and how
        # many were refused in a row. Written on paho's thread, read by the pump.
        self._subscribe_lock = threading.Lock()
        self._resubscribe_at: float | None = None
        self._subscribes_refused = 0
        # Kept telemetry (pump thread only, but for the flag the bridge sets).
        self._backlog_released = threading.Event()
        self._backlog_inflight: deque[_BucketInFlight] = deque()
        self._backlog_cursor = -1  # start (Unix ms) of the last kept bucket handed to paho
        self._backlog_allowance = 0.0  # buckets that may go now (a token bucket: one second's)
        self._backlog_paced_at = time.monotonic()
        self.buckets_sent = 0  # acknowledged by the broker
        # Telemetry published lately, oldest first (`resend_telemetry_after`); the lock keeps a
        # batch sent again from being overtaken by a newer one published meanwhile.
        self._sent_telemetry: deque[Telemetry] = deque(maxlen=SENT_TELEMETRY_KEPT_MAX)
        self._telemetry_lock = threading.Lock()
        self.telemetry_resent = 0
        self.connects = 0
        self._broker = settings.broker()
        # "auto" starts with MQTT 5 and falls back to 3.1.1 for good when the broker shows it
        # does not speak 5 (amqtt, the embedded broker of `lockerctl up`, is one).
        self._probe = mqtt_setup.ProtocolProbe(settings.mqtt_version)
        self.client = self._build_client()
        self._pump_thread = threading.Thread(target=self._pump_loop, name="event-pump", daemon=True)

    # -- setup --------------------------------------------------------------------------------

    @property
    def protocol(self) -> str:
        """The MQTT version spoken: "5" or "3.1.1"."""
        return self._probe.version

    def _build_client(self) -> paho.Client:
        client = mqtt_setup.new_client(
            self._broker,
            f"locker-bridge-{self.settings.kiosk_id}",
            self._probe.version,
            persistent=True,
            probe=self._probe,
        )
        will = KioskStatus(state="offline", board_online=False)
        client.will_set(self.topics.status, will.to_json(), qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        return client

    def _subscribe(self, client: paho.Client) -> None:
        """The kiosk's commands, and its offline supply (QoS 0: the service never has a code
        verifier queued for us, docs/adr/0077), in one SUBSCRIBE."""
        topics = [(self.topics.cmd, 1)]
        if self._on_supply is not None:
            topics.append((self.topics.offline, 0))
        client.subscribe(topics)

    def start(self) -> None:
        self._connect()
        self._pump_thread.start()

    def _connect(self) -> None:
        mqtt_setup.connect_async(
            self.client,
            self._broker,
            self._probe.version,
            keepalive_s=KEEPALIVE_S,
            session_expiry_s=SESSION_EXPIRY_S,
        )

    def _fall_back_to_311(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (pump thread: never paho's own)."""
        old = self.client
        old.on_disconnect = None
        old.disconnect()
        old.loop_stop()
        sock = old.socket()
        if sock is not None:
            sock.close()
        self._probe.fall_back()
        self.client = self._build_client()
        # Whatever the old client held unacknowledged goes again from the outbox; its retained
        # messages are gone with it, and the new connection publishes the fresh ones.
        with self._status_lock:
            self._retained_unacked.clear()
        self._inflight.clear()
        self._cursor = 0
        self._backlog_inflight.clear()
        self._backlog_cursor = -1
        self._connect()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say offline (retained) while still connected, then leave."""
        with self._status_lock:  # no fresh `online` after the `offline` below (ADR 0111)
            self._stop.set()
        self._wake.set()
        if self.connected.is_set():
            info = self.client.publish(
                self.topics.status,
                KioskStatus(state="offline", board_online=False).to_json(),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.warning("offline status not acknowledged before shutdown")
        self.client.disconnect()
        self.client.loop_stop()
        if self._pump_thread.is_alive():
            self._pump_thread.join(timeout_s)

    # -- paho callbacks (paho's thread: hand work on, never block) ----------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self.client:
            return  # a late callback of the client given up by the protocol probe
        verdict = self._probe.connack(reason_code)
        if verdict == "refused_protocol":
            self._wake.set()  # the pump falls back to 3.1.1
            return
        if verdict == "refused":
            log.error("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        log.info(
            "connected to the broker at %s:%s (session present: %s)",
            client.host,  # the node reached: a cluster's URL names several
            client.port,
            flags.session_present,
        )
        with self._subscribe_lock:
            self._resubscribe_at, self._subscribes_refused = None, 0  # this connection asks afresh
        self._subscribe(client)
        with self._status_lock:
            self.connected.set()
            # Not here: paho sends the retained messages it kept from before the outage only
            # after this callback returns. The pump publishes the fresh state after them.
            self._fresh_due = True
            self._connected_at = time.monotonic()
        self._wake.set()

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self.client:
            return
        self._probe.closed()
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if client is not self.client:
            return
        refused = [str(code) for code in reason_codes if code.is_failure]
        with self._subscribe_lock:
            if not refused:
                self._subscribes_refused, self._resubscribe_at = 0, None
                return
            self._subscribes_refused += 1
            doubled = RESUBSCRIBE_FIRST_S * 2 ** (self._subscribes_refused - 1)
            wait_s = min(RESUBSCRIBE_MAX_S, doubled)
            self._resubscribe_at = time.monotonic() + wait_s
        log.error("broker refused the subscriptions (%s); asking again in %.1f s", refused, wait_s)

    def _resubscribe_if_due(self) -> None:
        with self._subscribe_lock:
            due = self._resubscribe_at is not None and time.monotonic() >= self._resubscribe_at
            if not due or not self.connected.is_set():
                return
            self._resubscribe_at = None
        self._subscribe(self.client)

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        if message.topic == self.topics.offline and self._on_supply is not None:
            handle = self._on_supply
        elif message.topic == self.topics.cmd:
            handle = self._on_command
        else:
            return
        try:
            handle(bytes(message.payload))
        except Exception:  # a bad message must never stop paho's loop
            log.exception("handling a message on %s failed", message.topic)

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            log.warning("the broker refused publish %d: %s", mid, reason_code)
            with self._refused_lock:
                self._refused[mid] = str(reason_code)
        self._wake.set()

    # -- publishing ---------------------------------------------------------------------------

    # Retained state is published only while connected: paho would otherwise queue every change
    # in memory for the whole outage (hours of 48 temperatures), while only the present state
    # matters, and that is published on every (re)connection anyway.

    def set_status(self, status: KioskStatus) -> bool:
        """Remember and publish (retained) the kiosk's status; whether it was handed to paho
        (not while cut off, nor before this connection's fresh state went)."""
        with self._status_lock:
            self._status = status
            if not self._retained_may_go():
                return False
            self._publish_retained(self.topics.status, status.to_json())
            return True

    def publish_snapshot(self, snapshot: CompartmentSnapshot) -> bool:
        """Publish (retained) a compartment's snapshot; whether it was handed to paho."""
        with self._status_lock:
            if not self._retained_may_go():
                return False
            topic = self.topics.compartment_state(snapshot.n)
            self._publish_retained(topic, snapshot.to_json())
            return True

    @property
    def state_published(self) -> bool:
        """Connected, and this connection's fresh status went: a retained message published
        now goes, after it."""
        with self._status_lock:
            return self._retained_may_go()

    def _retained_may_go(self) -> bool:
        """Connected, not stopping, and the fresh state already went (until then, what changes
        is in the status or the tracker that the republish reads). Under `_status_lock`."""
        return self.connected.is_set() and not self._fresh_due and not self._stop.is_set()

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        """Under `_status_lock`."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        if mqtt_setup.kept_for_sending(info, qos=1):
            self._retained_unacked.append(_queued(info))

    def _republish_retained(self) -> None:
        """Pump thread: forget the retained messages the broker acknowledged, and once this
        connection's are all acknowledged (paho sends those it kept through an outage again
        as it reconnects), publish the fresh status and have the bridge republish its
        snapshots. Published before them, the fresh state would be overtaken by old copies
        and the broker would keep those until the next change (docs/adr/0111)."""
        with self._status_lock:
            self._retained_unacked = [i for i in self._retained_unacked if not i.is_published()]
            if not self._fresh_due or not self.connected.is_set() or self._stop.is_set():
                return
            if self._retained_unacked:
                if time.monotonic() - self._connected_at < RETAINED_RESENT_WAIT_S:
                    return
                log.warning(
                    "%d retained messages sent again after the reconnect not acknowledged in "
                    "%.0f s; publishing the fresh state anyway",
                    len(self._retained_unacked),
                    RETAINED_RESENT_WAIT_S,
                )
            self._fresh_due = False
            status = self._status
            if status is not None:
                # Fresh ts: the retained status says when this connection began.
                self._status = status = status.model_copy(update={"ts": utcnow()})
                self._publish_retained(self.topics.status, status.to_json())
        self._on_connected()

    def publish_telemetry(self, telemetry: Telemetry) -> None:
        if not self.connected.is_set():  # QoS 0 readings are stale by the time a link is back
            return
        with self._telemetry_lock:
            self._forget_old_telemetry()
            self._sent_telemetry.append(telemetry)
            self.client.publish(self.topics.telemetry, telemetry.to_json(), qos=0)

    def _forget_old_telemetry(self) -> None:
        horizon = utcnow().timestamp() - SENT_TELEMETRY_KEPT_S
        while self._sent_telemetry and self._sent_telemetry[0].ts.timestamp() < horizon:
            self._sent_telemetry.popleft()

    def resend_telemetry_after(self, after: datetime) -> int:
        """Send again, oldest first and marked `resent`, the telemetry published stamped after
        `after` and kept (the last `SENT_TELEMETRY_KEPT_S`): a replica that has just taken the
        kiosk has stored readings up to there (docs/adr/0098). Returns how many went."""
        with self._telemetry_lock:
            self._forget_old_telemetry()
            again = [t for t in self._sent_telemetry if t.ts > after]
            for telemetry in again:
                payload = telemetry.model_copy(update={"resent": True}).to_json()
                self.client.publish(self.topics.telemetry, payload, qos=0)
        self.telemetry_resent += len(again)
        if again:
            log.info("%d telemetry batches after %s sent again, as asked", len(again), after)
        return len(again)

    def keep_telemetry(self, telemetry: Telemetry) -> None:
        """Fold readings the bridge would have published into their bucket on disk (cut off)."""
        self.store.keep_telemetry(
            telemetry.ts.timestamp(),
            self.settings.scaled(self.settings.telemetry_bucket_s),
            [(r.n, r.temp_c, r.setpoint_c, r.heater) for r in telemetry.readings],
            limit=self.settings.telemetry_backlog_max,
        )

    def release_backlog(self, release: bool) -> None:
        """Whether kept telemetry may go now: the bridge says so while it is not cut off."""
        if not release:
            self._backlog_released.clear()
        elif not self._backlog_released.is_set():
            self._backlog_released.set()
            self._wake.set()

    def publish_reply(self, topic: str, reply: Reply) -> None:
        self.client.publish(topic, reply.to_json(), qos=1)

    def resend_after(self, seq: int) -> None:
        """Send again, in order, the kept events numbered after `seq` (a replica that has just
        taken the kiosk has recorded up to there: docs/adr/0092); the pump does it."""
        with self._resend_lock:
            asked = self._resend_after
            self._resend_after = seq if asked is None else min(asked, seq)
        self._wake.set()

    def emit_event(self, event: Event) -> None:
        """Write the event to the outbox first; the pump sends it as soon as it can."""
        self.store.append_event(
            event.event_id, lambda seq: event.model_copy(update={"seq": seq}).to_json()
        )
        self._wake.set()

    # -- outbox pump --------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(ACK_POLL_S)
            self._wake.clear()
            try:
                if self._probe.fall_back_due():
                    self._fall_back_to_311()
                self._resubscribe_if_due()
                self._republish_retained()
                self._pump()
                self._pump_backlog()
            except Exception:
                log.exception("event pump failed; retrying")
                self._stop.wait(ACK_POLL_S)

    def _pump(self) -> None:
        # Acknowledged events leave the outbox. paho keeps unacknowledged ones across a
        # reconnect and sends them again itself, so the cursor never moves back in this process.
        still: deque[_InFlight] = deque()
        for item in self._inflight:
            if not item.info.is_published():
                still.append(item)
                continue
            # paho runs on_publish, which records a refusal, before it marks the message
            # published: read only now, the reason of a published event is there if it has one.
            with self._refused_lock:
                reason = self._refused.pop(item.info.mid, None)
            if reason is None:
                self.store.mark_sent(item.seq, kept_once_sent)
            else:
                log.error(
                    "the broker refused event %d (%s); kept aside as refused, not retried",
                    item.seq,
                    reason,
                )
                self.store.refuse_event(item.seq, reason)
        with self._refused_lock:  # refusals of other publishes (replies, snapshots): logged
            waiting = {item.info.mid for item in still}
            waiting |= {item.info.mid for item in self._backlog_inflight}
            self._refused = {m: r for m, r in self._refused.items() if m in waiting}
        self._inflight = still
        with self._resend_lock:
            resend, self._resend_after = self._resend_after, None
        if resend is not None:
            again = self.store.resend_after(resend)
            self._cursor = min(self._cursor, resend)
            log.info("%d kept events after #%d to be sent again, as asked", again, resend)
        if not self.connected.is_set():
            return
        room = OUTBOX_WINDOW - len(self._inflight)
        if room <= 0:
            return
        in_flight = {item.seq for item in self._inflight}
        for queued in self.store.events_after(self._cursor, room + len(in_flight)):
            if queued.seq in in_flight:  # handed to paho already (behind the cursor put back)
                self._cursor = max(self._cursor, queued.seq)
                continue
            if room <= 0:
                break
            room -= 1
            info = self.client.publish(self.topics.events, queued.payload, qos=1)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            self._inflight.append(_InFlight(queued.seq, _queued(info)))
            self._cursor = queued.seq

    def _pump_backlog(self) -> None:
        # As the outbox: acknowledged buckets leave the disk, paho re-sends the others itself
        # after a reconnect, and a restarted bridge sends again what was never acknowledged
        # (the service stores a bucket once, however often it comes).
        still: deque[_BucketInFlight] = deque()
        for item in self._backlog_inflight:
            if not item.info.is_published():
                still.append(item)
                continue
            with self._refused_lock:
                reason = self._refused.pop(item.info.mid, None)
            if reason is not None:
                log.error(
                    "the broker refused telemetry bucket %d (%s); dropped", item.start_ms, reason
                )
            self.store.forget_bucket(item.start_ms, item.seconds)
            self.buckets_sent += 1
        self._backlog_inflight = still
        if not still:
            # Nothing in flight: whatever is on disk is unsent, even a bucket that starts before
            # the last one sent (the clock was set back, or another time scale's buckets).
            self._backlog_cursor = -1
        per_s = self.settings.telemetry_backlog_per_s
        now = time.monotonic()
        self._backlog_allowance = min(
            max(per_s, 1.0), self._backlog_allowance + (now - self._backlog_paced_at) * per_s
        )
        self._backlog_paced_at = now
        if not self.connected.is_set() or not self._backlog_released.is_set():
            return
        room = min(BACKLOG_WINDOW - len(still), int(self._backlog_allowance))
        if room <= 0:
            return
        closed_by_ms = int(time.time() * 1000)
        for bucket in self.store.kept_buckets(self._backlog_cursor, closed_by_ms, room):
            payload = bucket_message(bucket).to_json()
            info = self.client.publish(self.topics.telemetry_minutes, payload, qos=1)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            self._backlog_inflight.append(
                _BucketInFlight(bucket.start_ms, bucket.seconds, _queued(info))
            )
            self._backlog_cursor = bucket.start_ms
            self._backlog_allowance -= 1


def bucket_message(bucket: KeptBucket) -> TelemetryMinutes:
    """A kept bucket as the contract's message: the mean from the sum, kept within min and max
    (summing floats may put it a hair outside)."""
    readings = []
    for r in bucket.readings:
        mean_c = None
        if r.count and r.min_c is not None and r.max_c is not None:
            mean_c = min(max(r.sum_c / r.count, r.min_c), r.max_c)
        readings.append(
            BucketReading(
                n=r.n,
                min_c=r.min_c,
                mean_c=mean_c,
                max_c=r.max_c,
                count=r.count,
                setpoint_c=r.setpoint_c,
                faulted=r.faulted,
                heater_on=r.heater_on,
            )
        )
    return TelemetryMinutes(
        minute=datetime.fromtimestamp(bucket.start_ms / 1000, UTC),
        seconds=bucket.seconds,
        readings=readings,
    )
