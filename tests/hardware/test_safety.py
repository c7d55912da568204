"""Board-side safety: each rule with its fault injected, observed only through the serial port
(and the physical truth, which shows what a person at the locker would see or feel).

The simulator runs on a manual clock, so an hour of heating takes a fraction of a second and
every outcome is the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardware.firmware import (
    HEATER_LEASE_S,
    OVER_TEMPERATURE_C,
    UV_MAX_ON_S,
    WATCHDOG_WINDOW_S,
)
from hardware.protocol import (
    BoardFlags,
    Command,
    ErrorCode,
    FaultCode,
    Frame,
    FrameType,
    HelloAnswer,
)
from hardware.protocol.messages import (
    CompartmentRequest,
    SetHeaterRequest,
    StartDisinfectRequest,
    UnlockRequest,
)
from hardware.simulator import Simulator
from tests.hardware.link import BoardLink


@pytest.fixture
def bank() -> Iterator[tuple[Simulator, BoardLink]]:
    with Simulator(compartments=4, seed=11, manual_clock=True) as sim:
        board_path, _ = sim.open_pty()
        link = BoardLink(board_path)
        try:
            yield sim, link
        finally:
            link.close()


def _heat(link: BoardLink, n: int, setpoint_c: float = 65.0) -> None:
    link.ok(Command.SET_HEATER, SetHeaterRequest(n, round(setpoint_c * 10)).pack())


def _poll_while(sim: Simulator, link: BoardLink, seconds: float, step_s: float = 60.0) -> None:
    """Let time pass while the master keeps polling (so the heater lease stays fresh)."""
    passed = 0.0
    while passed < seconds:
        sim.advance(step_s)
        link.status()
        passed += step_s


def test_over_temperature_opens_the_contactor_even_with_a_welded_relay(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    _heat(link, 1)
    sim.faults.stuck_heater(1)
    _poll_while(sim, link, 1800, step_s=30)
    record = link.status().compartments[0]
    assert record.fault is FaultCode.OVER_TEMPERATURE
    assert record.setpoint_dc is None and not record.heater_on
    truth = sim.truth().compartments[0]
    assert not truth.contactor_closed and truth.heater_w == 0.0
    # It tripped at the limit, not long after: the air never got far past 85 °C.
    assert truth.air_temp_c < OVER_TEMPERATURE_C + 5
    assert link.error(Command.SET_HEATER, SetHeaterRequest(1, 650).pack()) == (
        ErrorCode.FAULTED,
        FaultCode.OVER_TEMPERATURE,
    )


@pytest.mark.parametrize(
    ("mode", "fault"), [("open", FaultCode.SENSOR_OPEN), ("short", FaultCode.SENSOR_SHORT)]
)
def test_broken_probe_switches_the_heater_off_and_latches(
    bank: tuple[Simulator, BoardLink], mode: str, fault: FaultCode
) -> None:
    sim, link = bank
    _heat(link, 2)
    _poll_while(sim, link, 120)
    assert sim.truth().compartments[1].heater_w > 0
    sim.faults.sensor(2, "open" if mode == "open" else "short")
    sim.advance(2)
    record = link.status().compartments[1]
    assert record.temp_dc is None and record.fault is fault
    assert record.setpoint_dc is None and not record.heater_on
    assert link.status().board_flags & BoardFlags.ANY_FAULT
    sim.advance(2)
    assert sim.truth().compartments[1].heater_w == 0.0
    # Clearing is refused while the probe is still broken, accepted once it is mended.
    assert link.error(Command.CLEAR_FAULT, CompartmentRequest(2).pack()) == (
        ErrorCode.FAULTED,
        fault,
    )
    sim.faults.sensor(2, None)
    assert link.ok(Command.CLEAR_FAULT, CompartmentRequest(2).pack()) == bytes([2, fault])
    sim.advance(2)
    record = link.status().compartments[1]
    assert record.fault is FaultCode.NONE and record.temp_dc is not None
    assert record.setpoint_dc is None  # heating resumes only when the master asks again


def test_heating_watchdog_catches_a_dead_element(bank: tuple[Simulator, BoardLink]) -> None:
    sim, link = bank
    _heat(link, 3)
    _poll_while(sim, link, 1800)
    assert link.status().compartments[2].fault is FaultCode.NONE  # a healthy warm-up passes
    sim.faults.dead_heater(3)
    _poll_while(sim, link, 1800, step_s=30)
    record = link.status().compartments[2]
    assert record.fault is FaultCode.HEATING_WATCHDOG
    assert not record.heater_on and record.setpoint_dc is None


def test_watchdog_does_not_trip_while_a_cold_meal_warms_up(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    link.ok(Command.UNLOCK, UnlockRequest(4).pack())
    sim.world.open_door(4)
    sim.world.place_item(4, mass_g=2000, temp_c=2)  # a big, fridge-cold order
    sim.world.close_door(4)
    sim.world.set_lobby_temp(5)  # and a cold lobby
    _heat(link, 4, 75.0)
    _poll_while(sim, link, 2 * WATCHDOG_WINDOW_S + 1200, step_s=30)
    record = link.status().compartments[3]
    assert record.fault is FaultCode.NONE and record.temp_dc is not None
    assert record.temp_dc > 700


def test_uv_refused_with_the_door_open_and_stopped_when_it_opens(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    link.ok(Command.UNLOCK, UnlockRequest(1).pack())
    sim.world.open_door(1)
    assert link.error(Command.START_DISINFECT, StartDisinfectRequest(1, 1800).pack()) == (
        ErrorCode.INTERLOCK_REFUSED,
        1,
    )
    assert not sim.truth().compartments[0].uv_on
    sim.world.close_door(1)
    link.ok(Command.START_DISINFECT, StartDisinfectRequest(1, 1800).pack())
    sim.advance(60)
    assert sim.truth().compartments[0].uv_on
    sim.world.open_door(1, force=True)  # forced open during the cycle
    truth = sim.truth().compartments[0]
    assert not truth.uv_on  # out at once, by the door switch interrupt
    record = link.status().compartments[0]
    assert not record.disinfecting and not record.uv_on
    assert record.flags & 0x80  # CYCLE_ABORTED: the master can tell it from a completed cycle


def test_lock_refuses_during_a_cycle_unless_overridden(bank: tuple[Simulator, BoardLink]) -> None:
    sim, link = bank
    link.ok(Command.START_DISINFECT, StartDisinfectRequest(2, 1800).pack())
    assert link.error(Command.UNLOCK, UnlockRequest(2).pack()) == (ErrorCode.INTERLOCK_REFUSED, 2)
    assert sim.truth().compartments[1].lock_pulses == 0
    link.ok(Command.UNLOCK, UnlockRequest(2, override_cycle=True).pack())
    truth = sim.truth().compartments[1]
    assert truth.lock_pulses == 1 and truth.lock_released and not truth.uv_on


def test_completed_cycle_puts_the_lamp_out_without_the_aborted_flag(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    link.ok(Command.START_DISINFECT, StartDisinfectRequest(3, 1800).pack())
    sim.advance(1000)
    assert link.status().compartments[2].disinfect_remaining_s == 800
    sim.advance(900)
    record = link.status().compartments[2]
    assert not record.disinfecting and not record.uv_on and not record.flags & 0x80
    assert sim.truth().compartments[2].uv_on_s == pytest.approx(1800, abs=2)


def test_uv_on_time_is_capped_even_when_the_master_keeps_restarting(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    for _ in range(5):
        link.request(Command.START_DISINFECT, StartDisinfectRequest(4, 3000).pack())
        sim.advance(1000)
    record = link.status().compartments[3]
    assert record.fault is FaultCode.UV_TIMEOUT and not record.uv_on
    assert sim.truth().compartments[3].uv_on_s <= UV_MAX_ON_S + 1
    assert link.error(Command.START_DISINFECT, StartDisinfectRequest(4, 60).pack()) == (
        ErrorCode.FAULTED,
        FaultCode.UV_TIMEOUT,
    )


def test_heater_lease_switches_heaters_off_when_the_link_goes_silent(
    bank: tuple[Simulator, BoardLink],
) -> None:
    sim, link = bank
    lease = HelloAnswer.unpack(link.ok(Command.HELLO)).heater_lease_s
    assert lease == HEATER_LEASE_S
    _heat(link, 1)
    link.ok(Command.START_DISINFECT, StartDisinfectRequest(2, 3000).pack())
    sim.advance(lease - 60)
    assert sim.truth().compartments[0].setpoint_c == 65.0  # still holding on its own
    sim.advance(120)  # silence passes the lease
    truth = sim.truth()
    assert truth.heater_lease_expired and truth.compartments[0].heater_w == 0.0
    assert truth.compartments[1].disinfecting  # a started cycle runs on by itself
    answer = link.status()
    assert answer.board_flags & BoardFlags.HEATER_LEASE_EXPIRED
    assert answer.compartments[0].setpoint_dc is None
    _heat(link, 1)  # the master takes charge again
    assert not link.status().board_flags & BoardFlags.HEATER_LEASE_EXPIRED


def test_polling_keeps_the_lease_alive(bank: tuple[Simulator, BoardLink]) -> None:
    sim, link = bank
    _heat(link, 1)
    _poll_while(sim, link, 3 * HEATER_LEASE_S, step_s=120)
    assert not link.status().board_flags & BoardFlags.HEATER_LEASE_EXPIRED
    assert sim.truth().compartments[0].setpoint_c == 65.0


def test_jammed_lock_is_reported(bank: tuple[Simulator, BoardLink]) -> None:
    sim, link = bank
    sim.faults.jam_lock(3)
    link.ok(Command.UNLOCK, UnlockRequest(3, 500).pack())
    sim.advance(2)
    record = link.status().compartments[2]
    assert record.fault is FaultCode.LOCK_JAMMED and not record.lock_released
    assert sim.truth().compartments[2].lock_pulses == 1


def test_reboot_is_silent_then_announces_a_new_boot_id(bank: tuple[Simulator, BoardLink]) -> None:
    sim, link = bank
    before = HelloAnswer.unpack(link.ok(Command.HELLO)).boot_id
    _heat(link, 1)
    link.ok(Command.UNLOCK, UnlockRequest(2).pack())
    sim.world.open_door(2)
    sim.faults.reboot()
    hello = Frame(1, FrameType.REQ, 0x70, Command.HELLO)
    assert link.exchange(hello, timeout_s=0.3) is None  # booting: silent
    sim.advance(3)
    answer = link.status()
    assert answer.boot_id != before
    c1, c2 = answer.compartments[0], answer.compartments[1]
    assert c1.setpoint_dc is None and c2.door_open_count == 0  # RAM lost
    assert c2.door_open  # the door itself did not move
