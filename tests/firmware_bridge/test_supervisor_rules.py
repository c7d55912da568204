"""The supervisor's rules for commands, checked on a bridge whose threads are not started:
when an unlock counts as done, and what happens to commands the board cannot take now."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from firmware_bridge import contract
from firmware_bridge.bridge import COMMAND_QUEUE_MAX, BoardInfo, Bridge, UnlockWatch
from firmware_bridge.tracker import CompartmentView
from tests.firmware_bridge.harness import bridge_settings, new_kiosk_id


def command(n: int = 1, action: str = "unlock", request_id: str | None = None) -> contract.Command:
    return contract.command_from_dict(
        {
            "request_id": request_id or f"r{n}",
            "action": action,
            "compartment": n,
            "expires_at": contract.utcnow() + timedelta(seconds=30),
            "reply_to": "test/replies",
        }
    )


def view(**changes: object) -> CompartmentView:
    base = CompartmentView(
        n=1,
        door_open=False,
        lock_released=False,
        occupied=False,
        heater_on=False,
        uv_on=False,
        disinfecting=False,
        cycle_aborted=False,
        remaining_s=0,
        temp_dc=650,
        setpoint_dc=650,
        fault=0,
        opens=7,
        closes=7,
        seen_at=100.0,
        boot_id=1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_unlock_is_judged_only_by_what_the_board_showed_after_it() -> None:
    before = view(lock_released=True)  # still released from an earlier unlock, or from disk
    watch = UnlockWatch.start(command(), before)
    assert not watch.effect_seen(before)
    assert not watch.effect_seen(view(seen_at=101.0))
    assert watch.effect_seen(view(seen_at=101.0, lock_released=True))
    assert watch.effect_seen(view(seen_at=101.0, door_open=True, opens=8))
    # Opened and shut again between two polls: only the counter tells.
    assert watch.effect_seen(view(seen_at=101.0, opens=8, closes=8))


def test_counters_of_a_new_board_boot_are_no_proof_of_an_opening() -> None:
    watch = UnlockWatch.start(command(), view(opens=7))
    assert not watch.effect_seen(view(seen_at=101.0, boot_id=2, opens=0, closes=0))


@pytest.fixture
def idle_bridge(tmp_path: Path) -> Iterator[Bridge]:
    """A bridge with its threads not started: commands stay where the paho thread puts them."""
    settings = bridge_settings(
        new_kiosk_id(), "mqtt://127.0.0.1:1", "loop://", None, tmp_path / "data", 1.0
    )
    bridge = Bridge(settings)
    try:
        yield bridge
    finally:
        bridge.store.close()


def status_of(bridge: Bridge, request_id: str) -> str | None:
    record = bridge.store.get_request(request_id)
    return None if record is None else record.status


def test_commands_for_a_board_known_offline_fail_at_once(idle_bridge: Bridge) -> None:
    idle_bridge._publish_status()  # the first try at the board found nothing
    idle_bridge._receive_command(command().to_json())
    assert status_of(idle_bridge, "r1") == "failed"
    assert idle_bridge._commands.empty()


def test_commands_before_the_first_try_at_the_board_wait_for_it(idle_bridge: Bridge) -> None:
    idle_bridge._receive_command(command().to_json())
    assert status_of(idle_bridge, "r1") == "accepted"
    assert idle_bridge._commands.qsize() == 1


def test_a_flood_of_commands_is_refused_past_the_queue_bound(idle_bridge: Bridge) -> None:
    idle_bridge.info = BoardInfo(online=True, compartments=12)
    idle_bridge._publish_status()
    total = COMMAND_QUEUE_MAX + 5
    for i in range(total):
        idle_bridge._receive_command(command(request_id=f"q{i}").to_json())
    assert idle_bridge._commands.qsize() == COMMAND_QUEUE_MAX
    refused = [i for i in range(total) if status_of(idle_bridge, f"q{i}") == "rejected"]
    assert refused == list(range(COMMAND_QUEUE_MAX, total))
