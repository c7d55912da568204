"""How the simulated board and scanner reach the outside: pty pairs and TCP device servers.

Each endpoint is owned by the simulator's I/O thread, which polls their file descriptors with one
selector. A pty's slave side is published at a stable symlink so that a bridge reopening the same
path after a "cable pulled" finds the new device; a TCP endpoint behaves like an RS-485-to-Ethernet
device server (`socket://host:port`), one byte stream per connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import termios
import tty
from pathlib import Path

# termios speed constants for the baud rates the protocol supports (PROTOCOL.md, "Line").
_SPEEDS = {9600: termios.B9600, 19200: termios.B19200, 57600: termios.B57600}
_SPEEDS[115200] = termios.B115200
READ_CHUNK = 4096


class PtyPort:
    """A pty pair; the slave's path is kept at `link` (a symlink re-pointed on every open)."""

    def __init__(self, link: Path, baud: int) -> None:
        self.link = link
        self.baud = baud
        self.master_fd: int | None = None
        self._slave_fd: int | None = None
        self.slave_name: str | None = None

    @property
    def is_open(self) -> bool:
        return self.master_fd is not None

    def open(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo, no CR/LF translation, no signals; bytes pass as on a UART.
        tty.setraw(slave)
        speed = _SPEEDS.get(self.baud)
        if speed is not None:
            attrs = termios.tcgetattr(slave)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        # Our own slave descriptor stays open: without one, the master reads EIO in a busy loop
        # whenever no program has the port open.
        self.master_fd, self._slave_fd = master, slave
        self.slave_name = os.ttyname(slave)
        tmp = self.link.with_name(f".{self.link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_name)
        os.replace(tmp, self.link)  # atomic: a reader never sees the path missing mid-swap

    def close(self) -> None:
        """The device goes away: its path disappears and an open handle on it fails."""
        with contextlib.suppress(FileNotFoundError):
            if self.slave_name is not None and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        for fd in (self.master_fd, self._slave_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master_fd = self._slave_fd = None

    def read(self) -> bytes:
        if self.master_fd is None:
            return b""
        try:
            return os.read(self.master_fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        """Send towards the program on the slave side; dropped when nobody drains the port."""
        if self.master_fd is None or not data:
            return
        with contextlib.suppress(OSError):  # full buffer: a UART does not wait either
            os.write(self.master_fd, data)


class TcpPort:
    """A listening TCP socket and the connections it accepted."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.listener: socket.socket | None = None
        self.clients: list[socket.socket] = []

    @property
    def is_open(self) -> bool:
        return self.listener is not None

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(4)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]  # port 0 asks for a free one; keep it afterwards
        self.listener = listener

    def accept(self) -> socket.socket | None:
        if self.listener is None:
            return None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are small and urgent
        self.clients.append(conn)
        return conn

    def drop(self, conn: socket.socket) -> None:
        if conn in self.clients:
            self.clients.remove(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> bool:
        """False when the peer is gone or not reading: the caller then drops the connection,
        after taking it out of its selector (a closed socket left registered there would keep
        its descriptor number taken, and the next connection given that number is refused)."""
        try:
            sent = conn.send(data)
        except OSError:
            return False
        return sent == len(data)

    def close(self) -> None:
        for conn in list(self.clients):
            self.drop(conn)
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
        self.listener = None
