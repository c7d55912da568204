"""The settings the kiosk link reads (the broker URL is parsed by the contract's client setup)."""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import SecretStr

# A replica id ends up in a client id and in a reply topic: no MQTT wildcards or separators.
REPLICA_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LinkSettings(Protocol):
    """The fields of the service's settings the link uses (see locker_service/config.py)."""

    @property
    def mqtt_url(self) -> str: ...  # mqtt://host:1883 or mqtts://host:8883 (tcp://, ssl://)
    @property
    def mqtt_username(self) -> str | None: ...
    @property
    def mqtt_password(self) -> SecretStr | None: ...
    @property
    def mqtt_tls_ca(self) -> str | None: ...  # CA file for mqtts:// (refused with mqtt://)
    @property
    def mqtt_protocol(self) -> str: ...  # "auto" (5, falling back to 3.1.1), "5" or "3.1.1"
    @property
    def replica_id(self) -> str: ...
    @property
    def mqtt_keepalive_s(self) -> int: ...
