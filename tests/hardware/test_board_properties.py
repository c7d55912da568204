"""Properties of the firmware model, driven directly (no port, no clock): any request gets a
well-formed answer or silence, never an exception, and a retry never executes twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.firmware import HEATER_FAULTS, OVER_TEMPERATURE_C, Board
from hardware.physics import SensorFault, World
from hardware.protocol import (
    Command,
    CycleReportAnswer,
    ErrorAnswer,
    FaultCode,
    Frame,
    FrameType,
    HelloAnswer,
    StatusAnswer,
)
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
    Command.CYCLE_REPORT: CycleReportAnswer.unpack,
}

commands = st.one_of(st.sampled_from([int(c) for c in Command]), st.integers(0, 255))
payloads = st.one_of(
    st.binary(max_size=8),
    st.builds(lambda n, ms, f, r: UnlockRequest(n, ms, f, r).pack(), st.integers(1, 14),
              st.integers(50, 2000), st.booleans(), st.booleans()),
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


compartment = st.integers(1, 4)
well_formed = st.one_of(
    st.tuples(
        st.just(Command.UNLOCK),
        st.builds(lambda n, f: UnlockRequest(n, 500, f).pack(), compartment, st.booleans()),
    ),
    st.tuples(
        st.just(Command.SET_HEATER),
        st.builds(
            lambda n, sp: SetHeaterRequest(n, sp).pack(),
            compartment,
            st.one_of(st.none(), st.integers(200, 750)),
        ),
    ),
    st.tuples(
        st.just(Command.START_DISINFECT),
        st.builds(
            lambda n, s: StartDisinfectRequest(n, s).pack(), compartment, st.integers(1, 3600)
        ),
    ),
    st.tuples(
        st.sampled_from([Command.ABORT_DISINFECT, Command.CLEAR_FAULT, Command.CYCLE_REPORT]),
        st.builds(lambda n: bytes([n]), compartment),
    ),
    st.tuples(commands, payloads),
)
# One thing that happens to a bank: a request from the master, or a person or a fault at it.
actions = st.one_of(
    st.builds(lambda r: ("request", int(r[0]), r[1]), well_formed),
    st.tuples(st.sampled_from(["open", "force_open", "close", "stick_heater", "break_probe"]),
              st.integers(1, 4), st.just(b"")),
    st.tuples(st.just("wait"), st.integers(1, 400), st.just(b"")),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(actions, max_size=60))
def test_no_sequence_of_requests_and_events_breaks_a_safety_rule(
    steps: list[tuple[str, int, bytes]],
) -> None:
    """Whatever the master asks and whatever happens at the locker, in any order: the lamp is
    never lit behind an open or released door, a heater fault always has the element cut off at
    the contactor, and a lamp that was lit has not been lit longer than the maximum."""
    world = World(4, seed=9)
    board = Board(world, 4, 1, boot_id=1, now_s=0.0)
    world.door_listener = lambda n, opened: board.door_edge(n, opened, world.now_s)
    seq = 0
    for kind, value, payload in steps:
        if kind == "request":
            seq = (seq + 1) & 0xFF
            board.handle(Frame(1, FrameType.REQ, seq, value, payload), world.now_s)
        elif kind == "open":
            if world.compartment(value).lock_released:
                world.open_door(value)
        elif kind == "force_open":
            world.open_door(value, force=True)
        elif kind == "close":
            world.close_door(value)
        elif kind == "stick_heater":
            world.compartment(value).stuck_heater = True
        elif kind == "break_probe":
            world.compartment(value).sensor_fault = SensorFault.OPEN
        else:
            for _ in range(value):
                board.tick(world.now_s)
                world.step()
        for c, fw in zip(world.compartments, board.compartments, strict=True):
            if c.uv_on:
                assert not c.door_open and not c.lock_released, (c, fw)
                assert fw.disinfecting and fw.fault is FaultCode.NONE
            if fw.fault in HEATER_FAULTS:
                assert not c.contactor_closed and c.heater_duty == 0.0, (c, fw)
            if c.contactor_closed:
                assert fw.setpoint_dc is not None and fw.fault not in HEATER_FAULTS
            assert c.air_c < OVER_TEMPERATURE_C + 5.0  # cut off at the limit, whatever the relay
