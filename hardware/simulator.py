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

Usage of every control: hardware/README.md.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import queue
import random
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel

from hardware import simurl
from hardware.firmware import CONTROL_PERIOD_S, Board
from hardware.physics import (
    PHYSICS_STEP_S,
    RELEASED_LOCK_RELATCH_S,
    SensorFault,
    World,
    WorldError,
)
from hardware.protocol import Frame, FrameDecoder, encode_frame
from hardware.protocol.messages import PROTOCOL_REVISION, wire_time_s
from hardware.thermostat import Hysteresis, Thermostat, TimeProportionedPid
from hardware.transport import READ_CHUNK, PtyPort, TcpPort

log = logging.getLogger(__name__)

simurl.register()

TICK_PERIOD_S = 0.1  # wall-clock: 10 Hz keeps an idle simulator under 1 % of a core
MAX_STEPS_PER_TICK = 2000  # after a long stall, catch up at most this much at once
SCAN_MAX_CHARS = 512  # longer than any QR code our pickup tokens make
assert PHYSICS_STEP_S == CONTROL_PERIOD_S  # one firmware control period per physics step

Device = Literal["board", "scanner"]
LineDirection = Literal["both", "to_board", "from_board"]
T = TypeVar("T")
_names = itertools.count(1)


def _whole_ms(seconds: float) -> float:
    """`seconds` rounded down to whole milliseconds (epoll would round up), at least 0."""
    return max(0.0, math.floor(seconds * 1000) / 1000)


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
    uv_on: bool
    uv_on_s: float
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


# ---- controls


class WorldControl:
    """What people in the lobby do. Raises `WorldError` for what cannot physically happen.

    Each control first brings physics and firmware up to the present, so a change takes effect
    at the simulated moment it is made, not up to one tick (time_scale / 10 s) earlier."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def open_door(self, n: int, force: bool = False) -> None:
        """Open the door; only a released lock lets it, unless `force` (the door is forced)."""
        with self._sim._lock:
            self._sim._catch_up()
            self._sim.model.open_door(n, force)

    def close_door(self, n: int) -> None:
        with self._sim._lock:
            self._sim._catch_up()
            self._sim.model.close_door(n)

    def place_item(self, n: int, mass_g: float = 450.0, temp_c: float = 70.0) -> None:
        with self._sim._lock:
            self._sim._catch_up()
            self._sim.model.place_item(n, mass_g, temp_c)

    def remove_item(self, n: int) -> None:
        with self._sim._lock:
            self._sim._catch_up()
            self._sim.model.remove_item(n)

    def set_lobby_temp(self, temp_c: float) -> None:
        with self._sim._lock:
            self._sim._catch_up()
            self._sim.model.set_lobby_temp(temp_c)

    def scan(self, text: str) -> None:
        """Present a code to the scanner: it sends `text` and CR LF, as scan engines do."""
        self._sim._scan(text)


class FaultControl:
    """Hardware that breaks, and a line that misbehaves."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def _set(self, n: int, **values: Any) -> None:
        with self._sim._lock:
            self._sim._catch_up()
            c = self._sim.model.compartment(n)
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

    def line_errors(self, rate: float, direction: LineDirection = "both") -> None:
        """Corrupt each byte on the board line with probability `rate` (0-1): in `both`
        directions, only `to_board` (requests) or only `from_board` (answers)."""
        if not 0.0 <= rate <= 1.0:
            raise WorldError(f"line error rate {rate} out of 0-1")
        if direction not in ("both", "to_board", "from_board"):
            raise WorldError(f"no line direction {direction!r}")
        with self._sim._lock:
            self._sim.line_error_rate = rate
            self._sim.line_error_direction = direction

    def reboot(self) -> None:
        """Power-cycle the board: RAM lost, new boot id, silent while it boots."""
        sim = self._sim
        with sim._lock:
            sim._catch_up()
            sim.board.reboot(sim._rng.getrandbits(32), sim.now_s())

    def pull_cable(self, seconds: float, device: Device = "board") -> None:
        """Unplug `device` for `seconds` of simulated time: its port goes away, then comes back."""
        if seconds <= 0:
            raise WorldError("a cable is pulled for a positive number of seconds")
        if device not in ("board", "scanner"):
            raise WorldError(f"no device {device!r}: board or scanner")
        sim = self._sim
        with sim._lock:
            sim._cable_back_at[device] = sim.now_s() + seconds
        sim._in_io_thread(lambda: sim._unplug(device))


# ---- the simulator


class Simulator:
    """A locker bank board with its compartments, its scanner and their ports."""

    def __init__(
        self,
        compartments: int = 12,
        seed: int = 1,
        time_scale: float = 1.0,
        node_address: int = 1,
        baud: int = 115200,
        name: str | None = None,
        thermostat: Literal["pid", "hysteresis"] = "pid",
        lobby_temp_c: float = 22.0,
        manual_clock: bool = False,
        pace: bool = True,
        protocol: int = PROTOCOL_REVISION,
        relatch_s: float = RELEASED_LOCK_RELATCH_S,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.name = name or f"bank{next(_names)}"
        self.seed = seed
        self.time_scale = float(time_scale)
        self.baud = baud
        self._lock = threading.RLock()
        self._rng = random.Random(seed * 7919 + 1)  # boot ids and line errors, apart from physics
        self.model = World(compartments, seed, lobby_temp_c, relatch_s)
        factory: Callable[[], Thermostat] = (
            TimeProportionedPid if thermostat == "pid" else Hysteresis
        )
        self.board = Board(
            self.model,
            compartments,
            node_address,
            self._rng.getrandbits(32),
            0.0,
            thermostat_factory=factory,
            protocol=protocol,  # 1: a board of the first edition, as still in the field
        )
        self.model.door_listener = self._on_door
        self.world = WorldControl(self)
        self.faults = FaultControl(self)
        self.line_error_rate = 0.0
        self.line_error_direction: LineDirection = "both"
        self._cable_back_at: dict[str, float] = {}
        self._started_wall: float | None = None
        # A manual clock stands still until `advance()`: byte-exact, repeatable sessions.
        self.manual_clock = manual_clock
        self._manual_now_s = 0.0
        # Answers on pty and socket ports leave at the baud rate's pace, as from a UART.
        self.pace = pace
        self._deferred: list[tuple[float, int, Callable[[], None]]] = []
        self._deferred_order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None  # a self-pipe: other threads wake the loop
        self._wake_w: socket.socket | None = None
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pty_dir: Path | None = None
        self._ptys: dict[str, PtyPort] = {}
        self._tcp: dict[str, TcpPort] = {}
        self._sim_clients: list[simurl.SimClient] = []
        self._line_peers: list[Simulator] = []  # other boards on this board line (RS-485)

    # ---- time

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
        with self._lock:
            self._catch_up()

    def advance(self, sim_seconds: float) -> None:
        """Move a manual clock forward, running physics and firmware for that long."""
        if not self.manual_clock:
            raise SimulatorError("advance() is for a manual clock; use sleep()")
        if sim_seconds < 0:
            raise SimulatorError("time only moves forward")
        with self._lock:
            self._manual_now_s += sim_seconds
            self._catch_up(limit=None)

    def _catch_up(self, limit: int | None = MAX_STEPS_PER_TICK) -> None:
        """Advance physics and firmware to the present, in whole control periods."""
        target = self.now_s()
        steps = 0
        while self.model.now_s + PHYSICS_STEP_S <= target and (limit is None or steps < limit):
            self.board.tick(self.model.now_s, CONTROL_PERIOD_S)
            self.model.step(PHYSICS_STEP_S)
            steps += 1
        if limit is not None and steps >= limit:
            # Stalled far behind (a suspended process): drop the backlog rather than spin.
            self.model.now_s = target

    # ---- life cycle

    def start(self) -> Self:
        if self._thread is not None:
            raise SimulatorError("the simulator is already running")
        if self._stopping.is_set():
            raise SimulatorError("a stopped simulator cannot be started again: make a new one")
        try:
            simurl.publish(self.name, self)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._started_wall = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(timeout=5)
        self._thread = None
        simurl.withdraw(self.name, self)
        for client in list(self._sim_clients):
            client.disconnect()
        for pty in self._ptys.values():
            pty.close()
        for tcp in self._tcp.values():
            tcp.close()
        if self._selector is not None:
            self._selector.close()
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()
        if self._pty_dir is not None:
            with contextlib.suppress(OSError):
                self._pty_dir.rmdir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- ports

    @property
    def board_url(self) -> str:
        return f"sim://{self.name}/board"

    @property
    def scanner_url(self) -> str:
        return f"sim://{self.name}/scanner"

    def open_pty(self, directory: str | Path | None = None) -> tuple[str, str]:
        """Create the board and scanner ptys; return their stable paths (symlinks)."""
        if directory is None:
            self._pty_dir = Path(tempfile.mkdtemp(prefix=f"locker-{self.name}-"))
            directory = self._pty_dir
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

        def make() -> tuple[str, str]:
            for device in ("board", "scanner"):
                if device in self._ptys:
                    raise SimulatorError(f"the {device} pty is already open")
            for device in ("board", "scanner"):
                port = PtyPort(directory / device, self.baud)
                self._ptys[device] = port
                self._plug_pty(device)
            return str(self._ptys["board"].link), str(self._ptys["scanner"].link)

        return self._in_io_thread(make)

    def serve_sockets(
        self, host: str = "127.0.0.1", board_port: int = 0, scanner_port: int = 0
    ) -> tuple[int, int]:
        """Listen for `socket://host:port` connections; port 0 picks a free one."""

        def make() -> tuple[int, int]:
            for device, port in (("board", board_port), ("scanner", scanner_port)):
                if device in self._tcp:
                    raise SimulatorError(f"the {device} socket is already served")
                tcp = TcpPort(host, port)
                tcp.open()
                self._tcp[device] = tcp
                self._register_listener(device)
            return self._tcp["board"].port, self._tcp["scanner"].port

        return self._in_io_thread(make)

    # ---- truth

    def truth(self) -> SimTruth:
        with self._lock:
            self._catch_up()
            now = self.now_s()
            board = self.board
            rows = []
            for c, fw in zip(self.model.compartments, board.compartments, strict=True):
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
                    )
                )
            board_pty = self._ptys.get("board")
            scanner_pty = self._ptys.get("scanner")
            board_tcp = self._tcp.get("board")
            scanner_tcp = self._tcp.get("scanner")
            return SimTruth(
                name=self.name,
                sim_time_s=round(now, 3),
                time_scale=self.time_scale,
                seed=self.seed,
                lobby_temp_c=self.model.lobby_c,
                node_address=board.node_address,
                boot_id=board.boot_id,
                booting=board.booting(now),
                heater_lease_s=board.heater_lease_s,
                heater_lease_expired=board.lease_expired,
                line_error_rate=self.line_error_rate,
                line_error_direction=self.line_error_direction,
                cable_pulled_s={d: round(t - now, 3) for d, t in self._cable_back_at.items()},
                requests=board.counters.requests,
                duplicates=board.counters.duplicates,
                errors=board.counters.errors,
                ports=PortsTruth(
                    board_pty=str(board_pty.link) if board_pty else None,
                    scanner_pty=str(scanner_pty.link) if scanner_pty else None,
                    board_url=self.board_url,
                    scanner_url=self.scanner_url,
                    board_tcp=f"socket://{board_tcp.host}:{board_tcp.port}" if board_tcp else None,
                    scanner_tcp=(
                        f"socket://{scanner_tcp.host}:{scanner_tcp.port}" if scanner_tcp else None
                    ),
                    board_tcp_connections=len(board_tcp.clients) if board_tcp else 0,
                    scanner_tcp_connections=len(scanner_tcp.clients) if scanner_tcp else 0,
                ),
                compartments=rows,
            )

    # ---- board line: bytes in, answers out

    def _corrupt(self, data: bytes, towards: LineDirection) -> bytes:
        rate = self.line_error_rate
        if self.line_error_direction not in ("both", towards):
            return data
        if rate <= 0.0 or not data:
            return data
        out = bytearray(data)
        rng = self._rng
        for i in range(len(out)):
            if rng.random() < rate:
                out[i] ^= 1 << rng.randrange(8)
        return bytes(out)

    def _board_bytes(self, decoder: FrameDecoder, data: bytes) -> bytes:
        with self._lock:
            now = self.now_s()
            answers = bytearray()
            for frame in decoder.feed(self._corrupt(data, "to_board")):
                answer = self.board.handle(frame, now)
                for peer in self._line_peers:
                    if answer is not None:
                        break
                    answer = peer._hear_on_line(frame)
                if answer is not None:
                    answers += encode_frame(answer)
            return self._corrupt(bytes(answers), "from_board")

    def share_line(self, other: Simulator) -> None:
        """Hang `other`'s board on this simulator's line (RS-485 multi-drop): every request on
        this simulator's board ports reaches it too, and its answers come back on them. Each
        board keeps its own world, clock and faults; the line's faults are this simulator's."""
        if other is self or other._line_peers or self in other._line_peers:
            raise SimulatorError("a line is shared by one host simulator and its peers")
        addresses = {self.board.node_address} | {p.board.node_address for p in self._line_peers}
        if other.board.node_address in addresses:
            raise SimulatorError(f"node address {other.board.node_address} is taken on this line")
        with self._lock:
            self._line_peers.append(other)

    def _hear_on_line(self, frame: Frame) -> Frame | None:
        with self._lock:
            return self.board.handle(frame, self.now_s())

    def _on_door(self, n: int, opened: bool) -> None:
        self.board.door_edge(n, opened, self.now_s())

    # ---- scanner

    def _scan(self, text: str) -> None:
        if not text or len(text) > SCAN_MAX_CHARS:
            raise WorldError(f"a scan carries 1-{SCAN_MAX_CHARS} characters")
        if any(ch in "\r\n" or not ch.isprintable() for ch in text):
            raise WorldError("a scan carries printable text only, on one line")
        line = text.encode("utf-8") + b"\r\n"
        with self._lock:
            for client in self._sim_clients:
                if client.device == "scanner" and not client.broken:
                    client.deliver(line)
        self._in_io_thread(lambda: self._send_scan(line))

    def _send_scan(self, line: bytes) -> None:
        pty = self._ptys.get("scanner")
        if pty is not None:
            pty.write(line)
        tcp = self._tcp.get("scanner")
        if tcp is not None:
            for conn in list(tcp.clients):
                if not tcp.send(conn, line):
                    self._forget_conn(tcp, conn)

    # ---- sim:// handles (hardware.simurl.SimHost)

    def attach(self, device: str) -> simurl.SimClient:
        with self._lock:
            if device in self._cable_back_at:
                raise ConnectionError(f"the {device} cable is pulled")
            client = simurl.SimClient(device)
            client.decoder_state = FrameDecoder()
            self._sim_clients.append(client)
            return client

    def detach(self, client: simurl.SimClient) -> None:
        with self._lock:
            if client in self._sim_clients:
                self._sim_clients.remove(client)

    def receive(self, client: simurl.SimClient, data: bytes) -> None:
        if client.device != "board" or client.broken:
            return  # a scanner ignores what the host sends it
        decoder = client.decoder_state
        assert isinstance(decoder, FrameDecoder)
        answers = self._board_bytes(decoder, data)
        if answers:
            client.deliver(answers)

    # ---- the I/O thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            if self._wake_w is not None:
                self._wake_w.send(b"\x01")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            if self._wake_r is not None:
                self._wake_r.recv(READ_CHUNK)

    def _in_io_thread(self, call: Callable[[], T]) -> T:
        """Run `call` on the I/O thread (which owns the selector) and return its result."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise SimulatorError("start() the simulator first")
        if threading.current_thread() is thread:
            return call()
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = call()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        self._calls.put(run)
        self._wake()
        if not done.wait(timeout=10):
            raise SimulatorError("the simulator thread did not answer")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def _run(self) -> None:
        assert self._selector is not None
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            wake_at = min(next_tick, self._deferred[0][0]) if self._deferred else next_tick
            ready: list[Callable[[], None]] = [
                key.data for key, _ in self._selector.select(_whole_ms(wake_at - time.monotonic()))
            ]
            if not ready and self._deferred:
                # The selector counts whole milliseconds: the last fraction of one before an
                # answer is due is slept precisely, so the answer leaves at its wire time, not
                # up to 1 ms late (which the bench would count as the bridge's).
                rest_s = self._deferred[0][0] - time.monotonic()
                if 0.0 < rest_s < 0.001:
                    time.sleep(rest_s)
            while self._deferred and self._deferred[0][0] <= time.monotonic():
                ready.append(heapq.heappop(self._deferred)[2])
            while True:
                try:
                    ready.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            for callback in ready:
                try:
                    callback()
                except Exception:  # one bad callback must not take the whole board down
                    log.exception("simulator I/O callback failed")
            if time.monotonic() >= next_tick:
                next_tick += TICK_PERIOD_S
                if next_tick < time.monotonic():
                    next_tick = time.monotonic() + TICK_PERIOD_S
                try:
                    with self._lock:
                        self._catch_up()
                        due = [d for d, t in self._cable_back_at.items() if t <= self.now_s()]
                    for device in due:
                        self._replug(device)
                except Exception:  # the simulator must outlive a bug in one step
                    log.exception("simulator tick failed")

    def _after_wire_time(self, received: int, answers: bytes, send: Callable[[], None]) -> None:
        """Hand `answers` over when its last byte would have left a UART at the line's baud
        rate, counting the `received` request bytes that had to arrive first, so the master
        sees a real board's timing (sim:// skips this, for speed)."""
        if not self.pace:
            send()
            return
        due = time.monotonic() + wire_time_s(received + len(answers), self.baud)
        heapq.heappush(self._deferred, (due, next(self._deferred_order), send))

    def _plug_pty(self, device: str) -> None:
        assert self._selector is not None
        pty = self._ptys[device]
        pty.open()
        assert pty.master_fd is not None
        decoder = FrameDecoder()
        fd = pty.master_fd

        def readable() -> None:
            data = pty.read()
            if device == "board" and data:
                answers = self._board_bytes(decoder, data)
                if answers:
                    self._after_wire_time(len(data), answers, lambda: pty.write(answers))

        self._selector.register(fd, selectors.EVENT_READ, readable)

    def _register_listener(self, device: str) -> None:
        assert self._selector is not None
        tcp = self._tcp[device]
        assert tcp.listener is not None

        def acceptable() -> None:
            conn = tcp.accept()
            if conn is None:
                return
            decoder = FrameDecoder()

            def readable() -> None:
                try:
                    data = conn.recv(READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:
                    self._forget_conn(tcp, conn)
                    return
                if device == "board":
                    answers = self._board_bytes(decoder, data)
                    if answers:

                        def send() -> None:
                            if conn in tcp.clients and not tcp.send(conn, answers):
                                self._forget_conn(tcp, conn)

                        self._after_wire_time(len(data), answers, send)

            assert self._selector is not None
            self._selector.register(conn, selectors.EVENT_READ, readable)

        self._selector.register(tcp.listener, selectors.EVENT_READ, acceptable)

    def _forget_conn(self, tcp: TcpPort, conn: socket.socket) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn)
        tcp.drop(conn)

    def _unplug(self, device: str) -> None:
        assert self._selector is not None
        with self._lock:
            for client in self._sim_clients:
                if client.device == device:
                    client.disconnect()
            self._sim_clients = [c for c in self._sim_clients if c.device != device]
        pty = self._ptys.get(device)
        if pty is not None and pty.master_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(pty.master_fd)
            pty.close()
        tcp = self._tcp.get(device)
        if tcp is not None and tcp.listener is not None:
            for conn in list(tcp.clients):
                self._forget_conn(tcp, conn)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(tcp.listener)
            tcp.close()

    def _replug(self, device: str) -> None:
        with self._lock:
            self._cable_back_at.pop(device, None)
        if device in self._ptys and not self._ptys[device].is_open:
            self._plug_pty(device)
        tcp = self._tcp.get(device)
        if tcp is not None and not tcp.is_open:
            try:
                tcp.open()
            except OSError:
                log.exception("could not listen again on %s:%s", tcp.host, tcp.port)
                return
            self._register_listener(device)
