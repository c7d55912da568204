"""The simulated bank's state: the physical world and the board's firmware on one simulated clock.

Physics and firmware advance together in fixed control periods (ADR 0011), only while `lock` is
held, so everyone who looks (the board line, the controls, `truth()`) sees one consistent
moment. The truth models are that state as the control API shows it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from hardware.firmware import CONTROL_PERIOD_S, Board
from hardware.physics import PHYSICS_STEP_S, World
from hardware.protocol import Frame
from hardware.thermostat import Hysteresis, Thermostat, TimeProportionedPid

MAX_STEPS_PER_TICK = 2000  # after a long stall, catch up at most this much at once
# The simulator's own record of each compartment's probe, to hold the service's record against:
# a point every 10 simulated seconds (the bridge's telemetry period), 12 simulated hours kept.
RECORD_EVERY_S = 10.0
RECORD_POINTS = 4320


class TemperaturePoint(BaseModel):
    at: float  # Unix time (wall clock), as the service stamps what the kiosk reports
    temp_c: float | None  # the probe's true reading, without its noise; None: the probe failed


assert PHYSICS_STEP_S == CONTROL_PERIOD_S  # one firmware control period per physics step


class SimulatorError(RuntimeError):
    """A control the simulator cannot carry out (not started, cable already pulled, ...)."""


# ---- the physical truth, as the control API shows it


class CompartmentTruth(BaseModel):
    number: int
    door_open: bool
    lock_released: bool
    lock_pulses: int
    occupied: bool
    item_mass_g: float
    air_temp_c: float
    food_temp_c: float
    element_temp_c: float
    heater_w: float
    heater_duty: float
    contactor_closed: bool
    uv_on: bool  # the lamp's relay
    uv_on_s: float
    uv_lit: bool  # the tube emits: what the lamp's current sense reads
    # what the firmware holds
    setpoint_c: float | None
    disinfecting: bool
    disinfect_remaining_s: float
    cycle_aborted: bool
    fault: str
    door_open_count: int
    door_close_count: int
    # faults put in by hand
    sensor_fault: str | None
    dead_heater: bool
    stuck_heater: bool
    jammed_lock: bool
    dead_lamp: bool


class PortsTruth(BaseModel):
    board_pty: str | None
    scanner_pty: str | None
    board_url: str
    scanner_url: str
    board_tcp: str | None
    scanner_tcp: str | None
    board_tcp_connections: int  # masters connected to the board's device server
    scanner_tcp_connections: int


class SimTruth(BaseModel):
    name: str
    sim_time_s: float
    time_scale: float
    seed: int
    lobby_temp_c: float
    node_address: int
    boot_id: int
    booting: bool
    heater_lease_s: int
    heater_lease_expired: bool
    line_error_rate: float
    line_error_direction: str
    cable_pulled_s: dict[str, float]  # device -> simulated seconds until it is back
    requests: int
    duplicates: int
    errors: int
    ports: PortsTruth
    compartments: list[CompartmentTruth]


# ---- world and firmware on one clock


class BankState:
    """The world model and the board's firmware, stepped together on the simulated clock."""

    def __init__(
        self,
        compartments: int,
        seed: int,
        time_scale: float,
        node_address: int,
        thermostat: Literal["pid", "hysteresis"],
        lobby_temp_c: float,
        manual_clock: bool,
        protocol: int,
        relatch_s: float,
    ) -> None:
        self.time_scale = float(time_scale)
        self.lock = threading.RLock()
        self.rng = random.Random(seed * 7919 + 1)  # boot ids and line errors, apart from physics
        self.model = World(compartments, seed, lobby_temp_c, relatch_s)
        factory: Callable[[], Thermostat] = (
            TimeProportionedPid if thermostat == "pid" else Hysteresis
        )
        self.board = Board(
            self.model,
            compartments,
            node_address,
            self.rng.getrandbits(32),
            0.0,
            thermostat_factory=factory,
            protocol=protocol,  # 1: a board of the first edition, as still in the field
        )
        self.model.door_listener = self._on_door
        # A manual clock stands still until `advance()`: byte-exact, repeatable sessions.
        self.manual_clock = manual_clock
        self._manual_now_s = 0.0
        self._started_wall: float | None = None
        self._started_epoch = time.time()  # wall time of simulated second 0
        self._record_due_s = 0.0
        self.records: list[deque[TemperaturePoint]] = [
            deque(maxlen=RECORD_POINTS) for _ in range(compartments)
        ]

    # ---- time

    def start_clock(self) -> None:
        self._started_wall = time.monotonic()
        self._started_epoch = time.time()

    def now_s(self) -> float:
        """Simulated seconds since start."""
        if self.manual_clock:
            return self._manual_now_s
        if self._started_wall is None:
            return 0.0
        return (time.monotonic() - self._started_wall) * self.time_scale

    def sleep(self, sim_seconds: float) -> None:
        """Wait until `sim_seconds` of simulated time have passed (for tests and scripts)."""
        if self.manual_clock:
            self.advance(sim_seconds)
            return
        time.sleep(sim_seconds / self.time_scale)
        with self.lock:
            self.catch_up()

    def advance(self, sim_seconds: float) -> None:
        """Move a manual clock forward, running physics and firmware for that long."""
        if not self.manual_clock:
            raise SimulatorError("advance() is for a manual clock; use sleep()")
        if sim_seconds < 0:
            raise SimulatorError("time only moves forward")
        with self.lock:
            self._manual_now_s += sim_seconds
            self.catch_up(limit=None)

    def catch_up(self, limit: int | None = MAX_STEPS_PER_TICK) -> None:
        """Advance physics and firmware to the present, in whole control periods."""
        target = self.now_s()
        steps = 0
        while self.model.now_s + PHYSICS_STEP_S <= target and (limit is None or steps < limit):
            self.board.tick(self.model.now_s, CONTROL_PERIOD_S)
            self.model.step(PHYSICS_STEP_S)
            steps += 1
            if self.model.now_s >= self._record_due_s:
                self._record()
        if limit is not None and steps >= limit:
            # Stalled far behind (a suspended process): drop the backlog rather than spin.
            self.model.now_s = target

    def _record(self) -> None:
        at = self._started_epoch + self.model.now_s / self.time_scale
        for c, record in zip(self.model.compartments, self.records, strict=True):
            temp = None if c.sensor_fault is not None else round(c.sensor_c, 2)
            record.append(TemperaturePoint(at=round(at, 3), temp_c=temp))
        self._record_due_s = self.model.now_s + RECORD_EVERY_S

    # ---- the board

    def hear(self, frame: Frame) -> Frame | None:
        """A frame on the line this board hangs on; its answer if it is addressed."""
        with self.lock:
            return self.board.handle(frame, self.now_s())

    def reboot_board(self) -> None:
        with self.lock:
            self.catch_up()
            self.board.reboot(self.rng.getrandbits(32), self.now_s())

    def _on_door(self, n: int, opened: bool) -> None:
        self.board.door_edge(n, opened, self.now_s())

    # ---- truth

    def compartment_truths(self) -> list[CompartmentTruth]:
        """Every compartment as it physically is and as the firmware holds it (under `lock`)."""
        rows = []
        for c, fw in zip(self.model.compartments, self.board.compartments, strict=True):
            rows.append(
                CompartmentTruth(
                    number=c.number,
                    door_open=c.door_open,
                    lock_released=c.lock_released,
                    lock_pulses=c.lock_pulses,
                    occupied=c.occupied,
                    item_mass_g=c.food_mass_g,
                    air_temp_c=round(c.air_c, 3),
                    food_temp_c=round(c.food_c, 3),
                    element_temp_c=round(c.element_c, 3),
                    heater_w=round(c.heater_w, 2),
                    heater_duty=round(c.heater_duty, 4),
                    contactor_closed=c.contactor_closed,
                    uv_on=c.uv_on,
                    uv_on_s=c.uv_on_s,
                    uv_lit=c.uv_lit,
                    setpoint_c=None if fw.setpoint_dc is None else fw.setpoint_dc / 10,
                    disinfecting=fw.disinfecting,
                    disinfect_remaining_s=fw.cycle_remaining_s,
                    cycle_aborted=fw.cycle_aborted,
                    fault=fw.fault.name,
                    door_open_count=fw.door_open_count,
                    door_close_count=fw.door_close_count,
                    sensor_fault=None if c.sensor_fault is None else c.sensor_fault.value,
                    dead_heater=c.dead_heater,
                    stuck_heater=c.stuck_heater,
                    jammed_lock=c.jammed_lock,
                    dead_lamp=c.dead_lamp,
                )
            )
        return rows
