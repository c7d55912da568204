"""A HACCP day as text, its seal and the chain's checks. Pure: no I/O.

A day's record is CSV in sections, each with its own header row (the first column names the
section), so a spreadsheet and an inspector read it as it is:

- `summary`: each compartment's day: minutes recorded, lowest and highest reading, minutes
  with a reading below the site's floor;
- `reading`: each compartment's minutes (the profile's check interval): lowest, highest and
  mean reading, setpoint, readings taken;
- `excursion`: the day's temperature and cycle alerts, with the corrective action an operator
  recorded; `action`: actions recorded that day on alerts of earlier days;
- `cycle`: disinfection cycles started that day, with the board's record of its UV-C lamp (the
  seconds it shone, the times it went dark) and the dose against the one required (ADR 0073);
  `order`: orders held that day, with their
  food-safety clock and outcome; `discard`: unsafe or expired food taken out, by whom and why;
  `correction`: outcomes corrected that day, each value changed with what the record said and
  says now (an order's days already sealed keep what they said: ADR 0118).

Times are the site's local time with its offset. The seal of a day is SHA-256 over the previous
day's seal and the day's text, so changing, dropping or inserting any day breaks every seal
after it; the first day follows `GENESIS`.

An export is the days one after the other, each behind a line `#day,<date>,<prev>,<seal>,<n>`
(n: the lines of text that follow), so a file can be checked without the database.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

GENESIS = "0" * 64
DAY_MARK = "#day"

HEADERS: dict[str, tuple[str, ...]] = {
    "site": ("site", "code", "name", "timezone", "profile", "floor_c", "setpoint_c", "day"),
    "summary": (
        "summary",
        "kiosk",
        "compartment",
        "minutes",
        "min_c",
        "max_c",
        "minutes_below_floor",
    ),
    "reading": (
        "reading",
        "kiosk",
        "compartment",
        "minute",
        "min_c",
        "max_c",
        "mean_c",
        "setpoint_c",
        "readings",
    ),
    "excursion": (
        "excursion",
        "kiosk",
        "compartment",
        "raised_at",
        "kind",
        "severity",
        "message",
        "resolved_at",
        "corrective_action",
        "action_by",
        "action_at",
    ),
    "action": ("action", "alert_raised_at", "kind", "message", "corrective_action", "by", "at"),
    "cycle": (
        "cycle",
        "kiosk",
        "compartment",
        "order",
        "kind",
        "started_at",
        "ends_at",
        "finished_at",
        "state",
        "minutes",
        "lamp_on_s",
        "times_dark",
        "dose_mj_cm2",
        "required_mj_cm2",
        "dose",
    ),
    "order": (
        "order",
        "ref",
        "kiosk",
        "compartment",
        "cooked_at",
        "deposited_at",
        "ready_at",
        "deadline",
        "ended_at",
        "outcome",
        "food_unsafe_at",
        "reason",
    ),
    "discard": ("discard", "kiosk", "compartment", "order", "at", "by", "why"),
    "correction": (
        "correction",
        "order",
        "kiosk",
        "compartment",
        "recorded_at",
        "what",
        "was",
        "now",
        "why",
    ),
}
SECTIONS: tuple[str, ...] = tuple(HEADERS)

Cell = str | int | float | None
Row = Sequence[Cell]


def cell(value: Cell) -> str:
    """One value as written: floats to 0.1 °C (the board's resolution), None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def quoted(text: str) -> str:
    """A text cell as `csv.writer` writes it: quoted when it holds a comma, a quote or a line
    break (for lines made by hand, a million of them faster than through the writer)."""
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


@dataclass(slots=True)
class DayText:
    """One site's day, section by section, made into its canonical text."""

    day: date
    sections: dict[str, list[Row]] = field(default_factory=dict)
    # Lines already written as CSV (the readings: a large site's day has a million and more),
    # after the section's rows.
    lines: dict[str, list[str]] = field(default_factory=dict)

    def add(self, section: str, row: Row) -> None:
        if section not in HEADERS or len(row) != len(HEADERS[section]) - 1:
            raise ValueError(f"a {section} row has {len(HEADERS[section]) - 1} values: {row!r}")
        self.sections.setdefault(section, []).append(row)

    def add_lines(self, section: str, lines: list[str]) -> None:
        """CSV lines of `section` (without their line breaks), each starting with its name."""
        if section not in HEADERS:
            raise ValueError(f"no section {section!r}")
        self.lines.setdefault(section, []).extend(lines)

    def text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for section in SECTIONS:
            rows, lines = self.sections.get(section, []), self.lines.get(section, [])
            if not rows and not lines and section != "site":
                continue
            writer.writerow(HEADERS[section])
            for row in rows:
                writer.writerow([section, *(cell(v) for v in row)])
            if lines:
                out.write("\n".join(lines))
                out.write("\n")
        return out.getvalue()


def seal(prev: str, text: str) -> str:
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SealedDay:
    day: date
    text: str
    prev: str
    seal: str

    def block(self) -> str:
        """The day as it appears in an export file."""
        lines = self.text.count("\n")
        return f"{DAY_MARK},{self.day.isoformat()},{self.prev},{self.seal},{lines}\n{self.text}"


def check_chain(days: Iterable[SealedDay], first_prev: str | None = GENESIS) -> list[str]:
    """What is wrong with a run of consecutive days (oldest first), each problem naming its
    day: a seal that does not match the text, a link to a seal that is not the day before's,
    a day missing. `first_prev` None: the run starts mid-chain (an export of a range), so its
    first link is taken as written."""
    problems: list[str] = []
    before: tuple[date, str] | None = None
    for d in days:
        problems += check_day(d, before, first_prev)
        before = (d.day, d.seal)
    return problems


def check_day(d: SealedDay, before: tuple[date, str] | None, first_prev: str | None) -> list[str]:
    """What is wrong with one day, given the (day, seal) before it in the run (None: it is
    the run's first, which must follow `first_prev` unless that is None)."""
    problems: list[str] = []
    if seal(d.prev, d.text) != d.seal:
        problems.append(f"{d.day}: its record does not match its seal (changed after sealing)")
    if before is None:
        if first_prev is not None and d.prev != first_prev:
            what = "start the chain" if first_prev == GENESIS else "follow the day before's seal"
            problems.append(f"{d.day}: the first day does not {what}")
        return problems
    day_before, seal_before = before
    if (d.day - day_before).days != 1:
        problems.append(f"{d.day}: the days between {day_before} and it are missing")
    if d.prev != seal_before:
        problems.append(f"{d.day}: it does not follow {day_before}'s seal")
    return problems


class ExportError(ValueError):
    """A file that is not a HACCP export (or is cut short)."""


def export_text(days: Iterable[SealedDay]) -> str:
    return "".join(d.block() for d in days)


def parse_export(text: str) -> list[SealedDay]:
    """The days of an export file; `ExportError` if it is not one. Lines end at "\n" alone,
    as they were counted: a "\r" or a form feed inside a corrective action is text (read the
    file as bytes, so that no newline translation changes it)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])  # a last line without its break: kept as it is
    days: list[SealedDay] = []
    i = 0
    while i < len(lines):
        mark = lines[i].rstrip("\n").split(",")
        if len(mark) != 5 or mark[0] != DAY_MARK:
            raise ExportError(f"line {i + 1}: expected '{DAY_MARK},<date>,<prev>,<seal>,<lines>'")
        try:
            day, count = date.fromisoformat(mark[1]), int(mark[4])
        except ValueError as exc:
            raise ExportError(f"line {i + 1}: {exc}") from exc
        if count < 0 or i + 1 + count > len(lines):
            raise ExportError(f"{day}: the file ends inside the day")
        days.append(SealedDay(day, "".join(lines[i + 1 : i + 1 + count]), mark[2], mark[3]))
        i += 1 + count
    if not days:
        raise ExportError("no day in the file")
    return days


def rows_of(text: str) -> list[list[str]]:
    """A day's text read back as rows (the PDF and the tests read it so)."""
    return list(csv.reader(io.StringIO(text)))
