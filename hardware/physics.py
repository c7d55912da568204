"""The physical world of one locker bank: heat, doors, locks, food, and the faults put into them.

Pure and deterministic: `World.step(dt_s)` advances simulated time; the only randomness (sensor
noise) comes from a `random.Random` seeded by the caller, so the same seed and the same inputs at
the same simulated times give the same temperatures to the last bit.

Thermal model, per compartment (lumped capacities, explicit Euler at `PHYSICS_STEP_S`):

    heater element  C_e dT_e/dt = P - k_e (T_e - T_a)
    air and liner   C_a dT_a/dt = k_e (T_e - T_a) + k_f (T_f - T_a) + k_loss (T_lobby - T_a) + P_uv
    food            C_f dT_f/dt = k_f (T_a - T_f)
    sensor          tau dT_s/dt = T_a - T_s     (the probe sits in the air, in a sheath)

`k_loss` is the insulation's loss with the door shut and much larger with the door open. The
element's own capacity is what makes an on/off thermostat overshoot: heat stored in the element
keeps flowing into the air after the relay opens.

The world also implements the board's inputs and outputs (`BoardIO` in hardware.firmware): the
firmware reads the sensors and drives heaters, the safety contactor, UV lamps and lock solenoids
only through these methods, as real firmware reads pins.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

PHYSICS_STEP_S = 1.0  # simulated seconds per step: every time constant below is >= 30 s

HEATER_W = 250.0  # element power when energised
ELEMENT_HEAT_CAPACITY_J_PER_K = 250.0
ELEMENT_COUPLING_W_PER_K = 6.0  # element to air: about a 40 s time constant
AIR_HEAT_CAPACITY_J_PER_K = 1200.0  # air, aluminium liner and shelf
LOSS_DOOR_SHUT_W_PER_K = 1.0  # 40 mm of foam: about 43 W to hold 65 °C in a 22 °C lobby
LOSS_DOOR_OPEN_W_PER_K = 25.0  # the hot air spills out of an open door
FOOD_SPECIFIC_HEAT_J_PER_G_K = 3.2  # cooked meals are mostly water
FOOD_COUPLING_W_PER_K_AT_450_G = 1.5  # packaged meal, natural convection
FOOD_REFERENCE_MASS_G = 450.0
MIN_ITEM_MASS_G = 20.0  # lighter than that the occupancy scale cannot see it
MAX_ITEM_MASS_G = 5000.0
UV_LAMP_W = 8.0  # a UV-C lamp also warms the compartment a little
SENSOR_TAU_S = 4.0
SENSOR_NOISE_C = 0.03
RELEASED_LOCK_RELATCH_S = 60.0  # a released latch whose door never moved springs back
LOBBY_DEFAULT_C = 22.0


class SensorFault(enum.Enum):
    OPEN = "open"  # broken wire: the ADC reads full scale
    SHORT = "short"  # shorted probe: the ADC reads zero


class WorldError(ValueError):
    """A physical action that cannot happen (door locked, no item, no such compartment)."""


class NoSuchCompartment(WorldError):
    """A compartment number outside the bank."""


@dataclass(slots=True)
class CompartmentWorld:
    """Physical truth of one compartment."""

    number: int
    air_c: float
    element_c: float
    food_c: float
    sensor_c: float
    food_mass_g: float = 0.0
    door_open: bool = False
    lock_released: bool = False
    released_at_s: float = 0.0
    door_moved_since_release: bool = False
    lock_pulses: int = 0
    heater_duty: float = 0.0  # commanded by the firmware
    contactor_closed: bool = True  # the board's safety contactor in series with the element
    heater_w: float = 0.0  # power actually delivered during the last step
    uv_on: bool = False  # the lamp's relay, as the firmware switched it
    uv_on_s: float = 0.0
    # Faults put in by hand: hardware that breaks, as opposed to the firmware's latched faults.
    sensor_fault: SensorFault | None = None
    dead_heater: bool = False  # open element: the relay closes, nothing heats
    stuck_heater: bool = False  # welded relay: the element heats unless the contactor opens
    jammed_lock: bool = False  # the solenoid pulls, the latch does not move
    dead_lamp: bool = False  # burnt-out tube or failed ballast: the relay closes, nothing shines

    @property
    def occupied(self) -> bool:
        return self.food_mass_g > 0.0

    @property
    def uv_lit(self) -> bool:
        """The tube emits: what the lamp's current sense reads."""
        return self.uv_on and not self.dead_lamp


DoorListener = Callable[[int, bool], None]


class World:
    """Every compartment of a bank, the lobby around it and the board's I/O pins."""

    def __init__(
        self,
        compartments: int,
        seed: int,
        lobby_c: float = LOBBY_DEFAULT_C,
        relatch_s: float = RELEASED_LOCK_RELATCH_S,
    ) -> None:
        if not 1 <= compartments <= 255:
            raise ValueError(f"a bank has 1-255 compartments, not {compartments}")
        if relatch_s <= 0:
            raise ValueError("relatch_s must be positive")
        # How long a released latch whose door never moved stays released (simulated s). Longer
        # than the real spring only for tests whose hands act at a high time scale on a starved
        # machine, where 60 s nominal is a fraction of a wall second.
        self.relatch_s = relatch_s
        self.rng = random.Random(seed)
        self.lobby_c = lobby_c
        self.now_s = 0.0
        self.compartments = [
            CompartmentWorld(n, lobby_c, lobby_c, lobby_c, lobby_c)
            for n in range(1, compartments + 1)
        ]
        # The firmware hears door switches by interrupt, so a quick open-and-shut is never missed.
        self.door_listener: DoorListener | None = None

    # ---- the world, as a person in the lobby or a test changes it

    def compartment(self, n: int) -> CompartmentWorld:
        if not 1 <= n <= len(self.compartments):
            raise NoSuchCompartment(f"no compartment {n}: this bank has 1-{len(self.compartments)}")
        return self.compartments[n - 1]

    def open_door(self, n: int, force: bool = False) -> None:
        """Pull the door open. Only a released lock lets it open, unless `force` (a crowbar)."""
        c = self.compartment(n)
        if c.door_open:
            return
        if not c.lock_released and not force:
            raise WorldError(f"compartment {n} is locked: the door does not open")
        c.door_open = True
        c.door_moved_since_release = True
        if self.door_listener is not None:
            self.door_listener(n, True)

    def close_door(self, n: int) -> None:
        """Push the door shut; the spring latch catches, so the lock is latched again."""
        c = self.compartment(n)
        if not c.door_open:
            return
        c.door_open = False
        c.lock_released = False
        if self.door_listener is not None:
            self.door_listener(n, False)

    def place_item(self, n: int, mass_g: float, temp_c: float) -> None:
        """Put food in; it mixes with what is there by heat content. The door must be open."""
        c = self.compartment(n)
        if not c.door_open:
            raise WorldError(f"compartment {n} is shut: open its door to put an item in")
        if not MIN_ITEM_MASS_G <= mass_g <= MAX_ITEM_MASS_G:
            raise WorldError(f"item mass {mass_g} g out of {MIN_ITEM_MASS_G}-{MAX_ITEM_MASS_G} g")
        if not -30.0 <= temp_c <= 100.0:
            raise WorldError(f"item temperature {temp_c} °C out of -30-100 °C")
        total = c.food_mass_g + mass_g
        c.food_c = (c.food_c * c.food_mass_g + temp_c * mass_g) / total
        c.food_mass_g = total

    def remove_item(self, n: int) -> None:
        """Take everything out. The door must be open."""
        c = self.compartment(n)
        if not c.door_open:
            raise WorldError(f"compartment {n} is shut: open its door to take the item out")
        if not c.occupied:
            raise WorldError(f"compartment {n} is empty")
        c.food_mass_g = 0.0
        c.food_c = c.air_c

    def set_lobby_temp(self, temp_c: float) -> None:
        if not -30.0 <= temp_c <= 60.0:
            raise WorldError(f"lobby temperature {temp_c} °C out of -30-60 °C")
        self.lobby_c = temp_c

    # ---- the board's pins (hardware.firmware.BoardIO)

    def read_temp(self, n: int) -> float | SensorFault:
        c = self.compartments[n - 1]
        if c.sensor_fault is not None:
            return c.sensor_fault
        return c.sensor_c + self.rng.gauss(0.0, SENSOR_NOISE_C)

    def door_is_open(self, n: int) -> bool:
        return self.compartments[n - 1].door_open

    def lock_is_released(self, n: int) -> bool:
        return self.compartments[n - 1].lock_released

    def is_occupied(self, n: int) -> bool:
        return self.compartments[n - 1].occupied

    def uv_lit(self, n: int) -> bool:
        return self.compartments[n - 1].uv_lit

    def pulse_lock(self, n: int, pulse_ms: int) -> None:
        c = self.compartments[n - 1]
        c.lock_pulses += 1
        if c.jammed_lock or c.lock_released:
            return
        c.lock_released = True
        c.released_at_s = self.now_s
        c.door_moved_since_release = c.door_open

    def set_heater(self, n: int, duty: float) -> None:
        self.compartments[n - 1].heater_duty = min(max(duty, 0.0), 1.0)

    def set_contactor(self, n: int, closed: bool) -> None:
        self.compartments[n - 1].contactor_closed = closed

    def set_uv(self, n: int, on: bool) -> None:
        self.compartments[n - 1].uv_on = on

    # ---- time

    def step(self, dt_s: float = PHYSICS_STEP_S) -> None:
        lobby = self.lobby_c
        sensor_gain = dt_s / (SENSOR_TAU_S + dt_s)  # implicit form: stable for any dt
        for c in self.compartments:
            if c.dead_heater or not c.contactor_closed:
                power = 0.0
            elif c.stuck_heater:
                power = HEATER_W
            else:
                power = HEATER_W * c.heater_duty
            c.heater_w = power
            to_air = ELEMENT_COUPLING_W_PER_K * (c.element_c - c.air_c)
            loss_k = LOSS_DOOR_OPEN_W_PER_K if c.door_open else LOSS_DOOR_SHUT_W_PER_K
            air_in = to_air + loss_k * (lobby - c.air_c)
            if c.uv_on:
                c.uv_on_s += dt_s
            if c.uv_lit:  # a dead tube draws no current, so it gives no heat either
                air_in += UV_LAMP_W
            if c.food_mass_g > 0.0:
                food_k = FOOD_COUPLING_W_PER_K_AT_450_G * math.pow(
                    c.food_mass_g / FOOD_REFERENCE_MASS_G, 2.0 / 3.0
                )
                food_flow = food_k * (c.air_c - c.food_c)
                c.food_c += food_flow * dt_s / (FOOD_SPECIFIC_HEAT_J_PER_G_K * c.food_mass_g)
                air_in -= food_flow
            c.element_c += (power - to_air) * dt_s / ELEMENT_HEAT_CAPACITY_J_PER_K
            c.air_c += air_in * dt_s / AIR_HEAT_CAPACITY_J_PER_K
            if not c.occupied:
                c.food_c = c.air_c
            c.sensor_c += (c.air_c - c.sensor_c) * sensor_gain
            if (
                c.lock_released
                and not c.door_open
                and not c.door_moved_since_release
                and self.now_s - c.released_at_s >= self.relatch_s
            ):
                c.lock_released = False
        self.now_s += dt_s
