"""Properties of the firmware model, driven directly (no port, no clock): any request gets a
well-formed answer or silence, never an exception, and a retry never executes twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.firmware import Board
from hardware.physics import World
from hardware.protocol import Command, ErrorAnswer, Frame, FrameType, HelloAnswer, StatusAnswer
from hardware.protocol.messages import (
    AbortDisinfectAnswer,
    ClearFaultAnswer,
    SetHeaterRequest,
    StartDisinfectRequest,
    UnlockAnswer,
    UnlockRequest,
)

ANSWER_LAYOUT = {
    Command.HELLO: HelloAnswer.unpack,
    Command.STATUS: StatusAnswer.unpack,
    Command.UNLOCK: UnlockAnswer.unpack,
    Command.SET_HEATER: SetHeaterRequest.unpack,
    Command.START_DISINFECT: StartDisinfectRequest.unpack,
    Command.ABORT_DISINFECT: AbortDisinfectAnswer.unpack,
    Command.CLEAR_FAULT: ClearFaultAnswer.unpack,
}

commands = st.one_of(st.sampled_from([int(c) for c in Command]), st.integers(0, 255))
payloads = st.one_of(
    st.binary(max_size=8),
    st.builds(lambda n, ms, f: UnlockRequest(n, ms, f).pack(), st.integers(1, 14),
              st.integers(50, 2000), st.booleans()),
    st.builds(lambda n, sp: bytes([n]) + sp.to_bytes(2, "big"), st.integers(0, 14),
              st.sampled_from([0, 199, 200, 650, 750, 751, 0xFFFF])),
)  # fmt: skip
requests = st.lists(st.tuples(st.integers(0, 255), commands, payloads), max_size=40)


def _bank() -> tuple[World, Board]:
    world = World(12, seed=5)
    board = Board(world, 12, 1, boot_id=0xC0FFEE, now_s=0.0)
    world.door_listener = lambda n, opened: board.door_edge(n, opened, world.now_s)
    return world, board


@settings(max_examples=150, deadline=None)
@given(requests)
def test_every_request_gets_a_well_formed_answer(reqs: list[tuple[int, int, bytes]]) -> None:
    world, board = _bank()
    for seq, cmd, payload in reqs:
        answer = board.handle(Frame(1, FrameType.REQ, seq, cmd, payload), world.now_s)
        assert answer is not None
        assert (answer.addr, answer.seq, answer.cmd) == (1, seq, cmd)
        if answer.type is FrameType.ERR:
            ErrorAnswer.unpack(answer.payload)
        else:
            assert answer.type is FrameType.RESP
            ANSWER_LAYOUT[Command(cmd)](answer.payload)
        board.tick(world.now_s)
        world.step()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(1, 12), st.integers(50, 2000), st.integers(2, 5))
def test_a_repeated_unlock_pulses_once(seq: int, n: int, pulse_ms: int, times: int) -> None:
    world, board = _bank()
    request = Frame(1, FrameType.REQ, seq, Command.UNLOCK, UnlockRequest(n, pulse_ms).pack())
    answers = {board.handle(request, world.now_s) for _ in range(times)}
    assert len(answers) == 1
    assert world.compartment(n).lock_pulses == 1


@given(st.integers(2, 127), st.integers(0, 255), commands, st.binary(max_size=8))
def test_requests_for_another_node_or_answers_get_silence(
    addr: int, seq: int, cmd: int, payload: bytes
) -> None:
    _, board = _bank()
    assert board.handle(Frame(addr, FrameType.REQ, seq, cmd, payload), 0.0) is None
    assert board.handle(Frame(1, FrameType.RESP, seq, cmd, payload), 0.0) is None
    assert board.counters.requests == 0
