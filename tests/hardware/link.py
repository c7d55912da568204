"""A minimal serial master for tests: sends request frames, waits for the answer frame.

Tests of the board talk to it only through a serial port (pty or `sim://`), as the bridge does.
"""

from __future__ import annotations

import time

import serial

from hardware.protocol import Frame, FrameDecoder, FrameType, encode_frame
from hardware.protocol.messages import ErrorAnswer, ErrorCode, StatusAnswer, StatusRequest

ANSWER_TIMEOUT_S = 2.0  # generous: two cores shared by many test runs


class BoardLink:
    def __init__(self, url: str, node_address: int = 1) -> None:
        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0.05)
        self.node_address = node_address
        self.decoder = FrameDecoder()
        self.seq = 0

    def close(self) -> None:
        self.port.close()

    def write_raw(self, data: bytes) -> None:
        self.port.write(data)

    def read_frame(self, timeout_s: float = ANSWER_TIMEOUT_S) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frames = self.decoder.feed(self.port.read(max(1, self.port.in_waiting)))
            if frames:
                return frames[0]
        return None

    def exchange(self, frame: Frame, timeout_s: float = ANSWER_TIMEOUT_S) -> Frame | None:
        self.port.write(encode_frame(frame))
        return self.read_frame(timeout_s)

    def request(self, cmd: int, payload: bytes = b"", seq: int | None = None) -> Frame:
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        answer = self.exchange(Frame(self.node_address, FrameType.REQ, seq, cmd, payload))
        assert answer is not None, f"no answer to command {cmd:#04x}"
        assert answer.seq == seq and answer.cmd == cmd
        return answer

    def ok(self, cmd: int, payload: bytes = b"") -> bytes:
        answer = self.request(cmd, payload)
        assert answer.type is FrameType.RESP, ErrorAnswer.unpack(answer.payload)
        return answer.payload

    def error(self, cmd: int, payload: bytes = b"") -> tuple[ErrorCode, int]:
        answer = self.request(cmd, payload)
        assert answer.type is FrameType.ERR, f"expected an error, got {answer}"
        err = ErrorAnswer.unpack(answer.payload)
        return err.code, err.detail

    def status(self, first: int = 1, count: int = 0) -> StatusAnswer:
        return StatusAnswer.unpack(self.ok(0x02, StatusRequest(first, count).pack()))
