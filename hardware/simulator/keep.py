"""The simulated bank's physical state kept on disk, so a restarted simulator resumes the story.

What a bank physically is survives a restart, as it survives a power cut: the food in each
compartment (its mass and temperature), doors open or shut, latches released or caught, the
heat in air, element and probe, the lobby's temperature, and hardware that was broken by hand
(a dead heater or a dead UV-C tube stays dead). What lives in the board's RAM does not:
setpoints, running cycles and their records, latched faults and the door counters are lost,
every heater, contactor and UV lamp is off, and the board comes back with a NEW boot id, as a
real board does after power comes back (ADR 0065). The bridge sees the new boot id, reports
`board_rebooted` and sends the setpoints again; the counters of the new boot are not compared
with the old ones.

The time the simulator was down is not simulated: the bank resumes at the temperatures it was
stopped with (a restart to change `--time-scale` should not cool the food).

The file is JSON, written 0600 to a temporary file and renamed over the old one, so a crash
mid-write leaves the previous state whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hardware.physics import SensorFault
from hardware.simulator.state import BankState

STATE_FORMAT = 1  # bumped when a field changes meaning; another format is not restored
SAVE_PERIOD_S = 2.0  # wall seconds: a simulator killed outright loses at most this much


class KeptCompartment(BaseModel):
    """One compartment as it physically is (hardware.physics.CompartmentWorld's lasting part)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    number: int = Field(ge=1)
    food_mass_g: float = Field(ge=0)
    food_c: float
    air_c: float
    element_c: float
    sensor_c: float
    door_open: bool
    lock_released: bool
    door_moved_since_release: bool
    lock_pulses: int = Field(ge=0)
    uv_on_s: float = Field(ge=0)
    sensor_fault: SensorFault | None
    dead_heater: bool
    stuck_heater: bool
    jammed_lock: bool
    # Files written before the lamp's current was sensed have no such field: their tubes shone.
    dead_lamp: bool = False


class KeptBank(BaseModel):
    """What survives a power cut, and the boot id the board had before it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    boot_id: int = Field(ge=0, le=0xFFFFFFFF)
    lobby_temp_c: float
    compartments: list[KeptCompartment]


class StateFileError(ValueError):
    """A state file that cannot be read as one of this simulator's."""


def physical_state(state: BankState) -> KeptBank:
    """What survives a power cut (brought up to the present first)."""
    fields = set(KeptCompartment.model_fields)
    with state.lock:
        state.catch_up()
        return KeptBank(
            format=STATE_FORMAT,
            boot_id=state.board.boot_id,
            lobby_temp_c=state.model.lobby_c,
            compartments=[
                KeptCompartment.model_validate(
                    {name: getattr(c, name) for name in fields}, strict=False
                )
                for c in state.model.compartments
            ],
        )


def restore_physical_state(state: BankState, kept: KeptBank) -> int:
    """Put the bank back as `kept` describes it, then power the board up with a new boot id.

    Compartments the bank no longer has are ignored; ones it did not have start empty.
    Returns the new boot id.
    """
    rows = {row.number: row for row in kept.compartments}
    with state.lock:
        model = state.model
        model.lobby_c = kept.lobby_temp_c
        for c in model.compartments:
            row = rows.get(c.number)
            if row is None:
                continue
            for name, value in row:
                setattr(c, name, value)
            # The relatch timer of a released latch restarts with the world's clock.
            c.released_at_s = model.now_s
        boot_id = kept.boot_id
        while boot_id == kept.boot_id:  # power came back: a new boot, never the old one's id
            boot_id = secrets.randbits(32)
        state.board.reboot(boot_id, state.now_s(), boot_time_s=0.0)
        return boot_id


def write_state(path: Path, kept: KeptBank) -> None:
    """Write atomically, readable by this user only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(kept.model_dump_json(indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_state(path: Path) -> KeptBank | None:
    """The kept state, or None when there is none yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return KeptBank.model_validate_json(text)
    except ValidationError as exc:
        raise StateFileError(
            f"{path} is not a simulator state of format {STATE_FORMAT}: "
            f"{exc.error_count()} problems, first: {exc.errors()[0]['msg']}"
        ) from exc


class StateKeeper:
    """Saves the bank's physical state every `period_s` and once more at `stop()`."""

    def __init__(self, state: BankState, path: Path, period_s: float = SAVE_PERIOD_S) -> None:
        self.state = state
        self.path = path
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def save(self) -> None:
        write_state(self.path, physical_state(self.state))

    def start(self) -> None:
        self.save()  # at once: a restored bank has a new boot id to keep
        self._thread = threading.Thread(target=self._run, name="sim-state-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.save()
            except OSError as exc:  # a full disk: keep the bank running, try again next time
                print(f"simulator state not saved to {self.path}: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.save()
