"""Reference firmware of the locker bank board: command handling, thermostats and safety.

The board is modelled as firmware would be written: it sees the world only through its pins
(`BoardIO`), runs a control loop once per `CONTROL_PERIOD_S` (`tick`), hears door switches by
interrupt (`door_edge`) and answers request frames (`handle`). No I/O and no clock of its own:
the caller passes the simulated time, so every rule here is tested fast and deterministically.

While a disinfection cycle runs, the control loop also accounts what the lamp's current sense
reads (`CycleRecord`), so CYCLE_REPORT can prove the lamp really shone (protocol revision 3).

Safety rules no command can override (hardware/PROTOCOL.md, "Board-side safety"):
over-temperature cutoff, sensor open/short shutdown, heating watchdog, UV only behind a shut and
locked door, maximum UV on-time, heater lease, and no lock release during a cycle without the
override flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hardware.physics import SensorFault
from hardware.protocol import (
    BoardFlags,
    Command,
    CompartmentStatus,
    CycleReportAnswer,
    CycleState,
    ErrorAnswer,
    ErrorCode,
    FaultCode,
    Frame,
    FrameType,
    HelloAnswer,
    LampInterruption,
    PayloadError,
    StatusAnswer,
    StatusRequest,
)
from hardware.protocol.messages import (
    CYCLE_REPORT_MAX_INTERRUPTIONS,
    CYCLE_REPORT_SINCE,
    DISINFECT_MAX_S,
    PROTOCOL_REVISION,
    STATUS_MAX_PER_ANSWER,
    UNLOCK_OVERRIDE,
    UNLOCK_REPORT,
    UNLOCK_REPORT_SINCE,
    AbortDisinfectAnswer,
    ClearFaultAnswer,
    CompartmentFlags,
    CompartmentRequest,
    Empty,
    SetHeaterRequest,
    StartDisinfectRequest,
    UnlockAnswer,
    UnlockRequest,
)
from hardware.thermostat import Thermostat, TimeProportionedPid

FIRMWARE_VERSION = (1, 2, 0)  # 1.2: protocol revision 3, lamp current sense and CYCLE_REPORT
# The firmware that speaks each protocol revision; the older ones are boards still in the field.
FIRMWARE_OF_REVISION = {1: (1, 0, 0), 2: (1, 1, 0), PROTOCOL_REVISION: FIRMWARE_VERSION}
CONTROL_PERIOD_S = 1.0  # thermostat and safety loop rate, as on a small microcontroller
HEATER_LEASE_S = 600  # a kiosk PC silent for 10 minutes is gone: no unattended heating after that
OVER_TEMPERATURE_C = 85.0  # far above any setpoint (max 75 °C), below what the liner tolerates
WATCHDOG_WINDOW_S = 240.0  # full heater power for 4 minutes ...
WATCHDOG_MIN_RISE_C = 2.0  # ... must raise the air by 2 K even with a cold meal inside
WATCHDOG_FULL_DUTY = 0.95  # the watchdog only judges a heater asked for (nearly) full power
UV_MAX_ON_S = float(DISINFECT_MAX_S)  # the lamp is never on longer than the longest cycle
BOOT_TIME_S = 2.0  # from reset to the first answer: clocks, self-test, sensor settling
TEMP_MIN_DC = -32768  # int16 range of the STATUS temperature field, minus the no-reading marker
TEMP_MAX_DC = 32766

HEATER_FAULTS = frozenset(
    {
        FaultCode.SENSOR_OPEN,
        FaultCode.SENSOR_SHORT,
        FaultCode.OVER_TEMPERATURE,
        FaultCode.HEATING_WATCHDOG,
    }
)


class BoardIO(Protocol):
    """The board's pins: sensors in, actuators out (implemented by hardware.physics.World)."""

    def read_temp(self, n: int) -> float | SensorFault: ...
    def door_is_open(self, n: int) -> bool: ...
    def lock_is_released(self, n: int) -> bool: ...
    def is_occupied(self, n: int) -> bool: ...
    def uv_lit(self, n: int) -> bool: ...  # the lamp's current sense: relay on and tube emitting
    def pulse_lock(self, n: int, pulse_ms: int) -> None: ...
    def set_heater(self, n: int, duty: float) -> None: ...
    def set_contactor(self, n: int, closed: bool) -> None: ...
    def set_uv(self, n: int, on: bool) -> None: ...


class CommandError(Exception):
    """A request the board refuses: becomes an ERR frame."""

    def __init__(self, code: ErrorCode, detail: int = 0) -> None:
        super().__init__(f"{code.name} ({detail})")
        self.code = code
        self.detail = detail


def _ds(seconds: float) -> int:
    """Seconds as the tenths CYCLE_REPORT carries. No cycle runs past 3600 s, so u16 holds it."""
    return round(seconds * 10)


@dataclass(slots=True)
class DarkSpell:
    """One interruption of the lamp, as the firmware counts it."""

    at_s: float  # seconds into the cycle when the lamp was sensed dark
    dark_s: float = 0.0


@dataclass(slots=True)
class CycleRecord:
    """The proof of a compartment's last disinfection cycle: what the lamp's current sense read
    in each control period of it. Kept after the cycle ends, until the next one starts."""

    cycle_no: int = 0
    state: CycleState = CycleState.NONE
    duration_s: int = 0
    elapsed_s: float = 0.0
    lamp_on_s: float = 0.0
    interruptions: int = 0
    first_spells: list[DarkSpell] = field(default_factory=list)
    dark: bool = False  # the last period was dark: its interruption goes on

    @property
    def remaining_s(self) -> float:
        return self.duration_s - self.elapsed_s if self.state is CycleState.RUNNING else 0.0

    def run(self, dt_s: float, lit: bool) -> None:
        """Account one control period of `dt_s` in which the lamp was sensed `lit` or dark.

        A period that crosses the cycle's end counts only up to the end, so the times are exact
        however long the periods are."""
        ends = dt_s >= self.remaining_s
        run_s = min(dt_s, self.remaining_s)
        if lit:
            self.lamp_on_s += run_s
            self.dark = False
        else:
            if not self.dark:
                self.dark = True
                self.interruptions = min(self.interruptions + 1, 0xFF)
                if len(self.first_spells) < CYCLE_REPORT_MAX_INTERRUPTIONS:
                    self.first_spells.append(DarkSpell(self.elapsed_s))
            # Only the first interruptions are listed; a later one is just counted.
            if self.interruptions <= CYCLE_REPORT_MAX_INTERRUPTIONS:
                self.first_spells[-1].dark_s += run_s
        if ends:
            self.elapsed_s = float(self.duration_s)  # no rounding left over from the periods
            self.state = CycleState.RAN_OUT
        else:
            self.elapsed_s += run_s

    def report(self, n: int) -> CycleReportAnswer:
        return CycleReportAnswer(
            n,
            self.cycle_no,
            self.state,
            self.duration_s * 10,
            _ds(self.elapsed_s),
            _ds(self.lamp_on_s),
            self.interruptions,
            tuple(LampInterruption(_ds(s.at_s), _ds(s.dark_s)) for s in self.first_spells),
        )


@dataclass(slots=True)
class CompartmentState:
    """What the firmware keeps about one compartment in RAM (lost on reboot)."""

    thermostat: Thermostat
    setpoint_dc: int | None = None
    fault: FaultCode = FaultCode.NONE
    reading: float | SensorFault | None = None  # last sample of the control loop
    duty: float = 0.0
    cycle: CycleRecord = field(default_factory=CycleRecord)
    uv_on_since_s: float | None = None
    pulse_end_s: float | None = None
    door_open_count: int = 0
    door_close_count: int = 0
    watchdog_start_s: float | None = None
    watchdog_start_c: float = 0.0

    @property
    def disinfecting(self) -> bool:
        return self.cycle.state is CycleState.RUNNING

    @property
    def cycle_remaining_s(self) -> float:
        return self.cycle.remaining_s

    @property
    def cycle_aborted(self) -> bool:
        """The last cycle stopped before its end (STATUS flag CYCLE_ABORTED)."""
        return self.cycle.state is CycleState.ABORTED


@dataclass(slots=True)
class BoardCounters:
    """Diagnostics a test or the panel may read; not on the wire."""

    requests: int = 0
    duplicates: int = 0
    errors: int = 0
    ignored_while_booting: int = 0


@dataclass(slots=True)
class _Cache:
    key: tuple[int, int, bytes] | None = None
    answer: Frame | None = None


class Board:
    """The firmware of one board at `node_address`, driving `io` for `compartments`."""

    def __init__(
        self,
        io: BoardIO,
        compartments: int,
        node_address: int,
        boot_id: int,
        now_s: float,
        thermostat_factory: Callable[[], Thermostat] = TimeProportionedPid,
        heater_lease_s: int = HEATER_LEASE_S,
        protocol: int = PROTOCOL_REVISION,
    ) -> None:
        if not 1 <= node_address <= 127:
            raise ValueError(f"node address {node_address} outside 1-127")
        if not 1 <= protocol <= PROTOCOL_REVISION:
            raise ValueError(f"protocol revision {protocol} outside 1-{PROTOCOL_REVISION}")
        # A board of an older revision (revision 1, firmware 1.0: no UNLOCK REPORT flag;
        # revision 2, firmware 1.1: no CYCLE_REPORT) is kept for testing masters against boards
        # already in the field.
        self.protocol = protocol
        self.io = io
        self.node_address = node_address
        self.compartment_count = compartments
        self.heater_lease_s = heater_lease_s
        self._thermostat_factory = thermostat_factory
        self.counters = BoardCounters()
        self.boot_id = boot_id
        self.compartments: list[CompartmentState] = []
        self.booting_until_s = 0.0
        self.last_heard_s = now_s
        self.lease_expired = False
        self._cache = _Cache()
        self.reboot(boot_id, now_s, boot_time_s=0.0)

    # ---- reset

    def reboot(self, boot_id: int, now_s: float, boot_time_s: float = BOOT_TIME_S) -> None:
        """Power-on reset: RAM is lost, every output off, silent for `boot_time_s`."""
        self.boot_id = boot_id & 0xFFFFFFFF
        self.compartments = [
            CompartmentState(self._thermostat_factory()) for _ in range(self.compartment_count)
        ]
        for n, c in enumerate(self.compartments, start=1):
            self.io.set_heater(n, 0.0)
            self.io.set_contactor(n, False)
            self.io.set_uv(n, False)
            c.reading = self.io.read_temp(n)  # sampled during the boot self-test
        self.booting_until_s = now_s + boot_time_s
        self.last_heard_s = now_s  # the lease starts at boot
        self.lease_expired = False
        self._cache = _Cache()

    def booting(self, now_s: float) -> bool:
        return now_s < self.booting_until_s

    # ---- interrupts

    def door_edge(self, n: int, opened: bool, now_s: float) -> None:
        """Door switch changed. Counted at once so an open-and-shut between polls is seen."""
        if self.booting(now_s) or not 1 <= n <= self.compartment_count:
            return
        c = self.compartments[n - 1]
        if opened:
            c.door_open_count = (c.door_open_count + 1) & 0xFF
            if c.disinfecting:
                self._abort_cycle(n, c)  # UV-C must never shine on a person
        else:
            c.door_close_count = (c.door_close_count + 1) & 0xFF

    # ---- control loop

    def tick(self, now_s: float, dt_s: float = CONTROL_PERIOD_S) -> None:
        if self.booting(now_s):
            return
        if not self.lease_expired and now_s - self.last_heard_s >= self.heater_lease_s:
            self.lease_expired = True
            for c in self.compartments:
                c.setpoint_dc = None
                c.thermostat.reset()
        for i, c in enumerate(self.compartments):
            self._tick_compartment(i + 1, c, now_s, dt_s)

    def _tick_compartment(self, n: int, c: CompartmentState, now_s: float, dt_s: float) -> None:
        io = self.io
        reading = io.read_temp(n)
        c.reading = reading
        if reading is SensorFault.OPEN:
            self._latch(n, c, FaultCode.SENSOR_OPEN)
        elif reading is SensorFault.SHORT:
            self._latch(n, c, FaultCode.SENSOR_SHORT)
        elif isinstance(reading, float) and reading >= OVER_TEMPERATURE_C:
            self._latch(n, c, FaultCode.OVER_TEMPERATURE)

        if c.pulse_end_s is not None and now_s >= c.pulse_end_s:
            c.pulse_end_s = None
            if not io.lock_is_released(n) and not io.door_is_open(n):
                self._latch(n, c, FaultCode.LOCK_JAMMED)

        # Heater: the contactor closes only while heating is wanted and allowed, so a welded
        # relay cannot heat a compartment the firmware has switched off.
        heating = (
            c.setpoint_dc is not None
            and c.fault not in HEATER_FAULTS
            and isinstance(reading, float)
            and not self.lease_expired
        )
        if heating and isinstance(reading, float) and c.setpoint_dc is not None:
            door_open = io.door_is_open(n)
            c.duty = c.thermostat.output(
                c.setpoint_dc / 10.0, reading, dt_s, integrate=not door_open
            )
            self._watchdog(n, c, reading, now_s)
        else:
            c.duty = 0.0
            c.watchdog_start_s = None
        io.set_contactor(n, heating and c.fault not in HEATER_FAULTS)
        io.set_heater(n, c.duty if c.fault not in HEATER_FAULTS else 0.0)

        if c.disinfecting:
            if io.door_is_open(n) or io.lock_is_released(n):
                self._abort_cycle(n, c)
            elif c.uv_on_since_s is not None and now_s - c.uv_on_since_s >= UV_MAX_ON_S:
                self._latch(n, c, FaultCode.UV_TIMEOUT)
            else:
                # The cycle counts down whether the tube shines or not: the board neither
                # stretches nor stops a cycle for a dark lamp, it reports it (CYCLE_REPORT) and
                # the master judges the dose.
                c.cycle.run(dt_s, io.uv_lit(n))
                if not c.disinfecting:
                    c.uv_on_since_s = None
                    io.set_uv(n, False)

    def _watchdog(self, n: int, c: CompartmentState, temp_c: float, now_s: float) -> None:
        if c.duty < WATCHDOG_FULL_DUTY or self.io.door_is_open(n):
            c.watchdog_start_s = None  # an open door explains any lack of rise
            return
        if c.watchdog_start_s is None or temp_c - c.watchdog_start_c >= WATCHDOG_MIN_RISE_C:
            c.watchdog_start_s, c.watchdog_start_c = now_s, temp_c
        elif now_s - c.watchdog_start_s >= WATCHDOG_WINDOW_S:
            self._latch(n, c, FaultCode.HEATING_WATCHDOG)

    def _latch(self, n: int, c: CompartmentState, fault: FaultCode) -> None:
        """Latch `fault` (the first one stays until cleared) and make the compartment safe."""
        if c.fault is FaultCode.NONE:
            c.fault = fault
        if fault in HEATER_FAULTS:
            c.duty = 0.0
            c.setpoint_dc = None  # the master must set it again after CLEAR_FAULT
            c.thermostat.reset()
            c.watchdog_start_s = None
            self.io.set_heater(n, 0.0)
            self.io.set_contactor(n, False)
        if c.disinfecting:
            self._abort_cycle(n, c)

    def _abort_cycle(self, n: int, c: CompartmentState) -> float:
        remaining = c.cycle_remaining_s
        c.cycle.state = CycleState.ABORTED
        c.uv_on_since_s = None
        self.io.set_uv(n, False)
        return remaining

    def _fault_condition(self, n: int, c: CompartmentState) -> FaultCode:
        """The fault whose cause is still present right now, if any."""
        reading = self.io.read_temp(n)
        if reading is SensorFault.OPEN:
            return FaultCode.SENSOR_OPEN
        if reading is SensorFault.SHORT:
            return FaultCode.SENSOR_SHORT
        if isinstance(reading, float) and reading >= OVER_TEMPERATURE_C:
            return FaultCode.OVER_TEMPERATURE
        return FaultCode.NONE

    # ---- requests

    def handle(self, frame: Frame, now_s: float) -> Frame | None:
        """The answer to `frame`, or None when the board stays silent (not for us, booting)."""
        if frame.type is not FrameType.REQ or frame.addr != self.node_address:
            return None
        if self.booting(now_s):
            self.counters.ignored_while_booting += 1
            return None
        self.last_heard_s = now_s
        self.counters.requests += 1
        key = (frame.seq, frame.cmd, frame.payload)
        if frame.cmd == Command.HELLO:
            self._cache = _Cache()
        elif key == self._cache.key and self._cache.answer is not None:
            self.counters.duplicates += 1
            return self._cache.answer
        try:
            ftype, payload = FrameType.RESP, self._execute(frame.cmd, frame.payload, now_s)
        except CommandError as exc:
            self.counters.errors += 1
            ftype, payload = FrameType.ERR, ErrorAnswer(exc.code, exc.detail & 0xFF).pack()
        answer = Frame(self.node_address, ftype, frame.seq, frame.cmd, payload)
        if frame.cmd != Command.HELLO:
            self._cache = _Cache(key, answer)
        return answer

    def _execute(self, cmd: int, payload: bytes, now_s: float) -> bytes:
        try:
            command = Command(cmd)
        except ValueError:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND, cmd) from None
        if command is Command.CYCLE_REPORT and self.protocol < CYCLE_REPORT_SINCE:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND, cmd)  # older firmware never had it
        try:
            match command:
                case Command.HELLO:
                    Empty.unpack(payload)
                    return self._hello()
                case Command.STATUS:
                    return self._status(StatusRequest.unpack(payload))
                case Command.UNLOCK:
                    reports = self.protocol >= UNLOCK_REPORT_SINCE
                    known = UNLOCK_OVERRIDE | (UNLOCK_REPORT if reports else 0)
                    return self._unlock(UnlockRequest.unpack(payload, known), now_s)
                case Command.SET_HEATER:
                    return self._set_heater(SetHeaterRequest.unpack(payload))
                case Command.START_DISINFECT:
                    return self._start_disinfect(StartDisinfectRequest.unpack(payload), now_s)
                case Command.ABORT_DISINFECT:
                    return self._abort_disinfect(CompartmentRequest.unpack(payload))
                case Command.CLEAR_FAULT:
                    return self._clear_fault(CompartmentRequest.unpack(payload))
                case Command.CYCLE_REPORT:
                    return self._cycle_report(CompartmentRequest.unpack(payload))
        except PayloadError:
            # The detail names the compartment when the payload starts with one.
            detail = payload[0] if payload and command is not Command.STATUS else 0
            raise CommandError(ErrorCode.BAD_ARGUMENT, detail) from None

    def _compartment(self, n: int) -> CompartmentState:
        if not 1 <= n <= self.compartment_count:
            raise CommandError(ErrorCode.BAD_ARGUMENT, n)
        return self.compartments[n - 1]

    def _hello(self) -> bytes:
        major, minor, patch = FIRMWARE_OF_REVISION[self.protocol]
        return HelloAnswer(
            self.protocol,
            major,
            minor,
            patch,
            self.boot_id,
            self.compartment_count,
            self.heater_lease_s,
        ).pack()

    def board_flags(self) -> BoardFlags:
        flags = BoardFlags(0)
        if self.lease_expired:
            flags |= BoardFlags.HEATER_LEASE_EXPIRED
        if any(c.fault is not FaultCode.NONE for c in self.compartments):
            flags |= BoardFlags.ANY_FAULT
        return flags

    def compartment_status(self, n: int) -> CompartmentStatus:
        c = self.compartments[n - 1]
        io = self.io
        flags = CompartmentFlags(0)
        if io.door_is_open(n):
            flags |= CompartmentFlags.DOOR_OPEN
        if io.lock_is_released(n):
            flags |= CompartmentFlags.LOCK_RELEASED
        if io.is_occupied(n):
            flags |= CompartmentFlags.OCCUPIED
        if c.duty > 0.0:
            flags |= CompartmentFlags.HEATER_ON
        if c.disinfecting:
            flags |= CompartmentFlags.DISINFECTING
            if c.uv_on_since_s is not None:
                flags |= CompartmentFlags.UV_ON
        if c.setpoint_dc is not None:
            flags |= CompartmentFlags.HOLDING
        if c.cycle_aborted:
            flags |= CompartmentFlags.CYCLE_ABORTED
        temp_dc = (
            min(max(round(c.reading * 10), TEMP_MIN_DC), TEMP_MAX_DC)
            if isinstance(c.reading, float)
            else None
        )
        return CompartmentStatus(
            n,
            flags,
            temp_dc,
            c.setpoint_dc,
            min(math.ceil(c.cycle_remaining_s), 0xFFFF),
            c.fault,
            c.door_open_count,
            c.door_close_count,
        )

    def _status(self, request: StatusRequest) -> bytes:
        if request.first > self.compartment_count:
            raise CommandError(ErrorCode.BAD_ARGUMENT, request.first)
        count = request.count or STATUS_MAX_PER_ANSWER
        last = min(request.first + count - 1, self.compartment_count)
        records = tuple(self.compartment_status(n) for n in range(request.first, last + 1))
        return StatusAnswer(self.boot_id, self.board_flags(), records).pack()

    def _unlock(self, request: UnlockRequest, now_s: float) -> bytes:
        n = request.compartment
        c = self._compartment(n)
        if c.disinfecting:
            if not request.override_cycle:
                raise CommandError(ErrorCode.INTERLOCK_REFUSED, n)
            self._abort_cycle(n, c)
        # A fault never keeps food locked in: UNLOCK is refused for no fault code.
        self.io.pulse_lock(n, request.pulse_ms)
        # The latch's feedback switch is judged when the pulse ends; a latch that moved at once
        # (or a door already open) needs no judging, so a fast open-and-shut is not a jam.
        released = self.io.lock_is_released(n) or self.io.door_is_open(n)
        c.pulse_end_s = None if released else now_s + request.pulse_ms / 1000.0
        state = (
            StatusAnswer(self.boot_id, self.board_flags(), (self.compartment_status(n),))
            if request.report
            else None
        )
        return UnlockAnswer(n, request.pulse_ms, state).pack()

    def _set_heater(self, request: SetHeaterRequest) -> bytes:
        n = request.compartment
        c = self._compartment(n)
        if request.setpoint_dc is not None and c.fault is not FaultCode.NONE:
            raise CommandError(ErrorCode.FAULTED, int(c.fault))
        if request.setpoint_dc is None or c.setpoint_dc is None:
            c.thermostat.reset()
        c.setpoint_dc = request.setpoint_dc
        if c.setpoint_dc is None:  # off means off now, not at the next control period
            c.duty = 0.0
            self.io.set_heater(n, 0.0)
            self.io.set_contactor(n, False)
        self.lease_expired = False  # the master has taken charge of the heaters again
        return SetHeaterRequest(n, c.setpoint_dc).pack()

    def _start_disinfect(self, request: StartDisinfectRequest, now_s: float) -> bytes:
        n = request.compartment
        c = self._compartment(n)
        if c.fault is not FaultCode.NONE:
            raise CommandError(ErrorCode.FAULTED, int(c.fault))
        if self.io.door_is_open(n) or self.io.lock_is_released(n):
            raise CommandError(ErrorCode.INTERLOCK_REFUSED, n)
        # A restart is a new cycle with a record of its own, but the lamp's on-time keeps
        # counting, so a master that keeps restarting cycles still meets UV_MAX_ON_S.
        c.cycle = CycleRecord(
            cycle_no=(c.cycle.cycle_no + 1) & 0xFFFF,
            state=CycleState.RUNNING,
            duration_s=request.duration_s,
        )
        if c.uv_on_since_s is None:
            c.uv_on_since_s = now_s
        self.io.set_uv(n, True)
        return StartDisinfectRequest(n, request.duration_s).pack()

    def _abort_disinfect(self, request: CompartmentRequest) -> bytes:
        n = request.compartment
        c = self._compartment(n)
        remaining = self._abort_cycle(n, c) if c.disinfecting else 0.0
        return AbortDisinfectAnswer(n, min(math.ceil(remaining), 0xFFFF)).pack()

    def _clear_fault(self, request: CompartmentRequest) -> bytes:
        n = request.compartment
        c = self._compartment(n)
        still = self._fault_condition(n, c)
        if still is not FaultCode.NONE:
            raise CommandError(ErrorCode.FAULTED, int(still))
        cleared, c.fault = c.fault, FaultCode.NONE
        return ClearFaultAnswer(n, cleared).pack()

    def _cycle_report(self, request: CompartmentRequest) -> bytes:
        n = request.compartment
        return self._compartment(n).cycle.report(n).pack()
