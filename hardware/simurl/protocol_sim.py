"""pyserial handler for `sim://<name>/<board|scanner>` (see hardware.simurl)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException
from typing_extensions import Buffer

from hardware.simurl import DEVICES, SCHEME, SimClient, SimHost, lookup


def parse_url(url: str) -> tuple[str, str]:
    """(simulator name, device) of a `sim://` URL; the device defaults to the board."""
    parts = urllib.parse.urlsplit(url)
    device = parts.path.strip("/") or "board"
    if parts.scheme.lower() != SCHEME or not parts.netloc or device not in DEVICES:
        raise SerialException(f"expected sim://<name>/<board|scanner>, got {url!r}")
    return parts.netloc, device


class Serial(SerialBase):
    """A serial port whose other end is a simulator in this process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: SimClient | None = None
        self._host: SimHost | None = None
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("port is already open")
        if self.port is None:
            raise SerialException("port must be configured before it can be used")
        name, device = parse_url(str(self.port))
        host = lookup(name)
        if host is None:
            raise SerialException(f"no simulator named {name!r} is running")
        try:
            self._client = host.attach(device)
        except ConnectionError as exc:
            raise SerialException(str(exc)) from exc
        self._host = host
        self.is_open = True

    def close(self) -> None:
        if self._host is not None and self._client is not None:
            self._host.detach(self._client)
        self._host = self._client = None
        self.is_open = False

    def _reconfigure_port(self, *args: Any, **kwargs: Any) -> None:
        """Baud rate and framing mean nothing in process."""

    def _live(self) -> SimClient:
        if not self.is_open or self._client is None:
            raise PortNotOpenError()
        if self._client.broken:
            raise SerialException("device disconnected (cable pulled)")
        return self._client

    @property
    def in_waiting(self) -> int:
        return len(self._live().rx)

    def read(self, size: int = 1) -> bytes:
        client = self._live()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with client.cond:
            while len(client.rx) < size and not client.broken:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                client.cond.wait(remaining)
            if client.broken:
                raise SerialException("device disconnected (cable pulled)")
            data = bytes(client.rx[:size])
            del client.rx[:size]
        return data

    def write(self, data: Buffer, /) -> int:
        client = self._live()
        assert self._host is not None
        payload = bytes(data)
        self._host.receive(client, payload)
        return len(payload)

    def reset_input_buffer(self) -> None:
        client = self._live()
        with client.cond:
            client.rx.clear()

    def reset_output_buffer(self) -> None:
        self._live()

    @property
    def out_waiting(self) -> int:
        self._live()
        return 0

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
