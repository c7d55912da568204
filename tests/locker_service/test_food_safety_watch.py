"""The food's watch, pure: per profile the food turns unsafe exactly at the profile's limit,
a door's short dip is no excursion, a dithering reading is one stretch, a sensor gone quiet or
silent is unsafe past its limit, and the clock's deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from locker_service.config import Settings
from locker_service.foodsafety import profiles, watch
from locker_service.foodsafety.profiles import BUILT_IN, Profile
from locker_service.foodsafety.watch import Unsafe, Watch

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)


def series(*stretches: tuple[float | None, timedelta]) -> list[tuple[datetime, float | None]]:
    """Readings every 10 s: each stretch a temperature held for a time."""
    out: list[tuple[datetime, float | None]] = []
    ts = T0
    for temp, length in stretches:
        end = ts + length
        while ts < end:
            out.append((ts, temp))
            ts += STEP
    return out


def run(profile: Profile, readings: list[tuple[datetime, float | None]]) -> Unsafe | None:
    return watch.fold(Watch(last_ts=T0 - STEP), profile, readings)


@pytest.mark.parametrize("name", ["us-fda", "cn"])
def test_below_the_floor_past_the_grace_is_unsafe_at_the_grace(name: str) -> None:
    rules = BUILT_IN[name]  # type: ignore[index]
    hot, cold = rules.setpoint_c, rules.floor_c - 1.0
    started = T0 + timedelta(minutes=30)
    verdict = run(rules, series((hot, timedelta(minutes=30)), (cold, timedelta(minutes=40))))
    assert verdict is not None
    assert verdict.at == started + timedelta(seconds=rules.grace_s)  # exactly at the limit
    assert f"below {rules.floor_c:g} °C" in verdict.why


@pytest.mark.parametrize("name", ["us-fda", "uk-fsa", "cn"])
def test_a_door_opening_shorter_than_the_grace_is_no_excursion(name: str) -> None:
    rules = BUILT_IN[name]  # type: ignore[index]
    dip = timedelta(seconds=rules.grace_s) - STEP
    readings = series(
        (rules.setpoint_c, timedelta(minutes=10)),
        (rules.floor_c - 5, dip),
        (rules.setpoint_c, timedelta(minutes=10)),
    )
    seen = Watch(last_ts=T0 - STEP)
    assert watch.fold(seen, rules, readings) is None
    assert seen.excursions == 0 and seen.min_c == rules.floor_c - 5


def test_uk_tolerates_one_period_below_63_of_at_most_two_hours() -> None:
    rules = BUILT_IN["uk-fsa"]
    one_period = series(
        (68.0, timedelta(minutes=10)), (61.0, timedelta(minutes=90)), (68.0, timedelta(hours=1))
    )
    assert run(rules, one_period) is None
    # The tolerated period lasts more than 2 h: unsafe at 2 h.
    too_long = series((68.0, timedelta(minutes=10)), (61.0, timedelta(hours=3)))
    verdict = run(rules, too_long)
    assert verdict == Unsafe(T0 + timedelta(minutes=10, hours=2), "below 63 °C for more than 2 h")
    # A second period past the grace: unsafe at its grace.
    second = series(
        (68.0, timedelta(minutes=10)),
        (61.0, timedelta(minutes=30)),
        (68.0, timedelta(minutes=20)),
        (61.0, timedelta(minutes=30)),
    )
    verdict = run(rules, second)
    assert verdict is not None
    assert verdict.at == T0 + timedelta(minutes=60) + timedelta(seconds=rules.grace_s)
    assert "a second time" in verdict.why


def test_a_reading_dithering_on_the_floor_is_one_stretch() -> None:
    rules = BUILT_IN["uk-fsa"]
    dither: list[tuple[float | None, timedelta]] = [(68.0, timedelta(minutes=5))]
    for _ in range(20):  # 62.9 / 63.2 for 40 minutes: never back at 63.5
        dither += [(62.9, timedelta(minutes=1)), (63.2, timedelta(minutes=1))]
    seen = Watch(last_ts=T0 - STEP)
    assert watch.fold(seen, rules, series(*dither)) is None
    assert seen.excursions == 1  # one period, tolerated (under 2 h)


def test_a_sensor_with_no_temperature_past_its_limit_is_unsafe() -> None:
    rules = BUILT_IN["cn"]
    verdict = run(rules, series((65.0, timedelta(minutes=5)), (None, timedelta(minutes=20))))
    assert verdict is not None
    assert verdict.at == T0 + timedelta(minutes=5) + timedelta(seconds=rules.unknown_limit_s)
    assert "sensor fault" in verdict.why


def test_silence_past_the_limit_is_unsafe_and_a_gap_in_the_readings_too() -> None:
    rules = BUILT_IN["us-fda"]
    seen = Watch(last_ts=T0)
    limit = timedelta(seconds=rules.unknown_limit_s)
    assert watch.silent_since(seen, rules, T0 + limit) is None
    assert watch.silent_since(seen, rules, T0 + limit + STEP) == Unsafe(
        T0 + limit, "no temperature reading for more than 15 min"
    )
    gap = [(T0 + STEP, 63.0), (T0 + STEP + limit + STEP, 63.0)]
    assert run(rules, gap) == Unsafe(
        T0 + STEP + limit, "no temperature reading for more than 15 min"
    )


def test_readings_already_folded_are_not_counted_twice() -> None:
    rules = BUILT_IN["us-fda"]
    readings = series((63.0, timedelta(minutes=5)), (50.0, timedelta(minutes=10)))
    seen = Watch(last_ts=T0 - STEP)
    assert watch.fold(seen, rules, readings) is None
    assert watch.fold(seen, rules, readings) is None  # the same again: nothing new
    kept = Watch.from_json(seen.to_json())
    assert kept == seen
    more = series((63.0, timedelta(minutes=5)), (50.0, timedelta(minutes=16)))
    verdict = watch.fold(kept, rules, more)
    assert verdict is not None and verdict.at == T0 + timedelta(minutes=20)


def test_the_watch_counts_each_timestamp_once_and_knows_when_readings_came_late() -> None:
    rules = BUILT_IN["us-fda"]
    readings = series((63.0, timedelta(minutes=10)))  # 60 readings
    around_a_gap = readings[:20] + readings[40:]
    seen = Watch(last_ts=T0 - STEP)
    assert watch.fold(seen, rules, around_a_gap) is None
    assert watch.fold(seen, rules, around_a_gap[-5:]) is None  # folded already: not counted
    assert seen.readings == 40
    assert not seen.stale(40)  # what is stored up to its last reading is what it folded
    assert seen.stale(60)  # the gap's 20 readings were stored later
    assert watch.fold(seen, rules, readings[20:40]) is None  # older than the last: skipped
    assert seen.readings == 40
    again = Watch(last_ts=T0 - STEP)  # folded again from the start, the gap in its place
    assert watch.fold(again, rules, readings) is None and not again.stale(60)
    assert Watch.from_json(again.to_json()).readings == 60
    assert Watch.from_json({"last_ts": T0.isoformat()}).stale(1)  # a watch kept before counts


def test_the_deadline_is_the_earliest_of_the_limits() -> None:
    rules = BUILT_IN["us-fda"]
    cooked = T0
    deadline = watch.deadline(rules, cooked)
    assert deadline == T0 + timedelta(hours=4)
    assert watch.hold_until(rules, T0 + timedelta(hours=1), deadline) == deadline
    assert watch.hold_until(rules, T0, None) == T0 + timedelta(hours=4)


def test_custom_is_the_settings_and_time_scale_shortens_all_but_silence_and_warm_up() -> None:
    settings = Settings(
        secret_key="k" * 40,
        hold_floor_c=58.0,
        hold_setpoint_c=64.0,
        hold_limit_s=7200.0,
        food_cooking_limit_s=3600.0,
        time_scale=60.0,
    )
    custom = profiles.nominal(settings, "custom")
    assert (custom.floor_c, custom.setpoint_c, custom.ready_limit_s) == (58.0, 64.0, 7200.0)
    real = profiles.for_site(settings, "custom")
    assert real.cooking_limit_s == 60.0 and real.grace_s == settings.hold_floor_grace_s / 60
    assert real.unknown_limit_s == profiles.UNKNOWN_MIN_REAL_S  # 15 s scaled: raised to 30 s
    assert real.warmup_s == profiles.WARMUP_MIN_REAL_S  # 30 s scaled: kept at 30 s
    fast = profiles.for_site(settings.model_copy(update={"time_scale": 120.0}), "custom")
    assert fast.warmup_s == profiles.WARMUP_MIN_REAL_S  # 15 s scaled: raised to 30 s
    assert profiles.nominal(settings, "cn").cooking_limit_s == settings.food_cn_cooking_limit_s
    with pytest.raises(ValueError, match="unknown food-safety profile"):
        profiles.nominal(settings, "eu")
    with pytest.raises(ValueError, match="below its floor"):
        Profile("custom", 60, 55, 60, 60, 60, 0, 0, 60)


def test_a_cold_compartment_has_its_warm_up_then_the_grace() -> None:
    rules = BUILT_IN["us-fda"]  # grace 15 min, warm-up 30 min
    # Lobby-cold at the drop-off, at the floor after 25 minutes: no excursion, and from then on
    # the grace applies.
    warming = [(20.0 + i, timedelta(minutes=1)) for i in range(25)]
    seen = Watch(last_ts=T0 - STEP)
    readings = series(*warming, (57.2, timedelta(minutes=10)), (63.0, timedelta(minutes=5)))
    assert watch.fold(seen, rules, readings) is None
    assert seen.warmed and seen.excursions == 0
    # Never warm within 30 minutes: unsafe at 30 minutes.
    verdict = run(rules, series((30.0, timedelta(minutes=45))))
    assert verdict == Unsafe(
        T0 + timedelta(minutes=30), "not brought up to 57 °C within 30 min of the drop-off"
    )
