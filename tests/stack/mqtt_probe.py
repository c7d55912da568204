"""A small synchronous paho-mqtt 2 client for probing brokers in tests: connect, subscribe, publish,
collect what arrives, with every wait bounded."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT_S = 10.0  # generous: the machine is shared with other test runs


class Probe:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTProtocolVersion.MQTTv311,
        client_id: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        keepalive_s: int = 60,
        clean_session: bool | None = None,  # MQTT 3.1.1 only; None: paho's default (clean)
        manual_ack: bool = False,  # acknowledge QoS 1 messages only when `ack` is called
    ) -> None:
        self.host, self.port = host, port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connect_rc: Any = None
        self.session_present: bool | None = None
        self.disconnects = 0  # connections lost after being accepted (the broker dropped us)
        self._closing = False
        self._connected = threading.Event()
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:10]}",
            protocol=protocol,
            clean_session=clean_session,
            manual_ack=manual_ack,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.keepalive_s = keepalive_s
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self._subacks.put(list(rcs))
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.connect_rc = rc
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        if self.accepted and not self._closing:
            self.disconnects += 1

    def connect(self, wait_s: float = WAIT_S) -> Probe:
        self.client.connect(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()
        if not self._connected.wait(wait_s):
            raise TimeoutError("no CONNACK")
        return self

    @property
    def accepted(self) -> bool:
        return self.connect_rc is not None and not self.connect_rc.is_failure

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        self.client.subscribe(topic, qos)
        return self._subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(WAIT_S)

    def expect(self, timeout_s: float = WAIT_S) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout_s)

    def nothing_within(self, seconds: float) -> bool:
        try:
            msg = self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        self.unexpected = msg
        return False

    def ack(self, msg: mqtt.MQTTMessage) -> None:
        self.client.ack(msg.mid, msg.qos)

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crashed or unplugged client would."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self._closing = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def wait_until(predicate: Any, timeout_s: float = WAIT_S, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
