"""A three-node NATS cluster of a test's own, each node with its MQTT interface and JetStream.

Debian's `nats-server`: the nodes route to each other on free ports, keep their JetStream files
in a temporary directory, and hold every MQTT session, retained message and QoS 1 message in
streams replicated to all three (`stream_replicas: 3`), so any two nodes carry on without the
third. A client given `url` (`mqtt://n1,n2,n3`, in the order asked) moves to the next node when
its node goes (`firmware_bridge.contract.client`).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from locker_service.stack import ports
from tests.conftest import unavailable
from tests.support.mosquitto import wait_for_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
HOST = "127.0.0.1"
# Forming the cluster and electing JetStream's meta leader takes a few seconds on a busy host.
READY_TIMEOUT_S = 60.0


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_address(self) -> str:
        return f"{HOST}:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    def __init__(self, size: int = 3) -> None:
        if not Path(NATS_SERVER).exists():
            unavailable("nats-server is not installed (apt-get install -y nats-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="nats-cluster-"))
        taken = ports.free_ports(4 * size, HOST)
        self.nodes = [NatsNode(f"n{i + 1}", *taken[4 * i : 4 * i + 4]) for i in range(size)]

    def url(self, order: Sequence[str] | None = None) -> str:
        """The cluster as one broker URL, its nodes in `order` (names; all, n1 first, if None)."""
        names = list(order) if order is not None else [n.name for n in self.nodes]
        return "mqtt://" + ",".join(self.node(name).mqtt_address for name in names)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def _config(self, node: NatsNode) -> Path:
        routes = ", ".join(
            f"nats-route://{HOST}:{other.cluster_port}" for other in self.nodes if other != node
        )
        path = self.dir / f"{node.name}.conf"
        path.write_text(
            f"server_name: {node.name}\n"
            f"host: {HOST}\nport: {node.client_port}\n"
            f"http: {HOST}:{node.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.dir / node.name}" }}\n'
            f"cluster {{ name: lockers, host: {HOST}, port: {node.cluster_port},"
            f" routes: [{routes}] }}\n"
            f"mqtt {{ host: {HOST}, port: {node.mqtt_port}, stream_replicas: 3 }}\n"
        )
        return path

    def _spawn(self, node: NatsNode) -> None:
        log = (self.dir / f"{node.name}.log").open("ab")
        node.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self._config(node))], stdout=log, stderr=subprocess.STDOUT
        )

    def start(self) -> NatsCluster:
        for node in self.nodes:
            self._spawn(node)
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        """Every running node answers MQTT and says JetStream is healthy (meta leader elected,
        its streams current)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.nodes:
            if not node.running:
                continue
            wait_for_port(HOST, node.mqtt_port, READY_TIMEOUT_S)
            while not self._healthy(node):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"NATS node {node.name} not healthy:\n{self.log(node)}")
                time.sleep(0.2)

    @staticmethod
    def _healthy(node: NatsNode) -> bool:
        url = f"http://{HOST}:{node.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self, name: str) -> None:
        """The node dies: no goodbye to its clients or its routes."""
        node = self.node(name)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        node.proc = None

    def log(self, node: NatsNode) -> str:
        path = self.dir / f"{node.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
                node.proc = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
