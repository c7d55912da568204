"""The MQTT contract between locker_service and the kiosk bridge: topics and payload models.

One home for both sides (DESIGN.md, "MQTT contract"). Every payload is JSON validated by these
Pydantic models; a payload that fails validation is logged and dropped by whoever receives it.
Timestamps are timezone-aware UTC and serialise as ISO 8601. docs/asyncapi.yaml describes the
same contract for third parties.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

TOPIC_ROOT = "lockers/v1"
KioskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
CompartmentNumber = Annotated[int, Field(ge=1, le=255)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Topics:
    """Topic names for one kiosk; `Topics("*")` style wildcards come from `wildcard()`."""

    def __init__(self, kiosk_id: str) -> None:
        self.kiosk_id = kiosk_id
        self.prefix = f"{TOPIC_ROOT}/{kiosk_id}"
        self.status = f"{self.prefix}/status"
        self.telemetry = f"{self.prefix}/telemetry"
        self.events = f"{self.prefix}/events"
        self.cmd = f"{self.prefix}/cmd"
        self.compartment_states = f"{self.prefix}/compartments/+/state"

    def compartment_state(self, n: int) -> str:
        return f"{self.prefix}/compartments/{n}/state"

    @staticmethod
    def wildcard(leaf: str) -> str:
        """A subscription covering every kiosk, e.g. `wildcard("events")`."""
        return f"{TOPIC_ROOT}/+/{leaf}"

    @staticmethod
    def kiosk_of(topic: str) -> str | None:
        parts = topic.split("/")
        if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_ROOT:
            return None
        return parts[2]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


class KioskStatus(WireModel):
    """Retained on `status`; the bridge's last will says offline."""

    state: Literal["online", "offline"]
    boot_id: str | None = None  # the board's boot id in hex, None while the board is unreachable
    fw: str | None = None
    compartments: int | None = None
    board_online: bool = False
    ts: AwareDatetime = Field(default_factory=utcnow)


FaultName = Literal[
    "sensor_open",
    "sensor_short",
    "over_temperature",
    "heating_watchdog",
    "uv_timeout",
    "lock_jammed",
]


class CompartmentSnapshot(WireModel):
    """Retained on `compartments/{n}/state`, published when anything in it changes."""

    n: CompartmentNumber
    door_open: bool
    lock_released: bool
    occupied: bool
    heater_on: bool
    uv_on: bool
    disinfecting: bool
    disinfect_remaining_s: int = Field(ge=0)
    temp_c: float | None  # None: the sensor reads open or shorted
    setpoint_c: float | None  # None: not holding
    fault: FaultName | None = None
    ts: AwareDatetime = Field(default_factory=utcnow)


class Reading(WireModel):
    n: CompartmentNumber
    temp_c: float | None
    setpoint_c: float | None
    heater: bool


class Telemetry(WireModel):
    ts: AwareDatetime = Field(default_factory=utcnow)
    readings: list[Reading]


EventType = Literal[
    "door_opened",
    "door_closed",
    "item_placed",
    "item_removed",
    "scan",
    "disinfection_started",
    "disinfection_completed",
    "disinfection_aborted",
    "fault_raised",
    "fault_cleared",
    "board_rebooted",
]


class Event(WireModel):
    event_id: str = Field(min_length=1, max_length=64)
    type: EventType
    compartment: CompartmentNumber | None = None
    ts: AwareDatetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)


class UnlockArgs(WireModel):
    pulse_ms: int = Field(default=500, ge=50, le=2000)
    override_cycle: bool = False  # open even during a disinfection cycle (aborts it)
    deadline_s: float = Field(default=3.0, gt=0, le=30)  # lock released or door open by then


class SetHeaterArgs(WireModel):
    setpoint_c: float | None = Field(ge=20.0, le=75.0)  # None switches the heater off


class StartDisinfectionArgs(WireModel):
    duration_s: int = Field(default=1800, ge=1, le=3600)


class NoArgs(WireModel):
    pass


Action = Literal["unlock", "set_heater", "start_disinfection", "abort_disinfection", "clear_fault"]
ARGS_BY_ACTION: dict[str, type[WireModel]] = {
    "unlock": UnlockArgs,
    "set_heater": SetHeaterArgs,
    "start_disinfection": StartDisinfectionArgs,
    "abort_disinfection": NoArgs,
    "clear_fault": NoArgs,
}


class Command(WireModel):
    """Published by the service on `cmd` (QoS 1, never retained); at-least-once."""

    request_id: str = Field(min_length=1, max_length=64)
    action: Action
    compartment: CompartmentNumber
    args: dict[str, Any] = Field(default_factory=dict)
    expires_at: AwareDatetime
    reply_to: str = Field(min_length=1, max_length=256, pattern=r"^[^#+]+$")

    @model_validator(mode="after")
    def _args_fit_action(self) -> Command:
        ARGS_BY_ACTION[self.action].model_validate(self.args)
        return self

    def typed_args(self) -> WireModel:
        return ARGS_BY_ACTION[self.action].model_validate(self.args)

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


ReplyStatus = Literal["accepted", "in_progress", "succeeded", "failed", "rejected", "timed_out"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "timed_out"})


class Reply(WireModel):
    """Published by the bridge on the command's `reply_to`."""

    request_id: str
    status: ReplyStatus
    detail: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    ts: AwareDatetime = Field(default_factory=utcnow)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES
