"""The embedded broker's rules, pure: the ACL is the shipped Mosquitto ACL and is read as Mosquitto
reads it, subscriptions are granted only within what an account may read, each account has its
own client ids, and password hashes are Mosquitto's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from locker_service.stack.broker_auth import (
    EMBEDDED_ACL,
    Access,
    AclSyntaxError,
    Grant,
    client_id_allowed,
    connect_refusal,
    filter_within,
    hash_password,
    parse_acl,
    parse_password_file,
    password_file_text,
    verify_password,
)
from tests.conftest import unavailable

SHIPPED_ACL = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "mosquitto" / "acl"


def test_embedded_acl_grants_exactly_what_the_shipped_mosquitto_acl_grants() -> None:
    assert parse_acl(EMBEDDED_ACL) == parse_acl(SHIPPED_ACL.read_text())


def test_acl_is_read_as_mosquitto_reads_it() -> None:
    acl = parse_acl(EMBEDDED_ACL)
    assert acl.by_user == {
        "locker-service": (
            Grant(Access.READWRITE, "lockers/v1/#"),
            Grant(Access.READ, "$SYS/#"),
        )
    }
    assert acl.patterns == (Grant(Access.READWRITE, "lockers/v1/%u/#"),)
    assert parse_acl("user a\ntopic x/#\n").by_user["a"] == (Grant(Access.READWRITE, "x/#"),)


@pytest.mark.parametrize("text", ["user\n", "topic x/#\n", "user a\nallow x\n", "pattern read\n"])
def test_acl_lines_mosquitto_would_not_take_are_refused(text: str) -> None:
    with pytest.raises(AclSyntaxError):
        parse_acl(text)


@pytest.mark.parametrize(
    ("user", "topic", "access", "allowed"),
    [
        ("kiosk-a", "lockers/v1/kiosk-a/events", Access.WRITE, True),
        ("kiosk-a", "lockers/v1/kiosk-a/cmd", Access.READ, True),
        ("kiosk-a", "lockers/v1/kiosk-a/replies/r1", Access.WRITE, True),
        ("kiosk-a", "lockers/v1/kiosk-b/cmd", Access.WRITE, False),
        ("kiosk-a", "lockers/v1/kiosk-b/cmd", Access.READ, False),
        ("kiosk-a", "$SYS/broker/uptime", Access.READ, False),
        ("locker-service", "lockers/v1/kiosk-b/cmd", Access.WRITE, True),
        ("locker-service", "$SYS/broker/uptime", Access.READ, True),
        ("locker-service", "$SYS/broker/uptime", Access.WRITE, False),
        ("locker-service", "other/topic", Access.WRITE, False),
        # A user name that is not one topic level gets no pattern grant.
        ("kiosk-a/../kiosk-b", "lockers/v1/kiosk-a/../kiosk-b/cmd", Access.READ, False),
        ("+", "lockers/v1/kiosk-b/cmd", Access.READ, False),
        ("#", "lockers/v1/kiosk-b/cmd", Access.READ, False),
    ],
)
def test_topic_access(user: str, topic: str, access: Access, allowed: bool) -> None:
    assert parse_acl(EMBEDDED_ACL).may_use_topic(user, topic, access) is allowed


@pytest.mark.parametrize(
    ("asked", "granted", "within"),
    [
        ("lockers/v1/a/cmd", "lockers/v1/a/#", True),
        ("lockers/v1/a/#", "lockers/v1/a/#", True),
        ("lockers/v1/a", "lockers/v1/a/#", True),
        ("lockers/v1/a/+/state", "lockers/v1/a/#", True),
        ("lockers/v1/+/cmd", "lockers/v1/a/#", False),
        ("lockers/v1/#", "lockers/v1/a/#", False),
        ("#", "lockers/v1/a/#", False),
        ("lockers/v1/b/cmd", "lockers/v1/a/#", False),
        ("lockers/v1/+/replies/r1", "lockers/v1/#", True),
        ("lockers/+/x", "lockers/v1/#", False),
        ("a/b", "a/+", True),
        ("a/+", "a/+", True),
        ("a/#", "a/+", False),
        ("a/b/c", "a/+", False),
        ("$SYS/broker/uptime", "$SYS/#", True),
        ("+/broker/uptime", "$SYS/#", False),
        ("#", "#", True),
        ("$SYS/x", "#", False),
    ],
)
def test_filter_within(asked: str, granted: str, within: bool) -> None:
    assert filter_within(asked, granted) is within


def test_subscriptions_are_granted_within_an_accounts_reach_only() -> None:
    acl = parse_acl(EMBEDDED_ACL)
    assert acl.may_subscribe("kiosk-a", "lockers/v1/kiosk-a/cmd")
    for topic_filter in ("#", "lockers/v1/#", "lockers/v1/+/cmd", "lockers/v1/kiosk-b/cmd"):
        assert not acl.may_subscribe("kiosk-a", topic_filter), topic_filter
    assert acl.may_subscribe("locker-service", "lockers/v1/+/events")
    assert acl.may_subscribe("locker-service", "$SYS/#")
    assert not acl.may_subscribe("locker-service", "#")


@pytest.mark.parametrize(
    ("user", "client_id", "allowed"),
    [
        ("locker-service", "locker-service-r1", True),
        ("locker-service", "locker-service-r1-replies", True),
        ("locker-service", "locker-service-", False),
        ("locker-service", "locker-bridge-kiosk-a", False),
        ("kiosk-a", "locker-bridge-kiosk-a", True),
        ("kiosk-a", "locker-bridge-kiosk-b", False),
        ("kiosk-a", "locker-service-r1", False),
        ("kiosk-a", "kiosk-a", False),
        ("kiosk-a", "", False),
    ],
)
def test_client_ids_belong_to_accounts(user: str, client_id: str, allowed: bool) -> None:
    assert client_id_allowed(user, client_id) is allowed


def test_password_hash_round_trip_and_a_wrong_password() -> None:
    encoded = hash_password("s3cret")
    assert encoded.startswith("$7$101$")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert not verify_password("s3cret", "$6$not$ours")
    assert not verify_password("s3cret", "garbage")
    assert hash_password("s3cret") != encoded  # a fresh salt each time


def test_hashes_from_mosquitto_passwd_verify(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        unavailable("mosquitto_passwd is needed (apt-get install -y mosquitto)")
    path = tmp_path / "passwd"
    path.write_text("")
    subprocess.run([tool, "-b", str(path), "kiosk-a", "pw-a"], check=True)
    accounts = parse_password_file(path.read_text())
    assert verify_password("pw-a", accounts["kiosk-a"])
    assert not verify_password("pw-b", accounts["kiosk-a"])


def test_password_file_round_trip_and_bad_lines() -> None:
    hashes = {"locker-service": hash_password("a"), "kiosk-a": hash_password("b")}
    assert parse_password_file("# made by lockerctl up\n\n" + password_file_text(hashes)) == hashes
    with pytest.raises(ValueError, match="line 1"):
        parse_password_file("no-colon-here\n")


def test_connect_refusals_say_why() -> None:
    acl = parse_acl(EMBEDDED_ACL)
    accounts = {"kiosk-a": hash_password("pw-a")}

    def refusal(**kw: object) -> str | None:
        values: dict[str, object] = {
            "username": "kiosk-a",
            "password": "pw-a",
            "client_id": "locker-bridge-kiosk-a",
            "will_topic": "lockers/v1/kiosk-a/status",
            **kw,
        }
        found = connect_refusal(accounts, acl, **values)  # type: ignore[arg-type]
        return None if found is None else f"{found.connack_code} {found.reason}"

    assert refusal() is None
    assert refusal(username=None, password=None) == (
        "5 no user name (anonymous clients are refused)"
    )
    assert refusal(password="pw-b") == "4 bad user name or password (kiosk-a)"
    assert refusal(username="kiosk-b") == "4 bad user name or password (kiosk-b)"
    assert refusal(client_id="locker-bridge-kiosk-b") == (
        "5 account kiosk-a may not use client id 'locker-bridge-kiosk-b'"
    )
    assert refusal(will_topic="lockers/v1/kiosk-b/cmd") == (
        "5 account kiosk-a may not publish its will to lockers/v1/kiosk-b/cmd"
    )
