"""The one MQTT client setup of both ends of the contract (the kiosk bridge and the service).

- `BrokerEndpoint.parse`: the broker URL. `mqtt://` and `tcp://` are plain TCP (port 1883 by
  default), `mqtts://` and `ssl://` are TLS (port 8883). Credentials given on their own (and
  not empty) win over ones in the URL. The scheme alone says whether the link is encrypted:
  a CA file (or the insecure flag) with a plain scheme is refused as a contradiction, never
  guessed either way (docs/adr/0026).
- `new_client`: a paho-mqtt 2.x client with the account, TLS (certificate required, the
  system's CAs unless a CA file is given), reconnect backoff and TCP_NODELAY on every socket;
  its wait between two reconnect attempts ends as soon as it is stopped (`Client`).
- `connect_async`: the session the caller asks for (persistent: clean session off in 3.1.1,
  clean start off and a session expiry in 5).
- `kept_for_sending`: whether paho has a publish in hand (sent, or kept to send once back).
- `ProtocolProbe`: "auto" speaks MQTT 5 and falls back to 3.1.1 for good when the broker shows
  it does not speak 5; the rule for what shows it lives here only.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.contract.broker import (
    BrokerEndpoint,
    MqttVersion,
    ProtocolChoice,
    protocol_choice,
)

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30  # a broker back after an outage is found within half a minute
# A broker on the same site answers CONNECT in milliseconds; one that has said nothing for 3 s
# after the socket opened never will (amqtt stays silent on an MQTT 5 CONNECT).
CONNACK_WAIT_S = 3.0
# CONNACK "unsupported protocol version": 0x84 in MQTT 5. A 3.1.1-only broker answers an MQTT 5
# CONNECT with its own return code 1, which paho 2.2 reports as 0x84 and some versions as 1.
UNSUPPORTED_PROTOCOL_CODES = frozenset({0x84, 1})

ConnackVerdict = Literal["accepted", "refused_protocol", "refused"]


class Client(paho.Client):
    """paho's client, whose wait between two reconnect attempts ends at once when it is
    disconnected or its thread stopped. paho's own wait sleeps in steps of up to a second and
    looks between them: every stop of a client cut off from its broker (a bridge shutting down
    while the site's network is out, a replica leaving a dead node) waited out the step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leaving = threading.Event()

    def connect_async(self, *args: Any, **kwargs: Any) -> None:
        self._leaving.clear()  # connecting again (`connect` too): its waits are waited again
        super().connect_async(*args, **kwargs)

    def loop_start(self) -> MQTTErrorCode:
        self._leaving.clear()
        return super().loop_start()

    def disconnect(
        self, reasoncode: ReasonCode | None = None, properties: Properties | None = None
    ) -> MQTTErrorCode:
        # paho's state first, as paho orders it: the thread woken must see that it is to end.
        result = super().disconnect(reasoncode, properties)
        self._leaving.set()
        return result

    def loop_stop(self) -> MQTTErrorCode:
        if self._thread is not None:
            self._thread_terminate = True  # what paho's own stop sets, before the wake below
        self._leaving.set()
        return super().loop_stop()

    def _reconnect_wait(self) -> None:
        """paho's (2.x) backoff, doubling from its least to its most, waited on the event."""
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None:
                self._reconnect_delay = self._reconnect_min_delay
            else:
                self._reconnect_delay = min(self._reconnect_delay * 2, self._reconnect_max_delay)
            delay = self._reconnect_delay
        self._leaving.wait(delay)


def paho_protocol(version: MqttVersion) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if version == "5" else MQTTProtocolVersion.MQTTv311


def new_client(
    endpoint: BrokerEndpoint,
    client_id: str,
    version: MqttVersion,
    *,
    persistent: bool,
    manual_ack: bool = False,
    probe: ProtocolProbe | None = None,
    on_connect_fail: Callable[[paho.Client, Any], None] | None = None,
) -> paho.Client:
    """A paho client with the endpoint's account and TLS, backoff and TCP_NODELAY.

    `persistent` asks the broker to keep the session (subscriptions and QoS 1 messages) while
    the client is away. With a `probe`, every new socket is reported to it. `on_connect_fail`
    is the caller's word on a failed attempt: given here, never set on the client afterwards,
    since the client's own hook is what moves on to a cluster's next node.
    """
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho_protocol(version),
        # MQTT 5 sets its session with clean_start and an expiry at connect instead.
        clean_session=None if version == "5" else not persistent,
        manual_ack=manual_ack,
    )
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(
            ca_certs=endpoint.ca_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if endpoint.tls_insecure:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.on_socket_open = _socket_opened(probe)
    if len(endpoint.hosts) > 1:
        client.on_connect_fail = _next_node(endpoint, on_connect_fail)
    elif on_connect_fail is not None:
        client.on_connect_fail = on_connect_fail
    return client


def _next_node(
    endpoint: BrokerEndpoint, then: Callable[[paho.Client, Any], None] | None
) -> Callable[[paho.Client, Any], None]:
    """A clustered broker: a node that cannot be reached is left for the next one, in turn
    (paho's own thread, between its reconnect attempts, when no connection is open); then the
    caller's own hook, if any."""

    def failed(client: paho.Client, userdata: Any) -> None:
        if then is not None:
            then(client, userdata)
        if client.socket() is not None:  # a connection is open after all: stay with it
            return
        hosts = endpoint.hosts
        here = (client.host, client.port)
        index = hosts.index(here) if here in hosts else -1
        host, port = hosts[(index + 1) % len(hosts)]
        # paho's `host` setter refuses while its state still says "connecting", which it does
        # between two failed attempts; with no socket open, the next attempt reads these.
        client._host, client._port = host, port
        log.warning("broker node %s:%s unreachable; trying %s:%s", *here, host, port)

    return failed


def connect_async(
    client: paho.Client,
    endpoint: BrokerEndpoint,
    version: MqttVersion,
    *,
    keepalive_s: int,
    session_expiry_s: int | None,
) -> None:
    """Start connecting in paho's own thread; paho reconnects by itself with the backoff.

    `session_expiry_s` None: a clean session; a number: the session the client was built
    `persistent` for, kept that long by an MQTT 5 broker (3.1.1 keeps it until the broker's own
    limit).
    """
    properties: Properties | None = None
    clean_start: paho.CleanStartOption = paho.MQTT_CLEAN_START_FIRST_ONLY  # all 3.1.1 takes
    if version == "5":
        clean_start = session_expiry_s is None
        if session_expiry_s is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry_s
    client.connect_async(
        endpoint.host,
        endpoint.port,
        keepalive=keepalive_s,
        clean_start=clean_start,
        properties=properties,
    )
    client.loop_start()


def connack_accepted(reason_code: ReasonCode) -> bool:
    """Only 0 accepts: a 3.1.1 return code below 0x80 is a refusal too, unlike `is_failure`."""
    return reason_code.value == 0


def refuses_protocol(reason_code: ReasonCode) -> bool:
    """The CONNACK says the broker does not speak the protocol version we asked for."""
    return reason_code.value in UNSUPPORTED_PROTOCOL_CODES


def kept_for_sending(info: paho.MQTTMessageInfo, qos: int) -> bool:
    """Whether paho has the message in hand: sent, or kept to send once its connection is
    back. A QoS 1 or 2 publish made after the socket died but before `on_disconnect` ran (the
    caller still believes it is connected) gets `MQTT_ERR_NO_CONN`, and paho still sends it
    after the reconnect (docs/adr/0109, 0110). A QoS 0 one with that code is dropped, and any
    other code (the queue full, say) means paho did not take it."""
    if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
        return True
    return info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0


def no_delay(sock: Any) -> None:
    """Switch Nagle's algorithm off: paho leaves it on, and a packet sent while the broker has
    not yet acknowledged our last one (a command after a PUBACK, a reply right after the
    `accepted`) would wait for its delayed ACK, about 40 ms on Linux."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        log.debug("TCP_NODELAY not available on this transport")


def _socket_opened(
    probe: ProtocolProbe | None,
) -> Callable[[paho.Client, Any, Any], None]:
    def opened(client: paho.Client, userdata: Any, sock: Any) -> None:
        no_delay(sock)  # looked up at call time, so a benchmark can measure without it
        if probe is not None:
            probe.socket_opened()

    return opened


class ProtocolProbe:
    """Which MQTT version to speak, and when "auto" must fall back from 5 to 3.1.1.

    While probing (choice "auto", MQTT 5, no connection accepted yet), the broker shows that it
    does not speak 5 by refusing the protocol version in its CONNACK, by closing the
    connection before any CONNACK, or by saying nothing for `connack_wait_s` after the socket
    opened. After a first accepted CONNACK the version is settled for good: a broker that
    restarts later is the same broker. Fed from paho's thread, read from any: locked.
    """

    def __init__(
        self,
        choice: str,
        *,
        connack_wait_s: float = CONNACK_WAIT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.choice: ProtocolChoice = protocol_choice(choice)
        self.connack_wait_s = connack_wait_s
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._version: MqttVersion = "3.1.1" if self.choice == "3.1.1" else "5"
        self._settled = self.choice != "auto"
        self._socket_at: float | None = None  # a socket is open and its CONNACK not yet seen
        self._shown = False  # the broker showed it does not speak 5

    @property
    def version(self) -> MqttVersion:
        return self._version

    @property
    def probing(self) -> bool:
        return not self._settled

    def socket_opened(self) -> None:
        with self._lock:
            if not self._settled:
                self._socket_at = self._clock()

    def connack(self, reason_code: ReasonCode) -> ConnackVerdict:
        with self._lock:
            self._socket_at = None
            if connack_accepted(reason_code):
                self._settled = True
                return "accepted"
            if not self._settled and refuses_protocol(reason_code):
                self._shown = True
                return "refused_protocol"
            return "refused"

    def closed(self) -> None:
        """The connection ended (paho's on_disconnect)."""
        with self._lock:
            if not self._settled and self._socket_at is not None:
                self._shown = True  # taken over TCP, closed without a word: no MQTT 5 here
            self._socket_at = None

    def fall_back_due(self) -> bool:
        """The broker has shown it does not speak MQTT 5: reconnect with 3.1.1."""
        with self._lock:
            if self._settled:
                return False
            silent_since = self._socket_at
            return self._shown or (
                silent_since is not None and self._clock() - silent_since >= self.connack_wait_s
            )

    def silence_left_s(self) -> float:
        """How much longer the broker may stay silent on the open socket before that counts as
        not speaking MQTT 5; 0 when nothing is being waited for."""
        with self._lock:
            silent_since = self._socket_at
            if self._settled or silent_since is None:
                return 0.0
            return max(0.0, self.connack_wait_s - (self._clock() - silent_since))

    def fall_back(self) -> None:
        with self._lock:
            self._version = "3.1.1"
            self._settled = True
            self._socket_at = None
        log.warning("the broker does not speak MQTT 5: using 3.1.1")
