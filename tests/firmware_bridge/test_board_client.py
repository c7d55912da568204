"""The board client alone, against the simulated board over its in-process sim:// port:
stop-and-wait, retries that never execute twice, errors as exceptions, page sizing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_bridge.board import BoardClient, BoardRefused, BoardUnreachable
from firmware_bridge.bridge import poll_wire_time_s, status_page_size
from firmware_bridge.transport import SerialTransport, TransportError
from hardware.protocol import ErrorCode
from hardware.simulator import Simulator


@pytest.fixture
def board() -> Iterator[tuple[Simulator, BoardClient]]:
    with Simulator(compartments=24, seed=5, time_scale=1.0) as sim:
        transport = SerialTransport(sim.board_url, 115200)
        transport.open()
        client = BoardClient(transport, 1, answer_margin_s=0.05)
        client.hello()
        try:
            yield sim, client
        finally:
            transport.close()


def test_hello_and_paged_status(board: tuple[Simulator, BoardClient]) -> None:
    sim, client = board
    hello = client.hello()
    assert hello.compartment_count == 24 and hello.boot_id == sim.truth().boot_id
    page = client.status(9, 8)
    assert [c.number for c in page.compartments] == list(range(9, 17))


def test_retries_under_line_noise_never_pulse_twice(board: tuple[Simulator, BoardClient]) -> None:
    sim, client = board
    sim.faults.line_errors(0.03)
    outcomes = []
    for n in range(1, 25):
        try:
            client.unlock(n, 500)
            outcomes.append("ok")
        except BoardUnreachable:
            outcomes.append("unreachable")
    sim.faults.line_errors(0.0)
    truth = sim.truth()
    assert client.stats.retries > 0  # the noise did bite
    for n, outcome in enumerate(outcomes, start=1):
        pulses = truth.compartments[n - 1].lock_pulses
        assert pulses <= 1  # a retry is answered from the board's cache
        if outcome == "ok":
            assert pulses == 1
    assert outcomes.count("ok") >= 20


def test_a_refusal_is_an_exception_with_the_board_code(
    board: tuple[Simulator, BoardClient],
) -> None:
    sim, client = board
    sim.world.open_door(3, force=True)
    with pytest.raises(BoardRefused) as refused:
        client.start_disinfect(3, 60)
    assert refused.value.answer.code is ErrorCode.INTERLOCK_REFUSED


def test_a_pulled_cable_is_a_transport_error_not_a_hang(
    board: tuple[Simulator, BoardClient],
) -> None:
    sim, client = board
    sim.faults.pull_cable(30.0)
    with pytest.raises((TransportError, BoardUnreachable)):
        client.status(1, 1)


@pytest.mark.parametrize(("baud", "page"), [(9600, 24), (19200, 24), (115200, 7)])
def test_status_pages_are_short_on_fast_lines_full_on_slow_ones(baud: int, page: int) -> None:
    assert status_page_size(baud) == page


def test_poll_wire_time_matches_the_protocol_figures() -> None:
    # PROTOCOL.md: a 48-compartment bank at 9600 baud needs about 0.58 s of wire per poll.
    assert 0.5 < poll_wire_time_s(48, status_page_size(9600), 9600) < 0.62
    assert poll_wire_time_s(48, status_page_size(115200), 115200) < 0.1
