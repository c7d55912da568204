"""A bridge killed with SIGKILL mid-cycle and restarted reports the cycle's true state, and
answers a redelivered command from its disk cache instead of running it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.firmware_bridge.harness import Observer, new_kiosk_id, simulator
from tests.support.mosquitto import MosquittoProcess

TIME_SCALE = 10.0
REPO = Path(__file__).resolve().parents[2]
# The command a kiosk PC runs; `python -m firmware_bridge` where the entry point is not installed.
LOCKERCTL = Path(sys.executable).with_name("lockerctl")
BRIDGE_COMMAND = (
    [str(LOCKERCTL), "bridge"] if LOCKERCTL.exists() else [sys.executable, "-m", "firmware_bridge"]
)

pytestmark = pytest.mark.slow


@contextmanager
def bridge_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            BRIDGE_COMMAND,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sigkill_mid_cycle_then_restart_reports_the_true_cycle_state(
    private_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    kiosk_id = new_kiosk_id()
    with simulator(time_scale=TIME_SCALE) as sim:
        board, scanner = sim.open_pty(tmp_path / "dev")
        env = {
            "BRIDGE_KIOSK_ID": kiosk_id,
            "BRIDGE_BROKER_URL": private_mosquitto.url,
            "BRIDGE_BOARD_URL": board,
            "BRIDGE_SCANNER_URL": scanner,
            "BRIDGE_DATA_DIR": str(tmp_path / "data"),
            "BRIDGE_POLL_PERIOD_S": "0.1",
            "BRIDGE_ANSWER_MARGIN_S": "0.1",
            "LOCKER_TIME_SCALE": str(TIME_SCALE),
        }
        log = tmp_path / "bridge.log"
        obs = Observer(private_mosquitto.host, private_mosquitto.port, kiosk_id).start()
        status = obs.topics.status
        try:
            with bridge_process(env, log) as first:
                obs.wait(
                    lambda: obs.on(status) and obs.on(status)[-1]["board_online"],
                    "first bridge online",
                )
                long = obs.command("start_disinfection", 4, {"duration_s": 120})  # 12 s
                short = obs.command("start_disinfection", 5, {"duration_s": 20})  # 2 s
                assert obs.final_reply(long.request_id)["status"] == "succeeded"
                assert obs.final_reply(short.request_id)["status"] == "succeeded"
                obs.wait_event("disinfection_started", 4)
                obs.wait_event("disinfection_started", 5)
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            # The broker saw the connection die: the last will says offline, retained.
            obs.wait(lambda: obs.on(status)[-1]["state"] == "offline", "last will")
            answers_before = len(obs.replies(long.request_id))
            obs.send(long)  # redelivered while the bridge is down: queued in its session
            obs.wait(
                lambda: not sim.truth().compartments[4].disinfecting, "short cycle ends unseen"
            )
            remaining_at_restart = sim.truth().compartments[3].disinfect_remaining_s
            assert 0 < remaining_at_restart < 120
            with bridge_process(env, log):
                obs.wait(lambda: obs.on(status)[-1]["state"] == "online", "second bridge online")
                # The cycle that ended while nobody watched is reported, and how it ended.
                obs.wait_event("disinfection_completed", 5)

                # The running one is shown as it truly is: running, with its real time left.
                def running_snapshot() -> bool:
                    snap = obs.snapshot(4) or {}
                    return bool(snap.get("disinfecting")) and (
                        snap["disinfect_remaining_s"] <= remaining_at_restart
                    )

                obs.wait(running_snapshot, "snapshot of the running cycle")
                # The redelivered start is answered from the cache and not run again.
                obs.wait(
                    lambda: len(obs.replies(long.request_id)) > answers_before,
                    "answer to the redelivery",
                )
                assert obs.replies(long.request_id)[-1]["status"] == "succeeded"
                assert sim.truth().compartments[3].disinfect_remaining_s <= remaining_at_restart
                obs.wait_event("disinfection_completed", 4)
                assert len(obs.events("disinfection_started", 4)) == 1
                assert not obs.events("disinfection_aborted")
        finally:
            obs.stop()
        assert "Traceback" not in log.read_text()
