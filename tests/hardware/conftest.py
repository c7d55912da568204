"""Fixtures for the board: a running simulator and a serial master on its port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardware.simulator import Simulator
from tests.hardware.link import BoardLink


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # 10x: a pulled cable's seconds pass quickly, while a released latch (60 s nominal) stays
    # released for 6 wall seconds, far longer than a loaded machine takes between two calls.
    with Simulator(compartments=12, seed=7, time_scale=10.0) as simulator:
        yield simulator


@pytest.fixture
def pty_link(sim: Simulator) -> Iterator[BoardLink]:
    board_path, _ = sim.open_pty()
    link = BoardLink(board_path)
    yield link
    link.close()


@pytest.fixture
def link(sim: Simulator) -> Iterator[BoardLink]:
    """The in-process `sim://` port: same bytes as the pty, no kernel in between."""
    link = BoardLink(sim.board_url)
    yield link
    link.close()
