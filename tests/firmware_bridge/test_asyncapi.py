"""docs/asyncapi.yaml stays true: payloads a real bridge published, and the shared Pydantic
models' output, validate against the schemas it gives for their channels."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from firmware_bridge import contract
from firmware_bridge.contract.client import RECONNECT_MAX_S
from firmware_bridge.contract.codes import code_mac
from firmware_bridge.contract.offline import encode_key
from firmware_bridge.offline import default_rules
from tests.firmware_bridge.conftest import Kiosk
from tests.firmware_bridge.harness import Observer

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
    return {
        "status": "status",
        "telemetry": "telemetry",
        "telemetry/minutes": "telemetryMinutes",
        "events": "events",
        "cmd": "cmd",
    }.get(leaf)


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


@pytest.mark.slow  # a broker outage of real seconds
def test_the_telemetry_a_real_bridge_kept_through_an_outage_matches_the_document(
    durable_kiosk: Kiosk, asyncapi: dict[str, Any]
) -> None:
    bridge, broker = durable_kiosk.bridge, durable_kiosk.broker
    # Persistent on a broker that keeps sessions: nothing sent while it reconnects is missed.
    obs = Observer(broker.host, broker.port, durable_kiosk.settings.kiosk_id, persistent=True)
    obs.start()
    try:
        durable_kiosk.sim.faults.sensor(2, "open")  # a bucket of a faulted sensor too
        broker.stop()
        obs.wait(lambda: not bridge.link.connected.is_set(), "the bridge to see the outage")
        obs.wait(
            lambda: bridge.store.kept_buckets(-1, int(time.time() * 1000), 10),
            "a bucket kept and closed",
            timeout_s=30,
        )
        broker.start()
        # The bridge comes back on its own backoff, which a long outage has grown to its most.
        obs.wait(bridge.link.connected.is_set, "the bridge back", RECONNECT_MAX_S + 30)
        obs.wait(lambda: obs.on(obs.topics.telemetry_minutes), "a kept bucket sent", 40)
        raw = [p for t, p in list(obs.raw) if t == obs.topics.telemetry_minutes]
        for payload in raw:
            assert channel_of(obs.topics.telemetry_minutes, obs.reply_to) == "telemetryMinutes"
            validate(asyncapi, "telemetryMinutes", json.loads(payload))
        first = contract.TelemetryMinutes.model_validate_json(raw[0])
        assert any(r.count == 0 and r.faulted > 0 for r in first.readings)
    finally:
        obs.stop()


def test_the_last_will_and_a_board_reboot_match_too(asyncapi: dict[str, Any]) -> None:
    validate(asyncapi, "status", json.loads(contract.KioskStatus(state="offline").to_json()))
    event = contract.Event(
        event_id="e1",
        type="board_rebooted",
        data={"boot_id": "0000beef", "previous_boot_id": "0000dead"},
    )
    validate(asyncapi, "events", json.loads(event.to_json()))


def test_the_offline_supply_and_an_offline_pickup_match_too(asyncapi: dict[str, Any]) -> None:
    key = bytes(range(32))
    supply = contract.OfflineSupply(
        supply_id="s1",
        refresh_s=30,
        code_key=encode_key(key),
        orders=[
            contract.OfflineOrder(
                order_id="o1",
                compartment=4,
                token_sha256="a" * 64,
                code_mac=code_mac(key, "12345678"),
                deadline=contract.utcnow() + timedelta(hours=1),
            )
        ],
    )
    validate(asyncapi, "offline", json.loads(supply.to_json()))
    leased = supply.model_copy(update={"epoch": 3, "seq": 12})  # as a replica holding the kiosk
    validate(asyncapi, "offline", json.loads(leased.to_json()))
    ruled = supply.model_copy(update={"code_rules": default_rules(600.0)})  # ADR 0119
    validate(asyncapi, "offline", json.loads(ruled.to_json()))
    unruly = json.loads(ruled.to_json())
    unruly["code_rules"]["kiosk"]["free"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validate(asyncapi, "offline", unruly)
    event = contract.Event(
        event_id="e2",
        type="offline_pickup",
        compartment=4,
        data={"order_id": "o1", "method": "qr", "request_id": "offline-1"},
        seq=7,
    )
    validate(asyncapi, "events", json.loads(event.to_json()))
    failed = contract.Event(
        event_id="e3",
        type="offline_pickup_failed",
        compartment=4,
        data={"order_id": "o1", "request_id": "offline-1", "status": "rejected"},
        seq=8,
    )
    validate(asyncapi, "events", json.loads(failed.to_json()))
    wrong = contract.Event(event_id="e4", type="offline_code_refused", seq=9)
    validate(asyncapi, "events", json.loads(wrong.to_json()))


@pytest.mark.parametrize(
    "channel, payload",
    [
        (
            "events",
            {
                "event_id": "e",
                "type": "offline_pickup",
                "compartment": 1,
                "ts": "2026-01-01T00:00:00Z",
                "data": {"order_id": "o1", "method": "fingerprint", "request_id": "r"},
            },
        ),
        ("offline", {"supply_id": "s", "issued_at": "2026-01-01T00:00:00Z", "refresh_s": 30}),
        (
            "offline",
            {
                "supply_id": "s",
                "issued_at": "2026-01-01T00:00:00Z",
                "refresh_s": 30,
                "code_key": "short",
                "orders": [],
            },
        ),
        ("events", {"event_id": "e", "type": "door_exploded", "ts": "2026-01-01T00:00:00Z"}),
        ("events", {"event_id": "e", "type": "scan", "ts": "2026-01-01T00:00:00Z", "data": {}}),
        ("cmd", {"request_id": "r", "action": "unlock", "compartment": 0}),
        (  # every action but report_state names its compartment
            "cmd",
            {
                "request_id": "r",
                "action": "clear_fault",
                "expires_at": "2026-01-01T00:00:00Z",
                "reply_to": "r/1",
            },
        ),
        (
            "cmd",
            {
                "request_id": "r",
                "action": "report_state",
                "args": {"events_after": -1},
                "expires_at": "2026-01-01T00:00:00Z",
                "reply_to": "r/1",
            },
        ),
        (
            "cmd",
            {
                "request_id": "r",
                "action": "report_state",
                "args": {"readings_after": "ten minutes ago"},
                "expires_at": "2026-01-01T00:00:00Z",
                "reply_to": "r/1",
            },
        ),
        ("telemetry", {"ts": "2026-01-01T00:00:00Z", "readings": [], "resent": "yes"}),
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
        (
            "telemetryMinutes",
            {
                "minute": "2026-01-01T00:00:00Z",
                "seconds": 60,
                "readings": [
                    {"n": 1, "min_c": 60, "mean_c": 61, "max_c": 62, "count": 0, "setpoint_c": 65}
                ],
            },
        ),
        (
            "telemetryMinutes",
            {
                "minute": "2026-01-01T00:00:00Z",
                "seconds": 60,
                "readings": [{"n": 1, "min_c": 60, "count": 3, "setpoint_c": None}],
            },
        ),
        ("telemetryMinutes", {"minute": "2026-01-01T00:00:00Z", "seconds": 60, "readings": []}),
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
    since = contract.utcnow() - timedelta(minutes=1)
    for events_after, readings_after in ((None, None), (41, since)):
        ask = contract.ReportStateCommand(
            request_id="r2",
            expires_at=contract.utcnow() + timedelta(seconds=10),
            reply_to="lockers/replies/service-1",
            args=contract.ReportStateArgs(events_after=events_after, readings_after=readings_after),
        )
        sent = json.loads(ask.to_json())
        assert "compartment" not in sent and sent["args"]["events_after"] == events_after
        args = contract.ReportStateArgs.model_validate(sent["args"])
        assert args.readings_after == readings_after
        validate(asyncapi, "cmd", sent)
    again = contract.Telemetry(
        ts=since, readings=[contract.Reading(n=1, temp_c=63.5, setpoint_c=65.0, heater=True)]
    ).model_copy(update={"resent": True})
    validate(asyncapi, "telemetry", json.loads(again.to_json()))
