"""The production Mosquitto setup (docs/deploy/mosquitto: config, ACL, password generation), started
natively on private ports: a kiosk's credentials reach its own topics and nothing else, the
service reaches every kiosk, nobody gets in without a password, and no account can connect
under another's client id (the kiosks' listener makes a kiosk's client id its user name; the
service has a listener of its own)."""

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
    port: int  # the kiosks' listener (1883 in the config)
    service_port: int  # the service's listener (1884 in the config)
    log_path: Path
    proc: subprocess.Popen[bytes]
    root: Path
    passwords_env: dict[str, str]  # what make-passwords.sh was run with


def native_config(text: str, port: int, service_port: int, root: Path) -> str:
    """The production config with only the listeners and the container paths changed."""
    for listener, native in ((1883, port), (1884, service_port)):
        line = rf"^listener {listener}$"
        assert len(re.findall(line, text, re.M)) == 1, f"the config's listener {listener} moved"
        text = re.sub(line, f"listener {native} 127.0.0.1", text, flags=re.M)
    text = text.replace("/mosquitto/", f"{root}/")
    # Logs to a file rather than the test's stdout.
    return text.replace("log_dest stdout", f"log_dest file {root}/mosquitto.log")


def make_passwords(root: Path, env: dict[str, str]) -> None:
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwords.sh"), str(root / "auth")],
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
    port, service_port = free_port(), free_port()
    conf = root / "config" / "mosquitto.conf"
    conf.write_text(
        native_config((DEPLOY / "mosquitto.conf").read_text(), port, service_port, root)
    )
    hand_to_mosquitto(root)
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port("127.0.0.1", port)
        wait_for_port("127.0.0.1", service_port)
    except TimeoutError:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"mosquitto did not start: {err.decode()}") from None
    try:
        yield Broker("127.0.0.1", port, service_port, root / "mosquitto.log", proc, root, env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def service(
    b: Broker, protocol: mqtt.MQTTProtocolVersion = V311, client_id: str | None = None
) -> Probe:
    return Probe(
        b.host,
        b.service_port,
        username="locker-service",
        password=SERVICE_PASSWORD,
        protocol=protocol,
        client_id=client_id or f"locker-service-t{uuid.uuid4().hex[:8]}",
    ).connect()


def kiosk(
    b: Broker,
    kiosk_id: str,
    protocol: mqtt.MQTTProtocolVersion = V311,
    client_id: str | None = None,
) -> Probe:
    return Probe(
        b.host,
        b.port,
        username=kiosk_id,
        password=KIOSKS[kiosk_id],
        protocol=protocol,
        client_id=client_id or f"locker-bridge-{kiosk_id}",
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


def test_password_files_hold_no_plain_password_and_each_listener_its_own_accounts(
    broker: Broker,
) -> None:
    auth = broker.log_path.parent / "auth"
    service_text = (auth / "passwd-service").read_text()
    kiosks_text = (auth / "passwd-kiosks").read_text()
    assert [line.split(":")[0] for line in service_text.splitlines()] == ["locker-service"]
    assert sorted(line.split(":")[0] for line in kiosks_text.splitlines()) == sorted(KIOSKS)
    assert service_text.startswith("locker-service:$7$")
    for secret in (SERVICE_PASSWORD, *KIOSKS.values()):
        assert secret not in service_text + kiosks_text


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
        ["sh", str(DEPLOY / "make-passwords.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 2
    assert "kiosk 'kiosk-b' has no password" in made.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_kiosk_added_to_a_running_broker_gets_in_after_sighup(broker: Broker) -> None:
    """docs/deploy/README.md, "Adding a kiosk": rewrite the password file, then SIGHUP."""
    new_password = "c-" + uuid.uuid4().hex

    def kiosk_c() -> Probe:
        return Probe(
            broker.host,
            broker.port,
            username="kiosk-c",
            password=new_password,
            client_id="locker-bridge-kiosk-c",
        ).connect()

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
        ["sh", str(DEPLOY / "make-passwords.sh"), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    # Mosquitto 2's entry: user:$7$iterations$salt$PBKDF2-SHA512 (base64).
    line = next(
        entry
        for entry in (tmp_path / "passwd-kiosks").read_text().splitlines()
        if entry[:8] == "kiosk-a:"
    )
    _, kind, iterations, salt, digest = line.split(":", 1)[1].split("$")
    assert kind == "7"
    expected = hashlib.pbkdf2_hmac("sha512", b"pw-*", base64.b64decode(salt), int(iterations))
    assert base64.b64encode(expected).decode() == digest, "the password is not 'pw-*' as written"


@pytest.mark.parametrize("kiosk_id", ["locker-service-r1", "locker-bridge-x", "locker-service"])
def test_make_passwords_refuses_a_kiosk_id_that_is_a_service_or_bridge_client_id(
    tmp_path: Path, kiosk_id: str
) -> None:
    """On the kiosks' listener a kiosk's user name is its client id: a kiosk called
    locker-service-r1 could take over the session of service replica r1."""
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        unavailable("mosquitto_passwd is needed (apt-get install -y mosquitto)")
    env = {
        **os.environ,
        "LOCKER_MQTT_PASSWORD": "x",
        "KIOSK_CREDENTIALS": f"kiosk-a:pw {kiosk_id}:pw",
        "MOSQUITTO_PASSWD": str(passwd),
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwords.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 2, made.stdout
    assert f"kiosk id '{kiosk_id}'" in made.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("victim", ["kiosk-b", "locker-service-r1", "locker-service-r1-replies"])
@pytest.mark.parametrize("protocol", [V311, V5])
def test_kiosk_cannot_connect_as_another_kiosk_or_the_service(
    broker: Broker, victim: str, protocol: mqtt.MQTTProtocolVersion
) -> None:
    """The finding: kiosk A's account connecting with kiosk B's (or the service's) client id
    dropped B, again and again. Now A's client id is its user name whatever it sends, so B's
    connection and session are untouched."""
    if victim == "kiosk-b":
        owner = kiosk(broker, "kiosk-b")
        topic = "lockers/v1/kiosk-b/cmd"
        taken_ids = ["locker-bridge-kiosk-b", "kiosk-b"]  # what B sends, and what B is known as
    else:
        owner = service(broker, client_id=victim)
        topic = "lockers/v1/kiosk-a/events"
        taken_ids = [victim]
    sender = service(broker)
    try:
        assert owner.subscribe(topic)[0].value == 1
        for taken_id in taken_ids:
            for _ in range(3):  # reconnecting, as the probe that found it did
                intruder = kiosk(broker, "kiosk-a", protocol=protocol, client_id=taken_id)
                intruder.close()
        sender.publish(topic, b'{"still": "there"}')
        assert owner.expect().payload == b'{"still": "there"}'
        assert owner.disconnects == 0, f"{victim} was dropped"
        log = broker.log_path.read_text()
        for taken_id in taken_ids:  # kiosk-a never got on as anyone but itself
            assert not re.search(rf"as {re.escape(taken_id)} \([^)]*u'kiosk-a'\)", log)
        assert re.search(r"as kiosk-a \([^)]*u'kiosk-a'\)", log)
    finally:
        owner.close()
        sender.close()


def test_a_kiosk_is_known_by_its_user_name_whatever_client_id_it_sends(broker: Broker) -> None:
    a = kiosk(broker, "kiosk-a", client_id="locker-bridge-kiosk-b")
    try:
        assert a.accepted
        log = broker.log_path.read_text()
        assert re.search(r"New client connected from \S+ as kiosk-a \(", log), log[-2000:]
    finally:
        a.close()


@pytest.mark.parametrize("who", ["kiosk on the service's listener", "service on the kiosks'"])
def test_each_listener_knows_its_own_accounts_only(broker: Broker, who: str) -> None:
    if who.startswith("kiosk"):
        probe = Probe(
            broker.host,
            broker.service_port,
            username="kiosk-a",
            password=KIOSKS["kiosk-a"],
            client_id="locker-service-r1",
        )
    else:
        probe = Probe(
            broker.host,
            broker.port,
            username="locker-service",
            password=SERVICE_PASSWORD,
            client_id="locker-service-r1",
        )
    try:
        probe.connect()
        assert not probe.accepted
    finally:
        probe.close()
