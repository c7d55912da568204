"""The settings the kiosk link reads, and the broker URL parsed into what paho needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

# A replica id ends up in a client id and in a reply topic: no MQTT wildcards or separators.
REPLICA_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LinkSettings(Protocol):
    """The fields of the service's settings the link uses (see locker_service/config.py)."""

    @property
    def mqtt_url(self) -> str: ...  # mqtt://host:1883 or mqtts://host:8883
    @property
    def mqtt_username(self) -> str | None: ...
    @property
    def mqtt_password(self) -> SecretStr | None: ...
    @property
    def mqtt_tls_ca(self) -> str | None: ...  # CA file for mqtts://; None: the system's CAs
    @property
    def mqtt_protocol(self) -> str: ...  # "auto" (5, falling back to 3.1.1), "5" or "3.1.1"
    @property
    def replica_id(self) -> str: ...
    @property
    def mqtt_keepalive_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(
        cls, url: str, username: str | None = None, password: str | None = None
    ) -> BrokerEndpoint:
        """`mqtt://[user:pass@]host[:port]`; explicit credentials win over ones in the URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"MQTT URL has no host: {url!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=username or (unquote(parts.username) if parts.username else None),
            password=password or (unquote(parts.password) if parts.password else None),
        )
