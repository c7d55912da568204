"""The same bridge over every kind of port serial_for_url opens: socket:// (an RS-485-to-Ethernet
device server, as in docker-compose), the simulator's in-process sim:// URL, and a pty paced at
9600 baud, the slow end of what the protocol supports."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware_bridge.harness import (
    Observer,
    bridge_settings,
    new_kiosk_id,
    pulses,
    running_bridge,
    simulator,
)
from tests.support.mosquitto import MosquittoProcess


@pytest.mark.parametrize("kind", ["socket", "sim", "pty-9600"])
def test_unlock_and_scan_over(
    kind: str, private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    kiosk_id = new_kiosk_id()
    baud = 9600 if kind == "pty-9600" else 115200
    with simulator(time_scale=20.0, baud=baud) as sim:
        if kind == "pty-9600":
            board, scanner = sim.open_pty(tmp_path / "dev")
        elif kind == "socket":
            board_port, scanner_port = sim.serve_sockets()
            board = f"socket://127.0.0.1:{board_port}"
            scanner = f"socket://127.0.0.1:{scanner_port}"
        else:
            board, scanner = sim.board_url, sim.scanner_url
        obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        settings = bridge_settings(
            kiosk_id,
            private_mosquitto.url,
            board,
            scanner,
            tmp_path / "data",
            20.0,
            baud=baud,
            poll_period_s=0.3 if baud == 9600 else 0.1,
        )
        try:
            with running_bridge(settings) as bridge:
                obs.wait(lambda: bridge.info.online, "board online over " + kind)
                obs.wait(lambda: obs.snapshot(12), "first poll")
                reply = obs.final_reply(obs.command("unlock", 12).request_id)
                assert reply["status"] == "succeeded" and pulses(sim, 12) == 1
                scanner_reader = bridge.scanner
                assert scanner_reader is not None
                obs.wait(lambda: scanner_reader.transport.is_open, "scanner open")
                sim.world.scan("over-" + kind)
                assert obs.wait_event("scan")[0]["data"]["text"] == "over-" + kind
        finally:
            obs.stop()
