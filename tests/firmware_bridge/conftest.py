"""A kiosk per test: a simulated bank on a real pty, its bridge, a private broker, an observer."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeSettings
from firmware_bridge.contract import OfflineOrder, OfflineSupply, utcnow
from firmware_bridge.contract.codes import code_mac, token_hash
from firmware_bridge.contract.offline import encode_key
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


@pytest.fixture
def durable_kiosk(durable_broker: MosquittoProcess, tmp_path: Path) -> Iterator[Kiosk]:
    """A kiosk on a durable broker, so a persistent observer misses nothing the bridge sends
    while the observer reconnects."""
    with running_kiosk(durable_broker, tmp_path) as kiosk:
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


HER_CODE, THEIR_CODE = "12345678", "87654321"


def offline_supply(
    orders: list[tuple[str, int, str, str]], refresh_s: float = 30.0
) -> OfflineSupply:
    """What the service would send for these (order id, compartment, QR token, typed code)."""
    key = secrets.token_bytes(32)
    return OfflineSupply(
        supply_id=secrets.token_hex(8),
        refresh_s=refresh_s,
        code_key=encode_key(key),
        orders=[
            OfflineOrder(
                order_id=order_id,
                compartment=n,
                token_sha256=token_hash(token),
                code_mac=code_mac(key, code),
                deadline=utcnow() + timedelta(hours=1),
            )
            for order_id, n, token, code in orders
        ],
    )


@dataclass
class ScreenKiosk:
    bridge: Bridge
    sim: Simulator
    broker: MosquittoProcess
    obs: Observer
    http: httpx.Client
    her_token: str
    their_token: str

    def supply(self) -> None:
        supply = offline_supply(
            [
                ("ord-hers", 2, self.her_token, HER_CODE),
                ("ord-theirs", 7, self.their_token, THEIR_CODE),
            ]
        )
        self.obs.client.publish(self.obs.topics.offline, supply.to_json())
        self.obs.wait(lambda: self.bridge.knows_codes(), "the bridge to take the supply")

    def cut_off(self) -> None:
        self.broker.stop()
        self.obs.wait(self.bridge.cut_off, "the bridge to see the broker gone")


@pytest.fixture
def screen_kiosk(private_mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[ScreenKiosk]:
    with running_screen_kiosk(private_mosquitto, tmp_path) as kiosk:
        yield kiosk


@contextmanager
def running_screen_kiosk(
    broker: MosquittoProcess, tmp_path: Path, service_url: str | None = None
) -> Iterator[ScreenKiosk]:
    """A kiosk whose bridge serves its offline screen on a free port."""
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        obs = Observer(broker.host, broker.port, kiosk_id).start()
        settings = bridge_settings(
            kiosk_id,
            broker.url,
            board,
            scanner,
            tmp_path / "data",
            TIME_SCALE,
            screen_port=0,
            screen_service_url=service_url,
        )
        try:
            with running_bridge(settings) as bridge:
                wait_ready(obs, bridge)
                assert bridge.screen is not None
                base = f"http://127.0.0.1:{bridge.screen.port}"
                # As the screen's own page: a browser names its origin when it posts JSON.
                origin = {"Origin": base}
                with httpx.Client(base_url=base, timeout=10, headers=origin) as http:
                    yield ScreenKiosk(
                        bridge,
                        sim,
                        broker,
                        obs,
                        http,
                        secrets.token_urlsafe(32),
                        secrets.token_urlsafe(32),
                    )
        finally:
            obs.stop()
