"""`lockerctl sim` as a user runs it: prints its ports, serves the control API, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.hardware.link import BoardLink
from tests.support.mosquitto import free_port, wait_for_port

pytestmark = pytest.mark.slow  # lockerctl sim processes

LOCKERCTL = Path(sys.executable).with_name("lockerctl")


def test_lockerctl_sim_serves_ptys_sockets_and_api(tmp_path: Path) -> None:
    http_port, board_port = free_port(), free_port()
    env = {**os.environ, "LOCKER_TIME_SCALE": "30", "SIM_COMPARTMENTS": "8"}
    proc = subprocess.Popen(
        [
            str(LOCKERCTL), "sim", "--pty-dir", str(tmp_path), "--http-port", str(http_port),
            "--board-port", str(board_port), "--scanner-port", "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", http_port, timeout_s=30)
        truth = httpx.get(f"http://127.0.0.1:{http_port}/truth").json()
        assert truth["time_scale"] == 30 and len(truth["compartments"]) == 8
        assert truth["ports"]["board_pty"] == str(tmp_path / "board")
        assert truth["ports"]["board_tcp"] == f"socket://127.0.0.1:{board_port}"
        for url in (str(tmp_path / "board"), f"socket://127.0.0.1:{board_port}"):
            link = BoardLink(url)
            try:
                assert link.ok(0x01)[8] == 8  # HELLO: compartment count
            finally:
                link.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert f"board pty:    {tmp_path / 'board'}" in out
    assert "simulator stopped" in out and proc.returncode == 0
    assert not (tmp_path / "board").exists()  # the pty links are removed on the way out


def test_lockerctl_sim_rejects_bad_settings() -> None:
    proc = subprocess.run(
        [str(LOCKERCTL), "sim", "--compartments", "99"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "compartments" in proc.stderr


def test_lockerctl_sim_says_which_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [str(LOCKERCTL), "sim", "--no-pty", "--board-port", str(port), "--http-port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert f"cannot serve the board and scanner on 127.0.0.1 (ports {port}, any)" in proc.stderr
    assert "Traceback" not in proc.stderr
