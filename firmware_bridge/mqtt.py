"""The bridge's MQTT side: one paho-mqtt 2.x client, the kiosk's topics, and the event outbox pump.

- Connects in the background and reconnects with backoff by itself (paho's loop thread); the
  serial loop never waits for the network.
- Subscribes to `cmd` in `on_connect`, so a reconnect resubscribes; publishes the retained
  `status` there too (once the bridge has one: not before its first try at the board, so a
  start never claims the board offline) and asks the bridge to republish its snapshots.
- The last will is the retained `offline` status.
- A persistent session (clean session off in 3.1.1, a session expiry in 5), so commands sent
  while the kiosk's link was down are delivered when it is back (and rejected if expired by then).
- Events go through the on-disk outbox (`BridgeStore`): a pump thread hands them to paho in order
  and deletes each only when the broker acknowledged it (PUBACK). An event the broker refuses
  (MQTT 5 PUBACK reason code 0x80 or above, e.g. 0x87 not authorized by its ACL) would be
  refused again on every retry and block the events behind it: it is logged as an error and
  moved to the store's refused events, and the outbox goes on. (MQTT 3.1.1 has no way to say
  no: a broker drops a refused publish and acknowledges it.)
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.config import BridgeSettings
from firmware_bridge.contract import (
    CompartmentSnapshot,
    Event,
    KioskStatus,
    Reply,
    Telemetry,
    Topics,
    utcnow,
)
from firmware_bridge.store import BridgeStore

log = logging.getLogger(__name__)

OUTBOX_WINDOW = 50  # events handed to paho but not yet acknowledged; bounds memory, keeps order
SESSION_EXPIRY_S = 24 * 3600  # a kiosk offline for a day still gets its queued commands
KEEPALIVE_S = 30  # the broker declares us dead (and sends the will) after 1.5x this
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
ACK_POLL_S = 0.5  # the pump re-checks acknowledgements at least this often
V5_CONNACK_WAIT_S = 3.0  # a broker on the same site answers CONNECT in milliseconds


@dataclass(slots=True)
class _InFlight:
    seq: int
    info: paho.MQTTMessageInfo


class MqttLink:
    def __init__(
        self,
        settings: BridgeSettings,
        store: BridgeStore,
        on_command: Callable[[bytes], None],
        on_connected: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.kiosk_id)
        self.store = store
        self._on_command = on_command
        self._on_connected = on_connected
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # None until the bridge has tried the board: an `online` status must say truly
        # whether the board answers, and until then the retained status stays as it was.
        self._status: KioskStatus | None = None
        # Held while a status is chosen and handed to paho, so a status set by the board thread
        # while paho's thread (re)connects can never be overtaken on the wire by an older one.
        self._status_lock = threading.Lock()
        self._inflight: deque[_InFlight] = deque()
        # mid -> reason, for publishes the broker refused; written on paho's thread, read by
        # the pump, which forgets what is not one of its events (replies, snapshots, status).
        self._refused: dict[int, str] = {}
        self._refused_lock = threading.Lock()
        self._cursor = 0  # highest outbox seq handed to paho
        self.connects = 0
        # "auto" starts with MQTT 5 and falls back to 3.1.1 for good when the broker says it
        # does not speak 5 (amqtt, the embedded broker of `lockerctl up`, is one).
        self.protocol: str = "3.1.1" if settings.mqtt_version == "3.1.1" else "5"
        self._fallback = threading.Event()
        self._v5_socket_at: float | None = None  # monotonic: MQTT 5 CONNECT sent, no CONNACK yet
        self.client = self._build_client()
        self._pump_thread = threading.Thread(target=self._pump_loop, name="event-pump", daemon=True)

    # -- setup --------------------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        s = self.settings
        v5 = self.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"locker-bridge-{s.kiosk_id}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
        )
        broker = s.broker()
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set(
                ca_certs=str(s.tls_ca) if s.tls_ca else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            if s.tls_insecure:
                client.tls_insecure_set(True)
        will = KioskStatus(state="offline", board_online=False)
        client.will_set(self.topics.status, will.to_json(), qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = self._handle_socket_open
        return client

    def start(self) -> None:
        self._connect()
        self._pump_thread.start()

    def _connect(self) -> None:
        broker = self.settings.broker()
        v5 = self.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            broker.host,
            broker.port,
            keepalive=KEEPALIVE_S,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()

    def _fall_back_to_311(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (pump thread: never paho's own)."""
        log.warning("the broker does not speak MQTT 5: using 3.1.1")
        old = self.client
        old.on_disconnect = None
        old.disconnect()
        old.loop_stop()
        sock = old.socket()
        if sock is not None:
            sock.close()
        self.protocol = "3.1.1"
        self.client = self._build_client()
        # Whatever the old client held unacknowledged goes again from the outbox.
        self._inflight.clear()
        self._cursor = 0
        self._connect()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say offline (retained) while still connected, then leave."""
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
        if reason_code.is_failure:
            if (
                reason_code == "Unsupported protocol version"
                and self.settings.mqtt_version == "auto"
                and self.protocol == "5"
            ):
                self._fallback.set()
                self._wake.set()
                return
            log.error("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        self._v5_socket_at = None
        log.info("connected to the broker (session present: %s)", flags.session_present)
        client.subscribe(self.topics.cmd, qos=1)
        with self._status_lock:
            self.connected.set()
            status = self._status
            if status is not None:
                # Fresh ts: the retained status says when this connection began.
                self._status = status = status.model_copy(update={"ts": utcnow()})
                client.publish(self.topics.status, status.to_json(), qos=1, retain=True)
        self._wake.set()
        self._on_connected()

    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        _no_delay(sock)
        if self.settings.mqtt_version == "auto" and self.protocol == "5" and not self.connects:
            self._v5_socket_at = time.monotonic()

    def _v5_unanswered(self) -> bool:
        """Some brokers (amqtt) neither accept nor refuse an MQTT 5 CONNECT: they stay silent."""
        since = self._v5_socket_at
        return (
            since is not None
            and self.protocol == "5"
            and not self.connected.is_set()
            and time.monotonic() - since > V5_CONNACK_WAIT_S
        )

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        if message.topic != self.topics.cmd:
            return
        try:
            self._on_command(bytes(message.payload))
        except Exception:  # a bad command must never stop paho's loop
            log.exception("command handling failed")

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

    def set_status(self, status: KioskStatus) -> None:
        """Remember and publish (retained) the kiosk's status."""
        with self._status_lock:
            self._status = status
            if self.connected.is_set():
                self.client.publish(self.topics.status, status.to_json(), qos=1, retain=True)

    def publish_snapshot(self, snapshot: CompartmentSnapshot) -> None:
        if self.connected.is_set():
            self.client.publish(
                self.topics.compartment_state(snapshot.n), snapshot.to_json(), qos=1, retain=True
            )

    def publish_telemetry(self, telemetry: Telemetry) -> None:
        if self.connected.is_set():  # QoS 0 readings are stale by the time a link is back
            self.client.publish(self.topics.telemetry, telemetry.to_json(), qos=0)

    def publish_reply(self, topic: str, reply: Reply) -> None:
        self.client.publish(topic, reply.to_json(), qos=1)

    def emit_event(self, event: Event) -> None:
        """Write the event to the outbox first; the pump sends it as soon as it can."""
        self.store.append_event(event.event_id, event.to_json())
        self._wake.set()

    # -- outbox pump --------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(ACK_POLL_S)
            self._wake.clear()
            try:
                if self._fallback.is_set() or self._v5_unanswered():
                    self._fallback.clear()
                    self._fall_back_to_311()
                self._pump()
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
                self.store.delete_event(item.seq)
            else:
                log.error(
                    "the broker refused event %d (%s); kept aside as refused, not retried",
                    item.seq,
                    reason,
                )
                self.store.refuse_event(item.seq, reason)
        with self._refused_lock:  # refusals of other publishes (replies, snapshots): logged
            waiting = {item.info.mid for item in still}
            self._refused = {m: r for m, r in self._refused.items() if m in waiting}
        self._inflight = still
        if not self.connected.is_set():
            return
        room = OUTBOX_WINDOW - len(self._inflight)
        if room <= 0:
            return
        for queued in self.store.events_after(self._cursor, room):
            info = self.client.publish(self.topics.events, queued.payload, qos=1)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
            self._inflight.append(_InFlight(queued.seq, info))
            self._cursor = queued.seq


def _no_delay(sock: Any) -> None:
    """Switch Nagle's algorithm off: paho leaves it on, and a reply sent right after the
    `accepted` would wait for the broker's delayed ACK (about 40 ms on Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        log.debug("TCP_NODELAY not available on this transport")
