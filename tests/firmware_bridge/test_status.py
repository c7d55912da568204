"""The kiosk's retained status: a starting bridge says `online` only once it has tried the board,
and then says truly whether the board answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    running_bridge,
    simulator,
)
from tests.support.mosquitto import MosquittoProcess


def test_a_start_with_the_board_there_never_claims_it_offline(
    private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    kiosk_id = new_kiosk_id()
    with simulator() as sim:
        board, _ = sim.open_pty(tmp_path / "dev")
        obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        settings = bridge_settings(
            kiosk_id, private_mosquitto.url, board, None, tmp_path / "data", 1.0
        )
        try:
            with running_bridge(settings) as bridge:
                obs.wait(lambda: obs.on(obs.topics.status), "the first status")
                first = obs.on(obs.topics.status)[0]
                assert first["state"] == "online" and first["board_online"] is True
                assert first["compartments"] == 12 and first["boot_id"]
                obs.wait(lambda: bridge.link.connected.is_set(), "bridge connected")
            # A clean stop leaves `offline` retained; nothing in between said the board was gone.
            # Waited for: the bridge's stop returns once the broker has it, and the observer
            # hears it on its own thread after that (on a busy machine, a while after).
            obs.wait(
                lambda: obs.on(obs.topics.status)[-1]["state"] == "offline", "the offline status"
            )
            statuses = obs.on(obs.topics.status)
            assert all(s["board_online"] for s in statuses[:-1])
        finally:
            obs.stop()


@pytest.mark.parametrize(
    "board_url, why",
    [
        ("/nonexistent/ttyLOCKER", "a port that does not open"),
        ("loop://", "a line where nobody answers (only our own echo)"),
    ],
)
def test_a_start_without_a_board_says_so_after_the_first_try(
    private_mosquitto: MosquittoProcess, tmp_path: Path, board_url: str, why: str
) -> None:
    kiosk_id = new_kiosk_id()
    obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
    settings = bridge_settings(
        kiosk_id, private_mosquitto.url, board_url, None, tmp_path / "data", 1.0
    )
    try:
        with running_bridge(settings) as bridge:
            obs.wait(lambda: obs.on(obs.topics.status), f"a status with {why}")
            first = obs.on(obs.topics.status)[0]
            assert first["state"] == "online" and first["board_online"] is False, why
            assert first["boot_id"] is None
            # The bridge is still there for the service: commands are answered at once, without
            # waiting for the next try at the board.
            cmd = obs.command("unlock", 1)
            reply = obs.final_reply(cmd.request_id)
            assert reply["status"] == "failed" and reply["detail"] == "board offline"
            assert [r["status"] for r in obs.replies(cmd.request_id)] == ["failed"]
            assert bridge.info.online is False
    finally:
        obs.stop()
