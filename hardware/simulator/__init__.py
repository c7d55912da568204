"""The locker bank simulator: physics, firmware and scanner behind real serial devices.

One background thread runs everything: it waits on every port's file descriptor with a selector
and, between bytes, advances the physics and the firmware's control loop in fixed simulated steps
(10 wall-clock ticks a second, `time_scale` simulated seconds per wall second). Controls called
from other threads (`world`, `faults`, `truth()`) take the same lock, so the board always sees a
consistent world.

    sim = Simulator(compartments=12, seed=1, time_scale=60.0)
    sim.start()
    board_path, scanner_path = sim.open_pty()
    sim.world.open_door(3, force=True)
    sim.truth().compartments[2].door_open
    sim.stop()

By responsibility: `state` (world and firmware on one simulated clock, and the truth models),
`line` (the board line and its faults: corrupted bytes, pulled cables, peers on an RS-485
line), `io_loop` (the ports and their one thread), `controls` (`world` and `faults`), `bank`
(`Simulator`, which puts them together), `keep` (the physical state kept on disk across
restarts). Usage of every control: hardware/README.md.
"""

from hardware import simurl
from hardware.simulator.bank import Simulator
from hardware.simulator.controls import SCAN_MAX_CHARS, FaultControl, WorldControl
from hardware.simulator.io_loop import TICK_PERIOD_S
from hardware.simulator.line import Device, LineDirection
from hardware.simulator.state import (
    MAX_STEPS_PER_TICK,
    CompartmentTruth,
    PortsTruth,
    SimTruth,
    SimulatorError,
    TemperaturePoint,
)

simurl.register()  # importing the simulator makes sim:// URLs open with serial_for_url

__all__ = [
    "MAX_STEPS_PER_TICK",
    "SCAN_MAX_CHARS",
    "TICK_PERIOD_S",
    "CompartmentTruth",
    "Device",
    "FaultControl",
    "LineDirection",
    "PortsTruth",
    "SimTruth",
    "Simulator",
    "SimulatorError",
    "TemperaturePoint",
    "WorldControl",
]
