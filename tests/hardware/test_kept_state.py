"""The simulated bank's physical state on disk: what a restart keeps, what it loses, and how it
is written (hardware/simulator/keep.py, ADR 0065)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.protocol import FaultCode
from hardware.simulator import Simulator
from hardware.simulator.keep import (
    StateFileError,
    StateKeeper,
    physical_state,
    read_state,
    restore_physical_state,
    write_state,
)


def bank_with_food() -> Simulator:
    """A bank ten minutes into the story: hot food in 3, door 5 left open."""
    sim = Simulator(compartments=6, seed=3, manual_clock=True)
    sim.world.open_door(3, force=True)
    sim.world.place_item(3, mass_g=450.0, temp_c=70.0)
    sim.world.close_door(3)
    sim.world.open_door(5, force=True)
    sim.advance(600)
    return sim


def test_a_restored_bank_has_its_food_doors_and_heat_and_a_new_boot(tmp_path: Path) -> None:
    before = bank_with_food()
    was = {c.number: c for c in before.truth().compartments}
    path = tmp_path / "sim.json"
    write_state(path, physical_state(before.state))

    after = Simulator(compartments=6, seed=3, manual_clock=True)
    assert after.board.boot_id == before.board.boot_id  # the same seed: the same first boot
    kept = read_state(path)
    assert kept is not None
    boot_id = restore_physical_state(after.state, kept)
    now = {c.number: c for c in after.truth().compartments}

    assert boot_id == after.board.boot_id != before.board.boot_id
    assert now[3].occupied and now[3].item_mass_g == 450.0
    assert now[3].food_temp_c == pytest.approx(was[3].food_temp_c, abs=1e-3)
    assert now[3].air_temp_c == pytest.approx(was[3].air_temp_c, abs=1e-3)
    assert not now[3].door_open and now[5].door_open
    assert not any(now[n].occupied for n in (1, 2, 4, 5, 6))
    # What lived in the board's RAM is gone, as after a power cut: no counts, no heating.
    assert was[3].door_open_count == 1
    assert all(c.door_open_count == 0 and c.door_close_count == 0 for c in now.values())
    assert all(c.setpoint_c is None and c.heater_duty == 0 and not c.uv_on for c in now.values())


def test_hardware_broken_by_hand_stays_broken_but_the_boards_faults_are_cleared(
    tmp_path: Path,
) -> None:
    before = Simulator(compartments=4, seed=1, manual_clock=True)
    before.faults.sensor(2, "open")
    before.faults.dead_heater(4)
    before.faults.dead_lamp(3)
    before.advance(5)
    assert before.truth().compartments[1].fault == FaultCode.SENSOR_OPEN.name
    path = tmp_path / "sim.json"
    write_state(path, physical_state(before.state))

    after = Simulator(compartments=4, seed=1, manual_clock=True)
    kept = read_state(path)
    assert kept is not None
    restore_physical_state(after.state, kept)
    rows = after.truth().compartments
    assert rows[1].sensor_fault == "open" and rows[3].dead_heater
    assert rows[2].dead_lamp and not rows[0].dead_lamp
    assert rows[1].fault == "NONE"  # latched in RAM: the new boot finds it again by itself
    after.advance(3)
    assert after.truth().compartments[1].fault == FaultCode.SENSOR_OPEN.name


def test_the_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    sim = bank_with_food()
    path = tmp_path / "sim.json"
    keeper = StateKeeper(sim.state, path, period_s=3600)
    keeper.start()
    assert path.stat().st_mode & 0o777 == 0o600
    sim.world.open_door(3, force=True)
    sim.world.remove_item(3)
    keeper.stop()  # the clean stop's save
    data = json.loads(path.read_text())
    assert data["compartments"][2]["food_mass_g"] == 0.0
    assert data["compartments"][2]["door_open"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["sim.json"]  # no temporary file left


def test_no_file_is_no_state_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    assert read_state(tmp_path / "none.json") is None
    damaged = tmp_path / "sim.json"
    damaged.write_text('{"format": 1, "boot_id": 5}')
    with pytest.raises(StateFileError, match="not a simulator state"):
        read_state(damaged)
    damaged.write_text("{")
    with pytest.raises(StateFileError):
        read_state(damaged)
    good = bank_with_food()
    data = physical_state(good.state).model_dump(mode="json")
    data["compartments"][0]["food_mass_g"] = -1
    damaged.write_text(json.dumps(data))
    with pytest.raises(StateFileError, match=r"greater than or equal to 0"):
        read_state(damaged)


def test_a_file_from_before_the_lamp_sense_restores_with_whole_lamps(tmp_path: Path) -> None:
    data = physical_state(bank_with_food().state).model_dump(mode="json")
    for row in data["compartments"]:
        del row["dead_lamp"]
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(data))
    kept = read_state(path)
    assert kept is not None
    after = Simulator(compartments=6, seed=3, manual_clock=True)
    after.faults.dead_lamp(2)
    restore_physical_state(after.state, kept)
    assert not any(c.dead_lamp for c in after.truth().compartments)
    assert after.truth().compartments[2].occupied  # the rest of the file was read as before
