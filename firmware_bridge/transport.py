"""Serial transport: a port opened with pyserial's `serial_for_url`, and capped backoff.

A device path, a pty, `socket://host:port` or `loop://` all open the same way. Every failure of
the port (cable pulled, USB adapter gone, socket closed) becomes a `TransportError`; the caller
closes the port and reopens it after `Backoff.next_delay_s()`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time

import serial

log = logging.getLogger(__name__)

# A read waits at most this long per call before checking its own deadline again. Fixed, because
# changing a posix port's timeout re-applies its termios settings on every call.
READ_SLICE_S = 0.02


def _never() -> bool:
    return False


class TransportError(OSError):
    """The port is gone or unusable; close it and try again later."""


class Backoff:
    """Exponential backoff with jitter, capped, reset after a success."""

    def __init__(self, initial_s: float = 0.1, cap_s: float = 5.0, factor: float = 2.0) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self._next_s = initial_s

    def next_delay_s(self) -> float:
        delay = self._next_s
        self._next_s = min(self.cap_s, self._next_s * self.factor)
        # Jitter so a bank of kiosks behind one switch does not retry in lockstep.
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._next_s = self.initial_s


class SerialTransport:
    """One serial port; `read` and `write` raise TransportError instead of pyserial's zoo."""

    def __init__(self, url: str, baud: int) -> None:
        self.url = url
        self.baud = baud
        # Typed as Serial: every URL handler implements its interface (in_waiting and so on).
        self._port: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        self.close()
        try:
            # exclusive: a second bridge on the same port would garble both conversations.
            port = serial.serial_for_url(
                self.url, baudrate=self.baud, timeout=READ_SLICE_S, do_not_open=True
            )
            if "://" not in self.url:  # a device path: lock it (posix flock)
                port.exclusive = True
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {self.url}: {exc}") from exc
        self._port = port
        log.info("opened %s at %d baud", self.url, self.baud)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _require(self) -> serial.Serial:
        if self._port is None:
            raise TransportError(f"{self.url} is not open")
        return self._port

    def write(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
            port.flush()
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"write to {self.url} failed: {exc}") from exc

    def read(
        self, timeout_s: float, max_bytes: int = 4096, until: threading.Event | None = None
    ) -> bytes:
        """Whatever arrives within timeout_s (returns as soon as anything does, and with
        nothing within a slice of `until` being set: a reader told to stop leaves at once)."""
        port = self._require()
        deadline = time.monotonic() + timeout_s
        stopped = until.is_set if until is not None else _never
        try:
            first = port.read(1)
            while not first and time.monotonic() < deadline and not stopped():
                first = port.read(1)
            if not first:
                return b""
            waiting = port.in_waiting
            rest = port.read(min(waiting, max_bytes)) if waiting else b""
        except (serial.SerialException, OSError, TypeError) as exc:
            # TypeError: pyserial on a closed pty fd can fail deep inside select()
            raise TransportError(f"read from {self.url} failed: {exc}") from exc
        return first + rest

    def discard_input(self) -> None:
        port = self._require()
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"reset of {self.url} failed: {exc}") from exc
