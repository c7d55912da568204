"""An event the broker refuses (MQTT 5 PUBACK 0x87, its ACL) is set aside, never lost without a
trace, and never holds up the events behind it. Against a real Mosquitto with an ACL file."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge import contract
from firmware_bridge import mqtt as mqtt_module
from firmware_bridge.mqtt import MqttLink, _InFlight
from firmware_bridge.store import BridgeStore
from tests.firmware_bridge.conftest import TIME_SCALE
from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    running_bridge,
    simulator,
    wait_ready,
)
from tests.support.mosquitto import MosquittoProcess

KIOSK_USER = "kiosk-under-test"


def _acl(path: Path, deny: str | None) -> None:
    """Anyone may do anything (the observer is anonymous); the kiosk's user, if `deny`, not that."""
    lines = ["topic readwrite #", f"user {KIOSK_USER}", "topic readwrite #"]
    if deny is not None:
        lines.append(f"topic deny {deny}")
    path.write_text("\n".join(lines) + "\n")


def test_a_refused_event_is_set_aside_and_the_next_ones_go_out(tmp_path: Path) -> None:
    kiosk_id = new_kiosk_id()
    acl = tmp_path / "acl"
    _acl(acl, deny=contract.Topics(kiosk_id).events)
    broker = MosquittoProcess(extra_config=f"acl_file {acl}\n").start()
    observer = Observer(broker.host, broker.port, kiosk_id).start()
    try:
        with simulator(time_scale=TIME_SCALE) as sim:
            board, scanner = sim.open_pty(tmp_path / "dev")
            url = f"mqtt://{KIOSK_USER}@{broker.host}:{broker.port}"
            settings = bridge_settings(
                kiosk_id, url, board, scanner, tmp_path / "data", TIME_SCALE, mqtt_version="5"
            )
            with running_bridge(settings) as bridge:
                wait_ready(observer, bridge)
                store = bridge.store
                sim.world.scan("refused")
                observer.wait(lambda: store.refused_events(), "the refused scan set aside")
                ((event, reason),) = store.refused_events()
                assert json.loads(event.payload)["data"] == {"text": "refused"}
                assert reason == "Not authorized"
                assert store.event_count() == 0  # the outbox is not held up by it
                # The operator mends the ACL: the next event goes out, the refused one stays
                # aside (it is not replayed out of order).
                _acl(acl, deny=None)
                assert broker._proc is not None
                broker._proc.send_signal(signal.SIGHUP)  # mosquitto reloads its ACL
                observer.wait(lambda: "reload" in broker.log.lower(), "the broker to reload")
                sim.world.scan("allowed")
                observer.wait_event("scan")
                assert [e["data"]["text"] for e in observer.events("scan")] == ["allowed"]
                observer.wait(lambda: store.event_count() == 0, "the scan acknowledged")
                assert len(store.refused_events()) == 1
    finally:
        observer.stop()
        broker.__exit__(None, None, None)


class _PublishedWithRefusal:
    """A message info whose PUBACK (a refusal) lands while the pump is looking at it: paho
    runs on_publish, which records the reason, and then marks the message published."""

    def __init__(self, link: MqttLink, mid: int) -> None:
        self.link, self.mid = link, mid

    def is_published(self) -> bool:
        reason = paho.ReasonCode(paho.PacketTypes.PUBACK, identifier=0x87)
        self.link._handle_publish(self.link.client, None, self.mid, reason, Properties(0))
        return True


def test_a_refusal_landing_during_a_pump_pass_is_not_taken_for_delivery(tmp_path: Path) -> None:
    settings = bridge_settings(
        new_kiosk_id(), "mqtt://127.0.0.1:1", "sim://", None, tmp_path, TIME_SCALE
    )
    store = BridgeStore(tmp_path / "bridge.sqlite")
    link = MqttLink(settings, store, on_command=lambda _: None, on_connected=lambda: None)
    try:
        seq = store.append_event("e-1", lambda _: b'{"event_id": "e-1"}')
        link._inflight.append(_InFlight(seq, _PublishedWithRefusal(link, 7)))  # type: ignore[arg-type]
        link._pump()  # not connected: it only settles what is in flight
        [(event, reason)] = store.refused_events()
        assert event.seq == seq and "Not authorized" in reason
        assert store.event_count() == 0  # set aside, not left to be sent again
        assert link._refused == {}
    finally:
        store.close()


class _RecordingClient:
    """Stands in for paho: records each SUBSCRIBE (the test plays the broker's SUBACKs)."""

    def __init__(self) -> None:
        self.subscribes: list[list[tuple[str, int]]] = []

    def subscribe(self, topics: list[tuple[str, int]]) -> tuple[int, int]:
        self.subscribes.append(topics)
        return 0, len(self.subscribes)


def test_a_refused_subscription_is_asked_for_again_later_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker refuses the kiosk's SUBSCRIBE (a cluster's node while the cluster settles after
    losing a node): without its commands the kiosk would be deaf for good, so the pump asks
    again, waiting twice as long each time, and stops once the broker grants it."""
    monkeypatch.setattr(mqtt_module, "RESUBSCRIBE_FIRST_S", 0.05)
    kiosk_id = new_kiosk_id()
    settings = bridge_settings(
        kiosk_id, "mqtt://127.0.0.1:9", "socket://127.0.0.1:9", None, tmp_path, TIME_SCALE
    )
    link = MqttLink(settings, BridgeStore(tmp_path / "store.sqlite3"), print, lambda: None, print)
    client = _RecordingClient()
    link.client = client  # type: ignore[assignment]
    link.connected.set()
    refused = ReasonCode(PacketTypes.SUBACK, "Unspecified error")
    granted = ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")
    link._subscribe(link.client)
    wanted = [(contract.Topics(kiosk_id).cmd, 1), (contract.Topics(kiosk_id).offline, 0)]
    assert client.subscribes == [wanted]
    for attempt in range(3):
        # Read before the refusal is handled: the wait is counted from the handling, and a
        # starved test read after it would count from later, a shorter wait than there was.
        refused_at = time.monotonic()
        link._handle_subscribe(link.client, None, attempt + 1, [refused, refused], None)
        link._resubscribe_if_due()
        if time.monotonic() - refused_at < 0.05 * 2**attempt:  # not due yet when it was asked
            assert len(client.subscribes) == attempt + 1  # not at once
        while len(client.subscribes) == attempt + 1:
            link._resubscribe_if_due()
            time.sleep(0.005)
        assert time.monotonic() - refused_at >= 0.05 * 2**attempt * 0.9
        assert client.subscribes[-1] == wanted
    link._handle_subscribe(link.client, None, 4, [granted, granted], None)
    time.sleep(0.2)
    link._resubscribe_if_due()
    assert len(client.subscribes) == 4  # granted: nothing more asked


class _Publishes:
    """paho's client as far as telemetry goes: what was published, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, payload))


def test_telemetry_published_is_kept_ten_minutes_to_be_sent_again(tmp_path: Path) -> None:
    """ADR 0098: what a new holder asks for after a stamp goes again marked `resent`, oldest
    first; a batch older than the window is forgotten, and so is one past the count."""
    settings = bridge_settings(
        new_kiosk_id(), "mqtt://127.0.0.1:1", "sim://", None, tmp_path, TIME_SCALE
    )
    store = BridgeStore(tmp_path / "bridge.sqlite")
    link = MqttLink(settings, store, on_command=lambda _: None, on_connected=lambda: None)
    client = _Publishes()
    link.client = client  # type: ignore[assignment]
    link.connected.set()
    try:
        now = contract.utcnow()
        reading = [contract.Reading(n=1, temp_c=63.0, setpoint_c=65.0, heater=True)]
        stale = contract.Telemetry(ts=now - timedelta(minutes=11), readings=reading)
        batches = [
            contract.Telemetry(ts=now - timedelta(seconds=s), readings=reading)
            for s in (50, 40, 30)
        ]
        for batch in (stale, *batches):
            link.publish_telemetry(batch)
        client.sent.clear()
        assert link.resend_telemetry_after(now - timedelta(hours=1)) == 3  # not the stale one
        again = [contract.Telemetry.model_validate_json(p) for _, p in client.sent]
        assert [t.ts for t in again] == [b.ts for b in batches] and all(t.resent for t in again)
        client.sent.clear()
        assert link.resend_telemetry_after(batches[0].ts) == 2
        for i in range(mqtt_module.SENT_TELEMETRY_KEPT_MAX):
            link.publish_telemetry(
                contract.Telemetry(ts=now + timedelta(seconds=i), readings=reading)
            )
        assert (
            link.resend_telemetry_after(now - timedelta(hours=1))
            == mqtt_module.SENT_TELEMETRY_KEPT_MAX
        )
    finally:
        store.close()
