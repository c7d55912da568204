"""Settings of the standalone simulator (`lockerctl sim`), prefix `SIM_`.

The time scale is also read from `LOCKER_TIME_SCALE`, the variable every process of the system
honours, so one setting speeds up the whole stack; `SIM_TIME_SCALE` wins when both are set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hardware.physics import RELEASED_LOCK_RELATCH_S


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIM_", extra="ignore", populate_by_name=True)

    name: str = Field("bank1", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    compartments: int = Field(12, ge=1, le=48)
    seed: int = 1
    time_scale: float = Field(
        1.0, gt=0, validation_alias=AliasChoices("SIM_TIME_SCALE", "LOCKER_TIME_SCALE")
    )
    node_address: int = Field(1, ge=1, le=127)
    baud: Literal[9600, 19200, 57600, 115200] = 115200
    thermostat: Literal["pid", "hysteresis"] = "pid"
    lobby_temp_c: float = Field(22.0, ge=-30, le=60)
    relatch_s: float = Field(RELEASED_LOCK_RELATCH_S, gt=0)  # a released, unopened latch
    pty: bool = True
    pty_dir: Path | None = None  # default: a fresh directory under the system's temp dir
    board_port: int | None = Field(None, ge=0, le=65535)  # socket:// for the board; None: off
    scanner_port: int | None = Field(None, ge=0, le=65535)
    socket_host: str | None = None  # default: the same as http_host
    http_host: str = "127.0.0.1"
    http_port: int = Field(8001, ge=0, le=65535)
    # Where the bank's physical state is kept across restarts (ADR 0065); None: not kept.
    state_file: Path | None = None
    cors_origins: list[str] = ["*"]  # the demo panel is served by the service on another port
