"""The embedded broker of `lockerctl up` (amqtt) speaks what the bridge and service need over MQTT
3.1.1 with paho-mqtt 2, and fails in the documented ways where it falls short."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from tests.stack.mqtt_probe import Probe
from tests.support.mosquitto import free_port, wait_for_port

pytestmark = pytest.mark.slow  # a broker process


@pytest.fixture(scope="module")
def broker() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "locker_service.stack.broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        # SIGTERM is a clean stop, not a crash.
        assert proc.returncode == 0, out.decode(errors="replace")


def topic_prefix() -> str:
    return f"lockers/v1/test-{uuid.uuid4().hex[:8]}"


def test_qos1_message_arrives_with_its_qos(broker: tuple[str, int]) -> None:
    prefix = topic_prefix()
    sub = Probe(*broker).connect()
    pub = Probe(*broker).connect()
    try:
        assert sub.subscribe(f"{prefix}/events", qos=1)[0].value == 1
        pub.publish(f"{prefix}/events", b'{"n":1}', qos=1)
        msg = sub.expect()
        assert (msg.topic, msg.payload, msg.qos) == (f"{prefix}/events", b'{"n":1}', 1)
    finally:
        sub.close()
        pub.close()


def test_retained_message_reaches_a_later_subscriber_and_can_be_cleared(
    broker: tuple[str, int],
) -> None:
    prefix = topic_prefix()
    pub = Probe(*broker).connect()
    pub.publish(f"{prefix}/status", b'{"state":"online"}', retain=True)
    late = Probe(*broker).connect()
    try:
        late.subscribe(f"{prefix}/#")
        msg = late.expect()
        assert msg.payload == b'{"state":"online"}' and msg.retain
        pub.publish(f"{prefix}/status", b"", retain=True)  # empty retained payload clears it
        late.expect()  # the clearing message itself is forwarded live
        later = Probe(*broker).connect()
        later.subscribe(f"{prefix}/#")
        assert later.nothing_within(1.0)
        later.close()
    finally:
        pub.close()
        late.close()


def test_last_will_is_published_retained_when_a_kiosk_drops_off(broker: tuple[str, int]) -> None:
    prefix = topic_prefix()
    watcher = Probe(*broker).connect()
    watcher.subscribe(f"{prefix}/status")
    kiosk = Probe(*broker, will=(f"{prefix}/status", b'{"state":"offline"}', 1, True)).connect()
    try:
        kiosk.kill()
        msg = watcher.expect(timeout_s=15)
        assert msg.payload == b'{"state":"offline"}'
        late = Probe(*broker).connect()
        late.subscribe(f"{prefix}/status")
        assert late.expect().payload == b'{"state":"offline"}'
        late.close()
    finally:
        watcher.close()


def test_new_client_gets_no_retained_message_it_did_not_subscribe_to(
    broker: tuple[str, int],
) -> None:
    """Plain amqtt hands a new connection the retained messages of other clients' subscriptions;
    the embedded broker does not (a kiosk must never see another kiosk's snapshots)."""
    prefix = topic_prefix()
    service = Probe(*broker).connect()
    service.subscribe(f"{prefix}/+/status")
    kiosk_a = Probe(*broker).connect()
    kiosk_a.publish(f"{prefix}/a/status", b'{"state":"online"}', retain=True)
    kiosk_b = Probe(*broker).connect()
    try:
        kiosk_b.subscribe(f"{prefix}/b/cmd")
        assert kiosk_b.nothing_within(1.5)
        assert service.expect().topic == f"{prefix}/a/status"
    finally:
        kiosk_a.publish(f"{prefix}/a/status", b"", retain=True)
        for probe in (service, kiosk_a, kiosk_b):
            probe.close()


def test_shared_subscription_is_not_supported(broker: tuple[str, int]) -> None:
    """`$share/group/topic` is taken as a literal filter: nothing arrives. One service replica only
    on the embedded broker; the service must subscribe without `$share` there."""
    prefix = topic_prefix()
    sub = Probe(*broker).connect()
    pub = Probe(*broker).connect()
    try:
        sub.subscribe(f"$share/locker-service/{prefix}/events")
        pub.publish(f"{prefix}/events", b"{}")
        assert sub.nothing_within(1.5)
    finally:
        sub.close()
        pub.close()


def test_mqtt5_client_is_refused(broker: tuple[str, int]) -> None:
    """amqtt is an MQTT 3.1.1 broker: an MQTT 5 CONNECT is refused, so clients fall back."""
    probe = Probe(*broker, protocol=mqtt.MQTTProtocolVersion.MQTTv5)
    try:
        probe.connect()
        assert not probe.accepted
    except (TimeoutError, OSError):
        pass  # closing the connection without a CONNACK is a refusal too
    finally:
        probe.close()
