"""`sim://<name>/board` and `sim://<name>/scanner`: pyserial URLs for an in-process simulator.

`serial.serial_for_url("sim://bank1/board")` opens the board of the running simulator named
`bank1` with no pty and no thread hop: a write is handled by the board at once and its answer is
waiting for the next read. Fast tests use it; the bytes, line errors and "cable pulled" behave as
on a pty. `register()` (called when hardware.simulator is imported) adds this package to
pyserial's URL handler search path.
"""

from __future__ import annotations

import threading
from typing import Protocol

import serial

SCHEME = "sim"
DEVICES = ("board", "scanner")
RX_LIMIT_BYTES = 65536  # a UART driver's buffer: older bytes are lost if nobody reads


class SimClient:
    """One open `sim://` handle: its receive buffer, and whether its cable was pulled."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.rx = bytearray()
        self.cond = threading.Condition()
        self.broken = False
        self.decoder_state: object | None = None  # the simulator keeps a frame decoder here

    def deliver(self, data: bytes) -> None:
        with self.cond:
            self.rx += data
            if len(self.rx) > RX_LIMIT_BYTES:
                del self.rx[: len(self.rx) - RX_LIMIT_BYTES]
            self.cond.notify_all()

    def disconnect(self) -> None:
        with self.cond:
            self.broken = True
            self.cond.notify_all()


class SimHost(Protocol):
    """What a running simulator offers to `sim://` handles."""

    def attach(self, device: str) -> SimClient: ...
    def detach(self, client: SimClient) -> None: ...
    def receive(self, client: SimClient, data: bytes) -> None: ...


_HOSTS: dict[str, SimHost] = {}
_HOSTS_LOCK = threading.Lock()


def publish(name: str, host: SimHost) -> None:
    with _HOSTS_LOCK:
        if name in _HOSTS and _HOSTS[name] is not host:
            raise ValueError(f"a simulator named {name!r} is already running")
        _HOSTS[name] = host


def withdraw(name: str, host: SimHost) -> None:
    with _HOSTS_LOCK:
        if _HOSTS.get(name) is host:
            del _HOSTS[name]


def lookup(name: str) -> SimHost | None:
    with _HOSTS_LOCK:
        return _HOSTS.get(name)


def register() -> None:
    """Let `serial.serial_for_url` find `sim://` (idempotent)."""
    if __name__ not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(__name__)
