"""Each food-safety profile against the simulated board, in virtual time (ADR 0070).

The board's firmware and the compartment's physics (what `lockerctl sim` runs) hold hot food
at the profile's setpoint; then the door is held open, or the heater dies. The board's readings,
one every 10 s as the bridge sends them, go through the food's watch exactly as the service
folds them. The food turns unsafe exactly at the profile's limit: where the readings first fell
below its floor, plus its grace (`us-fda`, `cn`: no excursion tolerated) or its one tolerated
period (`uk-fsa`: 2 h below 63 °C). A door opened for less than the grace is no excursion.

The same readings stored as the bridge's telemetry and judged by the service's food check (the
code refused with the words, the purchaser, merchant and operator told) are
`test_food_safety.py::test_the_simulated_board_s_readings_spoil_the_food_at_the_limit_and_all_are_told`;
the audited discard is there too, and through real processes in
`tests/journey/test_food_safety_journey.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from locker_service.foodsafety import watch
from locker_service.foodsafety.profiles import BUILT_IN, Profile
from locker_service.foodsafety.watch import Unsafe, Watch
from tests.support.simulated_bank import (
    HELD_S,
    READING_EVERY_S,
    T0,
    Bank,
    N,
    door_held_open,
    drop_off_hot,
    first_below,
    heater_killed,
    limit_of,
)


def verdict(profile: Profile, bank: Bank) -> tuple[Unsafe | None, Watch]:
    seen = Watch(last_ts=T0 - timedelta(seconds=READING_EVERY_S))
    return watch.fold(seen, profile, bank.readings), seen


@pytest.mark.parametrize("name", ["us-fda", "uk-fsa", "cn"])
@pytest.mark.parametrize("trouble", [door_held_open, heater_killed], ids=lambda t: t.__name__)
def test_the_food_turns_unsafe_exactly_at_the_profile_s_limit(
    name: str, trouble: Callable[[Bank], Callable[[], None]]
) -> None:
    profile = BUILT_IN[name]  # type: ignore[index]
    bank = drop_off_hot(profile)
    assert verdict(profile, bank)[0] is None  # held hot: safe
    held = [c for _, c in bank.readings[-30:] if c is not None]
    assert min(held) >= profile.floor_c, held  # the board holds it above the floor
    started = T0 + timedelta(seconds=HELD_S)
    keep_going = trouble(bank)
    bank.run(limit_of(profile).total_seconds() + 3 * 3600, keep_going)

    unsafe, seen = verdict(profile, bank)
    assert unsafe is not None, (name, seen)
    if trouble is heater_killed:
        assert bank.faulted()  # what the operator's grid shows beside it
    assert unsafe.at == first_below(profile, bank, started) + limit_of(profile)
    assert f"below {profile.floor_c:g} °C" in unsafe.why
    # Nothing was judged before the limit: the readings up to it alone are still safe.
    before = [(at, c) for at, c in bank.readings if at < unsafe.at]
    again = Watch(last_ts=T0 - timedelta(seconds=READING_EVERY_S))
    assert watch.fold(again, profile, before) is None


@pytest.mark.parametrize("name", ["us-fda", "uk-fsa", "cn"])
def test_a_door_open_for_less_than_the_grace_is_no_excursion(name: str) -> None:
    profile = BUILT_IN[name]  # type: ignore[index]
    bank = drop_off_hot(profile)
    door_held_open(bank)
    bank.run(profile.grace_s / 2)  # a courier's long look, then shut: the board heats it back
    bank.world.close_door(N)
    bank.run(3600)
    unsafe, seen = verdict(profile, bank)
    assert unsafe is None and seen.excursions == 0, seen
