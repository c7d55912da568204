"""The CYCLE_REPORT answer's layout (protocol revision 3): round trips and strict refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.protocol import CycleReportAnswer, CycleState, LampInterruption, PayloadError
from hardware.protocol.messages import CYCLE_REPORT_MAX_INTERRUPTIONS

u16 = st.integers(0, 0xFFFF)
interruption = st.builds(LampInterruption, u16, u16)


@st.composite
def answers(draw: st.DrawFn) -> CycleReportAnswer:
    interruptions = draw(st.integers(0, 0xFF))
    listed = min(interruptions, CYCLE_REPORT_MAX_INTERRUPTIONS)
    return CycleReportAnswer(
        compartment=draw(st.integers(1, 255)),
        cycle_no=draw(u16),
        state=draw(st.sampled_from(CycleState)),
        duration_ds=draw(u16),
        elapsed_ds=draw(u16),
        lamp_on_ds=draw(u16),
        interruptions=interruptions,
        first_interruptions=tuple(draw(st.lists(interruption, min_size=listed, max_size=listed))),
    )


@given(answers())
def test_every_well_formed_answer_round_trips(answer: CycleReportAnswer) -> None:
    payload = answer.pack()
    assert len(payload) == 12 + 4 * len(answer.first_interruptions)
    assert CycleReportAnswer.unpack(payload) == answer


def test_layout_is_big_endian_head_then_interruptions() -> None:
    answer = CycleReportAnswer(
        compartment=4,
        cycle_no=0x0102,
        state=CycleState.RAN_OUT,
        duration_ds=600,
        elapsed_ds=600,
        lamp_on_ds=450,
        interruptions=1,
        first_interruptions=(LampInterruption(at_ds=200, dark_ds=150),),
    )
    assert answer.pack() == bytes.fromhex("04 0102 02 0258 0258 01C2 01 01 00C8 0096")


def _payload(state: int = 2, interruptions: int = 1, count: int = 1, records: int = 1) -> bytes:
    head = bytes([4, 0, 1, state, 0x02, 0x58, 0x02, 0x58, 0x01, 0xC2, interruptions, count])
    return head + bytes([0x00, 0xC8, 0x00, 0x96]) * records


def test_the_helper_payload_is_well_formed() -> None:
    assert CycleReportAnswer.unpack(_payload()).first_interruptions == (LampInterruption(200, 150),)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "shorter than its head"),
        (_payload()[:11], "shorter than its head"),
        (_payload(records=0), "carries 0 bytes"),
        (_payload(records=2), "carries 8 bytes"),
        (_payload() + b"\x00", "carries 5 bytes"),
        (_payload(interruptions=9, count=9, records=9), "at most 8"),
        (_payload(interruptions=3, count=1, records=1), "counts 3 interruptions but lists 1"),
        (_payload(interruptions=0, count=1, records=1), "counts 0 interruptions but lists 1"),
        (_payload(state=4), "unknown cycle state 4"),
    ],
)
def test_malformed_answers_are_refused(payload: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        CycleReportAnswer.unpack(payload)


def test_a_lamp_interruption_is_exactly_four_bytes() -> None:
    assert LampInterruption.unpack(bytes.fromhex("00C8 0096")) == LampInterruption(200, 150)
    with pytest.raises(PayloadError):
        LampInterruption.unpack(bytes.fromhex("00C8 00"))
