"""The MQTT topic tree of the contract, and the one parser from a topic back to its meaning.

Everything a kiosk publishes or receives lives under `lockers/v1/<kiosk_id>/`, so a broker ACL
of `lockers/v1/<kiosk_id>/#` confines a kiosk to its own branch (docs/contracts/mqtt.md).
"""

from __future__ import annotations

from typing import Literal

TOPIC_ROOT = "lockers/v1"

# What a message on a topic is; the service picks the payload model by it.
MessageKind = Literal["status", "snapshot", "event", "telemetry", "minutes", "reply"]


class Topics:
    """Topic names for one kiosk; subscriptions over every kiosk come from `wildcard()`."""

    def __init__(self, kiosk_id: str) -> None:
        self.kiosk_id = kiosk_id
        self.prefix = f"{TOPIC_ROOT}/{kiosk_id}"
        self.status = f"{self.prefix}/status"
        self.telemetry = f"{self.prefix}/telemetry"
        self.telemetry_minutes = f"{self.prefix}/telemetry/minutes"  # kept while cut off
        self.events = f"{self.prefix}/events"
        self.cmd = f"{self.prefix}/cmd"
        self.offline = f"{self.prefix}/offline"  # the service's supply for offline pickups
        self.compartment_states = f"{self.prefix}/compartments/+/state"

    def compartment_state(self, n: int) -> str:
        return f"{self.prefix}/compartments/{n}/state"

    def replies(self, replica_id: str) -> str:
        """Where one service replica wants this kiosk's replies: under the kiosk's own prefix,
        so the kiosk's ACL covers them."""
        return f"{self.prefix}/replies/{replica_id}"

    @staticmethod
    def wildcard(leaf: str) -> str:
        """A subscription covering every kiosk, e.g. `wildcard("events")`."""
        return f"{TOPIC_ROOT}/+/{leaf}"


def classify_topic(topic: str) -> tuple[str, MessageKind] | None:
    """(kiosk_id, kind) for a topic of the contract that a kiosk publishes, None for any other."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        return None
    kiosk_id, rest = parts[2], parts[3:]
    if not kiosk_id:
        return None
    if rest == ["status"]:
        return kiosk_id, "status"
    if rest == ["events"]:
        return kiosk_id, "event"
    if rest == ["telemetry"]:
        return kiosk_id, "telemetry"
    if rest == ["telemetry", "minutes"]:
        return kiosk_id, "minutes"
    if len(rest) == 3 and rest[0] == "compartments" and rest[2] == "state" and rest[1].isdigit():
        return kiosk_id, "snapshot"
    if len(rest) == 2 and rest[0] == "replies":
        return kiosk_id, "reply"
    return None
