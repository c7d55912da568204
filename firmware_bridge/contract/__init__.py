"""The bridge's published MQTT contract: the one package of `firmware_bridge` the service imports.

`payloads` holds the topic names and the Pydantic payload models; docs/contracts/mqtt.md and
docs/asyncapi.yaml describe the same contract in words and for third parties.
"""

from firmware_bridge.contract.payloads import (
    ARGS_BY_ACTION,
    FINAL_STATUSES,
    TOPIC_ROOT,
    Action,
    Command,
    CompartmentNumber,
    CompartmentSnapshot,
    Event,
    EventType,
    FaultName,
    KioskId,
    KioskStatus,
    NoArgs,
    Reading,
    Reply,
    ReplyStatus,
    SetHeaterArgs,
    StartDisinfectionArgs,
    Telemetry,
    Topics,
    UnlockArgs,
    WireModel,
    utcnow,
)

__all__ = [
    "ARGS_BY_ACTION",
    "FINAL_STATUSES",
    "TOPIC_ROOT",
    "Action",
    "Command",
    "CompartmentNumber",
    "CompartmentSnapshot",
    "Event",
    "EventType",
    "FaultName",
    "KioskId",
    "KioskStatus",
    "NoArgs",
    "Reading",
    "Reply",
    "ReplyStatus",
    "SetHeaterArgs",
    "StartDisinfectionArgs",
    "Telemetry",
    "Topics",
    "UnlockArgs",
    "WireModel",
    "utcnow",
]
