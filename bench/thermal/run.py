"""Thermostat bench: hysteresis and time-proportioned PID on the compartment model, same run.

Runs the board's real firmware (`hardware.firmware.Board`, commanded with SET_HEATER frames) on
the physics (`hardware.physics.World`) in simulated time, no clock involved, for each thermostat:

1. a 450 g meal from the fridge (4 °C) is put in a compartment at lobby temperature (22 °C), the
   door shut and a 65 °C setpoint set: time until the air is within 0.5 K of the setpoint, and
   the overshoot above it;
2. steady state: the band of the air temperature around the setpoint over 30 minutes, after an
   hour to settle (goal within ±0.5 K);
3. a 20-second door opening: the lowest air temperature and the time from the door shutting until
   the air is back at 60 °C.

Prints a table and writes bench/out/thermal.png with both curves.

    /work/venv/bin/python bench/thermal/run.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hardware.firmware import CONTROL_PERIOD_S, Board
from hardware.physics import PHYSICS_STEP_S, World
from hardware.protocol import Frame, FrameType
from hardware.protocol.messages import Command, SetHeaterRequest
from hardware.thermostat import Hysteresis, Thermostat, TimeProportionedPid

SETPOINT_C = 65.0
MEAL_G, MEAL_C = 450.0, 4.0
SETTLE_S = 3600.0  # the steady-state window starts after an hour
STEADY_S = 1800.0
DOOR_OPEN_S = 20.0
AFTER_DOOR_S = 900.0
RECOVERY_C = 60.0
SEED = 1
N = 1  # the compartment under test


@dataclass
class Trace:
    name: str
    t_s: list[float] = field(default_factory=list)
    air_c: list[float] = field(default_factory=list)
    food_c: list[float] = field(default_factory=list)
    heater_w: list[float] = field(default_factory=list)


@dataclass
class Result:
    name: str
    time_to_setpoint_s: float | None
    overshoot_c: float
    band_low_c: float
    band_high_c: float
    door_min_c: float
    recovery_to_60_s: float | None
    door_peak_c: float
    trace: Trace


def run(name: str, factory: type[Thermostat]) -> Result:
    world = World(compartments=1, seed=SEED)
    board = Board(world, 1, 1, boot_id=1, now_s=0.0, thermostat_factory=factory)
    world.door_listener = lambda n, opened: board.door_edge(n, opened, world.now_s)
    trace = Trace(name)

    def advance(seconds: float) -> None:
        end = world.now_s + seconds
        while world.now_s < end - 1e-9:
            board.last_heard_s = world.now_s  # the bridge polls all along: no lease expiry
            board.tick(world.now_s, CONTROL_PERIOD_S)
            world.step(PHYSICS_STEP_S)
            c = world.compartments[0]
            trace.t_s.append(world.now_s)
            trace.air_c.append(c.air_c)
            trace.food_c.append(c.food_c)
            trace.heater_w.append(c.heater_w)

    # Drop-off: unlock, open, put the cold meal in, shut, then the setpoint arrives.
    world.pulse_lock(N, 500)
    world.open_door(N)
    world.place_item(N, MEAL_G, MEAL_C)
    world.close_door(N)
    request = SetHeaterRequest(N, round(SETPOINT_C * 10)).pack()
    answer = board.handle(Frame(1, FrameType.REQ, 1, Command.SET_HEATER, request), world.now_s)
    assert answer is not None and answer.type is FrameType.RESP

    advance(SETTLE_S + STEADY_S)
    reached = next(
        (t for t, a in zip(trace.t_s, trace.air_c, strict=True) if a >= SETPOINT_C - 0.5), None
    )
    after = [
        a
        for t, a in zip(trace.t_s, trace.air_c, strict=True)
        if reached is not None and t >= reached
    ]
    overshoot = max(0.0, max(after, default=SETPOINT_C) - SETPOINT_C)
    steady = [a for t, a in zip(trace.t_s, trace.air_c, strict=True) if t >= SETTLE_S]

    door_at = world.now_s
    world.open_door(N, force=True)
    advance(DOOR_OPEN_S)
    world.close_door(N)
    closed_at = world.now_s
    advance(AFTER_DOOR_S)
    door_window = [a for t, a in zip(trace.t_s, trace.air_c, strict=True) if t >= door_at]
    low_at = closed_at + door_window.index(min(door_window)) - DOOR_OPEN_S
    recovered = next(
        (
            t - closed_at
            for t, a in zip(trace.t_s, trace.air_c, strict=True)
            if t >= max(closed_at, low_at) and a >= RECOVERY_C
        ),
        None,
    )
    return Result(
        name,
        reached,
        overshoot,
        min(steady) - SETPOINT_C,
        max(steady) - SETPOINT_C,
        min(door_window),
        recovered,
        max(a for t, a in zip(trace.t_s, trace.air_c, strict=True) if t >= closed_at) - SETPOINT_C,
        trace,
    )


def _fmt(value: float | None, unit: str) -> str:
    return "never" if value is None else f"{value:.1f} {unit}"


def main() -> int:
    results = [
        run("hysteresis ±0.3 K", Hysteresis),
        run("time-proportioned PID", TimeProportionedPid),
    ]
    print(
        f"compartment model, setpoint {SETPOINT_C} °C, lobby 22 °C,"
        f" {MEAL_G:.0f} g meal at {MEAL_C} °C"
    )
    header = (
        f"{'thermostat':<24}{'to setpoint':>13}{'overshoot':>11}"
        f"{'steady band':>18}{'door low':>10}{'back to 60':>12}{'peak after':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        band = f"{r.band_low_c:+.2f}/{r.band_high_c:+.2f} K"
        print(
            f"{r.name:<24}{_fmt(r.time_to_setpoint_s, 's'):>13}{r.overshoot_c:>9.2f} K"
            f"{band:>18}{r.door_min_c:>8.1f} C{_fmt(r.recovery_to_60_s, 's'):>12}"
            f"{r.door_peak_c:>+10.2f} K"
        )
    print("goals: steady band within ±0.5 K, overshoot under 1 K")

    out = Path(__file__).resolve().parents[1] / "out"
    out.mkdir(exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_w) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 1])
    for r in results:
        minutes = [t / 60 for t in r.trace.t_s]
        ax.plot(minutes, r.trace.air_c, label=f"{r.name}: air")
        ax.plot(minutes, r.trace.food_c, linestyle=":", label=f"{r.name}: food")
        ax_w.plot(minutes, r.trace.heater_w, linewidth=0.6, label=r.name)
    ax.axhline(SETPOINT_C, color="grey", linewidth=0.8)
    ax.axhspan(SETPOINT_C - 0.5, SETPOINT_C + 0.5, color="grey", alpha=0.15)
    ax.set_ylabel("°C")
    ax.set_title("Compartment thermostat: cold meal, hold, 20 s door opening")
    ax.legend(loc="lower right", fontsize=8)
    ax_w.set_ylabel("heater W")
    ax_w.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(out / "thermal.png", dpi=110)
    print(f"plot: {out / 'thermal.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
