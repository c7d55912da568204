"""The payload models of the MQTT contract between locker_service and the kiosk bridge.

One home for both sides (docs/contracts/mqtt.md). Every payload is JSON validated by these
Pydantic models; a payload that fails validation is logged and dropped by whoever receives it.
Timestamps are timezone-aware UTC and serialise as ISO 8601. docs/asyncapi.yaml describes the
same contract for third parties.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

KioskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
CompartmentNumber = Annotated[int, Field(ge=1, le=255)]


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    # Published before and sent again because a replica that has just taken the kiosk asked for
    # the readings after its record (`ReportStateArgs.readings_after`, docs/adr/0098): the same
    # `ts` and readings; (kiosk, `ts`) identifies a batch, so a consumer stores each once.
    resent: bool = False


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
    # Decided by the bridge while it could not reach the service (docs/adr/0077): data says
    # which order (`order_id`), how (`method`: qr or code) and the unlock's `request_id`.
    "offline_pickup",
    # The board refused the unlock of an offline pickup (a cycle running, a fault): data says
    # which order (`order_id`), the unlock's `request_id` and the reply's `status`.
    "offline_pickup_failed",
    # A wrong code typed while cut off, refused by the bridge: no data (never the code). The
    # service counts it as a wrong typed code at the kiosk (docs/adr/0077).
    "offline_code_refused",
]


class Event(WireModel):
    event_id: str = Field(min_length=1, max_length=64)
    type: EventType
    compartment: CompartmentNumber | None = None
    ts: AwareDatetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)
    # The bridge's outbox number: each event of a kiosk one more than the one before, across
    # bridge restarts. The broker may deliver a burst out of order (Mosquitto does when its
    # in-flight window to the service is full); the service puts events back in this order.
    # None from a bridge that predates it: arrival order then.
    seq: int | None = Field(default=None, ge=1)


class UnlockArgs(WireModel):
    pulse_ms: int = Field(default=500, ge=50, le=2000)
    override_cycle: bool = False  # open even during a disinfection cycle (aborts it)
    deadline_s: float = Field(default=3.0, gt=0, le=30)  # lock released or door open by then


class SetHeaterArgs(WireModel):
    setpoint_c: float | None = Field(ge=20.0, le=75.0)  # None switches the heater off


class StartDisinfectionArgs(WireModel):
    duration_s: int = Field(default=1800, ge=1, le=3600)


class NoArgs(WireModel):
    """The args of an action that takes none: `{}` (unknown keys are ignored, as everywhere)."""


Action = Literal[
    "unlock",
    "set_heater",
    "start_disinfection",
    "abort_disinfection",
    "clear_fault",
    "report_state",
]


# A command's fields, in their order on the wire: the head (`request_id`, `action`), the
# compartment if it names one, then the tail. Pydantic orders the fields of a model with several
# bases from the last base to the first.


class _CommandHead(WireModel):
    request_id: str = Field(min_length=1, max_length=64)
    action: Action  # each action's model narrows it to its own name: the union's tag


class _CompartmentHead(_CommandHead):
    compartment: CompartmentNumber


class _CommandTail(WireModel):
    """Published by the service on `cmd` (QoS 1, never retained); at-least-once."""

    args: WireModel  # each action's model narrows it to its own args
    expires_at: AwareDatetime
    reply_to: str = Field(min_length=1, max_length=256, pattern=r"^[^#+]+$")

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


class _CompartmentCommandBase(_CommandTail, _CompartmentHead):
    """A command to one compartment's hardware."""


class UnlockCommand(_CompartmentCommandBase):
    action: Literal["unlock"] = "unlock"
    args: UnlockArgs = Field(default_factory=UnlockArgs)


class SetHeaterCommand(_CompartmentCommandBase):
    action: Literal["set_heater"] = "set_heater"
    args: SetHeaterArgs  # no default: "off" has to be said (`setpoint_c: null`)


class StartDisinfectionCommand(_CompartmentCommandBase):
    action: Literal["start_disinfection"] = "start_disinfection"
    args: StartDisinfectionArgs = Field(default_factory=StartDisinfectionArgs)


class AbortDisinfectionCommand(_CompartmentCommandBase):
    action: Literal["abort_disinfection"] = "abort_disinfection"
    args: NoArgs = Field(default_factory=NoArgs)


class ClearFaultCommand(_CompartmentCommandBase):
    action: Literal["clear_fault"] = "clear_fault"
    args: NoArgs = Field(default_factory=NoArgs)


# How long a bridge keeps the telemetry it published, to send again for `readings_after`: a new
# holder looks no further back for the kiosk's newest stored reading (docs/adr/0098).
TELEMETRY_KEPT_SENT_S = 600.0


class ReportStateArgs(WireModel):
    # Send again the events this kiosk's bridge still keeps numbered after this (`Event.seq`):
    # the new holder has recorded up to here, and events only the old one heard, or sent while
    # nobody listened, are missing from its record (docs/adr/0092). None: no events.
    events_after: int | None = Field(default=None, ge=0)
    # Send again the telemetry batches this kiosk's bridge published stamped after this (it keeps
    # the last 10 minutes' in memory), marked `resent`: those published while nobody listened
    # (QoS 0) are missing from the new holder's record (docs/adr/0098). None: no readings.
    readings_after: AwareDatetime | None = None


class ReportStateCommand(_CommandTail, _CommandHead):
    """Publish the kiosk's status and every compartment's snapshot again, as they are now
    (retained), then answer `succeeded`. Sent by a replica that has just taken the kiosk's lease:
    a clustered broker may hand a new subscriber a retained copy older than the last one the
    kiosk published (the nodes copy retained messages to each other asynchronously), and the
    kiosk publishes a compartment's snapshot only when it changes (docs/adr/0091). With
    `events_after`, the kept events after that number are also sent again (docs/adr/0092);
    with `readings_after`, the telemetry published since (docs/adr/0098)."""

    action: Literal["report_state"] = "report_state"
    args: ReportStateArgs = Field(default_factory=ReportStateArgs)


# A command to a compartment's hardware: it names the compartment.
CompartmentCommand = (
    UnlockCommand
    | SetHeaterCommand
    | StartDisinfectionCommand
    | AbortDisinfectionCommand
    | ClearFaultCommand
)
# A command is one of these, told apart by `action`; on the wire it is one JSON object with
# `action` and that action's `args` (and `compartment`, but for `report_state`), as
# docs/asyncapi.yaml shows.
Command = Annotated[CompartmentCommand | ReportStateCommand, Field(discriminator="action")]


def compartment_of(command: Command) -> int | None:
    """The compartment a command names; None for one to the whole kiosk (`report_state`)."""
    return None if isinstance(command, ReportStateCommand) else command.compartment


ACTIONS: tuple[Action, ...] = get_args(Action)
_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


def command_from_json(payload: bytes | str) -> Command:
    """The command in a `cmd` payload; raises pydantic's ValidationError if it is not one."""
    return _COMMAND.validate_json(payload)


def command_from_dict(data: Mapping[str, Any]) -> Command:
    """The command a dict describes (a stored one, or one a caller assembles from its parts)."""
    return _COMMAND.validate_python(data)


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
