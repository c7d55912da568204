"""docs/asyncapi.yaml stays true: payloads a real bridge published, and the shared Pydantic
models' output, validate against the schemas it gives for their channels."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from firmware_bridge import contract
from tests.firmware_bridge.conftest import Kiosk

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DOC.read_text())
    assert doc["asyncapi"].startswith("3.")
    return doc


def schema_for(doc: dict[str, Any], channel: str) -> dict[str, Any]:
    """The payload schema of the channel's only message, resolvable against the document."""
    messages = doc["channels"][channel]["messages"]
    (message,) = messages.values()
    name = message["$ref"].rsplit("/", 1)[-1]
    payload_ref = doc["components"]["messages"][name]["payload"]["$ref"]
    return {"$ref": payload_ref, "components": doc["components"]}


def validate(doc: dict[str, Any], channel: str, payload: Any) -> None:
    jsonschema.validate(
        payload,
        schema_for(doc, channel),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def channel_of(topic: str, reply_to: str) -> str | None:
    if topic == reply_to:
        return "reply"
    leaf = topic.split("/", 3)[3]
    if leaf.startswith("compartments/"):
        return "compartmentState"
    return {"status": "status", "telemetry": "telemetry", "events": "events", "cmd": "cmd"}.get(
        leaf
    )


def test_every_payload_a_real_bridge_published_matches_the_document(
    kiosk: Kiosk, asyncapi: dict[str, Any]
) -> None:
    obs, sim = kiosk.observer, kiosk.sim
    # Drive every kind of traffic: all actions, door and item events, a fault, a scan, a reboot.
    obs.final_reply(obs.command("unlock", 1).request_id)
    sim.world.open_door(1)
    sim.world.place_item(1)
    sim.world.close_door(1)
    obs.final_reply(obs.command("set_heater", 1, {"setpoint_c": 65}).request_id)
    obs.final_reply(obs.command("start_disinfection", 2, {"duration_s": 20}).request_id)
    obs.final_reply(obs.command("start_disinfection", 3, {"duration_s": 600}).request_id)
    obs.final_reply(obs.command("abort_disinfection", 3).request_id)
    obs.final_reply(obs.command("unlock", 4, expires_in_s=-1).request_id)
    sim.faults.sensor(5, "short")
    obs.wait_event("fault_raised", 5)
    obs.final_reply(obs.command("clear_fault", 5).request_id)
    sim.world.scan("QR:abc")
    obs.wait_event("disinfection_completed", 2)
    obs.wait_event("disinfection_aborted", 3)
    obs.wait_event("scan")
    obs.wait_event("item_placed", 1)
    obs.wait(lambda: obs.on(obs.topics.telemetry), "telemetry")

    seen: dict[str, int] = {}
    for topic, raw in list(obs.raw):
        channel = channel_of(topic, obs.reply_to)
        assert channel is not None, topic
        validate(asyncapi, channel, json.loads(raw))
        seen[channel] = seen.get(channel, 0) + 1
    assert set(seen) == {"status", "compartmentState", "telemetry", "events", "cmd", "reply"}
    kinds = {e["type"] for e in obs.events()}
    assert {
        "door_opened",
        "door_closed",
        "item_placed",
        "scan",
        "disinfection_started",
        "disinfection_completed",
        "disinfection_aborted",
        "fault_raised",
    } <= kinds


def test_the_last_will_and_a_board_reboot_match_too(asyncapi: dict[str, Any]) -> None:
    validate(asyncapi, "status", json.loads(contract.KioskStatus(state="offline").to_json()))
    event = contract.Event(
        event_id="e1",
        type="board_rebooted",
        data={"boot_id": "0000beef", "previous_boot_id": "0000dead"},
    )
    validate(asyncapi, "events", json.loads(event.to_json()))


@pytest.mark.parametrize(
    "channel, payload",
    [
        ("events", {"event_id": "e", "type": "door_exploded", "ts": "2026-01-01T00:00:00Z"}),
        ("events", {"event_id": "e", "type": "scan", "ts": "2026-01-01T00:00:00Z", "data": {}}),
        ("cmd", {"request_id": "r", "action": "unlock", "compartment": 0}),
        (
            "cmd",
            {
                "request_id": "r",
                "action": "set_heater",
                "compartment": 1,
                "args": {"setpoint_c": 90},
                "expires_at": "2026-01-01T00:00:00Z",
                "reply_to": "r/1",
            },
        ),
        ("reply", {"request_id": "r", "status": "done", "ts": "2026-01-01T00:00:00Z"}),
        ("status", {"state": "online", "ts": "yesterday"}),
    ],
)
def test_the_document_rejects_what_the_models_reject(
    asyncapi: dict[str, Any], channel: str, payload: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(asyncapi, channel, payload)


def test_a_command_built_by_the_shared_model_validates(asyncapi: dict[str, Any]) -> None:
    cmd = contract.UnlockCommand(
        request_id="r1",
        compartment=3,
        args=contract.UnlockArgs(pulse_ms=600, deadline_s=4),
        expires_at=contract.utcnow() + timedelta(seconds=30),
        reply_to="lockers/replies/service-1",
    )
    validate(asyncapi, "cmd", json.loads(cmd.to_json()))
