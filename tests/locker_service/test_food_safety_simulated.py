"""Each food-safety profile against the simulated board, in virtual time (ADR 0070).

The board's firmware and the compartment's physics (what `lockerctl sim` runs) hold hot food
at the profile's setpoint; then the door is held open, or the heater dies. The board's readings,
one every 10 s as the bridge sends them, go through the food's watch exactly as the service
folds them. The food turns unsafe exactly at the profile's limit: where the readings first fell
below its floor, plus its grace (`us-fda`, `cn`: no excursion tolerated) or its one tolerated
period (`uk-fsa`: 2 h below 63 °C). A door opened for less than the grace is no excursion.

The same verdict's path through the service (the code refused with the words, the purchaser,
merchant and operator told, the audited discard) is `test_food_safety.py` and, through real
processes, `tests/journey/test_food_safety_journey.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from hardware.firmware import CONTROL_PERIOD_S, Board
from hardware.physics import World
from hardware.protocol import Command, FaultCode, Frame, FrameType
from hardware.protocol.messages import SetHeaterRequest
from locker_service.foodsafety import watch
from locker_service.foodsafety.profiles import BUILT_IN, Profile
from locker_service.foodsafety.watch import Unsafe, Watch

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
READING_EVERY_S = 10  # the bridge's telemetry period, nominal
N = 2  # the compartment the food is in
HELD_S = 30 * 60  # hot food held before the trouble starts


class Bank:
    """One simulated board and its physics, stepped in virtual seconds."""

    def __init__(self, profile: Profile) -> None:
        self.world = World(4, seed=11, lobby_c=21.0)
        self.board = Board(self.world, 4, 1, boot_id=0xF00D, now_s=0.0)
        self.world.door_listener = lambda n, opened: self.board.door_edge(
            n, opened, self.world.now_s
        )
        self.setpoint_dc = round(profile.setpoint_c * 10)
        self.readings: list[tuple[datetime, float | None]] = []
        self.seq = 0

    def command_heat(self) -> None:
        """What the bridge does on every poll: the setpoint (which also renews the lease)."""
        self.seq = (self.seq + 1) & 0xFF
        frame = Frame(
            1, FrameType.REQ, self.seq, Command.SET_HEATER,
            SetHeaterRequest(N, self.setpoint_dc).pack(),
        )  # fmt: skip
        answer = self.board.handle(frame, self.world.now_s)
        assert answer is not None
        # A dead element latches the heating watchdog: the board refuses heat until cleared.
        assert answer.type is FrameType.RESP or self.faulted(), answer

    def faulted(self) -> bool:
        return self.board.compartments[N - 1].fault is not FaultCode.NONE

    def run(self, seconds: float, trouble: Callable[[], None] | None = None) -> None:
        end = self.world.now_s + seconds
        while self.world.now_s < end:
            if round(self.world.now_s) % READING_EVERY_S == 0:
                self.command_heat()
                reading = self.world.read_temp(N)
                at = T0 + timedelta(seconds=round(self.world.now_s))
                self.readings.append((at, reading if isinstance(reading, float) else None))
            if trouble is not None:
                trouble()
            self.board.tick(self.world.now_s, CONTROL_PERIOD_S)
            self.world.step(CONTROL_PERIOD_S)


def drop_off_hot(profile: Profile) -> Bank:
    bank = Bank(profile)
    bank.world.compartment(N).lock_released = True
    bank.world.open_door(N)
    bank.world.place_item(N, mass_g=450, temp_c=72.0)
    bank.world.close_door(N)
    bank.run(HELD_S)
    return bank


def verdict(profile: Profile, bank: Bank) -> tuple[Unsafe | None, Watch]:
    seen = Watch(last_ts=T0 - timedelta(seconds=READING_EVERY_S))
    return watch.fold(seen, profile, bank.readings), seen


def first_below(profile: Profile, bank: Bank, after: datetime) -> datetime:
    return next(
        at for at, c in bank.readings if at >= after and c is not None and c < profile.floor_c
    )


def limit_of(profile: Profile) -> timedelta:
    """How long food may stay below the floor: the grace, or the one tolerated period."""
    seconds = profile.excursion_limit_s if profile.excursions_allowed else profile.grace_s
    return timedelta(seconds=seconds)


def door_held_open(bank: Bank) -> Callable[[], None]:
    bank.world.compartment(N).lock_released = True
    bank.world.open_door(N)
    return lambda: None


def heater_killed(bank: Bank) -> Callable[[], None]:
    bank.world.compartment(N).dead_heater = True  # the element open: the relay clicks, no heat
    return lambda: None


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
