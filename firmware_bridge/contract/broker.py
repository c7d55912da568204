"""Where the broker is and how to log in, from a broker URL: pure parsing, no MQTT client.

Both ends of the contract and their settings read broker URLs through `BrokerEndpoint.parse`:
`mqtt://` and `tcp://` are plain TCP (port 1883 by default), `mqtts://` and `ssl://` are TLS
(port 8883). Credentials given on their own (and not empty) win over ones in the URL. The scheme
alone says whether the link is encrypted: a CA file (or the insecure flag) with a plain scheme is
refused as a contradiction, never guessed either way (docs/adr/0026). Kept apart from `client`
so that settings can be checked without loading paho-mqtt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

MqttVersion = Literal["5", "3.1.1"]
ProtocolChoice = Literal["auto", "5", "3.1.1"]
PROTOCOL_CHOICES: tuple[ProtocolChoice, ...] = ("auto", "5", "3.1.1")

PLAIN_SCHEMES = frozenset({"mqtt", "tcp"})  # tcp:// and ssl:// are the spelling of many tools
TLS_SCHEMES = frozenset({"mqtts", "ssl"})
MQTT_DEFAULT_PORT = 1883  # IANA
MQTTS_DEFAULT_PORT = 8883  # IANA


class BrokerUrlError(ValueError):
    """A broker URL (or its TLS settings) that cannot work, said in an installer's words."""


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where the broker is and how to log in: what `new_client` and `connect_async` need."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # None: the system's CAs
    tls_insecure: bool = False  # accept a certificate for another host name (lab only)
    # Every node of a clustered broker, in order (the first is `host`, `port`): a client that
    # cannot connect to one tries the next (docs/contracts/mqtt.md).
    hosts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.hosts:
            object.__setattr__(self, "hosts", ((self.host, self.port),))

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        tls_insecure: bool = False,
    ) -> BrokerEndpoint:
        """`mqtt://[user[:password]@]host[:port]`, `mqtts://...`, `tcp://...` or `ssl://...`;
        a clustered broker's nodes as `mqtt://host1:port1,host2:port2,...`."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in PLAIN_SCHEMES | TLS_SCHEMES:
            raise BrokerUrlError(
                f"broker URL {url!r} must start with mqtt:// or mqtts:// (or tcp:// / ssl://)"
            )
        tls = scheme in TLS_SCHEMES
        account, _, nodes = parts.netloc.rpartition("@")
        if "," in nodes:
            # One URL per node, with the account and scheme of the whole: each checked alone.
            prefix = f"{scheme}://{account}@" if account else f"{scheme}://"
            each = [
                cls.parse(
                    prefix + node,
                    username=username,
                    password=password,
                    ca_file=ca_file,
                    tls_insecure=tls_insecure,
                )
                for node in nodes.split(",")
            ]
            first = each[0]
            return cls(
                host=first.host,
                port=first.port,
                tls=tls,
                username=first.username,
                password=first.password,
                ca_file=first.ca_file,
                tls_insecure=tls_insecure,
                hosts=tuple((e.host, e.port) for e in each),
            )
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {url!r} names no host")
        if not tls and (ca_file or tls_insecure):
            what = "a CA file" if ca_file else "skipping the host name check"
            raise BrokerUrlError(
                f"broker URL {url!r} is plain TCP but {what} is set: "
                f"use mqtts:// for TLS, or drop the TLS setting"
            )
        try:
            port = parts.port or (MQTTS_DEFAULT_PORT if tls else MQTT_DEFAULT_PORT)
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL {url!r} has a bad port") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            # An empty setting (an unset variable in a compose file) leaves the URL's.
            username=username or _unquoted(parts.username),
            password=password or _unquoted(parts.password),
            ca_file=ca_file or None,
            tls_insecure=tls_insecure,
        )

    def __repr__(self) -> str:  # never print the password in a log line
        nodes = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"BrokerEndpoint({nodes}, tls={self.tls}, user={self.username})"


def _unquoted(part: str | None) -> str | None:
    return unquote(part) if part else None


def protocol_choice(value: str) -> ProtocolChoice:
    """A configured protocol choice, checked: "auto" (5, else 3.1.1), "5" or "3.1.1"."""
    for choice in PROTOCOL_CHOICES:
        if value == choice:
            return choice
    raise ValueError(f"MQTT protocol must be auto, 5 or 3.1.1, got {value!r}")
