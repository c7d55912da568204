"""Commands as a tagged union on `action`: each action parses to its own model with typed args,
args that do not fit the action are refused, and the JSON on the wire keeps its shape."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from firmware_bridge import contract


def raw(action: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "r1",
        "action": action,
        "compartment": 4,
        "expires_at": "2026-12-03T10:00:00+00:00",
        "reply_to": "lockers/v1/k1/replies/service-1",
    }
    if args is not None:
        data["args"] = args
    return data


def test_each_action_parses_to_its_own_model_with_typed_args() -> None:
    unlock = contract.command_from_dict(raw("unlock", {"pulse_ms": 700, "override_cycle": True}))
    assert isinstance(unlock, contract.UnlockCommand)
    assert (unlock.args.pulse_ms, unlock.args.override_cycle, unlock.args.deadline_s) == (
        700,
        True,
        3.0,
    )
    heater = contract.command_from_dict(raw("set_heater", {"setpoint_c": 63.5}))
    assert isinstance(heater, contract.SetHeaterCommand) and heater.args.setpoint_c == 63.5
    off = contract.command_from_dict(raw("set_heater", {"setpoint_c": None}))
    assert isinstance(off, contract.SetHeaterCommand) and off.args.setpoint_c is None
    cycle = contract.command_from_dict(raw("start_disinfection"))
    assert isinstance(cycle, contract.StartDisinfectionCommand) and cycle.args.duration_s == 1800
    assert isinstance(
        contract.command_from_dict(raw("abort_disinfection")), contract.AbortDisinfectionCommand
    )
    assert isinstance(
        contract.command_from_dict(raw("clear_fault", {})), contract.ClearFaultCommand
    )


@pytest.mark.parametrize(
    "data",
    [
        raw("open_everything"),
        raw("set_heater"),  # "off" must be said: setpoint_c null
        raw("set_heater", {}),
        raw("set_heater", {"setpoint_c": 90}),
        raw("unlock", {"pulse_ms": 10}),
        raw("unlock", {"deadline_s": 0}),
        raw("start_disinfection", {"duration_s": 0}),
        raw("start_disinfection", {"duration_s": "long"}),
        {k: v for k, v in raw("unlock").items() if k != "action"},
    ],
)
def test_args_that_do_not_fit_the_action_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        contract.command_from_dict(data)


def test_the_json_on_the_wire_is_one_object_with_action_and_its_args() -> None:
    command = contract.SetHeaterCommand(
        request_id="r9",
        compartment=2,
        args=contract.SetHeaterArgs(setpoint_c=None),
        expires_at=contract.utcnow() + timedelta(seconds=5),
        reply_to="lockers/v1/k1/replies/service-1",
    )
    on_wire = json.loads(command.to_json())
    assert list(on_wire) == [
        "request_id",
        "action",
        "compartment",
        "args",
        "expires_at",
        "reply_to",
    ]
    assert on_wire["action"] == "set_heater" and on_wire["args"] == {"setpoint_c": None}
    assert contract.command_from_json(command.to_json()) == command


@given(
    pulse_ms=st.integers(50, 2000),
    override_cycle=st.booleans(),
    deadline_s=st.floats(0.01, 30),
    n=st.integers(1, 255),
)
def test_an_unlock_survives_the_round_trip_through_json(
    pulse_ms: int, override_cycle: bool, deadline_s: float, n: int
) -> None:
    command = contract.UnlockCommand(
        request_id="r",
        compartment=n,
        args=contract.UnlockArgs(
            pulse_ms=pulse_ms, override_cycle=override_cycle, deadline_s=deadline_s
        ),
        expires_at=contract.utcnow(),
        reply_to="x/y",
    )
    assert contract.command_from_json(command.to_json()) == command
    assert contract.command_from_dict(json.loads(command.to_json())) == command


def test_every_action_of_the_contract_has_a_model() -> None:
    for action in contract.ACTIONS:
        args = {"setpoint_c": None} if action == "set_heater" else {}
        assert contract.command_from_dict(raw(action, args)).action == action
