"""The lamp record of a cycle, checked and judged (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from locker_service.foodsafety.uv_dose import ImpossibleRecord, LampRecord, judge, required_dose


def lamp(**values: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "duration_s": 1800,
        "elapsed_s": 1800,
        "lamp_on_s": 1800,
        "interruptions": 0,
        "dark": [],
    }
    record.update(values)
    return {"lamp": record}


def test_a_full_cycle_with_the_lamp_lit_throughout_meets_its_dose() -> None:
    record = LampRecord.from_event(lamp(), 1800, completed=True)
    assert record is not None
    dose = judge(record, 0.06, 1800, 0.95)
    assert dose.outcome == "dose_met"
    assert dose.dose_mj_cm2 == pytest.approx(108.0)
    assert dose.required_mj_cm2 == pytest.approx(102.6)


def test_a_lamp_dark_for_five_minutes_of_thirty_is_short() -> None:
    record = LampRecord.from_event(
        lamp(lamp_on_s=1500, interruptions=1, dark=[{"at_s": 600, "dark_s": 300}]),
        1800,
        completed=True,
    )
    assert record is not None
    dose = judge(record, 0.06, 1800, 0.95)
    assert dose.outcome == "short_dose"
    assert dose.dose_mj_cm2 == pytest.approx(90.0)


def test_a_short_flicker_within_the_margin_still_meets_the_dose() -> None:
    record = LampRecord.from_event(
        lamp(lamp_on_s=1790.5, interruptions=1, dark=[{"at_s": 30, "dark_s": 9.5}]),
        1800,
        completed=True,
    )
    assert judge(record, 0.06, 1800, 0.95).outcome == "dose_met"


def test_an_older_board_reports_nothing_and_the_dose_is_not_reported() -> None:
    assert LampRecord.from_event({}, 1800, completed=True) is None
    dose = judge(None, 0.06, 1800, 0.95)
    assert (dose.outcome, dose.dose_mj_cm2) == ("not_reported", None)
    assert dose.required_mj_cm2 == required_dose(0.06, 1800, 0.95)


def test_more_dark_stretches_than_the_board_lists_are_counted() -> None:
    dark = [{"at_s": 100 * i, "dark_s": 1} for i in range(1, 9)]
    record = LampRecord.from_event(
        lamp(lamp_on_s=1790, interruptions=10, dark=dark), 1800, completed=True
    )
    assert record is not None and record.interruptions == 10 and len(record.dark) == 8


@pytest.mark.parametrize(
    ("data", "commanded", "completed", "why"),
    [
        (lamp(lamp_on_s=1900, elapsed_s=1800), 1800, True, "lamp lit"),
        (lamp(elapsed_s=1900, lamp_on_s=1900), 1800, True, "that ran"),
        (lamp(duration_s=60, elapsed_s=60, lamp_on_s=60), 1800, True, "commanded"),
        (lamp(elapsed_s=900, lamp_on_s=900), 1800, True, "reported complete"),
        (lamp(lamp_on_s=1000), 1800, True, "no dark stretch"),
        (
            lamp(lamp_on_s=1500, interruptions=2, dark=[{"at_s": 1, "dark_s": 300}]),
            1800,
            True,
            "counted",
        ),
        (
            lamp(lamp_on_s=1500, interruptions=1, dark=[{"at_s": 1700, "dark_s": 300}]),
            1800,
            True,
            "outside",
        ),
        (
            lamp(
                lamp_on_s=1500,
                interruptions=2,
                dark=[{"at_s": 900, "dark_s": 150}, {"at_s": 100, "dark_s": 150}],
            ),
            1800,
            True,
            "outside the cycle or order",
        ),
        (
            lamp(lamp_on_s=1700, interruptions=1, dark=[{"at_s": 10, "dark_s": 10}]),
            1800,
            True,
            "dark 10",
        ),
        (lamp(lamp_on_s="1800"), 1800, True, "not a number"),
        (lamp(lamp_on_s=True), 1800, True, "not a number"),
        (lamp(lamp_on_s=float("nan")), 1800, True, "out of range"),
        (lamp(interruptions=-1), 1800, True, "count"),
        (lamp(dark="none"), 1800, True, "list"),
        ({"lamp": [1, 2]}, 1800, True, "not an object"),
    ],
)
def test_a_record_no_board_could_make_is_refused(
    data: dict[str, Any], commanded: float, completed: bool, why: str
) -> None:
    with pytest.raises(ImpossibleRecord, match=why):
        LampRecord.from_event(data, commanded, completed=completed)


def test_an_aborted_cycle_may_have_run_less_than_its_duration() -> None:
    record = LampRecord.from_event(lamp(elapsed_s=900, lamp_on_s=900), 1800, completed=False)
    assert record is not None and record.elapsed_s == 900
