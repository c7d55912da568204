"""What the bridge's end-to-end tests share: a simulated bank on a real pty, a broker observer.

The observer is a plain paho client standing where the service would: it subscribes to the
kiosk's topics and its reply topic, sends commands, and waits for what should arrive.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from firmware_bridge import contract
from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeSettings
from hardware.protocol.messages import PROTOCOL_REVISION
from hardware.simulator import Simulator

WAIT_S = 20.0  # generous: six test runs share two cores


@dataclass(frozen=True, slots=True)
class Seen:
    topic: str
    payload: dict[str, Any]
    retain: bool
    at: float


class Observer:
    def __init__(
        self, host: str, port: int, kiosk_id: str, persistent: bool = False, **connect: Any
    ) -> None:
        self.topics = contract.Topics(kiosk_id)
        # A broker with the production ACL lets a kiosk answer only under its own prefix.
        self.reply_to = connect.get("reply_to") or f"test/replies/{kiosk_id}"
        self.messages: list[Seen] = []
        self.raw: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        # persistent: the broker keeps our subscription and queues for us across its restart.
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=connect.get("client_id") or f"obs-{uuid.uuid4().hex}",
            clean_session=not persistent,
        )
        if connect.get("username"):
            self.client.username_pw_set(connect["username"], connect.get("password"))
        if connect.get("ca"):
            self.client.tls_set(ca_certs=connect["ca"])
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.host, self.port = host, port

    def start(self) -> Observer:
        self.client.connect_async(self.host, self.port)
        # Short waits (paho takes floats): `stop` joins paho's thread, which sleeps out the
        # wait (up to a second at a time) before it sees it should end.
        self.client.reconnect_delay_set(0.25, 0.25)  # type: ignore[arg-type]
        self.client.loop_start()
        self.wait(lambda: self.client.is_connected(), "observer connected")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe([(f"{self.topics.prefix}/#", 1), (self.reply_to, 1)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = {"_raw": msg.payload.decode(errors="replace")}
        with self._cond:
            self.raw.append((msg.topic, bytes(msg.payload)))
            self.messages.append(Seen(msg.topic, payload, bool(msg.retain), time.monotonic()))
            self._cond.notify_all()

    def wait(self, ok: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                result = ok()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(min(remaining, 0.1))

    # -- views --------------------------------------------------------------------------------

    def since(self, start: int) -> list[Seen]:
        """The messages seen from the `start`th on, in the order they came."""
        with self._cond:
            return self.messages[start:]

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m.payload for m in self.messages if m.topic == topic]

    def events(self, kind: str | None = None, n: int | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.on(self.topics.events)
            if (kind is None or e["type"] == kind) and (n is None or e["compartment"] == n)
        ]

    def replies(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.on(self.reply_to) if r.get("request_id") == request_id]

    def final_reply(self, request_id: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            done = [r for r in self.replies(request_id) if r["status"] in contract.FINAL_STATUSES]
            return done[-1] if done else None

        result: dict[str, Any] = self.wait(final, f"final reply to {request_id}", timeout_s)
        return result

    def wait_event(self, kind: str, n: int | None = None, count: int = 1) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.wait(
            lambda: len(self.events(kind, n)) >= count and self.events(kind, n),
            f"{count} {kind} event(s) for {n}",
        )
        return result

    def snapshot(self, n: int) -> dict[str, Any] | None:
        states = self.on(self.topics.compartment_state(n))
        return states[-1] if states else None

    # -- commands -----------------------------------------------------------------------------

    def command(
        self,
        action: str,
        n: int,
        args: dict[str, Any] | None = None,
        expires_in_s: float = 30.0,
        request_id: str | None = None,
    ) -> contract.Command:
        cmd = contract.command_from_dict(
            {
                "request_id": request_id or uuid.uuid4().hex,
                "action": action,
                "compartment": n,
                "args": args or {},
                "expires_at": contract.utcnow() + timedelta(seconds=expires_in_s),
                "reply_to": self.reply_to,
            }
        )
        self.send(cmd)
        return cmd

    def send(self, cmd: contract.Command) -> None:
        self.client.publish(self.topics.cmd, cmd.to_json(), qos=1)

    def send_raw(self, payload: bytes) -> None:
        self.client.publish(self.topics.cmd, payload, qos=1)


@dataclass
class ServiceLinkSettings:
    """The fields of the service's settings its kiosk link (`locker_service.kiosk_link`) reads."""

    mqtt_url: str
    replica_id: str = field(default_factory=lambda: f"r{uuid.uuid4().hex[:8]}")
    mqtt_username: str | None = None
    mqtt_password: None = None
    mqtt_tls_ca: str | None = None
    mqtt_protocol: str = "auto"
    mqtt_keepalive_s: int = 30


class IgnoringHandler:
    """Stands where the service's story would: the kiosk link's own behaviour is under test."""

    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None:
        pass

    async def on_snapshots(
        self, kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]
    ) -> None:
        pass

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None:
        pass


def new_kiosk_id() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def bridge_settings(
    kiosk_id: str,
    broker_url: str,
    board: str,
    scanner: str | None,
    data_dir: Path,
    time_scale: float,
    **extra: Any,
) -> BridgeSettings:
    values: dict[str, Any] = {
        "kiosk_id": kiosk_id,
        "broker_url": broker_url,
        "board_url": board,
        "scanner_url": scanner,
        "data_dir": data_dir,
        "time_scale": time_scale,
        "poll_period_s": 0.1,
        "telemetry_period_s": 20.0,
        # A simulated board shares two busy cores with other test runs: allow it to be late.
        "answer_margin_s": 0.1,
    }
    values.update(extra)
    return BridgeSettings(**values)


@contextmanager
def running_bridge(settings: BridgeSettings) -> Iterator[Bridge]:
    bridge = Bridge(settings)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


@contextmanager
def simulator(
    compartments: int = 12,
    time_scale: float = 20.0,
    baud: int = 115200,
    protocol: int = PROTOCOL_REVISION,
) -> Iterator[Simulator]:
    sim = Simulator(
        compartments=compartments, seed=7, time_scale=time_scale, baud=baud, protocol=protocol
    )
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def pulses(sim: Simulator, n: int) -> int:
    return sim.truth().compartments[n - 1].lock_pulses


def wait_ready(observer: Observer, bridge: Bridge, compartments: int = 12) -> None:
    """Broker connected, board polled, scanner port open: nothing from here on is missed.

    (Bytes a scanner sends before the bridge opens its port are flushed by the open.)
    """
    observer.wait(lambda: bridge.link.connected.is_set(), "bridge connected to the broker")
    observer.wait(
        lambda: all(observer.snapshot(n) for n in range(1, compartments + 1)),
        "a snapshot of every compartment",
    )
    scanner = bridge.scanner
    if scanner is not None:
        observer.wait(lambda: scanner.transport.is_open, "scanner port open")
