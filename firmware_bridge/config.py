"""Settings of one kiosk bridge process: environment variables with the `BRIDGE_` prefix.

Every field can also be given as a `lockerctl bridge` flag. The time scale is read from
`BRIDGE_TIME_SCALE` or, like every other process, from `LOCKER_TIME_SCALE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from firmware_bridge.contract import KioskId

MQTT_DEFAULT_PORT = 1883
MQTTS_DEFAULT_PORT = 8883


class ConfigError(ValueError):
    """A setting that cannot work, explained in words an installer understands."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS, port 8883 by default)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} names no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (MQTTS_DEFAULT_PORT if tls else MQTT_DEFAULT_PORT)
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r} has a bad port") from exc
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore", populate_by_name=True)

    kiosk_id: KioskId = "demo"
    broker_url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None  # overrides a user name given in the URL
    password: str | None = None
    tls_ca: Path | None = None  # CA bundle for mqtts://; the system store when unset
    tls_insecure: bool = False  # accept a certificate whose host name does not match (lab only)
    mqtt_version: Literal["auto", "5", "3.1.1"] = "auto"  # auto: 5, or 3.1.1 if refused
    board_url: str = "/dev/ttyUSB0"  # anything serial_for_url opens: a path, socket://, loop://
    scanner_url: str | None = None  # no scanner attached when unset
    baud: int = Field(default=115200, gt=0)
    scanner_baud: int = Field(default=9600, gt=0)
    node_address: int = Field(default=1, ge=1, le=127)
    # Added to the answer deadline the baud rate gives: a PC's scheduler (or a simulated board
    # on a busy host) may add latency a board's own turnaround allowance does not cover.
    answer_margin_s: float = Field(default=0.02, ge=0, le=2.0)
    poll_period_s: float = Field(default=0.15, ge=0.02, le=1.0)  # DESIGN: every 100-200 ms
    telemetry_period_s: float = Field(default=10.0, gt=0)  # nominal: divided by the time scale
    data_dir: Path = Path("./bridge-data")
    time_scale: float = Field(
        default=1.0,
        gt=0,
        validation_alias=AliasChoices("time_scale", "BRIDGE_TIME_SCALE", "LOCKER_TIME_SCALE"),
    )
    event_queue_max: int = Field(default=10_000, ge=10)
    request_cache_max: int = Field(default=10_000, ge=10)

    @field_validator("broker_url")
    @classmethod
    def _broker_url_parses(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    def broker(self) -> BrokerAddress:
        """The broker address with explicit credentials taking precedence over the URL's."""
        address = parse_broker_url(self.broker_url)
        return BrokerAddress(
            host=address.host,
            port=address.port,
            tls=address.tls or self.tls_ca is not None,
            username=self.username if self.username is not None else address.username,
            password=self.password if self.password is not None else address.password,
        )

    def scaled(self, nominal_s: float) -> float:
        """A nominal duration as it passes at this process's time scale."""
        return nominal_s / self.time_scale
