"""The simulator's controls: what people in the lobby do (`sim.world`) and what breaks
(`sim.faults`). Each takes the state's lock, so the board always sees a consistent world.

Usage of every control: hardware/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from hardware.physics import SensorFault, WorldError
from hardware.simulator.line import Device, LineDirection

if TYPE_CHECKING:
    from hardware.simulator.bank import Simulator

SCAN_MAX_CHARS = 512  # longer than any QR code our pickup tokens make


class WorldControl:
    """What people in the lobby do. Raises `WorldError` for what cannot physically happen.

    Each control first brings physics and firmware up to the present, so a change takes effect
    at the simulated moment it is made, not up to one tick (time_scale / 10 s) earlier."""

    def __init__(self, sim: Simulator) -> None:
        self._state = sim.state
        self._io = sim.io

    def open_door(self, n: int, force: bool = False) -> None:
        """Open the door; only a released lock lets it, unless `force` (the door is forced)."""
        with self._state.lock:
            self._state.catch_up()
            self._state.model.open_door(n, force)

    def close_door(self, n: int) -> None:
        with self._state.lock:
            self._state.catch_up()
            self._state.model.close_door(n)

    def place_item(self, n: int, mass_g: float = 450.0, temp_c: float = 70.0) -> None:
        with self._state.lock:
            self._state.catch_up()
            self._state.model.place_item(n, mass_g, temp_c)

    def remove_item(self, n: int) -> None:
        with self._state.lock:
            self._state.catch_up()
            self._state.model.remove_item(n)

    def set_lobby_temp(self, temp_c: float) -> None:
        with self._state.lock:
            self._state.catch_up()
            self._state.model.set_lobby_temp(temp_c)

    def scan(self, text: str) -> None:
        """Present a code to the scanner: it sends `text` and CR LF, as scan engines do."""
        if not text or len(text) > SCAN_MAX_CHARS:
            raise WorldError(f"a scan carries 1-{SCAN_MAX_CHARS} characters")
        if any(ch in "\r\n" or not ch.isprintable() for ch in text):
            raise WorldError("a scan carries printable text only, on one line")
        self._io.send_scan(text.encode("utf-8") + b"\r\n")


class FaultControl:
    """Hardware that breaks, and a line that misbehaves."""

    def __init__(self, sim: Simulator) -> None:
        self._state = sim.state
        self._line = sim.line
        self._io = sim.io

    def _set(self, n: int, **values: Any) -> None:
        with self._state.lock:
            self._state.catch_up()
            c = self._state.model.compartment(n)
            for key, value in values.items():
                setattr(c, key, value)

    def sensor(self, n: int, mode: Literal["open", "short"] | None) -> None:
        """Break the temperature probe (`open` wire, `short`ed) or mend it (None)."""
        self._set(n, sensor_fault=None if mode is None else SensorFault(mode))

    def dead_heater(self, n: int, on: bool = True) -> None:
        """The element is open: the relay closes and nothing heats."""
        self._set(n, dead_heater=on)

    def stuck_heater(self, n: int, on: bool = True) -> None:
        """The heater relay is welded: only the board's safety contactor can stop the heat."""
        self._set(n, stuck_heater=on)

    def jam_lock(self, n: int, on: bool = True) -> None:
        """The latch no longer moves when the solenoid pulls."""
        self._set(n, jammed_lock=on)

    def dead_lamp(self, n: int, on: bool = True) -> None:
        """The UV-C tube no longer emits: the relay closes and nothing shines."""
        self._set(n, dead_lamp=on)

    def line_errors(self, rate: float, direction: LineDirection = "both") -> None:
        """Corrupt each byte on the board line with probability `rate` (0-1): in `both`
        directions, only `to_board` (requests) or only `from_board` (answers)."""
        self._line.set_errors(rate, direction)

    def reboot(self) -> None:
        """Power-cycle the board: RAM lost, new boot id, silent while it boots."""
        self._state.reboot_board()

    def pull_cable(self, seconds: float, device: Device = "board") -> None:
        """Unplug `device` for `seconds` of simulated time: its port goes away, then comes back."""
        self._line.pull_cable(device, seconds)
        self._io.call(lambda: self._io.unplug(device))
