"""The simulator's ports: pty, `sim://` and `socket://` carry the board and the scanner, and a
pulled cable really takes the port away and brings it back at the same path."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import serial

from hardware.physics import WorldError
from hardware.protocol import Command, Frame, FrameDecoder, FrameType, HelloAnswer, encode_frame
from hardware.protocol.messages import UnlockRequest
from hardware.simulator import Simulator, SimulatorError
from tests.hardware.link import BoardLink

T = TypeVar("T")
WAIT_S = 10.0  # the simulator thread shares two busy cores with other test runs
# Simulated seconds a cable stays pulled. The pulled-cable tests run the simulator on a manual
# clock: the cable stays out, however long a starved test process pauses between pulling and
# looking, until the test moves the clock on. (`pull_cable` unplugs on the simulator's thread
# and returns when that is done: no wait is needed before looking.)
PULL_S = 30.0


def _eventually(attempt: Callable[[], T], what: str, timeout_s: float = WAIT_S) -> T:
    """`attempt()`'s result once it stops raising (a port that comes back, a connection the
    simulator thread has yet to accept), instead of sleeping a fixed time and hoping."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return attempt()
        except (AssertionError, OSError, serial.SerialException):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}"
                ) from None
            time.sleep(0.05)


@pytest.fixture
def held_sim() -> Iterator[Simulator]:
    """A simulator whose clock moves only when the test advances it."""
    with Simulator(compartments=12, seed=7, manual_clock=True) as simulator:
        yield simulator


def _cable_back(sim: Simulator) -> None:
    """Let the pulled cable's time pass: the simulator plugs it back in on its next tick."""
    sim.advance(PULL_S)


def _connections(sim: Simulator, device: str, count: int) -> None:
    ports = sim.truth().ports
    seen = ports.board_tcp_connections if device == "board" else ports.scanner_tcp_connections
    assert seen == count, f"{seen} {device} connections, expected {count}"


def _hello(link: BoardLink) -> HelloAnswer:
    return HelloAnswer.unpack(link.ok(Command.HELLO))


def test_pty_answers_hello_with_the_bank_size(sim: Simulator, pty_link: BoardLink) -> None:
    hello = _hello(pty_link)
    assert hello.compartment_count == 12
    assert hello.boot_id == sim.truth().boot_id
    assert (hello.protocol, hello.firmware) == (3, "1.2.0")


def test_sim_url_and_socket_reach_the_same_board(sim: Simulator, link: BoardLink) -> None:
    board_port, _ = sim.serve_sockets()
    tcp = BoardLink(f"socket://127.0.0.1:{board_port}")
    try:
        assert _hello(link).boot_id == _hello(tcp).boot_id == sim.truth().boot_id
    finally:
        tcp.close()


def test_door_opens_only_after_an_unlock_pulse(sim: Simulator, link: BoardLink) -> None:
    with pytest.raises(WorldError):
        sim.world.open_door(4)
    link.ok(Command.UNLOCK, UnlockRequest(4, 300).pack())
    sim.world.open_door(4)
    truth = sim.truth().compartments[3]
    assert truth.door_open and truth.lock_pulses == 1
    sim.world.close_door(4)
    assert not sim.truth().compartments[3].lock_released  # the latch caught again


def test_scanner_sends_one_crlf_line_per_scan_on_every_port(sim: Simulator) -> None:
    _, scanner_path = sim.open_pty()
    _, scanner_port = sim.serve_sockets()
    on_pty = serial.Serial(scanner_path, timeout=2)
    on_tcp = serial.serial_for_url(f"socket://127.0.0.1:{scanner_port}", timeout=2)
    on_url = serial.serial_for_url(sim.scanner_url, timeout=2)
    try:
        _eventually(lambda: _connections(sim, "scanner", 1), "the scanner connection")
        sim.world.scan("LKR1:abcDEF-123")
        sim.world.scan("87654321")
        for port in (on_pty, on_tcp, on_url):
            assert port.read_until(b"\r\n") == b"LKR1:abcDEF-123\r\n"
            assert port.read_until(b"\r\n") == b"87654321\r\n"
    finally:
        for port in (on_pty, on_tcp, on_url):
            port.close()
    with pytest.raises(WorldError):
        sim.world.scan("two\nlines")


def test_pulled_cable_removes_the_pty_and_brings_it_back(held_sim: Simulator) -> None:
    sim = held_sim
    board_path, _ = sim.open_pty()
    link = BoardLink(board_path)
    assert _hello(link)
    sim.faults.pull_cable(PULL_S)
    assert not os.path.exists(board_path)
    with pytest.raises(serial.SerialException):
        link.port.write(b"\x00" * 8)
        link.port.read(1)
        link.port.read(1)
    link.close()
    _cable_back(sim)
    again = _eventually(lambda: BoardLink(board_path), "the cable back")
    try:
        assert _hello(again).compartment_count == 12
    finally:
        again.close()


def test_pulled_cable_drops_sockets_and_refuses_new_ones(held_sim: Simulator) -> None:
    sim = held_sim
    board_port, _ = sim.serve_sockets()
    link = BoardLink(f"socket://127.0.0.1:{board_port}")
    assert _hello(link)
    sim.faults.pull_cable(PULL_S)
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(f"socket://127.0.0.1:{board_port}", timeout=0.5)
    with pytest.raises(serial.SerialException):
        link.port.read(1)  # the device server closed the connection
    link.close()
    _cable_back(sim)
    again = _eventually(lambda: BoardLink(f"socket://127.0.0.1:{board_port}"), "the cable back")
    try:
        assert _hello(again).compartment_count == 12
    finally:
        again.close()


def test_pulled_cable_breaks_sim_url_handles(held_sim: Simulator) -> None:
    sim = held_sim
    link = BoardLink(sim.board_url)
    assert _hello(link)
    sim.faults.pull_cable(PULL_S)
    with pytest.raises(serial.SerialException):
        link.port.write(b"\x00")
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(sim.board_url)
    link.close()
    _cable_back(sim)
    again = _eventually(lambda: BoardLink(sim.board_url), "the cable back")
    try:
        assert _hello(again).compartment_count == 12
    finally:
        again.close()


def test_a_scanner_client_that_stops_reading_is_dropped_and_the_board_still_served(
    sim: Simulator,
) -> None:
    board_port, scanner_port = sim.serve_sockets()
    idle = socket.create_connection(("127.0.0.1", scanner_port))
    idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # and it never reads
    # Made now, so that the simulator's next accept, not this socket, is given the lowest
    # free descriptor: the one of the dropped scanner connection.
    master = socket.socket()
    master.settimeout(WAIT_S)
    try:
        _eventually(lambda: _connections(sim, "scanner", 1), "the scanner connection")
        for i in range(100_000):  # its buffers fill up: the device server gives up on it
            sim.world.scan("X" * 500)
            if i % 100 == 0 and sim.truth().ports.scanner_tcp_connections == 0:
                break
        _connections(sim, "scanner", 0)
        # The next connection is given the dropped one's descriptor number: it is served.
        master.connect(("127.0.0.1", board_port))
        master.sendall(encode_frame(Frame(1, FrameType.REQ, 1, Command.HELLO)))
        decoder = FrameDecoder()
        frames: list[Frame] = []
        while not frames:
            data = master.recv(4096)
            assert data, "the board connection was closed"
            frames = decoder.feed(data)
        assert HelloAnswer.unpack(frames[0].payload).compartment_count == 12
    finally:
        master.close()
        idle.close()


def test_answers_take_the_wire_time_of_the_baud_rate() -> None:
    """At 9600 baud a full STATUS answer (24 records, 266 bytes on the wire) takes ~277 ms."""
    with Simulator(compartments=24, seed=1, baud=9600) as slow:
        board_path, _ = slow.open_pty()
        link = BoardLink(board_path)
        try:
            started = time.monotonic()
            assert len(link.status().compartments) == 24
            elapsed_s = time.monotonic() - started
        finally:
            link.close()
    assert elapsed_s >= 0.25


def test_lifecycle_mistakes_get_clear_errors() -> None:
    sim = Simulator(compartments=2, name="lifecycle-check")
    with pytest.raises(SimulatorError, match="start"):
        sim.open_pty()
    with pytest.raises(SimulatorError, match="manual clock"):
        sim.advance(1.0)
    sim.start()
    try:
        with pytest.raises(SimulatorError, match="already"):
            Simulator(compartments=2, name="lifecycle-check").start()
        with pytest.raises(SimulatorError, match="already running"):
            sim.start()
    finally:
        sim.stop()
    with pytest.raises(SimulatorError, match="cannot be started again"):
        sim.start()
    with pytest.raises(serial.SerialException, match="no simulator"):
        serial.serial_for_url("sim://lifecycle-check/board")


def test_two_boards_share_one_rs485_line() -> None:
    with (
        Simulator(compartments=12, seed=1, node_address=1, time_scale=10) as first,
        Simulator(compartments=8, seed=2, node_address=2, time_scale=10) as second,
    ):
        first.share_line(second)
        board_path, _ = first.open_pty()
        node1, node2 = BoardLink(board_path, node_address=1), BoardLink(board_path, node_address=2)
        try:
            assert _hello(node1).compartment_count == 12
            assert _hello(node2).compartment_count == 8
            node2.ok(Command.UNLOCK, UnlockRequest(3, 300).pack())
            assert second.truth().compartments[2].lock_pulses == 1
            assert first.truth().compartments[2].lock_pulses == 0
            node3 = BoardLink(board_path, node_address=3)
            nobody = Frame(3, FrameType.REQ, 1, Command.HELLO)
            assert node3.exchange(nobody, 0.3) is None  # nobody at address 3: silence
            node3.close()
        finally:
            node1.close()
            node2.close()
        with pytest.raises(SimulatorError, match="taken"):
            first.share_line(Simulator(node_address=2))


def test_the_selector_waits_whole_milliseconds_and_answers_still_arrive() -> None:
    """epoll rounds a timeout up to whole milliseconds, which made every paced answer up to 1 ms
    late: the loop gives it whole milliseconds and sleeps the last fraction itself."""
    with Simulator(compartments=4, seed=1) as sim:
        board_path, _ = sim.open_pty()
        assert sim.io.selector is not None
        selector, waits = sim.io.selector, []
        select = selector.select

        def recording(timeout: float | None = None) -> list[Any]:
            waits.append(timeout)
            return select(timeout)

        selector.select = recording  # type: ignore[method-assign]
        link = BoardLink(board_path)
        try:
            for _ in range(5):
                assert len(link.status().compartments) == 4
        finally:
            link.close()
    assert waits and all(w is not None and round(w * 1000, 9).is_integer() for w in waits)
