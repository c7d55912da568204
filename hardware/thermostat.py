"""Heater thermostats of the board: on/off hysteresis and a time-proportioned PID.

Pure code: each controller is sampled once per control period with the measured temperature and
returns the heater output as a duty fraction 0-1 for the coming period. The firmware turns that
fraction into relay on-time (a solid-state relay switched within a time-proportioning window).
`bench/thermal` runs both on the physical model; the board uses the PID, which that measurement
chose (docs/adr/0010-thermostat-time-proportioned-pid.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Thermostat(Protocol):
    def output(
        self, setpoint_c: float, measured_c: float, dt_s: float, integrate: bool = True
    ) -> float:
        """Duty fraction 0-1 for the next `dt_s` seconds; `integrate=False` holds any memory
        of past error (the door is open: the loss is not one the controller should learn)."""
        ...

    def reset(self) -> None:
        """Forget history (setpoint changed from off, fault cleared, reboot)."""
        ...


@dataclass(slots=True)
class Hysteresis:
    """Relay on below `setpoint - band_c`, off above `setpoint + band_c`, else unchanged."""

    band_c: float = 0.3
    _on: bool = False

    def output(
        self, setpoint_c: float, measured_c: float, dt_s: float, integrate: bool = True
    ) -> float:
        if measured_c < setpoint_c - self.band_c:
            self._on = True
        elif measured_c > setpoint_c + self.band_c:
            self._on = False
        return 1.0 if self._on else 0.0

    def reset(self) -> None:
        self._on = False


@dataclass(slots=True)
class TimeProportionedPid:
    """PID on the measurement; the firmware time-proportions its output onto the relay.

    The derivative acts on the measurement, not the error, so a setpoint step does not kick the
    output. The integral only accumulates while the output is not saturated (conditional
    integration), which keeps the warm-up from a cold start from winding it up and overshooting.
    The gains suit the compartment model of `hardware.physics` (tuned with `bench/thermal`).
    """

    kp: float = 0.12  # duty per kelvin of error
    ki: float = 0.0008  # duty per kelvin-second
    kd: float = 2.0  # duty per kelvin/second of measured rise
    derivative_tau_s: float = 8.0  # low-pass on the derivative: the probe reads with noise
    _integral: float = 0.0
    _last_c: float | None = None
    _deriv: float = 0.0

    def output(
        self, setpoint_c: float, measured_c: float, dt_s: float, integrate: bool = True
    ) -> float:
        error = setpoint_c - measured_c
        if self._last_c is not None and dt_s > 0:
            raw = (measured_c - self._last_c) / dt_s
            alpha = dt_s / (self.derivative_tau_s + dt_s)
            self._deriv += alpha * (raw - self._deriv)
        self._last_c = measured_c
        candidate = self._integral + self.ki * error * dt_s
        trial = self.kp * error + candidate - self.kd * self._deriv
        # Integrate only while that does not push an already saturated output further.
        saturating = (trial >= 1.0 and error > 0) or (trial <= 0.0 and error < 0)
        if integrate and not saturating:
            self._integral = min(max(candidate, 0.0), 1.0)
        out = self.kp * error + self._integral - self.kd * self._deriv
        return min(max(out, 0.0), 1.0)

    def reset(self) -> None:
        self._integral = 0.0
        self._last_c = None
        self._deriv = 0.0
