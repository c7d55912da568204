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


def test_lockerctl_sim_keeps_the_bank_in_its_state_file_across_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "bank.json"

    def run_sim() -> tuple[subprocess.Popen[str], str]:
        http_port = free_port()
        proc = subprocess.Popen(
            [
                str(LOCKERCTL), "sim", "--no-pty", "--http-port", str(http_port),
                "--compartments", "4", "--state-file", str(state_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        wait_for_port("127.0.0.1", http_port, timeout_s=30)
        return proc, f"http://127.0.0.1:{http_port}"

    proc, api = run_sim()
    try:
        httpx.post(f"{api}/compartments/2/door/open", json={"force": True}).raise_for_status()
        httpx.post(
            f"{api}/compartments/2/item", json={"mass_g": 300, "temp_c": 68}
        ).raise_for_status()
        first_boot = httpx.get(f"{api}/truth").json()["boot_id"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert state_file.stat().st_mode & 0o777 == 0o600

    proc, api = run_sim()
    try:
        truth = httpx.get(f"{api}/truth").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert f"bank restored from {state_file}" in out
    second = truth["compartments"][1]
    assert second["item_mass_g"] == 300 and second["door_open"]
    assert second["door_open_count"] == 0  # counted in the old boot's RAM
    assert truth["boot_id"] != first_boot


def test_lockerctl_sim_refuses_a_damaged_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "bank.json"
    state_file.write_text('{"format": 1, "compartments": "none"}')
    proc = subprocess.run(
        [str(LOCKERCTL), "sim", "--no-pty", "--http-port", "0", "--state-file", str(state_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"cannot restore the bank: {state_file} is not a simulator state" in proc.stderr
    assert "remove the file to start empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert state_file.read_text() == '{"format": 1, "compartments": "none"}'  # left as it was
