"""The scanner's reader thread: each scan handed on, and a stop that does not wait out a read."""

from __future__ import annotations

import threading
import time

import pytest

from firmware_bridge import scanner
from firmware_bridge.scanner import ScannerReader

WAIT_S = 30.0  # an event's margin on a busy machine; each wait ends as soon as it is met


def test_a_stopped_reader_leaves_its_read_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A read that would wait an hour for the next scan: only the stop can end it.
    monkeypatch.setattr(scanner, "READ_WAIT_S", 3600.0)
    scanned = threading.Event()
    seen: list[str] = []

    def on_scan(text: str) -> None:
        seen.append(text)
        scanned.set()

    reader = ScannerReader("loop://", 9600, on_scan)
    # The stop closes the port after its join; a closed port would end the read whatever the
    # stop flag does. So the close here first waits for the thread, and notes if it is left.
    close = reader.transport.close
    left_reading: list[bool] = []

    def close_once_the_reader_is_gone() -> None:
        if threading.current_thread() is not reader._thread:
            reader._thread.join(WAIT_S)
            left_reading.append(reader._thread.is_alive())
        close()

    monkeypatch.setattr(reader.transport, "close", close_once_the_reader_is_gone)
    reader.start()
    try:
        while not reader.transport.is_open:  # the thread opens the port
            time.sleep(0.01)
        reader.transport.write(b"TOKEN-1\r\n")
        assert scanned.wait(WAIT_S), "the scan was not handed on"
        assert seen == ["TOKEN-1"]
    finally:
        reader.stop()  # the reader is back in its hour-long read by now
    assert left_reading == [False], "the reader sat out its read after the stop"
    assert not reader.transport.is_open
