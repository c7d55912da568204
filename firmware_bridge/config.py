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
    data_dir: Path = Path("./bridge-data")
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
