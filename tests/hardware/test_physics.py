"""The physical model: deterministic under a seed, and heat going where it should."""

from __future__ import annotations

import pytest

from hardware.physics import World, WorldError
from hardware.protocol.messages import SetHeaterRequest
from hardware.simulator import Simulator
from tests.hardware.link import BoardLink


def _run(seed: int) -> list[tuple[float, float, float, float]]:
    with Simulator(compartments=3, seed=seed, manual_clock=True) as sim:
        link = BoardLink(sim.board_url)
        link.ok(0x11, SetHeaterRequest(1, 650).pack())
        link.ok(0x10, bytes([2, 0x01, 0xF4, 0]))
        sim.world.open_door(2)
        sim.world.place_item(2, 500, 5)
        sim.advance(20)
        sim.world.close_door(2)
        trace = []
        for _ in range(30):
            sim.advance(10)
            record = link.status().compartments[0]
            truth = sim.truth().compartments
            trace.append((truth[0].air_temp_c, truth[1].food_temp_c, truth[1].air_temp_c,
                          float(record.temp_dc or 0)))  # fmt: skip
        link.close()
        return trace


def test_same_seed_same_inputs_same_temperatures_to_the_last_bit() -> None:
    assert _run(42) == _run(42)


def test_another_seed_changes_the_sensor_noise() -> None:
    assert _run(42) != _run(43)


def test_heat_flows_from_hot_food_to_cold_air_and_out_to_the_lobby() -> None:
    world = World(1, seed=1, lobby_c=20.0)
    world.pulse_lock(1, 500)
    world.open_door(1)
    world.place_item(1, 450, 80)
    world.close_door(1)
    for _ in range(600):
        world.step()
    c = world.compartments[0]
    assert 20.0 < c.air_c < c.food_c < 80.0
    for _ in range(20000):
        world.step()
    assert c.food_c == pytest.approx(20.0, abs=0.5)  # everything ends at lobby temperature


def test_an_open_door_cools_a_hot_compartment_much_faster() -> None:
    shut, open_ = World(1, seed=1), World(1, seed=1)
    for w in (shut, open_):
        w.compartments[0].air_c = w.compartments[0].element_c = 65.0
    open_.open_door(1, force=True)
    for _ in range(20):
        shut.step()
        open_.step()
    assert 65.0 - open_.compartments[0].air_c > 10 * (65.0 - shut.compartments[0].air_c)


def test_impossible_actions_raise_and_change_nothing() -> None:
    world = World(2, seed=1)
    with pytest.raises(WorldError):
        world.place_item(1, 450, 70)  # door shut
    with pytest.raises(WorldError):
        world.open_door(1)  # locked
    with pytest.raises(WorldError):
        world.compartment(3)
    world.pulse_lock(1, 500)
    world.open_door(1)
    with pytest.raises(WorldError):
        world.remove_item(1)  # empty
    with pytest.raises(WorldError):
        world.place_item(1, 5, 70)  # too light to be seen
    assert not world.compartments[0].occupied


def test_a_longer_relatch_keeps_the_latch_released_that_long() -> None:
    world = World(1, seed=1, relatch_s=600.0)
    world.pulse_lock(1, 500)
    for _ in range(599):
        world.step()
    assert world.compartments[0].lock_released
    for _ in range(2):
        world.step()
    assert not world.compartments[0].lock_released


def test_the_simulator_takes_its_relatch_time_from_sim_relatch_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hardware.config import SimSettings

    monkeypatch.setenv("SIM_RELATCH_S", "600")
    assert SimSettings().relatch_s == 600.0
    with Simulator(compartments=1, relatch_s=600.0, manual_clock=True) as sim:
        assert sim.model.relatch_s == 600.0


def test_released_latch_springs_back_if_the_door_is_never_opened() -> None:
    world = World(1, seed=1)
    world.pulse_lock(1, 500)
    for _ in range(59):
        world.step()
    assert world.compartments[0].lock_released
    for _ in range(2):
        world.step()
    assert not world.compartments[0].lock_released


def test_a_dead_tube_is_sensed_dark_and_gives_no_heat() -> None:
    whole, dead = World(1, seed=1), World(1, seed=1)
    dead.compartments[0].dead_lamp = True
    assert not whole.uv_lit(1) and not dead.uv_lit(1)  # the relay is open: both dark
    for w in (whole, dead):
        w.set_uv(1, True)
    assert whole.uv_lit(1) and not dead.uv_lit(1)
    for _ in range(600):
        whole.step()
        dead.step()
    assert dead.compartments[0].uv_on_s == whole.compartments[0].uv_on_s == 600.0
    assert dead.compartments[0].air_c < whole.compartments[0].air_c - 1.0  # 8 W for 10 min
