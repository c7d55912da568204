"""The one MQTT client setup of bridge and service: broker URLs, TLS, TCP_NODELAY, sessions and
the MQTT 5 -> 3.1.1 probe, against real brokers (Mosquitto, amqtt, and raw sockets that answer
as a 3.1.1-only broker does)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from firmware_bridge.config import BridgeSettings
from firmware_bridge.contract.broker import BrokerEndpoint, BrokerUrlError, MqttVersion
from firmware_bridge.contract.client import (
    ProtocolProbe,
    connect_async,
    new_client,
)
from locker_service.config import Settings as ServiceSettings
from tests.firmware_bridge import test_mqtt_options
from tests.support.embedded_broker import EmbeddedBrokerProcess
from tests.support.mosquitto import MosquittoProcess, wait_for_port

secured_broker = test_mqtt_options.secured_broker
embedded_broker = test_mqtt_options.embedded_broker  # amqtt, as `lockerctl up` runs it

ANSWER_WAIT_S = 15.0  # generous: the machine is shared; every wait ends on an event first


# -- broker URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, host, port, tls",
    [
        ("mqtt://broker.example", "broker.example", 1883, False),
        ("tcp://broker.example", "broker.example", 1883, False),
        ("mqtts://broker.example", "broker.example", 8883, True),
        ("ssl://broker.example", "broker.example", 8883, True),
        ("mqtt://10.0.0.5:1999", "10.0.0.5", 1999, False),
        ("ssl://[::1]:8884", "::1", 8884, True),
        ("MQTTS://Broker.Example", "broker.example", 8883, True),
    ],
)
def test_broker_url_schemes_and_default_ports(url: str, host: str, port: int, tls: bool) -> None:
    endpoint = BrokerEndpoint.parse(url)
    assert (endpoint.host, endpoint.port, endpoint.tls) == (host, port, tls)


@pytest.mark.parametrize(
    "url", ["http://x", "mqtt://", "mqtt://host:notaport", "broker:1883", "ws://broker:9001"]
)
def test_bad_broker_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="broker URL"):
        BrokerEndpoint.parse(url)


def test_credentials_in_the_url_are_decoded_and_given_ones_win() -> None:
    in_url = BrokerEndpoint.parse("mqtts://kiosk7:s%40cret@broker.example")
    assert (in_url.username, in_url.password) == ("kiosk7", "s@cret")
    given = BrokerEndpoint.parse(
        "mqtts://kiosk7:s%40cret@broker.example", username="kiosk8", password="other"
    )
    assert (given.username, given.password) == ("kiosk8", "other")
    # An empty setting (an unset variable in a compose file) leaves the URL's.
    empty = BrokerEndpoint.parse("mqtt://u:p@b", username="", password="")
    assert (empty.username, empty.password) == ("u", "p")
    assert "topsecret" not in repr(BrokerEndpoint.parse("mqtt://u:topsecret@b"))


@pytest.mark.parametrize("url", ["mqtt://b", "tcp://b:8883"])
def test_a_tls_setting_with_a_plain_url_is_refused_not_guessed(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="use mqtts://"):
        BrokerEndpoint.parse(url, ca_file="/etc/ca.pem")
    with pytest.raises(BrokerUrlError, match="use mqtts://"):
        BrokerEndpoint.parse(url, tls_insecure=True)
    secure = BrokerEndpoint.parse(url.replace("mqtt", "mqtts").replace("tcp", "ssl"), ca_file="c")
    assert secure.tls and secure.ca_file == "c"


@pytest.mark.parametrize(
    "url, ca, good",
    [
        ("mqtt://b", None, True),
        ("tcp://b", None, True),
        ("ssl://b", "/ca.pem", True),
        ("mqtts://b", "/ca.pem", True),
        ("mqtt://b", "/ca.pem", False),
        ("http://b", None, False),
    ],
)
def test_bridge_and_service_settings_apply_the_same_rules(
    url: str, ca: str | None, good: bool
) -> None:
    def bridge() -> object:
        return BridgeSettings(broker_url=url, tls_ca=Path(ca) if ca else None)

    def service() -> object:
        return ServiceSettings(mqtt_url=url, mqtt_tls_ca=ca)

    for make in (bridge, service):
        if good:
            make()
        else:
            with pytest.raises(ValidationError, match="broker URL"):
                make()


# -- the protocol probe, on its own clock ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def connack(name: str) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, name)


def test_a_protocol_refusal_while_probing_makes_auto_fall_back_for_good() -> None:
    probe = ProtocolProbe("auto", clock=Clock())
    assert probe.version == "5" and probe.probing
    probe.socket_opened()
    assert probe.connack(connack("Unsupported protocol version")) == "refused_protocol"
    assert probe.fall_back_due()
    probe.fall_back()
    assert probe.version == "3.1.1" and not probe.probing and not probe.fall_back_due()


def test_a_3_1_1_return_code_1_counts_as_the_same_refusal() -> None:
    probe = ProtocolProbe("auto", clock=Clock())
    code = ReasonCode(PacketTypes.CONNACK, "Success")
    code.value = 1  # what some paho versions hand on for a 3.1.1 broker's CONNACK
    assert probe.connack(code) == "refused_protocol" and probe.fall_back_due()


def test_silence_after_the_socket_opened_is_a_refusal_only_after_the_wait() -> None:
    clock = Clock()
    probe = ProtocolProbe("auto", connack_wait_s=3.0, clock=clock)
    assert not probe.fall_back_due()  # no socket yet: the broker may just be down
    assert probe.silence_left_s() == 0.0
    probe.socket_opened()
    clock.now_s += 2.9
    assert not probe.fall_back_due()
    assert abs(probe.silence_left_s() - 0.1) < 1e-9
    clock.now_s += 0.2
    assert probe.fall_back_due() and probe.silence_left_s() == 0.0


def test_a_connection_closed_before_any_connack_is_a_refusal() -> None:
    probe = ProtocolProbe("auto", clock=Clock())
    probe.closed()
    assert not probe.fall_back_due()  # never opened: unreachable, not a refusal
    probe.socket_opened()
    probe.closed()
    assert probe.fall_back_due()


def test_once_accepted_the_version_is_settled() -> None:
    clock = Clock()
    probe = ProtocolProbe("auto", clock=clock)
    probe.socket_opened()
    assert probe.connack(connack("Success")) == "accepted"
    probe.socket_opened()  # a reconnect after a broker restart
    probe.closed()
    clock.now_s += 60
    assert probe.connack(connack("Unsupported protocol version")) == "refused"
    assert not probe.fall_back_due() and probe.version == "5"


def test_a_fixed_choice_never_falls_back_and_other_refusals_are_not_protocol_ones() -> None:
    fixed = ProtocolProbe("5", clock=Clock())
    fixed.socket_opened()
    assert fixed.connack(connack("Unsupported protocol version")) == "refused"
    assert not fixed.fall_back_due()
    assert ProtocolProbe("3.1.1").version == "3.1.1"
    auto = ProtocolProbe("auto", clock=Clock())
    assert auto.connack(connack("Bad user name or password")) == "refused"
    assert not auto.fall_back_due()
    with pytest.raises(ValueError, match="protocol"):
        ProtocolProbe("4")


# -- against real brokers -------------------------------------------------------------------------


class Connection:
    """A client made by `new_client`, with what its callbacks saw."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        version: MqttVersion,
        probe: ProtocolProbe | None = None,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        session_expiry_s: int | None = None,
    ) -> None:
        self.answered = threading.Event()
        self.failed = threading.Event()  # no connection at all (refused TCP, TLS handshake)
        self.verdicts: list[str] = []
        self.session_present: list[bool] = []
        self.probe = probe
        self.client = new_client(
            endpoint,
            client_id or f"contract-test-{time.monotonic_ns()}",
            version,
            persistent=persistent,
            probe=probe,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda client, userdata: self.failed.set()
        connect_async(
            self.client,
            endpoint,
            version,
            keepalive_s=30,
            session_expiry_s=session_expiry_s,
        )

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        verdict = self.probe.connack(rc) if self.probe else ("accepted" if rc == 0 else str(rc))
        self.verdicts.append(verdict)
        self.session_present.append(bool(flags.session_present))
        self.answered.set()

    def _on_disconnect(self, client: paho.Client, *args: Any) -> None:
        if self.probe is not None:
            self.probe.closed()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ANSWER_WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def no_delay(sock: Any) -> bool:
    assert isinstance(sock, socket.socket), sock
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_a_persistent_session_is_there_on_the_next_connect(
    private_mosquitto: MosquittoProcess, version: MqttVersion
) -> None:
    endpoint = BrokerEndpoint.parse(private_mosquitto.url)
    client_id = f"contract-session-{version}-{time.monotonic_ns()}"
    for expected_present in (False, True):
        conn = Connection(
            endpoint, version, client_id=client_id, persistent=True, session_expiry_s=600
        )
        try:
            assert conn.answered.wait(ANSWER_WAIT_S)
            assert conn.verdicts == ["accepted"]
            assert conn.session_present == [expected_present]
            assert no_delay(conn.client.socket())
        finally:
            conn.close()


def test_tls_with_a_private_ca_and_a_password(
    secured_broker: tuple[MosquittoProcess, Path],
) -> None:
    broker, ca = secured_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    url = f"mqtts://kiosk:s3cret-kiosk@127.0.0.1:{port}"
    conn = Connection(BrokerEndpoint.parse(url, ca_file=str(ca)), "5")
    try:
        assert conn.answered.wait(ANSWER_WAIT_S)
        assert conn.verdicts == ["accepted"]
        sock = conn.client.socket()
        assert no_delay(sock) and sock.version() is not None  # type: ignore[union-attr]
    finally:
        conn.close()
    # Without our CA the broker's certificate is not trusted: the handshake fails.
    stranger = Connection(BrokerEndpoint.parse(url), "5")
    try:
        assert stranger.failed.wait(ANSWER_WAIT_S)
        assert not stranger.answered.is_set()
    finally:
        stranger.close()


def test_auto_on_mosquitto_speaks_mqtt_5(private_mosquitto: MosquittoProcess) -> None:
    probe = ProtocolProbe("auto")
    conn = Connection(BrokerEndpoint.parse(private_mosquitto.url), probe.version, probe)
    try:
        assert conn.answered.wait(ANSWER_WAIT_S)
        assert conn.verdicts == ["accepted"] and probe.version == "5" and not probe.probing
    finally:
        conn.close()


def probe_then_fall_back(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    client_id: str | None = None,
) -> tuple[ProtocolProbe, Connection]:
    """What both ends do: MQTT 5 first; once the probe says so, a fresh 3.1.1 client."""
    endpoint = BrokerEndpoint.parse(url, username=username, password=password)
    probe = ProtocolProbe("auto")
    first = Connection(endpoint, probe.version, probe, client_id=client_id)
    try:
        wait_until(probe.fall_back_due, "the probe to see no MQTT 5")
        assert "accepted" not in first.verdicts
    finally:
        first.close()
    probe.fall_back()
    return probe, Connection(endpoint, probe.version, probe, client_id=client_id)


def test_auto_falls_back_on_amqtt_which_stays_silent_on_mqtt_5(
    embedded_broker: EmbeddedBrokerProcess,
) -> None:
    account = embedded_broker.service()
    probe, conn = probe_then_fall_back(
        embedded_broker.url,
        username=account.username,
        password=account.password,
        client_id=account.client_id,
    )
    try:
        assert conn.answered.wait(ANSWER_WAIT_S)
        assert conn.verdicts == ["accepted"] and probe.version == "3.1.1"
    finally:
        conn.close()


@contextmanager
def raw_broker(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP listener that reads each CONNECT and answers it with `answer`; 3.1.1 brokers
    that predate MQTT 5 answer like this (and a real 3.1.1 broker takes the fallback)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(1024)  # the CONNECT
                answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def refuse_protocol_version(conn: socket.socket) -> None:
    conn.sendall(bytes([0x20, 0x02, 0x00, 0x01]))  # CONNACK, return code 1: protocol version
    conn.recv(1024)  # until the client hangs up


@pytest.mark.parametrize(
    "answer, seen",
    [
        (refuse_protocol_version, ["refused_protocol"]),
        (lambda conn: None, []),  # closes without a CONNACK
    ],
    ids=["connack-return-code-1", "closed-without-connack"],
)
def test_a_broker_refusing_mqtt_5_is_detected_the_same_way_for_both(
    answer: Callable[[socket.socket], None], seen: list[str]
) -> None:
    with raw_broker(answer) as url:
        endpoint = BrokerEndpoint.parse(url)
        probe = ProtocolProbe("auto")
        conn = Connection(endpoint, probe.version, probe)
        try:
            wait_until(probe.fall_back_due, "the probe to see the refusal")
            assert conn.verdicts[:1] == seen
        finally:
            conn.close()


# -- a clustered broker -------------------------------------------------------------------------


def test_a_clustered_brokers_nodes_share_the_scheme_and_account() -> None:
    endpoint = BrokerEndpoint.parse("mqtts://kiosk7:s%40cret@n1.example,n2.example:8884,n3")
    assert endpoint.hosts == (("n1.example", 8883), ("n2.example", 8884), ("n3", 8883))
    assert (endpoint.host, endpoint.port, endpoint.tls) == ("n1.example", 8883, True)
    assert (endpoint.username, endpoint.password) == ("kiosk7", "s@cret")
    assert "s@cret" not in repr(endpoint) and "n3:8883" in repr(endpoint)
    assert BrokerEndpoint.parse("mqtt://solo").hosts == (("solo", 1883),)
    for bad in ("mqtt://n1,", "mqtt://n1,n2:port", "mqtt://,n2"):
        with pytest.raises(BrokerUrlError):
            BrokerEndpoint.parse(bad)


def test_a_node_that_cannot_be_reached_is_left_for_the_next(
    private_mosquitto: MosquittoProcess,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # bound, never listening: connections are refused
        endpoint = BrokerEndpoint.parse(
            f"mqtt://127.0.0.1:{dead},{private_mosquitto.host}:{private_mosquitto.port}"
        )
        connected = threading.Event()
        client = new_client(endpoint, "cluster-probe", "3.1.1", persistent=False)
        client.on_connect = lambda *args: connected.set()
        connect_async(client, endpoint, "3.1.1", keepalive_s=10, session_expiry_s=None)
        try:
            assert connected.wait(ANSWER_WAIT_S), "never reached the second node"
            assert (client.host, client.port) == (private_mosquitto.host, private_mosquitto.port)
        finally:
            client.disconnect()
            client.loop_stop()


@pytest.mark.parametrize("stop", ["disconnect", "loop_stop"])
def test_a_client_waiting_to_reconnect_stops_without_waiting_out_its_backoff(
    stop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho's own wait sleeps in steps of a second; a stopped client leaves at once, and one
    started again waits its backoff again (it never retries in a loop).

    The sleeps of paho's module in this client's thread are recorded (paho sleeps nowhere
    else): the wait between two attempts must not be one."""
    slept: list[float] = []
    ours: list[threading.Thread] = []

    def sleep(seconds: float) -> None:
        if threading.current_thread() in ours:
            slept.append(seconds)
        else:  # another test's client, left running in this process
            time.sleep(seconds)

    monkeypatch.setattr(paho, "time", SimpleNamespace(sleep=sleep))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # bound, never listening: every attempt is refused
        endpoint = BrokerEndpoint.parse(f"mqtt://127.0.0.1:{dead}")
        failures: list[float] = []
        failed = threading.Condition()

        def on_fail(*args: Any) -> None:
            with failed:
                failures.append(time.monotonic())
                failed.notify_all()

        def waiting(count: int) -> None:
            """Until the `count`th attempt failed and the thread waits for the next."""
            with failed:
                assert failed.wait_for(lambda: len(failures) >= count, ANSWER_WAIT_S)
            deadline = time.monotonic() + ANSWER_WAIT_S
            while client._reconnect_delay is None:
                assert time.monotonic() < deadline, "never waited to reconnect"
                threading.Event().wait(0.01)

        client = new_client(endpoint, "leaving", "3.1.1", persistent=False, on_connect_fail=on_fail)
        client.reconnect_delay_set(3600, 3600)
        connect_async(client, endpoint, "3.1.1", keepalive_s=10, session_expiry_s=None)
        assert client._thread is not None
        ours.append(client._thread)
        waiting(1)
        if stop == "disconnect":
            client.disconnect()  # alone: paho's thread ends once it sees it
            thread = client._thread
            assert thread is not None
            thread.join(ANSWER_WAIT_S)
            assert not thread.is_alive(), "paho's thread still waits after the disconnect"
        client.loop_stop()
        assert not client._thread, "paho's thread outlived the stop"
        assert slept == []
        assert len(failures) == 1
        # Started again, it waits its hour again after one more attempt: no retry in a loop.
        client.reconnect_delay_set(3600, 3600)  # forget the wait it was in
        connect_async(client, endpoint, "3.1.1", keepalive_s=10, session_expiry_s=None)
        assert client._thread is not None
        ours.append(client._thread)
        waiting(2)
        threading.Event().wait(0.5)  # a client retrying at once would fail hundreds of times
        assert len(failures) == 2
        client.disconnect()
        client.loop_stop()
