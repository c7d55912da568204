"""The thermostats as pure controllers: switching points, saturation, no integral wind-up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.thermostat import Hysteresis, TimeProportionedPid


def test_hysteresis_switches_at_the_band_edges_and_holds_between() -> None:
    t = Hysteresis(band_c=0.3)
    assert t.output(65.0, 64.6, 1.0) == 1.0
    assert t.output(65.0, 65.2, 1.0) == 1.0  # inside the band: stays on
    assert t.output(65.0, 65.4, 1.0) == 0.0
    assert t.output(65.0, 64.8, 1.0) == 0.0  # inside the band: stays off
    t.reset()
    assert t.output(65.0, 65.0, 1.0) == 0.0


def test_pid_is_full_on_far_below_and_off_above() -> None:
    pid = TimeProportionedPid()
    assert pid.output(65.0, 22.0, 1.0) == 1.0
    pid.reset()
    assert pid.output(65.0, 70.0, 1.0) == 0.0


def test_pid_does_not_wind_up_during_a_long_warm_up() -> None:
    pid = TimeProportionedPid()
    for _ in range(3600):  # an hour at full power, far below the setpoint
        assert pid.output(65.0, 30.0, 1.0) == 1.0
    assert pid._integral < 0.05  # nothing stored up to overshoot with
    assert pid.output(65.0, 65.5, 1.0) < 0.3


def test_pid_learns_the_steady_duty_and_holds_it() -> None:
    pid = TimeProportionedPid()
    for _ in range(1000):
        out = pid.output(65.0, 64.8, 1.0)
    # A persistent 0.2 K error is integrated: 1000 s x 0.2 K x ki.
    assert pid._integral == pytest.approx(1000 * 0.2 * pid.ki, rel=0.01)
    assert out == pytest.approx(pid.kp * 0.2 + pid._integral, rel=0.01)
    held = pid._integral
    for _ in range(100):
        pid.output(65.0, 60.0, 1.0, integrate=False)  # door open: no learning
    assert pid._integral == held


@given(st.lists(st.floats(-40, 120), min_size=1, max_size=200), st.floats(20, 75))
def test_outputs_are_always_a_duty_fraction(readings: list[float], setpoint_c: float) -> None:
    pid, hyst = TimeProportionedPid(), Hysteresis()
    for reading in readings:
        assert 0.0 <= pid.output(setpoint_c, reading, 1.0) <= 1.0
        assert hyst.output(setpoint_c, reading, 1.0) in (0.0, 1.0)
