"""Settings of one kiosk bridge process: environment variables with the `BRIDGE_` prefix.

Every field can also be given as a `lockerctl bridge` flag. The time scale is read from
`BRIDGE_TIME_SCALE` or, like every other process, from `LOCKER_TIME_SCALE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from firmware_bridge.contract import KioskId
from firmware_bridge.contract.broker import BrokerEndpoint


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore", populate_by_name=True)

    kiosk_id: KioskId = "demo"
    broker_url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None  # overrides a user name given in the URL
    password: str | None = None
    tls_ca: Path | None = None  # CA bundle for mqtts://; the system store when unset
    tls_insecure: bool = False  # accept a certificate whose host name does not match (lab only)
    # A CA file or tls_insecure with a plain mqtt:// URL is refused (docs/adr/0026).
    mqtt_version: Literal["auto", "5", "3.1.1"] = "auto"  # auto: 5, or 3.1.1 if refused
    board_url: str = "/dev/ttyUSB0"  # anything serial_for_url opens: a path, socket://, loop://
    scanner_url: str | None = None  # no scanner attached when unset
    baud: int = Field(default=115200, gt=0)
    scanner_baud: int = Field(default=9600, gt=0)
    node_address: int = Field(default=1, ge=1, le=127)
    # Added to the answer deadline the baud rate gives: a PC's scheduler (or a simulated board
    # on a busy host) may add latency a board's own turnaround allowance does not cover.
    answer_margin_s: float = Field(default=0.02, ge=0, le=2.0)
    poll_period_s: float = Field(default=0.15, ge=0.02, le=1.0)  # PROTOCOL.md 4: 100-200 ms
    telemetry_period_s: float = Field(default=10.0, gt=0)  # nominal: divided by the time scale
    # While cut off, readings are folded on disk into buckets this long (nominal, divided by the
    # time scale), and at most this many buckets are kept, the oldest dropped first: 7 days of
    # 60 s buckets, about 30 MB for 48 compartments (contract/backlog.py).
    telemetry_bucket_s: float = Field(default=60.0, gt=0, le=3600)
    telemetry_backlog_max: int = Field(default=7 * 24 * 60, ge=1)
    # Kept buckets sent per real second once back in touch. The broker acknowledges a bucket on
    # taking it, not once the service stored it, and drops what overflows a subscriber's queue
    # (Mosquitto's max_queued_messages: 1000), so a fleet back from an outage must not send
    # faster than the service stores: kiosks x this below its rate (docs/contracts/mqtt.md).
    telemetry_backlog_per_s: float = Field(default=5.0, gt=0)
    data_dir: Path = Path("./bridge-data")
    # The offline kiosk screen (firmware_bridge/screen): off unless a port is given (0: any free
    # one). On the kiosk PC only by default: its browser is its one client.
    screen_port: int | None = Field(default=None, ge=0, le=65535)
    screen_host: str = "127.0.0.1"
    # The service's address (e.g. https://lockers.example.com): the offline screen hands back
    # to its kiosk screen only, never to another address it was given.
    screen_service_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+/?$")
    time_scale: float = Field(
        default=1.0,
        gt=0,
        validation_alias=AliasChoices("time_scale", "BRIDGE_TIME_SCALE", "LOCKER_TIME_SCALE"),
    )
    event_queue_max: int = Field(default=10_000, ge=10)
    request_cache_max: int = Field(default=10_000, ge=10)

    @model_validator(mode="after")
    def _broker_settings_fit(self) -> BridgeSettings:
        self.broker()  # a BrokerUrlError is a ValueError: pydantic reports it with the field
        return self

    @model_validator(mode="after")
    def _telemetry_buckets_fit(self) -> BridgeSettings:
        # The contract's bound on a bucket, and buckets told apart by their start in ms.
        if not 0.01 <= self.scaled(self.telemetry_bucket_s) <= 3600:
            raise ValueError("telemetry_bucket_s / time_scale must be within 0.01-3600 s")
        return self

    def broker(self) -> BrokerEndpoint:
        """The broker endpoint, explicit credentials taking precedence over the URL's."""
        return BrokerEndpoint.parse(
            self.broker_url,
            username=self.username,
            password=self.password,
            ca_file=str(self.tls_ca) if self.tls_ca is not None else None,
            tls_insecure=self.tls_insecure,
        )

    def scaled(self, nominal_s: float) -> float:
        """A nominal duration as it passes at this process's time scale."""
        return nominal_s / self.time_scale
