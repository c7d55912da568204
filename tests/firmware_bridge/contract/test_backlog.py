"""The kept-telemetry payload: a bucket's numbers add up, or the message is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from firmware_bridge.contract import TelemetryMinutes


def bucket(**reading: Any) -> dict[str, Any]:
    base = {"n": 1, "min_c": 60.0, "mean_c": 61.0, "max_c": 62.0, "count": 6, "setpoint_c": 65}
    return {"minute": "2026-01-01T00:00:00Z", "seconds": 60, "readings": [{**base, **reading}]}


def test_a_bucket_as_the_contract_shows_it_is_read_with_its_counts() -> None:
    minutes = TelemetryMinutes.model_validate(bucket(heater_on=4))
    [reading] = minutes.readings
    assert (reading.min_c, reading.mean_c, reading.max_c, reading.count) == (60, 61, 62, 6)
    assert (reading.faulted, reading.heater_on) == (0, 4)  # absent: none
    faulted = TelemetryMinutes.model_validate(
        bucket(min_c=None, mean_c=None, max_c=None, count=0, faulted=6)
    )
    assert faulted.readings[0].mean_c is None


@pytest.mark.parametrize(
    "changes",
    [
        {"count": 0},  # temperatures of no reading
        {"min_c": None},  # a count without its temperatures
        {"min_c": None, "mean_c": None, "max_c": None, "count": 0},  # nothing folded at all
        {"mean_c": 63.0},  # a mean above the max
        {"min_c": 63.0, "mean_c": 62.5},  # a min above the max
        {"heater_on": 7},  # more heater readings than readings
        {"count": -1},
    ],
)
def test_a_bucket_whose_numbers_do_not_add_up_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TelemetryMinutes.model_validate(bucket(**changes))


def test_a_compartment_twice_in_one_bucket_or_no_compartment_is_refused() -> None:
    twice = bucket()
    twice["readings"] *= 2
    with pytest.raises(ValidationError):
        TelemetryMinutes.model_validate(twice)
    with pytest.raises(ValidationError):
        TelemetryMinutes.model_validate({**bucket(), "readings": []})
    with pytest.raises(ValidationError):
        TelemetryMinutes.model_validate({**bucket(), "minute": "2026-01-01T00:00:00"})  # no zone
