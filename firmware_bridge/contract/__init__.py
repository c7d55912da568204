"""The bridge's published MQTT contract: the one package of `firmware_bridge` the service imports.

- `topics`: the topic tree and the one parser from a topic to (kiosk, kind);
- `payloads`: the Pydantic payload models, commands as a tagged union on `action`;
- `offline`: what the service supplies a bridge with to decide pickups while cut off;
- `codes`: how a scanned or typed pickup code is read;
- `backlog`: the telemetry buckets a bridge kept while cut off, sent once it can;
- `client`: the one MQTT client setup both sides use (broker URL, account, TLS, TCP_NODELAY,
  reconnect backoff, the MQTT 5 -> 3.1.1 probe).

docs/contracts/mqtt.md describes the contract in words, docs/asyncapi.yaml for third parties.
"""

from firmware_bridge.contract.backlog import TelemetryMinutes
from firmware_bridge.contract.offline import CodeBackoff, CodeRules, OfflineOrder, OfflineSupply
from firmware_bridge.contract.payloads import (
    ACTIONS,
    FINAL_STATUSES,
    TELEMETRY_KEPT_SENT_S,
    AbortDisinfectionCommand,
    Action,
    ClearFaultCommand,
    Command,
    CompartmentCommand,
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
    ReportStateArgs,
    ReportStateCommand,
    SetHeaterArgs,
    SetHeaterCommand,
    StartDisinfectionArgs,
    StartDisinfectionCommand,
    Telemetry,
    UnlockArgs,
    UnlockCommand,
    WireModel,
    command_from_dict,
    command_from_json,
    compartment_of,
    utcnow,
)
from firmware_bridge.contract.topics import TOPIC_ROOT, MessageKind, Topics, classify_topic

__all__ = [
    "ACTIONS",
    "FINAL_STATUSES",
    "TELEMETRY_KEPT_SENT_S",
    "TOPIC_ROOT",
    "AbortDisinfectionCommand",
    "Action",
    "ClearFaultCommand",
    "CodeBackoff",
    "CodeRules",
    "Command",
    "CompartmentCommand",
    "CompartmentNumber",
    "CompartmentSnapshot",
    "Event",
    "EventType",
    "FaultName",
    "KioskId",
    "KioskStatus",
    "MessageKind",
    "NoArgs",
    "OfflineOrder",
    "OfflineSupply",
    "Reading",
    "Reply",
    "ReplyStatus",
    "ReportStateArgs",
    "ReportStateCommand",
    "SetHeaterArgs",
    "SetHeaterCommand",
    "StartDisinfectionArgs",
    "StartDisinfectionCommand",
    "Telemetry",
    "TelemetryMinutes",
    "Topics",
    "UnlockArgs",
    "UnlockCommand",
    "WireModel",
    "classify_topic",
    "command_from_dict",
    "command_from_json",
    "compartment_of",
    "utcnow",
]
