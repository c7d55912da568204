"""The frame codec: round trips, CRC and COBS rules, and a decoder that survives any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hardware.protocol import Frame, FrameDecoder, FrameType, decode_frame, encode_frame
from hardware.protocol.frame import crc16

frames = st.builds(
    Frame,
    addr=st.integers(0, 127),
    type=st.sampled_from(list(FrameType)),
    seq=st.integers(0, 255),
    cmd=st.integers(0, 255),
    payload=st.binary(max_size=255),
)


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogue check value of CRC-16/CCITT-FALSE


@given(frames)
def test_round_trip(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert FrameDecoder().feed(wire) == [frame]


@given(frames, st.integers(0, 10_000))
def test_any_single_bit_flip_is_dropped(frame: Frame, where: int) -> None:
    wire = bytearray(encode_frame(frame)[:-1])
    bit = where % (len(wire) * 8)
    wire[bit // 8] ^= 1 << (bit % 8)
    # A flip that makes a 0x00 splits the block; either way no frame may come out.
    assert all(decode_frame(block) is None for block in bytes(wire).split(b"\x00"))


@given(st.binary(max_size=2000))
def test_decoder_survives_any_bytes(garbage: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(garbage)  # must not raise
    # Whatever the garbage left half-buffered, one delimiter flushes it and a frame then decodes.
    good = Frame(5, FrameType.RESP, 9, 2, b"status")
    assert decoder.feed(b"\x00" + encode_frame(good))[-1:] == [good]


@given(st.binary(max_size=600), frames, st.integers(1, 7))
def test_resync_after_garbage_fed_in_pieces(garbage: bytes, frame: Frame, piece: int) -> None:
    stream = garbage + b"\x00" + encode_frame(frame) + encode_frame(frame)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(stream), piece):
        out.extend(decoder.feed(stream[i : i + piece]))
    assert out[-2:] == [frame, frame]


def test_wrong_version_and_length_are_dropped() -> None:
    frame = Frame(1, FrameType.REQ, 1, 1, b"ab")
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(frame)) == [frame]
    from cobs import cobs

    body = bytes([2, 1, 1, 1, 1, 2]) + b"ab"  # version 2
    bad_version = cobs.encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"
    body = bytes([1, 1, 1, 1, 1, 3]) + b"ab"  # says 3 bytes, carries 2
    bad_length = cobs.encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"
    assert decoder.feed(bad_version + bad_length) == []
    assert decoder.dropped == 2


@given(st.binary(max_size=3000))
def test_decoder_yields_no_false_frame(garbage: bytes) -> None:
    """Whatever comes out of any byte string is a frame that was really on the line: it
    re-encodes to exactly the bytes of the block it was decoded from."""
    blocks = garbage.split(b"\x00")
    for frame in FrameDecoder().feed(garbage):
        assert encode_frame(frame)[:-1] in blocks
