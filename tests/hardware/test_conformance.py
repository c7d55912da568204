"""Conformance: the test vectors of hardware/PROTOCOL.md, replayed through a real pty.

The vectors are read out of PROTOCOL.md itself, so the document and the board cannot disagree:
every request's wire bytes go to the simulated board through its serial port and the answer
must be exactly the bytes the document gives (or nothing, where it says `none`).
"""

from __future__ import annotations

import pytest
import serial
from cobs import cobs

from hardware.protocol import (
    BoardFlags,
    Command,
    CompartmentStatus,
    ErrorAnswer,
    ErrorCode,
    FaultCode,
    Frame,
    FrameType,
    HelloAnswer,
    PayloadError,
    StatusAnswer,
    decode_frame,
    encode_frame,
)
from hardware.protocol.messages import (
    MAX_ANSWER_ON_WIRE,
    PROTOCOL_REVISION,
    UNLOCK_REPORT_SINCE,
    CompartmentFlags,
    UnlockAnswer,
    UnlockRequest,
    answer_deadline_s,
    wire_time_s,
)
from hardware.simulator import Simulator
from hardware.vectors import PROTOCOL_MD, SESSION, apply_directive, exchange, parse
from tests.hardware.link import BoardLink


def _vectors() -> list[tuple[str, str]]:
    return parse(PROTOCOL_MD.read_text())


def test_protocol_md_vectors_replay_byte_exact_through_a_pty() -> None:
    items = _vectors()
    assert sum(kind == ">" for kind, _ in items) >= 20
    with Simulator(**SESSION, manual_clock=True) as sim:  # type: ignore[arg-type]
        board_path, _ = sim.open_pty()
        port = serial.Serial(board_path, 115200, timeout=0.02)
        try:
            expected_for: bytes | None = None
            for kind, text in items:
                if kind == "!":
                    apply_directive(sim, text)
                elif kind == ">":
                    expected_for = bytes.fromhex(text)
                    answer = exchange(port, expected_for, silence_s=1.0)
                elif kind == "<":
                    assert expected_for is not None
                    want = None if text == "none" else bytes.fromhex(text)
                    assert answer == want, f"request {expected_for.hex(' ')}"
        finally:
            port.close()


def test_vectors_cover_every_command_and_every_error() -> None:
    commands, errors = set(), set()
    for kind, text in _vectors():
        frame = decode_frame(bytes.fromhex(text)[:-1]) if kind in "<>" and text != "none" else None
        if frame is None:
            continue
        if kind == ">":
            commands.add(frame.cmd)
        elif frame.type is FrameType.ERR:
            errors.add(ErrorAnswer.unpack(frame.payload).code)
    assert {int(c) for c in Command} <= commands
    assert set(ErrorCode) == errors


def test_retry_with_the_same_seq_does_not_pulse_the_lock_twice(sim: Simulator) -> None:
    board_path, _ = sim.open_pty()
    link = BoardLink(board_path)
    try:
        first = link.request(Command.UNLOCK, UnlockRequest(6, 400).pack(), seq=0x33)
        again = link.request(Command.UNLOCK, UnlockRequest(6, 400).pack(), seq=0x33)
        assert first == again and first.type is FrameType.RESP
        assert sim.truth().compartments[5].lock_pulses == 1
        # A new request (next seq) is executed: the lock is pulsed again.
        link.request(Command.UNLOCK, UnlockRequest(6, 400).pack(), seq=0x34)
        assert sim.truth().compartments[5].lock_pulses == 2
    finally:
        link.close()


def test_retry_after_a_lost_answer_gets_the_cached_answer(sim: Simulator) -> None:
    """The board executed the UNLOCK but its answer was lost: the retry must not pulse again."""
    link = BoardLink(sim.board_url)
    try:
        link.ok(Command.HELLO)
        sim.faults.line_errors(1.0, direction="from_board")
        request = Frame(1, FrameType.REQ, 0x40, Command.UNLOCK, UnlockRequest(7, 400).pack())
        assert link.exchange(request, timeout_s=0.3) is None
        assert sim.truth().compartments[6].lock_pulses == 1
        sim.faults.line_errors(0.0)
        link.write_raw(b"\x00")  # flush the garbage the master's decoder holds
        link.decoder.feed(b"\x00")
        answer = link.exchange(request)
        assert answer is not None and answer.type is FrameType.RESP and answer.seq == 0x40
        assert sim.truth().compartments[6].lock_pulses == 1
    finally:
        link.close()


def test_hello_empties_the_duplicate_memory(sim: Simulator) -> None:
    link = BoardLink(sim.board_url)
    try:
        link.request(Command.UNLOCK, UnlockRequest(8, 400).pack(), seq=0x50)
        link.ok(Command.HELLO)
        link.request(Command.UNLOCK, UnlockRequest(8, 400).pack(), seq=0x50)
        assert sim.truth().compartments[7].lock_pulses == 2
    finally:
        link.close()


def test_a_48_compartment_bank_is_polled_in_two_pages() -> None:
    with Simulator(compartments=48, seed=1, manual_clock=True) as big:
        link = BoardLink(big.board_url)
        try:
            pages = [link.status(1), link.status(25), link.status(40, 24)]
        finally:
            link.close()
    assert [len(p.compartments) for p in pages] == [24, 24, 9]
    assert [c.number for c in pages[0].compartments + pages[1].compartments] == list(range(1, 49))
    assert pages[2].compartments[-1].number == 48


def test_door_counters_wrap_at_256_and_count_every_edge(sim: Simulator, link: BoardLink) -> None:
    for _ in range(300):
        sim.world.open_door(9, force=True)
        sim.world.close_door(9)
    sim.world.open_door(9, force=True)
    record = link.status(9, 1).compartments[0]
    assert (record.door_open_count, record.door_close_count) == (301 % 256, 300 % 256)
    assert record.door_open and not record.lock_released  # forced: no command behind it


def test_protocol_md_timing_table_matches_the_deadline_the_code_uses() -> None:
    rows = [
        line.strip("|").split("|")
        for line in PROTOCOL_MD.read_text().splitlines()
        if line.startswith("| ")
        and line.split("|")[1].strip() in ("9600", "19200", "57600", "115200")
    ]
    assert len(rows) == 4
    for baud, request, answer, deadline, poll in rows:
        rate = int(baud)
        ms = lambda cell: float(cell.strip().removesuffix(" ms"))  # noqa: E731
        assert ms(request) == round(wire_time_s(14, rate) * 1000, 1)
        assert ms(answer) == round(wire_time_s(MAX_ANSWER_ON_WIRE, rate) * 1000, 1)
        assert ms(deadline) == round(answer_deadline_s(14, rate) * 1000, 1)
        two_pages = 2 * (wire_time_s(12, rate) + wire_time_s(MAX_ANSWER_ON_WIRE, rate))
        assert ms(poll) == round(two_pages * 1000, 1)


def test_protocol_md_worked_example_is_what_the_codec_sends() -> None:
    text = PROTOCOL_MD.read_text()
    wire = next(line for line in text.splitlines() if line.startswith("on wire "))
    block = next(line for line in text.splitlines() if line.startswith("block "))
    hello = Frame(1, FrameType.REQ, 1, Command.HELLO)
    assert bytes.fromhex(wire.removeprefix("on wire")) == encode_frame(hello)
    assert bytes.fromhex(block.removeprefix("block")) == cobs.decode(encode_frame(hello)[:-1])


def test_unlock_with_report_answers_with_the_compartment_state() -> None:
    # A manual clock: no control period passes between the UNLOCK and the STATUS compared.
    with Simulator(**SESSION, manual_clock=True) as sim:  # type: ignore[arg-type]
        _unlock_with_report(sim)


def _unlock_with_report(sim: Simulator) -> None:
    link = BoardLink(sim.board_url)
    try:
        hello = HelloAnswer.unpack(link.ok(Command.HELLO))
        assert hello.protocol == PROTOCOL_REVISION >= UNLOCK_REPORT_SINCE
        sim.world.open_door(2, force=True)
        sim.world.place_item(2)
        sim.world.close_door(2)
        answer = UnlockAnswer.unpack(link.ok(Command.UNLOCK, UnlockRequest(2, report=True).pack()))
        assert answer.state is not None
        assert answer.state.boot_id == hello.boot_id
        (record,) = answer.state.compartments
        assert record.number == 2 and record.lock_released and record.occupied
        # The same record a STATUS right after shows: one truth, one layout.
        assert record == link.status(2, 1).compartments[0]
        # Without the flag the answer is the first edition's three bytes.
        plain = link.ok(Command.UNLOCK, UnlockRequest(3).pack())
        assert UnlockAnswer.unpack(plain) == UnlockAnswer(3, 500) and len(plain) == 3
    finally:
        link.close()


def test_a_first_edition_board_refuses_the_report_flag_and_pulses_nothing() -> None:
    with Simulator(compartments=4, seed=3, time_scale=10.0, protocol=1) as old:
        link = BoardLink(old.board_url)
        try:
            hello = HelloAnswer.unpack(link.ok(Command.HELLO))
            assert (hello.protocol, hello.firmware) == (1, "1.0.0")
            refused = link.error(Command.UNLOCK, UnlockRequest(2, report=True).pack())
            assert refused == (ErrorCode.BAD_ARGUMENT, 2)
            assert old.truth().compartments[1].lock_pulses == 0
            assert len(link.ok(Command.UNLOCK, UnlockRequest(2).pack())) == 3
            assert old.truth().compartments[1].lock_pulses == 1
        finally:
            link.close()


def test_an_unlock_answer_must_report_its_own_compartment() -> None:
    record = CompartmentStatus(
        3, CompartmentFlags.LOCK_RELEASED, 220, None, 0, FaultCode.NONE, 1, 1
    )
    state = StatusAnswer(0xC0FFEE, BoardFlags(0), (record,))
    assert UnlockAnswer.unpack(UnlockAnswer(3, 500, state).pack()) == UnlockAnswer(3, 500, state)
    with pytest.raises(PayloadError, match="reports compartments"):
        UnlockAnswer.unpack(UnlockAnswer(4, 500, state).pack())
    with pytest.raises(PayloadError):
        UnlockAnswer.unpack(UnlockAnswer(3, 500).pack() + b"\x01\x02")
