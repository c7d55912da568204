"""Payload layer: command numbers, error and fault codes, and every payload's byte layout.

All integers are big-endian. Temperatures travel as signed tenths of a degree Celsius.
Each payload class packs to bytes and unpacks from bytes, raising `PayloadError` for a
payload of the wrong length or with a value outside its range, so both ends share one
definition of what is well-formed. Layouts and test vectors: hardware/PROTOCOL.md.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

SETPOINT_OFF = 0xFFFF  # setpoint field value meaning "heater off"
TEMP_NO_READING = 0x7FFF  # temperature field value when the sensor reads open or shorted
SETPOINT_MIN_DC = 200  # 20.0 °C: below that a heated compartment is pointless
SETPOINT_MAX_DC = 750  # 75.0 °C: well under the board's 85 °C over-temperature cutoff
PULSE_MIN_MS = 50
PULSE_MAX_MS = 2000  # a solenoid held longer than 2 s overheats
DISINFECT_MAX_S = 3600  # also the board's maximum UV on-time
STATUS_RECORD_SIZE = 10
STATUS_HEADER_SIZE = 7
STATUS_MAX_PER_ANSWER = (255 - STATUS_HEADER_SIZE) // STATUS_RECORD_SIZE  # 24
# What HELLO's protocol field says. 1: the first edition. 2: UNLOCK takes the REPORT flag and
# then answers with the compartment's state. 3: the lamp's current is sensed and CYCLE_REPORT
# tells what it saw. The frame format (its `ver` byte) is the same.
PROTOCOL_REVISION = 3
UNLOCK_REPORT_SINCE = 2  # the first revision whose UNLOCK takes the REPORT flag
CYCLE_REPORT_SINCE = 3  # the first revision that knows CYCLE_REPORT
# The first few interruptions tell a flickering tube from one that died; the count says the rest.
CYCLE_REPORT_MAX_INTERRUPTIONS = 8


class PayloadError(ValueError):
    """A payload of the wrong length or with a value out of range."""


class Command(enum.IntEnum):
    HELLO = 0x01
    STATUS = 0x02
    UNLOCK = 0x10
    SET_HEATER = 0x11
    START_DISINFECT = 0x12
    ABORT_DISINFECT = 0x13
    CLEAR_FAULT = 0x14
    CYCLE_REPORT = 0x15


class ErrorCode(enum.IntEnum):
    UNKNOWN_COMMAND = 0x01
    BAD_ARGUMENT = 0x02
    INTERLOCK_REFUSED = 0x03
    FAULTED = 0x04


class FaultCode(enum.IntEnum):
    NONE = 0
    SENSOR_OPEN = 1
    SENSOR_SHORT = 2
    OVER_TEMPERATURE = 3
    HEATING_WATCHDOG = 4
    UV_TIMEOUT = 5
    LOCK_JAMMED = 6


class CycleState(enum.IntEnum):
    """Where a compartment's last disinfection cycle is (CYCLE_REPORT)."""

    NONE = 0  # no cycle started since boot
    RUNNING = 1
    RAN_OUT = 2  # counted down to its end
    ABORTED = 3  # stopped early: door, fault, UNLOCK with override, ABORT_DISINFECT


class CompartmentFlags(enum.IntFlag):
    DOOR_OPEN = 0x01
    LOCK_RELEASED = 0x02
    OCCUPIED = 0x04
    HEATER_ON = 0x08  # element energised right now
    UV_ON = 0x10  # the lamp's relay is closed; whether the tube shone: CYCLE_REPORT
    DISINFECTING = 0x20  # a cycle is running (the lamp may be off only while it warms)
    HOLDING = 0x40  # a setpoint is active
    CYCLE_ABORTED = 0x80  # the last cycle stopped early (door, fault, command); until next start


class BoardFlags(enum.IntFlag):
    HEATER_LEASE_EXPIRED = 0x01  # link silent past the lease: every heater was switched off
    ANY_FAULT = 0x02


def _unpack(layout: struct.Struct, payload: bytes, what: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise PayloadError(f"{what} payload is {len(payload)} bytes, expected {layout.size}")
    return layout.unpack(payload)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PayloadError(message)


def _check_compartment(n: int) -> None:
    _check(1 <= n <= 255, f"compartment {n} out of 1-255")


@dataclass(frozen=True, slots=True)
class Empty:
    """HELLO and STATUS-less requests carry no payload."""

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        _check(payload == b"", f"expected an empty payload, got {len(payload)} bytes")
        return cls()


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    protocol: int
    fw_major: int
    fw_minor: int
    fw_patch: int
    boot_id: int
    compartment_count: int
    heater_lease_s: int

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBBIBH")

    @property
    def firmware(self) -> str:
        return f"{self.fw_major}.{self.fw_minor}.{self.fw_patch}"

    def pack(self) -> bytes:
        return self.LAYOUT.pack(
            self.protocol,
            self.fw_major,
            self.fw_minor,
            self.fw_patch,
            self.boot_id,
            self.compartment_count,
            self.heater_lease_s,
        )

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "HELLO answer"))


@dataclass(frozen=True, slots=True)
class StatusRequest:
    first: int = 1
    count: int = 0  # 0: as many as fit in one answer

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BB")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.first, self.count)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        first, count = _unpack(cls.LAYOUT, payload, "STATUS request")
        _check_compartment(first)
        _check(count <= STATUS_MAX_PER_ANSWER, f"count {count} over {STATUS_MAX_PER_ANSWER}")
        return cls(first, count)


@dataclass(frozen=True, slots=True)
class CompartmentStatus:
    number: int
    flags: CompartmentFlags
    temp_dc: int | None  # None: the sensor reads open or shorted
    setpoint_dc: int | None  # None: heater off
    disinfect_remaining_s: int
    fault: FaultCode
    door_open_count: int  # latched, wraps at 256: a quick open-and-shut between polls still counts
    door_close_count: int

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BhHHBBB")

    @property
    def door_open(self) -> bool:
        return bool(self.flags & CompartmentFlags.DOOR_OPEN)

    @property
    def lock_released(self) -> bool:
        return bool(self.flags & CompartmentFlags.LOCK_RELEASED)

    @property
    def occupied(self) -> bool:
        return bool(self.flags & CompartmentFlags.OCCUPIED)

    @property
    def heater_on(self) -> bool:
        return bool(self.flags & CompartmentFlags.HEATER_ON)

    @property
    def uv_on(self) -> bool:
        return bool(self.flags & CompartmentFlags.UV_ON)

    @property
    def disinfecting(self) -> bool:
        return bool(self.flags & CompartmentFlags.DISINFECTING)

    def pack_record(self) -> bytes:
        return self.LAYOUT.pack(
            int(self.flags),
            TEMP_NO_READING if self.temp_dc is None else self.temp_dc,
            SETPOINT_OFF if self.setpoint_dc is None else self.setpoint_dc,
            self.disinfect_remaining_s,
            int(self.fault),
            self.door_open_count & 0xFF,
            self.door_close_count & 0xFF,
        )

    @classmethod
    def unpack_record(cls, number: int, record: bytes) -> Self:
        flags, temp, setpoint, remaining, fault, opens, closes = _unpack(
            cls.LAYOUT, record, "STATUS record"
        )
        try:
            fault_code = FaultCode(fault)
        except ValueError as exc:
            raise PayloadError(f"unknown fault code {fault}") from exc
        return cls(
            number,
            CompartmentFlags(flags),
            None if temp == TEMP_NO_READING else temp,
            None if setpoint == SETPOINT_OFF else setpoint,
            remaining,
            fault_code,
            opens,
            closes,
        )


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    boot_id: int
    board_flags: BoardFlags
    compartments: tuple[CompartmentStatus, ...]

    HEAD: ClassVar[struct.Struct] = struct.Struct(">IBBB")

    def pack(self) -> bytes:
        first = self.compartments[0].number if self.compartments else 1
        head = self.HEAD.pack(self.boot_id, int(self.board_flags), first, len(self.compartments))
        return head + b"".join(c.pack_record() for c in self.compartments)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        _check(len(payload) >= cls.HEAD.size, "STATUS answer shorter than its head")
        boot_id, board_flags, first, count = cls.HEAD.unpack(payload[: cls.HEAD.size])
        body = payload[cls.HEAD.size :]
        _check(
            len(body) == count * STATUS_RECORD_SIZE,
            f"STATUS answer says {count} records but carries {len(body)} bytes",
        )
        records = tuple(
            CompartmentStatus.unpack_record(
                first + i, body[i * STATUS_RECORD_SIZE : (i + 1) * STATUS_RECORD_SIZE]
            )
            for i in range(count)
        )
        return cls(boot_id, BoardFlags(board_flags), records)


UNLOCK_OVERRIDE = 0x01  # UNLOCK flag: release even during a cycle (aborts it)
UNLOCK_REPORT = 0x02  # UNLOCK flag: append the compartment's state to the answer (revision 2)


@dataclass(frozen=True, slots=True)
class UnlockRequest:
    compartment: int
    pulse_ms: int = 500
    override_cycle: bool = False  # release even during a disinfection cycle (aborts it)
    report: bool = False  # ask for the compartment's state in the answer (boards of revision 2)

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BHB")

    def pack(self) -> bytes:
        flags = (UNLOCK_OVERRIDE if self.override_cycle else 0) | (
            UNLOCK_REPORT if self.report else 0
        )
        return self.LAYOUT.pack(self.compartment, self.pulse_ms, flags)

    @classmethod
    def unpack(cls, payload: bytes, known_flags: int = UNLOCK_OVERRIDE | UNLOCK_REPORT) -> Self:
        """`known_flags`: the flag bits the receiver understands; any other bit is refused."""
        compartment, pulse_ms, flags = _unpack(cls.LAYOUT, payload, "UNLOCK request")
        _check_compartment(compartment)
        _check(PULSE_MIN_MS <= pulse_ms <= PULSE_MAX_MS, f"pulse {pulse_ms} ms out of range")
        _check(flags & ~known_flags == 0, f"unknown UNLOCK flags {flags:#04x}")
        return cls(
            compartment, pulse_ms, bool(flags & UNLOCK_OVERRIDE), bool(flags & UNLOCK_REPORT)
        )


@dataclass(frozen=True, slots=True)
class UnlockAnswer:
    compartment: int
    pulse_ms: int
    # With the REPORT flag: the compartment as a one-record STATUS answer, read just after the
    # pulse started, so the master sees the latch without a STATUS exchange of its own.
    state: StatusAnswer | None = None

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BH")

    def pack(self) -> bytes:
        head = self.LAYOUT.pack(self.compartment, self.pulse_ms)
        return head if self.state is None else head + self.state.pack()

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        size = cls.LAYOUT.size
        if len(payload) <= size:
            compartment, pulse_ms = _unpack(cls.LAYOUT, payload, "UNLOCK answer")
            return cls(compartment, pulse_ms)
        compartment, pulse_ms = cls.LAYOUT.unpack(payload[:size])
        state = StatusAnswer.unpack(payload[size:])
        _check(
            [c.number for c in state.compartments] == [compartment],
            f"UNLOCK answer for {compartment} reports compartments "
            f"{[c.number for c in state.compartments]}",
        )
        return cls(compartment, pulse_ms, state)


@dataclass(frozen=True, slots=True)
class SetHeaterRequest:
    compartment: int
    setpoint_dc: int | None  # None: heater off

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BH")

    def pack(self) -> bytes:
        raw = SETPOINT_OFF if self.setpoint_dc is None else self.setpoint_dc
        return self.LAYOUT.pack(self.compartment, raw)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        compartment, raw = _unpack(cls.LAYOUT, payload, "SET_HEATER request")
        _check_compartment(compartment)
        if raw == SETPOINT_OFF:
            return cls(compartment, None)
        _check(
            SETPOINT_MIN_DC <= raw <= SETPOINT_MAX_DC,
            f"setpoint {raw / 10:.1f} °C out of {SETPOINT_MIN_DC / 10}-{SETPOINT_MAX_DC / 10}",
        )
        return cls(compartment, raw)


SetHeaterAnswer = SetHeaterRequest  # the answer echoes the setpoint now in force


@dataclass(frozen=True, slots=True)
class StartDisinfectRequest:
    compartment: int
    duration_s: int

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BH")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.compartment, self.duration_s)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        compartment, duration_s = _unpack(cls.LAYOUT, payload, "START_DISINFECT request")
        _check_compartment(compartment)
        _check(1 <= duration_s <= DISINFECT_MAX_S, f"duration {duration_s} s out of range")
        return cls(compartment, duration_s)


StartDisinfectAnswer = StartDisinfectRequest  # echoes the cycle that was started


@dataclass(frozen=True, slots=True)
class CompartmentRequest:
    """ABORT_DISINFECT, CLEAR_FAULT and CYCLE_REPORT name just a compartment."""

    compartment: int

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">B")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.compartment)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        (compartment,) = _unpack(cls.LAYOUT, payload, "compartment request")
        _check_compartment(compartment)
        return cls(compartment)


@dataclass(frozen=True, slots=True)
class AbortDisinfectAnswer:
    compartment: int
    remaining_s: int  # what was left of the cycle when it was stopped

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BH")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.compartment, self.remaining_s)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "ABORT_DISINFECT answer"))


@dataclass(frozen=True, slots=True)
class ClearFaultAnswer:
    compartment: int
    cleared: FaultCode  # the fault that was cleared (NONE if there was none)

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BB")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.compartment, int(self.cleared))

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        compartment, code = _unpack(cls.LAYOUT, payload, "CLEAR_FAULT answer")
        try:
            return cls(compartment, FaultCode(code))
        except ValueError as exc:
            raise PayloadError(f"unknown fault code {code}") from exc


@dataclass(frozen=True, slots=True)
class LampInterruption:
    """One stretch of a cycle during which the lamp's current sense read dark."""

    at_ds: int  # tenths of a second into the cycle when the lamp was sensed dark
    dark_ds: int  # how long it stayed dark; one never mended lasts until the cycle's end

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">HH")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.at_ds, self.dark_ds)

    @classmethod
    def unpack(cls, record: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, record, "lamp interruption"))


@dataclass(frozen=True, slots=True)
class CycleReportAnswer:
    """The proof of a compartment's last disinfection cycle: how long the lamp really shone."""

    compartment: int
    cycle_no: int  # cycles started on this compartment since boot, wraps at 65536
    state: CycleState
    duration_ds: int  # asked for by the START_DISINFECT in force
    elapsed_ds: int  # how long the cycle has run (or ran, once it is over)
    lamp_on_ds: int  # time the lamp was sensed lit during the cycle
    interruptions: int  # times the lamp was sensed dark during the cycle; stays at 255
    # The first CYCLE_REPORT_MAX_INTERRUPTIONS of them, in order.
    first_interruptions: tuple[LampInterruption, ...] = ()

    HEAD: ClassVar[struct.Struct] = struct.Struct(">BHBHHHBB")

    def pack(self) -> bytes:
        head = self.HEAD.pack(
            self.compartment,
            self.cycle_no,
            int(self.state),
            self.duration_ds,
            self.elapsed_ds,
            self.lamp_on_ds,
            self.interruptions,
            len(self.first_interruptions),
        )
        return head + b"".join(i.pack() for i in self.first_interruptions)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        _check(len(payload) >= cls.HEAD.size, "CYCLE_REPORT answer shorter than its head")
        compartment, cycle_no, state, duration, elapsed, lamp_on, interruptions, count = (
            cls.HEAD.unpack(payload[: cls.HEAD.size])
        )
        body = payload[cls.HEAD.size :]
        _check(
            count <= CYCLE_REPORT_MAX_INTERRUPTIONS,
            f"CYCLE_REPORT answer lists {count} interruptions, at most "
            f"{CYCLE_REPORT_MAX_INTERRUPTIONS}",
        )
        _check(
            count == min(interruptions, CYCLE_REPORT_MAX_INTERRUPTIONS),
            f"CYCLE_REPORT answer counts {interruptions} interruptions but lists {count}",
        )
        size = LampInterruption.LAYOUT.size
        _check(
            len(body) == count * size,
            f"CYCLE_REPORT answer says {count} interruptions but carries {len(body)} bytes",
        )
        try:
            cycle_state = CycleState(state)
        except ValueError as exc:
            raise PayloadError(f"unknown cycle state {state}") from exc
        listed = tuple(
            LampInterruption.unpack(body[i * size : (i + 1) * size]) for i in range(count)
        )
        return cls(
            compartment, cycle_no, cycle_state, duration, elapsed, lamp_on, interruptions, listed
        )


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    code: ErrorCode
    detail: int = 0  # the compartment concerned, or the fault code for FAULTED

    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BB")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(int(self.code), self.detail)

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        code, detail = _unpack(cls.LAYOUT, payload, "error answer")
        try:
            return cls(ErrorCode(code), detail)
        except ValueError as exc:
            raise PayloadError(f"unknown error code {code}") from exc


def wire_time_s(n_bytes: int, baud: int) -> float:
    """Time `n_bytes` take on a UART line at 8N1: ten bits per byte."""
    return n_bytes * 10 / baud


BOARD_TURNAROUND_S = 0.010  # the longest a board may take between a request's 0x00 and its answer
MAX_ANSWER_ON_WIRE = 267  # a full STATUS answer: 263 bytes, COBS overhead and the delimiter


def answer_deadline_s(request_bytes: int, baud: int) -> float:
    """How long the master waits for an answer before it retries (PROTOCOL.md, Timing)."""
    return (
        wire_time_s(request_bytes, baud)
        + BOARD_TURNAROUND_S
        + wire_time_s(MAX_ANSWER_ON_WIRE, baud)
        + 0.005  # USB-serial adapters hold bytes for up to a few ms before passing them on
    )
