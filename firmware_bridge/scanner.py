"""The 2D code scanner: one text line per scan, each handed on at once (the purchaser waits).

The scanner is a serial device (often a USB CDC port) that types the decoded text followed by
CR, LF or CR LF. The reader thread reopens the port with capped backoff when it disappears.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from firmware_bridge.transport import Backoff, SerialTransport, TransportError

log = logging.getLogger(__name__)

MAX_SCAN_CHARS = 1024  # a QR code holds at most ~3 kB; ours carry a short token. Bounds memory.
READ_WAIT_S = 0.2  # one read's wait while the scanner is idle (a stop ends it at once)


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines (CR, LF or CR LF terminated, empty ones skipped) and the unfinished rest."""
    lines: list[str] = []
    start = 0
    for i, byte in enumerate(buffer):
        if byte in (0x0D, 0x0A):
            text = buffer[start:i].decode("utf-8", errors="replace").strip()
            if text:
                lines.append(text[:MAX_SCAN_CHARS])
            start = i + 1
    rest = buffer[start:]
    if len(rest) > MAX_SCAN_CHARS * 4:  # a scanner that never ends its line: drop the junk
        log.warning("scanner sent %d bytes without a line end; dropped", len(rest))
        rest = b""
    return lines, rest


class ScannerReader:
    def __init__(self, url: str, baud: int, on_scan: Callable[[str], None]) -> None:
        self.transport = SerialTransport(url, baud)
        self._on_scan = on_scan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        self.scans = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.transport.close()

    def _run(self) -> None:
        backoff = Backoff()
        pending = b""
        while not self._stop.is_set():
            if not self.transport.is_open:
                try:
                    self.transport.open()
                    backoff.reset()
                    pending = b""
                except TransportError as exc:
                    log.warning("%s", exc)
                    self._stop.wait(backoff.next_delay_s())
                    continue
            try:
                data = self.transport.read(READ_WAIT_S, until=self._stop)
            except TransportError as exc:
                log.warning("scanner lost: %s", exc)
                self.transport.close()
                continue
            if not data:
                continue
            lines, pending = split_lines(pending + data)
            for text in lines:
                self.scans += 1
                try:
                    self._on_scan(text)
                except Exception:
                    log.exception("scan handling failed")
