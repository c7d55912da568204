"""A private Mosquitto broker on a free port, for tests that stop, restart or reconfigure it."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from locker_service.stack import ports

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A port below the kernel's ephemeral range, so no outgoing connection takes it before
    the test's server binds it."""
    return ports.free_port()


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


def durable_mosquitto(store: Path) -> MosquittoProcess:
    """A broker that keeps sessions and queued messages in `store` across its own restart
    (saved each second, and on a clean stop), as a production broker with persistence."""
    store.mkdir(parents=True, exist_ok=True)
    return MosquittoProcess(
        extra_config=f"persistence true\npersistence_location {store}/\nautosave_interval 1\n"
    )


class MosquittoProcess:
    """`mosquitto -c <temp config>` on 127.0.0.1:<port>; `extra_config` lines are appended."""

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self._dir / 'mosquitto.log'}\n"
            # Started as root, mosquitto drops to the `mosquitto` user and then cannot write its
            # log or files in this test's temp dir; stay the user that made the dir.
            + (f"user {getpass.getuser()}\n" if os.geteuid() == 0 else "")
            + extra_config
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self._dir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def start(self) -> MosquittoProcess:
        if not os.path.exists(MOSQUITTO):
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def kill(self) -> None:
        """Die at once (SIGKILL): no will is sent, and a persistent broker keeps only what it
        last saved."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> MosquittoProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
