"""The production Mosquitto setup (docs/deploy/mosquitto: config, ACL, password generation), started
natively on a private port: a kiosk's credentials reach its own topics and nothing else, the
service reaches every kiosk, and nobody gets in without a password."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import unavailable
from tests.stack.mqtt_probe import Probe, wait_until
from tests.support.mosquitto import MOSQUITTO, free_port, wait_for_port

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "mosquitto"
SERVICE_PASSWORD = "service-" + uuid.uuid4().hex
KIOSKS = {"kiosk-a": "a-" + uuid.uuid4().hex, "kiosk-b": "b-" + uuid.uuid4().hex}
V5 = mqtt.MQTTProtocolVersion.MQTTv5
V311 = mqtt.MQTTProtocolVersion.MQTTv311
NOT_AUTHORIZED = 0x87


@dataclass
class Broker:
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    root: Path
    passwords_env: dict[str, str]  # what make-passwords.sh was run with


def native_config(text: str, port: int, root: Path) -> str:
    """The production config with only the listener and the container paths changed."""
    assert re.search(r"^listener 1883$", text, re.M), "the config's listener line moved"
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = text.replace("/mosquitto/", f"{root}/")
    # Logs to a file rather than the test's stdout.
    return text.replace("log_dest stdout", f"log_dest file {root}/mosquitto.log")


def make_passwords(root: Path, env: dict[str, str]) -> None:
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwords.sh"), str(root / "auth" / "passwd")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr


def hand_to_mosquitto(root: Path) -> None:
    if os.geteuid() == 0:
        # Started as root, mosquitto drops to its own user, as in its container: hand it the files
        # as the compose setup does (PASSWORD_FILE_OWNER there).
        for path in [root, *root.rglob("*")]:
            shutil.chown(path, "mosquitto", "mosquitto")


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd")
    if not os.path.exists(MOSQUITTO) or passwd is None:
        unavailable("mosquitto and mosquitto_passwd are needed (apt-get install -y mosquitto)")
    root = Path(tempfile.mkdtemp(prefix="mosquitto-acl-"))
    for sub in ("auth", "config", "data"):
        (root / sub).mkdir()
    shutil.copy(DEPLOY / "acl", root / "config" / "acl")
    env = {
        **os.environ,
        "LOCKER_MQTT_PASSWORD": SERVICE_PASSWORD,
        "KIOSK_CREDENTIALS": " ".join(f"{k}:{p}" for k, p in KIOSKS.items()),
        "MOSQUITTO_PASSWD": passwd,
    }
    make_passwords(root, env)
    port = free_port()
    conf = root / "config" / "mosquitto.conf"
    conf.write_text(native_config((DEPLOY / "mosquitto.conf").read_text(), port, root))
    hand_to_mosquitto(root)
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"mosquitto did not start: {err.decode()}") from None
    try:
        yield Broker("127.0.0.1", port, root / "mosquitto.log", proc, root, env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def service(b: Broker, protocol: mqtt.MQTTProtocolVersion = V311) -> Probe:
    return Probe(
        b.host, b.port, username="locker-service", password=SERVICE_PASSWORD, protocol=protocol
    ).connect()


def kiosk(b: Broker, kiosk_id: str, protocol: mqtt.MQTTProtocolVersion = V311) -> Probe:
    return Probe(
        b.host, b.port, username=kiosk_id, password=KIOSKS[kiosk_id], protocol=protocol
    ).connect()


def test_kiosk_publishes_its_own_events_and_the_service_receives_them(broker: Broker) -> None:
    svc, a = service(broker), kiosk(broker, "kiosk-a")
    try:
        svc.subscribe("lockers/v1/+/events")
        a.publish("lockers/v1/kiosk-a/events", b'{"own": true}')
        msg = svc.expect()
        assert (msg.topic, msg.payload) == ("lockers/v1/kiosk-a/events", b'{"own": true}')
    finally:
        svc.close()
        a.close()


@pytest.mark.parametrize("leaf", ["events", "status", "compartments/3/state", "cmd"])
def test_kiosk_cannot_publish_to_another_kiosks_topics(broker: Broker, leaf: str) -> None:
    svc, a = service(broker), kiosk(broker, "kiosk-a")
    try:
        svc.subscribe("lockers/v1/#")
        a.publish(f"lockers/v1/kiosk-b/{leaf}", b'{"forged": true}')
        # Its own publish right after, as a marker: whatever arrives first is what got through.
        a.publish("lockers/v1/kiosk-a/events", b'{"marker": true}')
        msg = svc.expect()
        assert msg.topic == "lockers/v1/kiosk-a/events", f"forged message got through: {msg.topic}"
        assert svc.nothing_within(0.5)
    finally:
        svc.close()
        a.close()


def test_mqtt5_kiosk_is_told_its_publish_is_not_authorized(broker: Broker) -> None:
    a = kiosk(broker, "kiosk-a", protocol=V5)
    acks: list[int] = []
    a.client.on_publish = lambda _c, _u, _mid, rc, _p: acks.append(rc.value)
    try:
        a.publish("lockers/v1/kiosk-b/events", b"{}")
        a.publish("lockers/v1/kiosk-a/events", b"{}")
        # 0x10 "no matching subscribers" is a success code too.
        assert acks[0] == NOT_AUTHORIZED and acks[1] < 0x80, acks
    finally:
        a.close()


def test_kiosk_cannot_read_another_kiosks_commands(broker: Broker) -> None:
    svc, a, b = service(broker), kiosk(broker, "kiosk-a"), kiosk(broker, "kiosk-b")
    try:
        # Mosquitto 2 grants these subscriptions and checks read access per delivered message.
        a.subscribe("lockers/v1/kiosk-b/cmd")
        a.subscribe("lockers/v1/+/cmd")
        assert b.subscribe("lockers/v1/kiosk-b/cmd")[0].value == 1
        svc.publish("lockers/v1/kiosk-b/cmd", b'{"action": "unlock"}')
        assert b.expect().payload == b'{"action": "unlock"}'
        assert a.nothing_within(1.0)
    finally:
        for probe in (svc, a, b):
            probe.close()


def test_service_commands_a_kiosk_and_reads_its_reply(broker: Broker) -> None:
    svc, a = service(broker), kiosk(broker, "kiosk-a")
    try:
        a.subscribe("lockers/v1/kiosk-a/cmd")
        svc.subscribe("lockers/v1/kiosk-a/replies/#")
        svc.publish("lockers/v1/kiosk-a/cmd", b'{"request_id": "r1"}')
        assert a.expect().payload == b'{"request_id": "r1"}'
        a.publish("lockers/v1/kiosk-a/replies/replica-1", b'{"request_id": "r1"}')
        assert svc.expect().topic == "lockers/v1/kiosk-a/replies/replica-1"
    finally:
        svc.close()
        a.close()


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("kiosk-a", "wrong"), ("kiosk-a", KIOSKS["kiosk-b"]), ("nobody", "x")],
    # Fixed ids: the passwords are random per process, and pytest-xdist's workers must collect
    # the same test names.
    ids=["anonymous", "wrong-password", "another-kiosks-password", "unknown-user"],
)
def test_connection_without_valid_credentials_is_refused(
    broker: Broker, username: str | None, password: str | None
) -> None:
    probe = Probe(broker.host, broker.port, username=username, password=password)
    try:
        probe.connect()
        assert not probe.accepted
    finally:
        probe.close()


def test_password_file_holds_no_plain_password(broker: Broker) -> None:
    text = (broker.log_path.parent / "auth" / "passwd").read_text()
    assert "locker-service:$7$" in text
    for secret in (SERVICE_PASSWORD, *KIOSKS.values()):
        assert secret not in text


def test_make_passwords_refuses_a_kiosk_without_password(tmp_path: Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        unavailable("mosquitto_passwd is needed (apt-get install -y mosquitto)")
    env = {
        **os.environ,
        "LOCKER_MQTT_PASSWORD": "x",
        "KIOSK_CREDENTIALS": "kiosk-a:pw kiosk-b",
        "MOSQUITTO_PASSWD": str(passwd),
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwords.sh"), str(tmp_path / "passwd")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 2
    assert "kiosk 'kiosk-b' has no password" in made.stderr
    assert not (tmp_path / "passwd").exists()


def test_a_kiosk_added_to_a_running_broker_gets_in_after_sighup(broker: Broker) -> None:
    """docs/deploy/README.md, "Adding a kiosk": rewrite the password file, then SIGHUP."""
    new_password = "c-" + uuid.uuid4().hex

    def kiosk_c() -> Probe:
        return Probe(broker.host, broker.port, username="kiosk-c", password=new_password).connect()

    before = kiosk_c()
    before.close()
    assert not before.accepted  # not known yet
    credentials = broker.passwords_env["KIOSK_CREDENTIALS"] + f" kiosk-c:{new_password}"
    make_passwords(broker.root, {**broker.passwords_env, "KIOSK_CREDENTIALS": credentials})
    hand_to_mosquitto(broker.root)
    broker.proc.send_signal(signal.SIGHUP)

    def admitted() -> bool:
        probe = kiosk_c()
        probe.close()
        return probe.accepted

    assert wait_until(admitted), "kiosk-c still refused after the reload"
    c, a = kiosk_c(), kiosk(broker, "kiosk-a")  # the kiosks already there keep their accounts
    try:
        assert a.accepted
        c.subscribe("lockers/v1/kiosk-c/cmd")  # and the ACL pattern covers the new kiosk too
        svc = service(broker)
        try:
            svc.publish("lockers/v1/kiosk-c/cmd", b'{"new": true}')
        finally:
            svc.close()
        assert c.expect().payload == b'{"new": true}'
    finally:
        c.close()
        a.close()


def test_make_passwords_keeps_a_password_that_looks_like_a_file_pattern(tmp_path: Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        unavailable("mosquitto_passwd is needed (apt-get install -y mosquitto)")
    (tmp_path / "kiosk-a:pw-matches-a-file").write_text("")  # what kiosk-a:pw-* would expand to
    env = {
        **os.environ,
        "LOCKER_MQTT_PASSWORD": "x",
        "KIOSK_CREDENTIALS": "kiosk-a:pw-*",
        "MOSQUITTO_PASSWD": str(passwd),
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwords.sh"), str(tmp_path / "passwd")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    # Mosquitto 2's entry: user:$7$iterations$salt$PBKDF2-SHA512 (base64).
    line = next(
        entry for entry in (tmp_path / "passwd").read_text().splitlines() if entry[:8] == "kiosk-a:"
    )
    _, kind, iterations, salt, digest = line.split(":", 1)[1].split("$")
    assert kind == "7"
    expected = hashlib.pbkdf2_hmac("sha512", b"pw-*", base64.b64decode(salt), int(iterations))
    assert base64.b64encode(expected).decode() == digest, "the password is not 'pw-*' as written"
