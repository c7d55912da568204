"""A kiosk per test: a simulated bank on a real pty, its bridge, a private broker, an observer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeSettings
from hardware.protocol.messages import PROTOCOL_REVISION
from hardware.simulator import Simulator
from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    running_bridge,
    simulator,
    wait_ready,
)
from tests.support.mosquitto import MosquittoProcess

TIME_SCALE = 20.0


@dataclass
class Kiosk:
    sim: Simulator
    broker: MosquittoProcess
    observer: Observer
    settings: BridgeSettings
    bridge: Bridge
    board_path: str
    scanner_path: str


@pytest.fixture
def kiosk(private_mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[Kiosk]:
    with running_kiosk(private_mosquitto, tmp_path) as kiosk:
        yield kiosk


@pytest.fixture
def first_edition_kiosk(private_mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[Kiosk]:
    """A kiosk whose board is of protocol revision 1 (no UNLOCK report)."""
    with running_kiosk(private_mosquitto, tmp_path, protocol=1) as kiosk:
        yield kiosk


@pytest.fixture
def second_revision_kiosk(private_mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[Kiosk]:
    """A kiosk whose board is of protocol revision 2 (no lamp sense, no CYCLE_REPORT)."""
    with running_kiosk(private_mosquitto, tmp_path, protocol=2) as kiosk:
        yield kiosk


@contextmanager
def running_kiosk(
    private_mosquitto: MosquittoProcess, tmp_path: Path, protocol: int = PROTOCOL_REVISION
) -> Iterator[Kiosk]:
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE, protocol=protocol) as sim:
        board_path, scanner_path = sim.open_pty(tmp_path / "dev")
        observer = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        settings = bridge_settings(
            kiosk_id,
            private_mosquitto.url,
            board_path,
            scanner_path,
            tmp_path / "data",
            TIME_SCALE,
        )
        try:
            with running_bridge(settings) as bridge:
                observer.wait(
                    lambda: any(s.get("board_online") for s in observer.on(observer.topics.status)),
                    "the bridge to report the board online",
                )
                wait_ready(observer, bridge)
                yield Kiosk(
                    sim, private_mosquitto, observer, settings, bridge, board_path, scanner_path
                )
        finally:
            observer.stop()
