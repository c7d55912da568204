"""Who may connect to the embedded MQTT broker, under which client id, and use which topics.

Pure rules, no I/O: the accounts (user name -> password hash), the ACL, and the client id each
account may take. The embedded broker (broker.py) asks them on every CONNECT, SUBSCRIBE, PUBLISH
and delivery.

The ACL is the production Mosquitto ACL (docs/deploy/mosquitto/acl) in Mosquitto's own file
format, evaluated the way Mosquitto does (`user`/`topic`/`pattern` lines, `%u` for the user
name), so the two cannot drift: tests/stack/test_broker_auth.py reads the shipped file and
checks that it grants exactly what `EMBEDDED_ACL` grants.

Password hashes use Mosquitto's `$7$` format (PBKDF2-SHA512), so the embedded broker's password
file is a valid Mosquitto password file too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Flag
from typing import Final

from paho.mqtt.client import topic_matches_sub

TOPIC_ROOT: Final = "lockers/v1"
SERVICE_ACCOUNT: Final = "locker-service"
SERVICE_CLIENT_ID_PREFIX: Final = "locker-service-"  # kiosk_link/connection.py: <replica>[-replies]
BRIDGE_CLIENT_ID_PREFIX: Final = "locker-bridge-"  # firmware_bridge/mqtt.py: locker-bridge-<kiosk>

# Mosquitto's own default for `$7$` hashes. The secrets `lockerctl up` makes are 256-bit random
# tokens: no guess list reaches them, so a higher work factor would only slow every CONNECT.
PBKDF2_ITERATIONS: Final = 101
PBKDF2_SALT_BYTES: Final = 12  # as mosquitto_passwd

# The production ACL, docs/deploy/mosquitto/acl, rule lines only (its comments say why).
EMBEDDED_ACL: Final = """\
user locker-service
topic readwrite lockers/v1/#
topic read $SYS/#

pattern readwrite lockers/v1/%u/#
"""

# MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
CONNACK_BAD_USERNAME_OR_PASSWORD: Final = 4
CONNACK_NOT_AUTHORIZED: Final = 5


class Access(Flag):
    READ = 1  # subscribe and receive
    WRITE = 2  # publish (and a last will)
    READWRITE = READ | WRITE


_ACCESS_WORDS: Final = {"read": Access.READ, "write": Access.WRITE, "readwrite": Access.READWRITE}


class AclSyntaxError(ValueError):
    """A line of an ACL file that Mosquitto would not take either."""


@dataclass(frozen=True)
class Grant:
    access: Access
    topic_filter: str


@dataclass(frozen=True)
class Acl:
    """A Mosquitto ACL: grants per user, and patterns that apply to every user."""

    by_user: dict[str, tuple[Grant, ...]]
    patterns: tuple[Grant, ...]

    def grants_for(self, username: str) -> tuple[Grant, ...]:
        """What `username` may use: its own lines, then the patterns with `%u` filled in.

        Like Mosquitto, a user name that is not a single topic level gets no pattern grant: it
        would otherwise widen `lockers/v1/%u/#` to other kiosks' topics.
        """
        own = self.by_user.get(username, ())
        if not username or any(c in username for c in "/+#"):
            return own
        return own + tuple(
            Grant(g.access, g.topic_filter.replace("%u", username)) for g in self.patterns
        )

    def may_use_topic(self, username: str, topic: str, access: Access) -> bool:
        """May `username` publish (WRITE) to or receive (READ) a message on `topic`?"""
        return any(
            access in g.access and topic_matches_sub(g.topic_filter, topic)
            for g in self.grants_for(username)
        )

    def may_subscribe(self, username: str, topic_filter: str) -> bool:
        """A subscription is granted only if everything it can match is readable.

        Stricter than Mosquitto 2, which grants any subscription and then withholds each message
        the user may not read: here `#` or another kiosk's topics are refused at SUBSCRIBE, and
        deliveries are checked as well (`may_use_topic`).
        """
        return any(
            Access.READ in g.access and filter_within(topic_filter, g.topic_filter)
            for g in self.grants_for(username)
        )


def parse_acl(text: str) -> Acl:
    """Mosquitto's acl_file format: `user NAME`, `topic [ACCESS] FILTER`, `pattern [ACCESS]
    FILTER` (ACCESS read, write or readwrite; readwrite when left out), `#` comments."""
    by_user: dict[str, list[Grant]] = {}
    patterns: list[Grant] = []
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if keyword == "user":
            if not rest:
                raise AclSyntaxError(f"line {number}: 'user' without a name")
            user = rest
            continue
        if keyword not in ("topic", "pattern"):
            raise AclSyntaxError(f"line {number}: unknown keyword {keyword!r}")
        word, _, topic_filter = rest.partition(" ")
        if word in _ACCESS_WORDS:
            access, topic_filter = _ACCESS_WORDS[word], topic_filter.strip()
        else:
            access, topic_filter = Access.READWRITE, rest
        if not topic_filter or " " in topic_filter:
            raise AclSyntaxError(f"line {number}: expected '{keyword} [ACCESS] FILTER'")
        grant = Grant(access, topic_filter)
        if keyword == "pattern":
            patterns.append(grant)
        elif user is None:
            raise AclSyntaxError(f"line {number}: anonymous 'topic' lines are not used here")
        else:
            by_user.setdefault(user, []).append(grant)
    return Acl({u: tuple(g) for u, g in by_user.items()}, tuple(patterns))


def filter_within(topic_filter: str, granted: str) -> bool:
    """Does every topic that `topic_filter` matches also match `granted`?"""
    asked, allowed = topic_filter.split("/"), granted.split("/")
    if asked[0].startswith("$") != allowed[0].startswith("$"):
        return False  # wildcards never match $-topics, nor plain topics a $-filter
    for i, level in enumerate(allowed):
        if level == "#":
            return True  # `a/#` also matches `a` itself
        if i >= len(asked) or asked[i] == "#":
            return False
        if level != "+" and asked[i] != level:
            return False  # includes asked '+' against a fixed level: '+' matches more
    return len(asked) == len(allowed)


def client_id_allowed(username: str, client_id: str) -> bool:
    """The client ids an account may take: the service's connections are
    `locker-service-<replica>` and `locker-service-<replica>-replies` (any number of replicas),
    a kiosk's bridge is `locker-bridge-<kiosk>` and nothing else. So no account can take over
    another's session or drop its connection by connecting under its client id."""
    if username == SERVICE_ACCOUNT:
        return client_id.startswith(SERVICE_CLIENT_ID_PREFIX) and len(client_id) > len(
            SERVICE_CLIENT_ID_PREFIX
        )
    return client_id == BRIDGE_CLIENT_ID_PREFIX + username


def hash_password(secret: str, *, salt: bytes | None = None) -> str:
    """Mosquitto's `$7$<iterations>$<salt>$<PBKDF2-SHA512>` entry for `secret`."""
    salt = salt if salt is not None else secrets.token_bytes(PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(secret: str, encoded: str) -> bool:
    try:
        empty, kind, iterations, salt, digest = encoded.split("$")
        if empty or kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha512", secret.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:  # binascii.Error is a ValueError
        return False
    return hmac.compare_digest(actual, expected)


def parse_password_file(text: str) -> dict[str, str]:
    """`user:hash` lines (Mosquitto's password file) -> {user: hash}; comments and blanks
    skipped, a line without `:` refused."""
    accounts: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded:
            raise ValueError(f"password file line {number} is not 'user:hash'")
        accounts[user] = encoded
    return accounts


def password_file_text(hashes: dict[str, str]) -> str:
    return "".join(f"{user}:{encoded}\n" for user, encoded in hashes.items())


@dataclass(frozen=True)
class Refusal:
    connack_code: int
    reason: str


def connect_refusal(
    accounts: dict[str, str],
    acl: Acl,
    *,
    username: str | None,
    password: str | None,
    client_id: str,
    will_topic: str | None,
) -> Refusal | None:
    """Why a CONNECT is refused, or None to accept it. Checked before the broker looks at any
    session, so a refused client cannot disturb the one it pretends to be."""
    if not username:
        return Refusal(CONNACK_NOT_AUTHORIZED, "no user name (anonymous clients are refused)")
    encoded = accounts.get(username)
    if encoded is None or not verify_password(password or "", encoded):
        return Refusal(CONNACK_BAD_USERNAME_OR_PASSWORD, f"bad user name or password ({username})")
    if not client_id_allowed(username, client_id):
        return Refusal(
            CONNACK_NOT_AUTHORIZED, f"account {username} may not use client id {client_id!r}"
        )
    if will_topic is not None and not acl.may_use_topic(username, will_topic, Access.WRITE):
        # As Mosquitto 2: a last will is a publish, checked when it is set.
        return Refusal(
            CONNACK_NOT_AUTHORIZED, f"account {username} may not publish its will to {will_topic}"
        )
    return None
