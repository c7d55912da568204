"""Proof of disinfection (protocol revision 3): the board accounts what the lamp's current sense
reads during each cycle, and CYCLE_REPORT tells it.

Most tests drive the firmware directly on a world with time passed in, so every tenth of a
second is exact; the last one goes through the simulator's HTTP controls and a real pty.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.api import create_app
from hardware.firmware import Board
from hardware.physics import World
from hardware.protocol import (
    Command,
    CycleReportAnswer,
    CycleState,
    ErrorAnswer,
    ErrorCode,
    Frame,
    FrameType,
    HelloAnswer,
    LampInterruption,
)
from hardware.protocol.messages import (
    CYCLE_REPORT_MAX_INTERRUPTIONS,
    PROTOCOL_REVISION,
    CompartmentRequest,
    StartDisinfectRequest,
    UnlockRequest,
)
from hardware.simulator import Simulator
from tests.hardware.link import BoardLink


class Bank:
    """A 4-compartment board on its world, driven directly: time passes only in `wait`."""

    def __init__(self, protocol: int = PROTOCOL_REVISION) -> None:
        self.world = World(4, seed=1)
        self.board = Board(self.world, 4, 1, boot_id=0xB007, now_s=0.0, protocol=protocol)
        self.world.door_listener = lambda n, opened: self.board.door_edge(
            n, opened, self.world.now_s
        )
        self.seq = 0

    def request(self, cmd: int, payload: bytes = b"", seq: int | None = None) -> Frame:
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        answer = self.board.handle(Frame(1, FrameType.REQ, seq, cmd, payload), self.world.now_s)
        assert answer is not None
        return answer

    def ok(self, cmd: int, payload: bytes = b"") -> bytes:
        answer = self.request(cmd, payload)
        assert answer.type is FrameType.RESP, ErrorAnswer.unpack(answer.payload)
        return answer.payload

    def error(self, cmd: int, payload: bytes = b"") -> tuple[ErrorCode, int]:
        answer = self.request(cmd, payload)
        assert answer.type is FrameType.ERR, answer
        err = ErrorAnswer.unpack(answer.payload)
        return err.code, err.detail

    def start(self, n: int, duration_s: int) -> None:
        self.ok(Command.START_DISINFECT, StartDisinfectRequest(n, duration_s).pack())

    def report(self, n: int) -> CycleReportAnswer:
        return CycleReportAnswer.unpack(self.ok(Command.CYCLE_REPORT, CompartmentRequest(n).pack()))

    def lamp_dead(self, n: int, dead: bool = True) -> None:
        self.world.compartment(n).dead_lamp = dead

    def wait(self, seconds: float, dt_s: float = 1.0) -> None:
        """Let `seconds` pass in control periods of `dt_s`, as the simulator does."""
        for _ in range(round(seconds / dt_s)):
            self.board.tick(self.world.now_s, dt_s)
            self.world.step(dt_s)


@pytest.fixture
def bank() -> Bank:
    return Bank()


def test_hello_says_revision_3_and_firmware_1_2(bank: Bank) -> None:
    hello = HelloAnswer.unpack(bank.ok(Command.HELLO))
    assert (hello.protocol, hello.firmware) == (3, "1.2.0") == (PROTOCOL_REVISION, "1.2.0")


def test_no_cycle_since_boot_reports_state_none(bank: Bank) -> None:
    assert bank.report(2) == CycleReportAnswer(2, 0, CycleState.NONE, 0, 0, 0, 0)


def test_a_full_cycle_with_the_lamp_lit_was_lit_all_its_duration(bank: Bank) -> None:
    bank.start(1, 60)
    bank.wait(30)
    running = bank.report(1)
    assert (running.state, running.elapsed_ds, running.lamp_on_ds) == (CycleState.RUNNING, 300, 300)
    bank.wait(40)
    assert bank.report(1) == CycleReportAnswer(1, 1, CycleState.RAN_OUT, 600, 600, 600, 0)
    assert not bank.world.compartment(1).uv_on


def test_a_lamp_dark_for_a_stretch_is_one_interruption_and_the_cycle_is_not_stretched(
    bank: Bank,
) -> None:
    bank.start(2, 120)
    bank.wait(30)
    bank.lamp_dead(2)
    bank.wait(20)
    c = bank.world.compartment(2)
    assert c.uv_on and not c.uv_lit  # the relay is closed, the tube gives nothing
    during = bank.report(2)
    assert during.first_interruptions == (LampInterruption(at_ds=300, dark_ds=200),)
    bank.lamp_dead(2, False)
    bank.wait(70)
    assert bank.report(2) == CycleReportAnswer(
        2, 1, CycleState.RAN_OUT, 1200, 1200, 1000, 1, (LampInterruption(300, 200),)
    )
    assert not c.uv_on  # ran out at 120 s like any cycle: the master judges the dose


def test_a_period_crossing_the_end_counts_only_up_to_the_end() -> None:
    """12 s control periods on a 30 s cycle: the third period counts 6 s."""
    bank = Bank()
    bank.start(1, 30)
    bank.start(2, 30)
    bank.wait(12, dt_s=12)
    bank.lamp_dead(1)
    bank.lamp_dead(2)
    bank.wait(12, dt_s=12)
    bank.lamp_dead(1, False)  # 1 shines again; 2 stays dark past the end
    bank.wait(12, dt_s=12)
    assert bank.report(1) == CycleReportAnswer(
        1, 1, CycleState.RAN_OUT, 300, 300, 180, 1, (LampInterruption(120, 120),)
    )
    assert bank.report(2) == CycleReportAnswer(
        2, 1, CycleState.RAN_OUT, 300, 300, 120, 1, (LampInterruption(120, 180),)
    )


def test_a_cycle_started_with_a_dead_lamp_is_one_interruption_from_0(bank: Bank) -> None:
    bank.lamp_dead(3)
    bank.start(3, 20)
    bank.wait(25)
    assert bank.report(3) == CycleReportAnswer(
        3, 1, CycleState.RAN_OUT, 200, 200, 0, 1, (LampInterruption(0, 200),)
    )


@pytest.mark.parametrize("how", ["door forced open", "ABORT_DISINFECT", "UNLOCK override"])
def test_an_aborted_cycle_reports_aborted_and_how_long_it_ran(bank: Bank, how: str) -> None:
    bank.start(4, 600)
    bank.wait(40)
    bank.lamp_dead(4)
    bank.wait(5)
    if how == "door forced open":
        bank.world.open_door(4, force=True)
    elif how == "ABORT_DISINFECT":
        bank.ok(Command.ABORT_DISINFECT, CompartmentRequest(4).pack())
    else:
        bank.ok(Command.UNLOCK, UnlockRequest(4, override_cycle=True).pack())
    bank.wait(30)  # nothing is counted after the abort
    assert bank.report(4) == CycleReportAnswer(
        4, 1, CycleState.ABORTED, 6000, 450, 400, 1, (LampInterruption(400, 50),)
    )


def test_the_record_outlives_its_cycle_until_the_next_start(bank: Bank) -> None:
    bank.start(1, 10)
    bank.wait(10)
    done = bank.report(1)
    bank.wait(300)
    assert bank.report(1) == done and done.state is CycleState.RAN_OUT
    bank.lamp_dead(1)
    bank.start(1, 40)
    bank.wait(5)
    assert bank.report(1) == CycleReportAnswer(
        1, 2, CycleState.RUNNING, 400, 50, 0, 1, (LampInterruption(0, 50),)
    )
    bank.lamp_dead(1, False)
    bank.start(1, 20)  # a restart during the cycle is a new cycle with a fresh record
    bank.wait(3)
    assert bank.report(1) == CycleReportAnswer(1, 3, CycleState.RUNNING, 200, 30, 30, 0)


def test_a_reboot_clears_the_record(bank: Bank) -> None:
    bank.start(2, 10)
    bank.wait(20)
    assert bank.report(2).cycle_no == 1
    bank.board.reboot(0xB008, bank.world.now_s, boot_time_s=0.0)
    assert bank.report(2) == CycleReportAnswer(2, 0, CycleState.NONE, 0, 0, 0, 0)


def test_more_than_8_interruptions_keep_the_first_8_and_count_all(bank: Bank) -> None:
    bank.start(3, 60)
    for _ in range(10):  # 2 s lit, 2 s dark, ten times; then lit to the end
        bank.wait(2)
        bank.lamp_dead(3)
        bank.wait(2)
        bank.lamp_dead(3, False)
    bank.wait(30)
    report = bank.report(3)
    assert report.state is CycleState.RAN_OUT and report.interruptions == 10
    assert report.first_interruptions == tuple(
        LampInterruption(at_ds=20 + 40 * i, dark_ds=20) for i in range(8)
    )
    assert report.lamp_on_ds == 600 - 10 * 20


def test_the_interruption_count_stays_at_255(bank: Bank) -> None:
    bank.start(1, 600)
    for _ in range(300):
        bank.lamp_dead(1)
        bank.wait(1)
        bank.lamp_dead(1, False)
        bank.wait(1)
    report = bank.report(1)
    assert (report.interruptions, len(report.first_interruptions)) == (255, 8)
    assert (report.elapsed_ds, report.lamp_on_ds) == (6000, 3000)


def test_an_unknown_compartment_is_bad_argument(bank: Bank) -> None:
    assert bank.error(Command.CYCLE_REPORT, CompartmentRequest(5).pack()) == (
        ErrorCode.BAD_ARGUMENT,
        5,
    )
    assert bank.error(Command.CYCLE_REPORT, b"\x00") == (ErrorCode.BAD_ARGUMENT, 0)
    assert bank.error(Command.CYCLE_REPORT, b"") == (ErrorCode.BAD_ARGUMENT, 0)
    assert bank.error(Command.CYCLE_REPORT, b"\x01\x00") == (ErrorCode.BAD_ARGUMENT, 1)


def test_a_retry_gets_the_remembered_report(bank: Bank) -> None:
    """The duplicate rule holds for CYCLE_REPORT too: a retry is the first answer again."""
    bank.start(1, 60)
    first = bank.request(Command.CYCLE_REPORT, CompartmentRequest(1).pack(), seq=0x40)
    bank.wait(10)
    again = bank.request(Command.CYCLE_REPORT, CompartmentRequest(1).pack(), seq=0x40)
    assert again == first
    assert bank.report(1).elapsed_ds == 100  # a new request reads the record afresh


def test_a_board_of_revision_2_does_not_know_the_command() -> None:
    old = Bank(protocol=2)
    hello = HelloAnswer.unpack(old.ok(Command.HELLO))
    assert (hello.protocol, hello.firmware) == (2, "1.1.0")
    old.start(1, 60)
    assert old.error(Command.CYCLE_REPORT, CompartmentRequest(1).pack()) == (
        ErrorCode.UNKNOWN_COMMAND,
        Command.CYCLE_REPORT,
    )


# One thing that happens to a compartment during the story: time, the tube, the master, a door.
events = st.one_of(
    st.tuples(st.just("wait"), st.integers(1, 90)),
    st.tuples(st.sampled_from(["kill_lamp", "mend_lamp", "abort", "force_door"]), st.just(0)),
    st.tuples(st.just("start"), st.integers(1, 200)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=40))
def test_lit_and_dark_time_always_add_up_to_the_time_run(steps: list[tuple[str, int]]) -> None:
    bank = Bank()
    for kind, value in steps:
        if kind == "wait":
            bank.wait(value)
        elif kind == "kill_lamp":
            bank.lamp_dead(1)
        elif kind == "mend_lamp":
            bank.lamp_dead(1, False)
        elif kind == "abort":
            bank.ok(Command.ABORT_DISINFECT, CompartmentRequest(1).pack())
        elif kind == "force_door":
            bank.world.open_door(1, force=True)
            bank.world.close_door(1)
        else:
            bank.request(Command.START_DISINFECT, StartDisinfectRequest(1, value).pack())
        report = bank.report(1)
        assert report.lamp_on_ds <= report.elapsed_ds <= report.duration_ds
        if report.interruptions <= CYCLE_REPORT_MAX_INTERRUPTIONS:
            dark = sum(i.dark_ds for i in report.first_interruptions)
            assert report.lamp_on_ds + dark == report.elapsed_ds
        if report.state is CycleState.RAN_OUT:
            assert report.elapsed_ds == report.duration_ds


@pytest.fixture
def bench() -> Iterator[tuple[Simulator, TestClient, BoardLink]]:
    with Simulator(compartments=4, seed=5, manual_clock=True) as sim:
        board_path, _ = sim.open_pty()
        link = BoardLink(board_path)
        try:
            with TestClient(create_app(sim)) as api:
                yield sim, api, link
        finally:
            link.close()


def test_a_tube_killed_through_the_control_api_shows_in_the_cycle_report(
    bench: tuple[Simulator, TestClient, BoardLink],
) -> None:
    sim, api, link = bench
    assert HelloAnswer.unpack(link.ok(Command.HELLO)).protocol == 3
    link.ok(Command.START_DISINFECT, StartDisinfectRequest(2, 120).pack())
    sim.advance(30)
    truth = api.put("/faults/compartments/2", json={"dead_lamp": True}).json()
    assert (truth["dead_lamp"], truth["uv_on"], truth["uv_lit"]) == (True, True, False)
    sim.advance(20)
    record = link.status(2, 1).compartments[0]
    assert record.disinfecting and record.disinfect_remaining_s == 70  # no pause for the dark
    truth = api.put("/faults/compartments/2", json={"dead_lamp": False}).json()
    assert (truth["dead_lamp"], truth["uv_lit"]) == (False, True)
    sim.advance(100)
    report = CycleReportAnswer.unpack(link.ok(Command.CYCLE_REPORT, CompartmentRequest(2).pack()))
    assert report == CycleReportAnswer(
        2, 1, CycleState.RAN_OUT, 1200, 1200, 1000, 1, (LampInterruption(300, 200),)
    )
    assert api.get("/compartments/2").json()["uv_lit"] is False  # out: the cycle is over
