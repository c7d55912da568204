"""The simulator's one I/O thread: every port's file descriptor behind one selector.

Between bytes the thread advances physics and firmware (10 wall-clock ticks a second) and plugs
pulled cables back in when they are due. Answers on pty and socket ports leave at the baud rate's
pace, as from a UART. Other threads hand work to it with `call()` (a self-pipe wakes it); the
`sim://` clients are served on the caller's thread, under the state's lock.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import queue
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hardware import simurl
from hardware.protocol import FrameDecoder
from hardware.protocol.messages import wire_time_s
from hardware.simulator.line import BoardLine
from hardware.simulator.state import BankState, PortsTruth, SimulatorError
from hardware.transport import READ_CHUNK, PtyPort, TcpPort

log = logging.getLogger(__name__)

TICK_PERIOD_S = 0.1  # wall-clock: 10 Hz keeps an idle simulator under 1 % of a core
CALL_TIMEOUT_S = 10.0  # the I/O thread answers in milliseconds unless it is wedged
T = TypeVar("T")


def _whole_ms(seconds: float) -> float:
    """`seconds` rounded down to whole milliseconds (epoll would round up), at least 0."""
    return max(0.0, math.floor(seconds * 1000) / 1000)


class IoLoop:
    """The ports of one simulated bank (ptys, device servers, `sim://` clients) and their thread."""

    def __init__(self, name: str, state: BankState, line: BoardLine, baud: int, pace: bool) -> None:
        self._name = name
        self._state = state
        self._line = line
        self.baud = baud
        self.pace = pace
        self._deferred: list[tuple[float, int, Callable[[], None]]] = []
        self._deferred_order = itertools.count()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None  # a self-pipe: other threads wake the loop
        self._wake_w: socket.socket | None = None
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pty_dir: Path | None = None
        self.ptys: dict[str, PtyPort] = {}
        self.tcp: dict[str, TcpPort] = {}
        self.sim_clients: list[simurl.SimClient] = []

    # ---- life cycle

    def start(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._state.start_clock()
        self.thread = threading.Thread(target=self._run, name=f"sim-{self._name}", daemon=True)
        self.thread.start()

    def stop_thread(self) -> None:
        thread = self.thread
        if thread is None:
            return
        self.stopping.set()
        self._wake()
        thread.join(timeout=5)
        self.thread = None

    def close(self) -> None:
        """Close every port (after `stop_thread`)."""
        for client in list(self.sim_clients):
            client.disconnect()
        for pty in self.ptys.values():
            pty.close()
        for tcp in self.tcp.values():
            tcp.close()
        if self.selector is not None:
            self.selector.close()
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()
        if self._pty_dir is not None:
            with contextlib.suppress(OSError):
                self._pty_dir.rmdir()

    # ---- ports

    def open_pty(self, directory: str | Path | None) -> tuple[str, str]:
        if directory is None:
            self._pty_dir = Path(tempfile.mkdtemp(prefix=f"locker-{self._name}-"))
            directory = self._pty_dir
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

        def make() -> tuple[str, str]:
            for device in ("board", "scanner"):
                if device in self.ptys:
                    raise SimulatorError(f"the {device} pty is already open")
            for device in ("board", "scanner"):
                port = PtyPort(directory / device, self.baud)
                self.ptys[device] = port
                self._plug_pty(device)
            return str(self.ptys["board"].link), str(self.ptys["scanner"].link)

        return self.call(make)

    def serve_sockets(self, host: str, board_port: int, scanner_port: int) -> tuple[int, int]:
        def make() -> tuple[int, int]:
            for device, port in (("board", board_port), ("scanner", scanner_port)):
                if device in self.tcp:
                    raise SimulatorError(f"the {device} socket is already served")
                tcp = TcpPort(host, port)
                tcp.open()
                self.tcp[device] = tcp
                self._register_listener(device)
            return self.tcp["board"].port, self.tcp["scanner"].port

        return self.call(make)

    def ports_truth(self, board_url: str, scanner_url: str) -> PortsTruth:
        board_pty = self.ptys.get("board")
        scanner_pty = self.ptys.get("scanner")
        board_tcp = self.tcp.get("board")
        scanner_tcp = self.tcp.get("scanner")
        return PortsTruth(
            board_pty=str(board_pty.link) if board_pty else None,
            scanner_pty=str(scanner_pty.link) if scanner_pty else None,
            board_url=board_url,
            scanner_url=scanner_url,
            board_tcp=f"socket://{board_tcp.host}:{board_tcp.port}" if board_tcp else None,
            scanner_tcp=(
                f"socket://{scanner_tcp.host}:{scanner_tcp.port}" if scanner_tcp else None
            ),
            board_tcp_connections=len(board_tcp.clients) if board_tcp else 0,
            scanner_tcp_connections=len(scanner_tcp.clients) if scanner_tcp else 0,
        )

    # ---- the scanner's lines

    def send_scan(self, line: bytes) -> None:
        """Hand a scanned line to every scanner port: `sim://` clients at once, the rest from
        the I/O thread."""
        with self._state.lock:
            for client in self.sim_clients:
                if client.device == "scanner" and not client.broken:
                    client.deliver(line)
        self.call(lambda: self._send_scan(line))

    def _send_scan(self, line: bytes) -> None:
        pty = self.ptys.get("scanner")
        if pty is not None:
            pty.write(line)
        tcp = self.tcp.get("scanner")
        if tcp is not None:
            for conn in list(tcp.clients):
                if not tcp.send(conn, line):
                    self._forget_conn(tcp, conn)

    # ---- sim:// handles (hardware.simurl.SimHost)

    def attach(self, device: str) -> simurl.SimClient:
        with self._state.lock:
            if self._line.cable_pulled(device):
                raise ConnectionError(f"the {device} cable is pulled")
            client = simurl.SimClient(device)
            client.decoder_state = FrameDecoder()
            self.sim_clients.append(client)
            return client

    def detach(self, client: simurl.SimClient) -> None:
        with self._state.lock:
            if client in self.sim_clients:
                self.sim_clients.remove(client)

    def receive(self, client: simurl.SimClient, data: bytes) -> None:
        if client.device != "board" or client.broken:
            return  # a scanner ignores what the host sends it
        decoder = client.decoder_state
        assert isinstance(decoder, FrameDecoder)
        answers = self._line.board_bytes(decoder, data)
        if answers:
            client.deliver(answers)

    # ---- the thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            if self._wake_w is not None:
                self._wake_w.send(b"\x01")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            if self._wake_r is not None:
                self._wake_r.recv(READ_CHUNK)

    def call(self, call: Callable[[], T]) -> T:
        """Run `call` on the I/O thread (which owns the selector) and return its result."""
        thread = self.thread
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
        if not done.wait(timeout=CALL_TIMEOUT_S):
            raise SimulatorError("the simulator thread did not answer")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def _run(self) -> None:
        assert self.selector is not None
        next_tick = time.monotonic()
        while not self.stopping.is_set():
            wake_at = min(next_tick, self._deferred[0][0]) if self._deferred else next_tick
            ready: list[Callable[[], None]] = [
                key.data for key, _ in self.selector.select(_whole_ms(wake_at - time.monotonic()))
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
                    with self._state.lock:
                        self._state.catch_up()
                        due = self._line.cables_due()
                    for device in due:
                        self.replug(device)
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
        assert self.selector is not None
        pty = self.ptys[device]
        pty.open()
        assert pty.master_fd is not None
        decoder = FrameDecoder()
        fd = pty.master_fd

        def readable() -> None:
            data = pty.read()
            if device == "board" and data:
                answers = self._line.board_bytes(decoder, data)
                if answers:
                    self._after_wire_time(len(data), answers, lambda: pty.write(answers))

        self.selector.register(fd, selectors.EVENT_READ, readable)

    def _register_listener(self, device: str) -> None:
        assert self.selector is not None
        tcp = self.tcp[device]
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
                    answers = self._line.board_bytes(decoder, data)
                    if answers:

                        def send() -> None:
                            if conn in tcp.clients and not tcp.send(conn, answers):
                                self._forget_conn(tcp, conn)

                        self._after_wire_time(len(data), answers, send)

            assert self.selector is not None
            self.selector.register(conn, selectors.EVENT_READ, readable)

        self.selector.register(tcp.listener, selectors.EVENT_READ, acceptable)

    def _forget_conn(self, tcp: TcpPort, conn: socket.socket) -> None:
        assert self.selector is not None
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(conn)
        tcp.drop(conn)

    def unplug(self, device: str) -> None:
        """Take `device`'s ports away, as a pulled cable does (I/O thread)."""
        assert self.selector is not None
        with self._state.lock:
            for client in self.sim_clients:
                if client.device == device:
                    client.disconnect()
            self.sim_clients = [c for c in self.sim_clients if c.device != device]
        pty = self.ptys.get(device)
        if pty is not None and pty.master_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(pty.master_fd)
            pty.close()
        tcp = self.tcp.get(device)
        if tcp is not None and tcp.listener is not None:
            for conn in list(tcp.clients):
                self._forget_conn(tcp, conn)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(tcp.listener)
            tcp.close()

    def replug(self, device: str) -> None:
        """Bring `device`'s ports back when its cable is (I/O thread)."""
        self._line.plugged(device)
        if device in self.ptys and not self.ptys[device].is_open:
            self._plug_pty(device)
        tcp = self.tcp.get(device)
        if tcp is not None and not tcp.is_open:
            try:
                tcp.open()
            except OSError:
                log.exception("could not listen again on %s:%s", tcp.host, tcp.port)
                return
            self._register_listener(device)
