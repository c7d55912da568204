"""The simulator itself: one locker bank's state, board line and ports put together.

`Simulator` wires the parts and is what scripts, tests and the control API hold: `state`
(world and firmware on one clock), `line` (the board line and its faults), `io` (the ports and
their thread), `world` and `faults` (the controls).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from hardware import simurl
from hardware.firmware import Board
from hardware.physics import RELEASED_LOCK_RELATCH_S, World
from hardware.protocol.messages import PROTOCOL_REVISION
from hardware.simulator.controls import FaultControl, WorldControl
from hardware.simulator.io_loop import IoLoop
from hardware.simulator.line import BoardLine
from hardware.simulator.state import BankState, SimTruth, SimulatorError, TemperaturePoint

_names = itertools.count(1)


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
        self.state = BankState(
            compartments,
            seed,
            time_scale,
            node_address,
            thermostat,
            lobby_temp_c,
            manual_clock,
            protocol,
            relatch_s,
        )
        self.line = BoardLine(self.state)
        # Answers on pty and socket ports leave at the baud rate's pace, as from a UART.
        self.io = IoLoop(self.name, self.state, self.line, baud, pace)
        self.world = WorldControl(self)
        self.faults = FaultControl(self)

    # ---- what the parts hold, by the names scripts use

    @property
    def model(self) -> World:
        return self.state.model

    @property
    def board(self) -> Board:
        return self.state.board

    @property
    def time_scale(self) -> float:
        return self.state.time_scale

    @property
    def manual_clock(self) -> bool:
        return self.state.manual_clock

    @property
    def baud(self) -> int:
        return self.io.baud

    # ---- time

    def now_s(self) -> float:
        """Simulated seconds since start."""
        return self.state.now_s()

    def sleep(self, sim_seconds: float) -> None:
        """Wait until `sim_seconds` of simulated time have passed (for tests and scripts)."""
        self.state.sleep(sim_seconds)

    def advance(self, sim_seconds: float) -> None:
        """Move a manual clock forward, running physics and firmware for that long."""
        self.state.advance(sim_seconds)

    # ---- life cycle

    def start(self) -> Self:
        if self.io.thread is not None:
            raise SimulatorError("the simulator is already running")
        if self.io.stopping.is_set():
            raise SimulatorError("a stopped simulator cannot be started again: make a new one")
        try:
            simurl.publish(self.name, self)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        self.io.start()
        return self

    def stop(self) -> None:
        if self.io.thread is None:
            return
        self.io.stop_thread()
        simurl.withdraw(self.name, self)
        self.io.close()

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
        return self.io.open_pty(directory)

    def serve_sockets(
        self, host: str = "127.0.0.1", board_port: int = 0, scanner_port: int = 0
    ) -> tuple[int, int]:
        """Listen for `socket://host:port` connections; port 0 picks a free one."""
        return self.io.serve_sockets(host, board_port, scanner_port)

    def share_line(self, other: Simulator) -> None:
        """Hang `other`'s board on this simulator's line (RS-485 multi-drop): every request on
        this simulator's board ports reaches it too, and its answers come back on them. Each
        board keeps its own world, clock and faults; the line's faults are this simulator's."""
        if other is self:
            raise SimulatorError("a line is shared by one host simulator and its peers")
        self.line.add_peer(other.state, other.line)

    # ---- sim:// handles (hardware.simurl.SimHost)

    def attach(self, device: str) -> simurl.SimClient:
        return self.io.attach(device)

    def detach(self, client: simurl.SimClient) -> None:
        self.io.detach(client)

    def receive(self, client: simurl.SimClient, data: bytes) -> None:
        self.io.receive(client, data)

    # ---- truth

    def temperatures(self, n: int, since: float = 0.0) -> list[TemperaturePoint]:
        """The simulator's record of compartment `n`'s probe since `since` (Unix time)."""
        self.model.compartment(n)  # NoSuchCompartment outside the bank
        with self.state.lock:
            self.state.catch_up()
            return [p for p in self.state.records[n - 1] if p.at >= since]

    def truth(self) -> SimTruth:
        state, line = self.state, self.line
        with state.lock:
            state.catch_up()
            now = state.now_s()
            board = state.board
            rows = state.compartment_truths()
            return SimTruth(
                name=self.name,
                sim_time_s=round(now, 3),
                time_scale=state.time_scale,
                seed=self.seed,
                lobby_temp_c=state.model.lobby_c,
                node_address=board.node_address,
                boot_id=board.boot_id,
                booting=board.booting(now),
                heater_lease_s=board.heater_lease_s,
                heater_lease_expired=board.lease_expired,
                line_error_rate=line.error_rate,
                line_error_direction=line.error_direction,
                cable_pulled_s={d: round(t - now, 3) for d, t in line.cable_back_at.items()},
                requests=board.counters.requests,
                duplicates=board.counters.duplicates,
                errors=board.counters.errors,
                ports=self.io.ports_truth(self.board_url, self.scanner_url),
                compartments=rows,
            )
