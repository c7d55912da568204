"""The MQTT side under both protocol versions, with passwords, and over TLS with a CA of our own."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.firmware_bridge.conftest import TIME_SCALE
from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    pulses,
    running_bridge,
    simulator,
    wait_ready,
)
from tests.support.embedded_broker import EmbeddedBrokerProcess
from tests.support.mosquitto import MosquittoProcess, free_port

pytestmark = pytest.mark.slow  # bridge processes and broker restarts


def round_trip(broker_url: str, observer: Observer, tmp_path: Path, **extra: object) -> str:
    """Bring a kiosk up against the broker, carry one unlock through it; the protocol used."""
    kiosk_id = observer.topics.kiosk_id
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        settings = bridge_settings(
            kiosk_id, broker_url, board, scanner, tmp_path / "data", TIME_SCALE, **extra
        )
        with running_bridge(settings) as bridge:
            wait_ready(observer, bridge)
            observer.wait(
                lambda: (
                    observer.on(observer.topics.status)
                    and observer.on(observer.topics.status)[-1]["board_online"]
                ),
                "online status",
            )
            reply = observer.final_reply(observer.command("unlock", 2).request_id)
            assert reply["status"] == "succeeded" and pulses(sim, 2) == 1
            sim.world.scan("hello")
            assert observer.wait_event("scan")[0]["data"]["text"] == "hello"
            return bridge.link.protocol


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_both_protocol_versions(
    version: str, private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    obs = Observer(private_mosquitto.host, private_mosquitto.port, new_kiosk_id()).start()
    try:
        round_trip(private_mosquitto.url, obs, tmp_path, mqtt_version=version)
    finally:
        obs.stop()
    private_mosquitto.stop()  # flushes its log
    # Mosquitto logs "New client connected ... as <id> (p5, c0, ...)": p2 is 3.1.1, p5 is 5;
    # c0 is the persistent session the bridge asks for.
    protocol = "p5" if version == "5" else "p2"
    connects = [
        line
        for line in private_mosquitto.log.splitlines()
        if f"as locker-bridge-{obs.topics.kiosk_id} (" in line
    ]
    assert connects and all(f"({protocol}, c0," in line for line in connects), connects


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[MosquittoProcess, Path]]:
    """Mosquitto over TLS only, with a password file; its certificate is signed by a test CA."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        unavailable("openssl and mosquitto_passwd are needed for the TLS test")
    pki = tmp_path / "pki"
    pki.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *key, "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/CN=locker test CA")  # fmt: skip
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (pki / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip
    passwords = pki / "passwd"
    passwords.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "kiosk", "s3cret-kiosk"], check=True)
    port = free_port()
    broker = MosquittoProcess(
        port=free_port(),  # a plain listener the base config insists on; unused below
        extra_config=(
            f"listener {port} 127.0.0.1\n"
            f"cafile {pki / 'ca.pem'}\n"
            f"certfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
            f"password_file {passwords}\n"
            "allow_anonymous false\n"  # global: the last word for every listener
        ),
    )
    try:
        broker.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    broker.tls_port = port  # type: ignore[attr-defined]
    try:
        yield broker, pki / "ca.pem"
    finally:
        broker.__exit__(None, None, None)


def test_tls_with_our_own_ca_and_a_password(
    secured_broker: tuple[MosquittoProcess, Path], tmp_path: Path
) -> None:
    broker, ca = secured_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    obs = Observer(
        "127.0.0.1", port, new_kiosk_id(), username="kiosk", password="s3cret-kiosk", ca=str(ca)
    ).start()
    try:
        round_trip(
            f"mqtts://kiosk:s3cret-kiosk@127.0.0.1:{port}",
            obs,
            tmp_path,
            tls_ca=ca,
        )
    finally:
        obs.stop()


def test_a_wrong_password_keeps_the_bridge_out_without_crashing(
    secured_broker: tuple[MosquittoProcess, Path], tmp_path: Path
) -> None:
    broker, ca = secured_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        settings = bridge_settings(
            kiosk_id,
            f"mqtts://127.0.0.1:{port}",
            board,
            scanner,
            tmp_path / "data",
            TIME_SCALE,
            tls_ca=ca,
            username="kiosk",
            password="wrong",
        )
        with running_bridge(settings) as bridge:
            assert bridge.scanner is not None
            deadline = time.monotonic() + 10
            while not (bridge.scanner.transport.is_open and bridge.info.online):
                assert time.monotonic() < deadline, "bridge never opened its ports"
                time.sleep(0.05)
            sim.world.scan("while refused")
            time.sleep(3.0)  # several reconnect attempts
            assert not bridge.link.connected.is_set()
            assert bridge.info.online  # the board side carries on regardless
            stored_by = time.monotonic() + 30
            while bridge.store.event_count() != 1:  # the scan waits on disk
                assert time.monotonic() < stored_by, "the scan was never stored"
                time.sleep(0.05)
            assert not bridge.link.connected.is_set()  # and the broker still refuses it


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBrokerProcess]:
    """The amqtt broker `lockerctl up` embeds, as it starts it: it speaks MQTT 3.1.1 only."""
    with EmbeddedBrokerProcess(tmp_path / "up", kiosks=1) as broker:
        yield broker


def test_auto_falls_back_to_311_for_a_broker_without_mqtt5(
    embedded_broker: EmbeddedBrokerProcess, tmp_path: Path
) -> None:
    service, kiosk = embedded_broker.service(), embedded_broker.kiosk("demo-1")
    obs = Observer(
        embedded_broker.host,
        embedded_broker.port,
        "demo-1",
        username=service.username,
        password=service.password,
        client_id=service.client_id,
        reply_to="lockers/v1/demo-1/replies/observer",
    ).start()
    try:
        protocol = round_trip(
            embedded_broker.url,
            obs,
            tmp_path,
            mqtt_version="auto",
            username=kiosk.username,
            password=kiosk.password,
        )
        assert protocol == "3.1.1"
    finally:
        obs.stop()
