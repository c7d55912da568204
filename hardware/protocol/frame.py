"""Frame layer: header, CRC-16/CCITT-FALSE and COBS, with a streaming decoder that resyncs.

On the wire a frame is ``COBS(header | payload | crc16) 0x00``. The header is six bytes:
``ver, addr, type, seq, cmd, len``; the CRC covers header and payload and is sent big-endian.
Anything that does not decode to a well-formed frame is dropped without a word, and the
decoder starts afresh at the next 0x00.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

from cobs import cobs

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">BBBBBB")
CRC = struct.Struct(">H")
MAX_PAYLOAD = 255  # the header's len is one byte
ANSWER_BIT = 0x80  # set in addr on answers: a board never takes an answer for a request
MAX_ADDRESS = 127
# A COBS block of header+payload+crc (at most 263 bytes) grows by at most 2 code bytes.
MAX_ENCODED = HEADER.size + MAX_PAYLOAD + CRC.size + 2


class FrameType(enum.IntEnum):
    REQ = 1
    RESP = 2
    ERR = 3


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. `addr` is the node address without the answer bit."""

    addr: int
    type: FrameType
    seq: int
    cmd: int
    payload: bytes = b""

    @property
    def is_answer(self) -> bool:
        return self.type is not FrameType.REQ


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(frame: Frame) -> bytes:
    """The bytes to put on the wire for `frame`, the 0x00 delimiter included."""
    if not 0 <= frame.addr <= MAX_ADDRESS:
        raise ValueError(f"node address {frame.addr} is outside 0-{MAX_ADDRESS}")
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    addr = frame.addr | ANSWER_BIT if frame.is_answer else frame.addr
    body = (
        HEADER.pack(
            PROTOCOL_VERSION,
            addr,
            int(frame.type),
            frame.seq & 0xFF,
            frame.cmd & 0xFF,
            len(frame.payload),
        )
        + frame.payload
    )
    return bytes(cobs.encode(body + CRC.pack(crc16(body)))) + b"\x00"


def decode_frame(encoded: bytes) -> Frame | None:
    """Decode one COBS block (without its 0x00); None for anything that is not a valid frame."""
    if not encoded or len(encoded) > MAX_ENCODED:
        return None
    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError:
        return None
    if len(raw) < HEADER.size + CRC.size:
        return None
    body, (crc,) = raw[:-2], CRC.unpack(raw[-2:])
    if crc16(body) != crc:
        return None
    ver, addr, ftype, seq, cmd, length = HEADER.unpack(body[: HEADER.size])
    payload = body[HEADER.size :]
    if ver != PROTOCOL_VERSION or length != len(payload):
        return None
    try:
        frame_type = FrameType(ftype)
    except ValueError:
        return None
    answer = bool(addr & ANSWER_BIT)
    if answer != (frame_type is not FrameType.REQ):
        return None
    return Frame(addr & MAX_ADDRESS, frame_type, seq, cmd, bytes(payload))


class FrameDecoder:
    """Bytes in, frames out. Keeps a partial frame between calls; never raises on input."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = False
        self.dropped = 0  # blocks thrown away: bad CRC, bad length, bad COBS, too long

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        *complete, rest = data.split(b"\x00")
        for tail in complete:
            frames.extend(self._close_block(tail))
        self._append(rest)
        return frames

    def _close_block(self, tail: bytes) -> list[Frame]:
        self._append(tail)
        block, overflow = bytes(self._buffer), self._overflow
        self._buffer.clear()
        self._overflow = False
        if not block and not overflow:
            return []  # back-to-back delimiters are idle line, not an error
        frame = None if overflow else decode_frame(block)
        if frame is None:
            self.dropped += 1
            return []
        return [frame]

    def _append(self, data: bytes) -> None:
        if self._overflow:
            return
        self._buffer += data
        if len(self._buffer) > MAX_ENCODED:
            # Garbage or a lost delimiter: stop buffering until the next 0x00.
            self._buffer.clear()
            self._overflow = True
