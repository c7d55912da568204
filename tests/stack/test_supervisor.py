"""The supervisor behind `lockerctl up`, run as a real process: output prefixed by child, a dead
child restarted with a message, SIGTERM/SIGINT stop every child cleanly, a stubborn child killed,
a child that keeps dying ends the run, and killing the supervisor takes its children with it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.mosquitto import free_port

WAIT_S = 30.0  # shared two-core machine: be generous

# A child that listens on a port (its readiness), says hello, and on SIGTERM leaves a marker.
STEADY = """
import signal, socket, sys, pathlib
marker = pathlib.Path(sys.argv[1]); port = int(sys.argv[2])
def stop(*_):
    marker.write_text("stopped cleanly"); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen()
print("hello from steady", flush=True)
signal.pause()
"""

# Dies with code 3 on its first two runs, then stays up.
FLAKY = """
import pathlib, sys, time, signal
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(f"flaky run {n}", flush=True)
if n <= 2:
    time.sleep(0.3); sys.exit(3)
signal.pause()
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True: time.sleep(1)
"""

# Listens and dies on its first run, once the supervisor's readiness probe has connected (a
# fixed time would be too short for a supervisor descheduled on a busy machine); every later
# run hangs without listening.
GOES_MUTE = """
import pathlib, signal, socket, sys, time
counter = pathlib.Path(sys.argv[1]); port = int(sys.argv[2])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if n == 1:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen()
    print("listening", flush=True); s.accept(); time.sleep(0.1); sys.exit(3)
print(f"mute run {n}", flush=True)
signal.pause()
"""

# One line of 3 MB, then a normal one, then it waits.
LONG_LINE = """
import signal, sys
sys.stdout.write("x" * (3 << 20) + "\\n"); print("after the long line", flush=True)
signal.pause()
"""

# Serves HTTP at once, but answers /readyz 503 until a file exists, as the service does until
# its first lease round is over; says so on each answer.
GETS_READY = """
import http.server, pathlib, sys
go = pathlib.Path(sys.argv[1]); port = int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if go.exists() else 503
        print(f"answered {status}", flush=True)
        self.send_response(status); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

pytestmark = pytest.mark.slow  # child processes started, killed and restarted

ALWAYS_DIES = "import sys; print('broken', flush=True); sys.exit(7)"


class Run:
    """The supervisor process with its output collected line by line."""

    def __init__(self, config: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stack.supervised", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        for line in self.lines:
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))

    def finish(self, timeout_s: float = WAIT_S) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        time.sleep(0.2)
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return rc


def child(name: str, code: str, *args: object, port: int | None = None) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": name,
        "argv": [sys.executable, "-c", code, *map(str, args)],
    }
    if port is not None:
        spec["ready_port"] = ["127.0.0.1", port]
    return spec


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def pid_of(run: Run, marker: str) -> int:
    """Child pids, found through /proc by a unique argument."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in cmdline and int(entry.name) != run.proc.pid:
                return int(entry.name)
    raise AssertionError(f"no process with argument {marker}")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_restarts_a_dead_child_and_stops_all_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    marker = tmp_path / "steady.stopped"
    counter = tmp_path / "flaky.count"
    run = Run(
        {
            "children": [
                child("steady", STEADY, marker, port, port=port),
                child("flaky", FLAKY, counter),
            ]
        }
    )
    try:
        assert run.wait_for("hello from steady").startswith("steady    | ")
        run.wait_for("ALL READY")
        died = run.wait_for("flaky exited with code 3")
        assert "restarting it in 0.2 s (restart 1)" in died
        run.wait_for("flaky run 3")
        time.sleep(0.5)  # third run stays up: no further restart
        assert counter.read_text() == "3"
        steady_pid = pid_of(run, str(marker))
        flaky_pid = pid_of(run, str(counter))
        run.proc.send_signal(stop_signal)
        assert run.finish() == 0, "\n".join(run.lines)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert marker.read_text() == "stopped cleanly"
    assert not alive(steady_pid) and not alive(flaky_pid)
    text = "\n".join(run.lines)
    # Stopped in reverse order of starting.
    assert text.index("stopping flaky") < text.index("stopping steady")
    assert "all stopped" in text


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    run = Run({"children": [child("stubborn", STUBBORN, "stubborn-marker")], "stop_timeout_s": 1})
    try:
        run.wait_for("ignoring SIGTERM")
        stubborn_pid = pid_of(run, "stubborn-marker")
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert "stubborn did not stop within 1 s: killing it" in "\n".join(run.lines)
    assert not alive(stubborn_pid)


def test_a_child_that_keeps_dying_ends_the_run_with_failure(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "steady.stopped"
    run = Run(
        {
            "children": [
                child("steady", STEADY, marker, port, port=port),
                child("broken", ALWAYS_DIES),
            ],
            "backoff_s": [0.05],
        }
    )
    try:
        assert run.finish() == 1
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    text = "\n".join(run.lines)
    assert "broken exited with code 7" in text
    assert "5 times in a row: giving up and stopping everything" in text
    assert marker.read_text() == "stopped cleanly"


def test_a_restarted_child_that_never_gets_ready_is_killed_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    counter = tmp_path / "mute.count"
    spec = child("mute", GOES_MUTE, counter, port, port=port)
    spec["ready_timeout_s"] = 1.0
    run = Run({"children": [spec], "backoff_s": [0.05]})
    try:
        run.wait_for("mute run 3")  # the hung second run was ended and a third one started
        assert run.finish() == 1  # and in the end the supervisor gives up, as for any death
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    text = "\n".join(run.lines)
    assert f"mute did not listen on 127.0.0.1:{port} within 1 s" in text
    assert "mute was killed by SIGKILL" in text
    assert "giving up and stopping everything" in text
    with pytest.raises(AssertionError, match="no process"):
        pid_of(run, str(counter))  # no hung run is left behind


def test_a_child_with_a_ready_path_is_ready_only_once_it_answers_200(tmp_path: Path) -> None:
    """`lockerctl up` waits for the service's /readyz, not only its port (ADR 0099)."""
    port, go = free_port(), tmp_path / "go"
    spec = child("service", GETS_READY, go, port, port=port)
    run = Run({"children": [{**spec, "ready_path": "/readyz"}]})
    try:
        run.wait_for("answered 503")  # the port is open: asked, and not ready yet
        assert not any("ALL READY" in line for line in run.lines)
        go.touch()
        run.wait_for("ALL READY")
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0, "\n".join(run.lines)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_a_child_that_never_gets_ready_fails_the_start(tmp_path: Path) -> None:
    run = Run({"children": [child("mute", ALWAYS_DIES, port=free_port())]})
    try:
        assert run.finish() == 1
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert "mute exited with code 7 while starting; stopping everything" in "\n".join(run.lines)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "steady.stopped"
    run = Run({"children": [child("steady", STEADY, marker, port, port=port)]})
    try:
        run.wait_for("ALL READY")
        steady_pid = pid_of(run, str(marker))
        run.proc.kill()
        run.finish()
        deadline = time.monotonic() + WAIT_S
        while alive(steady_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(steady_pid)
        assert marker.read_text() == "stopped cleanly"  # it got SIGTERM, not SIGKILL
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_an_overlong_output_line_is_cut_and_the_output_goes_on(tmp_path: Path) -> None:
    run = Run({"children": [child("chatty", LONG_LINE)]})
    try:
        run.wait_for("after the long line")
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert any("[an output line over 1 MB was cut]" in line for line in run.lines)
    assert all(len(line) <= (1 << 20) + 40 for line in run.lines)  # 40: the name label


def test_a_child_that_can_no_longer_be_started_ends_the_run(tmp_path: Path) -> None:
    program = tmp_path / "vanishing"
    program.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys, time\n"
        "pathlib.Path(sys.argv[0]).unlink()  # as when an upgrade removed the program\n"
        "print('ran once', flush=True); time.sleep(0.3); sys.exit(3)\n"
    )
    program.chmod(0o755)
    run = Run({"children": [{"name": "gone", "argv": [str(program)]}], "backoff_s": [0.05]})
    try:
        assert run.finish() == 1
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    text = "\n".join(run.lines)
    assert "cannot start gone" in text
    assert "giving up and stopping everything" in text
