"""A simulated board holding one compartment of hot food, stepped in virtual time: the firmware
and physics `lockerctl sim` runs, read every 10 s as the bridge reads it. For the food-safety
tests: the food held hot, then the door held open or the heater killed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hardware.firmware import CONTROL_PERIOD_S, Board
from hardware.physics import World
from hardware.protocol import Command, FaultCode, Frame, FrameType
from hardware.protocol.messages import SetHeaterRequest
from locker_service.foodsafety.profiles import Profile

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
