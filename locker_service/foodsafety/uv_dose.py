"""Proof of disinfection: what the board says its UV-C lamp did in a cycle, checked and judged.

A board of protocol revision 3 senses its lamp's current and keeps a record of each cycle: how
long it ran, how long the lamp really shone and every time it went dark (hardware/PROTOCOL.md,
CYCLE_REPORT). The bridge puts that record in the cycle's end event as `data.lamp`, in nominal
seconds. Here, in plain code:

- `LampRecord.from_event`: the record read from an event, or the reason it cannot be believed
  (malformed, or impossible: lit longer than the cycle ran, dark stretches outside it, a cycle
  shorter than the one commanded). A report that cannot be believed proves nothing.
- `judge`: the dose the compartment's surfaces received (the model's rated irradiance x the
  lamp's on-time, mJ/cm2) against the dose of the full cycle that was commanded, less a margin
  for the lamp's warm-up. A cycle short of it is not complete: it runs again.

An older board (revision 2 or 1) reports nothing: the cycle is recorded as "dose not
reported", and completes as it did before such boards could tell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Tenths of seconds on the board, and its timer's 100 ppm: a record is consistent within this.
RECORD_SLACK_S = 0.2
# The board reports at most this many dark stretches; it counts all of them.
MAX_DARK_REPORTED = 8

Outcome = Literal["dose_met", "short_dose", "not_reported", "impossible"]


class ImpossibleRecord(ValueError):
    """A lamp record that no board could have made."""


@dataclass(frozen=True)
class LampRecord:
    """One cycle as the board's lamp sense saw it (nominal seconds)."""

    duration_s: float  # the cycle the board was asked for
    elapsed_s: float  # how long it ran
    lamp_on_s: float  # how long the lamp shone
    interruptions: int  # times the lamp went dark (all of them)
    dark: tuple[tuple[float, float], ...]  # the first ones: (seconds into the cycle, how long)

    @classmethod
    def from_event(
        cls, data: Mapping[str, Any], commanded_s: float | None, *, completed: bool
    ) -> LampRecord | None:
        """The record in an event's data, None if the board keeps none (an older board).

        Raises `ImpossibleRecord` for one that is malformed or contradicts itself, the cycle
        the service commanded (`commanded_s`, nominal seconds, if known) or the event (a
        cycle `completed` ran to its end)."""
        raw = data.get("lamp")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ImpossibleRecord("the lamp record is not an object")
        try:
            record = cls(
                duration_s=_seconds(raw, "duration_s"),
                elapsed_s=_seconds(raw, "elapsed_s"),
                lamp_on_s=_seconds(raw, "lamp_on_s"),
                interruptions=_count(raw, "interruptions"),
                dark=tuple(_stretch(item) for item in _list(raw, "dark")),
            )
        except (TypeError, ValueError) as exc:
            raise ImpossibleRecord(f"malformed lamp record: {exc}") from exc
        record.check(commanded_s, completed=completed)
        return record

    def check(self, commanded_s: float | None, *, completed: bool) -> None:
        slack = RECORD_SLACK_S
        if completed and self.elapsed_s + slack < self.duration_s:
            raise ImpossibleRecord(
                f"a {self.duration_s:g} s cycle reported complete after {self.elapsed_s:g} s"
            )
        if self.lamp_on_s > self.elapsed_s + slack:
            raise ImpossibleRecord(
                f"lamp lit {self.lamp_on_s:g} s in a cycle that ran {self.elapsed_s:g} s"
            )
        if self.elapsed_s > self.duration_s + slack:
            raise ImpossibleRecord(f"a {self.duration_s:g} s cycle that ran {self.elapsed_s:g} s")
        if commanded_s is not None and abs(self.duration_s - commanded_s) > max(1.0, slack):
            raise ImpossibleRecord(
                f"a {self.duration_s:g} s cycle reported for the {commanded_s:g} s one commanded"
            )
        if len(self.dark) > min(self.interruptions, MAX_DARK_REPORTED):
            raise ImpossibleRecord(
                f"{len(self.dark)} dark stretches listed of {self.interruptions} counted"
            )
        if self.interruptions <= MAX_DARK_REPORTED and len(self.dark) != self.interruptions:
            raise ImpossibleRecord(
                f"{self.interruptions} dark stretches counted, {len(self.dark)} listed"
            )
        end = 0.0
        for at, lasted in self.dark:
            if at + slack < end or at + lasted > self.elapsed_s + slack:
                raise ImpossibleRecord(f"a dark stretch at {at:g} s outside the cycle or order")
            end = at + lasted
        if self.interruptions == 0 and self.lamp_on_s + slack < self.elapsed_s:
            raise ImpossibleRecord(
                f"lamp lit {self.lamp_on_s:g} s of {self.elapsed_s:g} s with no dark stretch"
            )
        if self.interruptions == len(self.dark):
            dark_s = sum(lasted for _, lasted in self.dark)
            if abs(self.lamp_on_s + dark_s - self.elapsed_s) > slack * (1 + len(self.dark)):
                raise ImpossibleRecord(
                    f"lit {self.lamp_on_s:g} s and dark {dark_s:g} s in {self.elapsed_s:g} s"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "elapsed_s": self.elapsed_s,
            "lamp_on_s": self.lamp_on_s,
            "interruptions": self.interruptions,
            "dark": [{"at_s": at, "dark_s": lasted} for at, lasted in self.dark],
        }


@dataclass(frozen=True)
class Dose:
    outcome: Outcome
    dose_mj_cm2: float | None
    required_mj_cm2: float


def required_dose(irradiance_mw_cm2: float, commanded_s: float, min_fraction: float) -> float:
    """The dose a cycle must deliver: the commanded cycle's at the rated irradiance, less the
    margin (`min_fraction` of it)."""
    return irradiance_mw_cm2 * commanded_s * min_fraction


def judge(
    record: LampRecord | None, irradiance_mw_cm2: float, commanded_s: float, min_fraction: float
) -> Dose:
    """The cycle's dose and whether it is enough (mW/cm2 x s = mJ/cm2)."""
    required = required_dose(irradiance_mw_cm2, commanded_s, min_fraction)
    if record is None:
        return Dose("not_reported", None, required)
    dose = irradiance_mw_cm2 * record.lamp_on_s
    return Dose("dose_met" if dose >= required else "short_dose", dose, required)


def _seconds(raw: Mapping[str, Any], key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is not a number")
    if not math.isfinite(value) or not 0 <= value <= 7200:
        raise ValueError(f"{key} {value!r} out of range")
    return float(value)


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"{key} {value!r} is not a count of 0-255")
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_DARK_REPORTED:
        raise ValueError(f"{key} is not a list of at most {MAX_DARK_REPORTED}")
    return value


def _stretch(item: Any) -> tuple[float, float]:
    if not isinstance(item, Mapping):
        raise TypeError("a dark stretch is not an object")
    return _seconds(item, "at_s"), _seconds(item, "dark_s")


LAMP_FAILED = "uv_lamp_failed"  # the fault a compartment is in once its lamp has given up


def lamp_failed(newest_first: Sequence[str], max_short: int) -> bool:
    """The states of a compartment's finished cycles since its lamp was fitted, newest first:
    the lamp has failed when the last `max_short` of them were all short of their dose."""
    return len(newest_first) >= max_short and all(
        state == "short" for state in newest_first[:max_short]
    )
