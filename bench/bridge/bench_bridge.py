"""Bridge latency and memory, against a 48-compartment simulated bank on a real pty.

    /work/venv/bin/python bench/bridge/bench_bridge.py [--samples 200] [--baud 115200]

Measures, in one run and on the same machine:
- scan: a line typed by the scanner -> its `scan` event at a subscriber of the broker;
- unlock: a `cmd` published at the broker -> UNLOCK and STATUS frames on the wire -> the
  `succeeded` reply at the publisher;
- baselines without the bridge: an MQTT publish -> receive through the same broker (a command
  path crosses it twice, a scan once), and the same UNLOCK + STATUS exchange done directly over
  the pty by the board client (serial path);
- the wire time of that exchange at the configured baud: the floor of any line. The simulator
  hands answers over at the baud rate's pace, so the serial baseline already contains it;
- the resident memory of the bridge process (its own process, 48 compartments, after the run);
- TCP_NODELAY before and after: the unlock again with the bridge's broker socket left with
  Nagle's algorithm on, and the unlock as the service sends it (`locker_service.kiosk_link`,
  its real MQTT link) with and without TCP_NODELAY on the service's sockets.

Bridge overhead at p50 = unlock p50 - (2 x MQTT baseline + serial baseline) p50: what the bridge
itself adds. Percentiles do not subtract, so at p99 the whole round trip is printed as an upper
bound of the overhead. The goal is under 5 ms at p99 above the wire time at 115200 baud.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from firmware_bridge import wire  # noqa: E402
from firmware_bridge.board import BoardClient  # noqa: E402
from firmware_bridge.bridge import status_page_size  # noqa: E402
from firmware_bridge.transport import SerialTransport  # noqa: E402
from hardware.protocol import (  # noqa: E402
    BoardFlags,
    Command,
    CompartmentStatus,
    FaultCode,
    Frame,
    FrameType,
    encode_frame,
)
from hardware.protocol.messages import (  # noqa: E402
    CompartmentFlags,
    StatusAnswer,
    StatusRequest,
    UnlockAnswer,
    UnlockRequest,
    wire_time_s,
)
from hardware.simulator import Simulator  # noqa: E402
from locker_service.kiosk_link import KioskLink  # noqa: E402
from locker_service.kiosk_link import link as kiosk_link_module  # noqa: E402
from locker_service.live import LiveHub  # noqa: E402
from tests.firmware_bridge.harness import IgnoringHandler, ServiceLinkSettings  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402

COMPARTMENTS = 48
# The bridge as `python -m firmware_bridge`, with its broker socket left as paho makes it.
BRIDGE_WITH_NAGLE = (
    "import firmware_bridge.mqtt as m; m._no_delay = lambda sock: None; "
    "from firmware_bridge.__main__ import main; main()"
)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, samples_s: list[float]) -> str:
    ms = [v * 1000 for v in samples_s]
    return (
        f"  {name:<44} p50 {pct(ms, 50):7.2f} ms   p99 {pct(ms, 99):7.2f} ms   "
        f"mean {statistics.fmean(ms):6.2f} ms   n={len(ms)}"
    )


class Subscriber:
    """Records the arrival time of every message, keyed by a field of its JSON payload."""

    def __init__(self, broker: MosquittoProcess, topics: list[str], key: str) -> None:
        self.arrived: dict[str, float] = {}
        self.key = key
        self.cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        value = payload.get(self.key) if isinstance(payload, dict) else None
        if isinstance(payload, dict) and payload.get("status") in ("accepted", "in_progress"):
            return
        if isinstance(value, dict):
            value = value.get("text")
        if value is not None:
            with self.cond:
                self.arrived[str(value)] = now
                self.cond.notify_all()

    def wait(self, key: str, timeout_s: float = 5.0) -> float:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while key not in self.arrived:
                if time.monotonic() > deadline:
                    raise TimeoutError(key)
                self.cond.wait(0.05)
            return self.arrived[key]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_simulator(pty_dir: Path, baud: int, conn: Connection) -> None:
    """The simulated bank, in its own process: ptys out, scan texts in, None to stop."""
    with Simulator(compartments=COMPARTMENTS, seed=3, time_scale=1.0, baud=baud) as sim:
        conn.send(sim.open_pty(pty_dir))
        while (text := conn.recv()) is not None:
            sim.world.scan(text)


class RemoteScanner:
    """`sim.world.scan(text)` for the simulator in the other process."""

    def __init__(self, conn: Connection) -> None:
        self.world = self
        self._conn = conn

    def scan(self, text: str) -> None:
        self._conn.send(text)


def service_unlocks(broker_url: str, kiosk_id: str, samples: int, nodelay: bool) -> list[float]:
    """`KioskLink.command("unlock")` -> final reply, as the service sends it, timed."""
    built_in = kiosk_link_module._no_delay
    if not nodelay:
        kiosk_link_module._no_delay = lambda client, userdata, sock: None

    async def run() -> list[float]:
        link = KioskLink(
            ServiceLinkSettings(broker_url, replica_id=f"bench{uuid.uuid4().hex[:6]}"),
            IgnoringHandler(),
            LiveHub(),
        )
        await link.start()
        try:
            deadline = time.monotonic() + 10
            while not (status := link.kiosk_status(kiosk_id)) or not status.board_online:
                if time.monotonic() > deadline:
                    raise SystemExit("the service link never saw the kiosk online")
                await asyncio.sleep(0.05)
            taken: list[float] = []
            for i in range(samples):
                t0 = time.perf_counter()
                reply = await link.command(kiosk_id, "unlock", i % COMPARTMENTS + 1, {}, 5.0)
                taken.append(time.perf_counter() - t0)
                if reply.status != "succeeded":
                    raise SystemExit(f"unlock {i}: {reply.status} {reply.detail}")
                await asyncio.sleep(0.01)
            return taken
        finally:
            await link.stop()

    try:
        return asyncio.run(run())
    finally:
        kiosk_link_module._no_delay = built_in


def exchange_wire_bytes() -> int:
    """Bytes on the wire for UNLOCK request + answer and a one-record STATUS request + answer."""
    record = CompartmentStatus(1, CompartmentFlags(0), 220, None, 0, FaultCode.NONE, 0, 0)
    frames = [
        Frame(1, FrameType.REQ, 1, Command.UNLOCK, UnlockRequest(1, 500).pack()),
        Frame(1, FrameType.RESP, 1, Command.UNLOCK, UnlockAnswer(1, 500).pack()),
        Frame(1, FrameType.REQ, 2, Command.STATUS, StatusRequest(1, 1).pack()),
        Frame(
            1, FrameType.RESP, 2, Command.STATUS, StatusAnswer(1, BoardFlags(0), (record,)).pack()
        ),
    ]
    return sum(len(encode_frame(f)) for f in frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument(
        "--broker-nagle", action="store_true", help="leave Mosquitto's set_tcp_nodelay off"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    # Without set_tcp_nodelay Mosquitto holds a command behind its own unacknowledged PUBACKs
    # until the kiosk's delayed ACK (~40 ms); docs/adr/0022 has the measurement.
    nodelay = "" if args.broker_nagle else "set_tcp_nodelay true\n"
    broker = MosquittoProcess(extra_config=nodelay).start()
    # The simulator runs in a process of its own: its physics would otherwise hold this
    # process's GIL and delay the timestamps taken here.
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    sim_process = multiprocessing.get_context("spawn").Process(
        target=run_simulator, args=(work / "dev", args.baud, theirs), daemon=True
    )
    sim_process.start()
    board_path, scanner_path = ours.recv()
    sim = RemoteScanner(ours)
    kiosk_id = f"bench{uuid.uuid4().hex[:8]}"
    topics = wire.Topics(kiosk_id)
    reply_to = f"bench/replies/{kiosk_id}"
    env = {
        **os.environ,
        "BRIDGE_KIOSK_ID": kiosk_id,
        "BRIDGE_BROKER_URL": broker.url,
        "BRIDGE_BOARD_URL": board_path,
        "BRIDGE_SCANNER_URL": scanner_path,
        "BRIDGE_BAUD": str(args.baud),
        "BRIDGE_DATA_DIR": str(work / "data"),
        "BRIDGE_TELEMETRY_PERIOD_S": "10",
    }

    def start_bridge(poll_period_s: float, nagle: bool = False) -> subprocess.Popen[bytes]:
        command = ["-c", BRIDGE_WITH_NAGLE] if nagle else ["-m", "firmware_bridge"]
        return subprocess.Popen(
            [sys.executable, *command],
            env={**env, "BRIDGE_POLL_PERIOD_S": str(poll_period_s)},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=(work / "bridge.log").open("ab"),
        )

    events = Subscriber(broker, [topics.events], "data")
    replies = Subscriber(broker, [reply_to], "request_id")
    probe = Subscriber(broker, ["bench/probe"], "probe")
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()

    def wait_up(bridge: subprocess.Popen[bytes]) -> None:
        """The bridge's first scan event says it is up on both sides."""
        deadline = time.monotonic() + 30
        while True:
            tag = f"warmup-{uuid.uuid4().hex[:6]}"
            sim.world.scan(tag)
            try:
                events.wait(tag, 1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline or bridge.poll() is not None:
                    raise SystemExit("the bridge did not come up; see " + str(work)) from None

    def measure_unlocks(tag: str) -> list[float]:
        samples: list[float] = []
        for i in range(args.samples):
            cmd = wire.Command(
                request_id=f"{tag}{i}",
                action="unlock",
                compartment=i % COMPARTMENTS + 1,
                expires_at=wire.utcnow() + timedelta(seconds=30),
                reply_to=reply_to,
            )
            payload = cmd.to_json()
            t0 = time.perf_counter()
            publisher.publish(topics.cmd, payload, qos=1)
            samples.append(replies.wait(cmd.request_id) - t0)
            time.sleep(0.01)
        return samples

    bridge = start_bridge(0.15)
    try:
        wait_up(bridge)
        scan_s: list[float] = []
        for i in range(args.samples):
            text = f"scan-{i}"
            t0 = time.perf_counter()
            sim.world.scan(text)
            scan_s.append(events.wait(text) - t0)
            time.sleep(0.01)
        unlock_s = measure_unlocks("u")
        rss_mb = psutil.Process(bridge.pid).memory_info().rss / 2**20
        service_s = service_unlocks(broker.url, kiosk_id, args.samples, nodelay=True)
        service_nagle_s = service_unlocks(broker.url, kiosk_id, args.samples, nodelay=False)
    finally:
        bridge.terminate()
        bridge.wait(10)
    # Before TCP_NODELAY: the bridge's broker socket, then both sides, with Nagle on.
    bridge = start_bridge(0.15, nagle=True)
    try:
        wait_up(bridge)
        bridge_nagle_s = measure_unlocks("n")
        both_nagle_s = service_unlocks(broker.url, kiosk_id, args.samples, nodelay=False)
    finally:
        bridge.terminate()
        bridge.wait(10)
    # The same again with the line mostly idle: a poll a second instead of every 150 ms, so
    # a command seldom waits behind a STATUS page already on the wire.
    bridge = start_bridge(1.0)
    try:
        wait_up(bridge)
        quiet_s = measure_unlocks("q")
        mqtt_s: list[float] = []
        for i in range(args.samples):
            t0 = time.perf_counter()
            publisher.publish("bench/probe", f'{{"probe": "p{i}"}}', qos=1)
            mqtt_s.append(probe.wait(f"p{i}") - t0)
            time.sleep(0.005)
    finally:
        bridge.terminate()
        bridge.wait(10)
        for sub in (events, replies, probe):
            sub.stop()
        publisher.loop_stop()

    # Serial baseline: the same exchange by the board client alone, the bridge gone.
    transport = SerialTransport(board_path, args.baud)
    transport.open()
    client = BoardClient(transport, 1, answer_margin_s=0.2)
    client.hello()
    serial_s: list[float] = []
    for i in range(args.samples):
        n = i % COMPARTMENTS + 1
        t0 = time.perf_counter()
        client.unlock(n, 500)
        client.status(n, 1)
        serial_s.append(time.perf_counter() - t0)
        time.sleep(0.005)
    transport.close()
    ours.send(None)
    sim_process.join(10)
    broker.__exit__(None, None, None)

    wire_bytes = exchange_wire_bytes()
    floor_s = wire_time_s(wire_bytes, args.baud)
    scan_floor_s = wire_time_s(len("scan-100\r\n"), 9600)
    print(
        f"bridge bench: {COMPARTMENTS} compartments, {args.samples} samples, {args.baud} baud, "
        f"broker set_tcp_nodelay {'off' if args.broker_nagle else 'on'}"
    )
    print("measured")
    print(line("scan line -> scan event at subscriber", scan_s))
    print(line("cmd unlock -> succeeded, polling every 150 ms", unlock_s))
    print(line("cmd unlock -> succeeded, polling every 1 s", quiet_s))
    print("baselines (same run, no bridge in the path)")
    print(line("MQTT publish -> receive (one broker hop)", mqtt_s))
    print(line("serial UNLOCK + STATUS(1) by the board client", serial_s))
    print("floors")
    print(
        f"  wire time of UNLOCK+STATUS exchange ({wire_bytes} bytes at {args.baud}): "
        f"{floor_s * 1000:.2f} ms (inside the serial baseline: the simulator paces answers)"
    )
    print(f"  wire time of a scanner line at 9600 baud: {scan_floor_s * 1000:.2f} ms")
    page = status_page_size(args.baud)
    page_s = wire_time_s(16 + 10 * page + 8, args.baud)
    print(f"  one STATUS page in flight ({page} records): {page_s * 1000:.2f} ms on the wire")
    base_p50 = 2 * pct(mqtt_s, 50) + pct(serial_s, 50)
    for name, samples in (("polling 150 ms", unlock_s), ("polling 1 s", quiet_s)):
        print(
            f"bridge overhead, unlock, {name}: p50 {(pct(samples, 50) - base_p50) * 1000:.2f} ms "
            f"above the baselines; p99 round trip {pct(samples, 99) * 1000:.2f} ms against "
            f"{(floor_s + page_s) * 1000:.2f} ms of wire (exchange + one page in flight)"
        )
    print(
        f"bridge overhead, scan: p50 {(pct(scan_s, 50) - pct(mqtt_s, 50)) * 1000:.2f} ms above "
        f"one broker hop; p99 {pct(scan_s, 99) * 1000:.2f} ms end to end"
    )
    print(f"bridge resident memory, {COMPARTMENTS} compartments: {rss_mb:.1f} MB (goal < 60 MB)")
    print("TCP_NODELAY on the MQTT sockets, polling every 150 ms")
    print(line("plain paho publisher -> bridge NODELAY", unlock_s))
    print(line("plain paho publisher -> bridge with Nagle", bridge_nagle_s))
    print(line("service link NODELAY -> bridge NODELAY", service_s))
    print(line("service link with Nagle -> bridge NODELAY", service_nagle_s))
    print(line("service link with Nagle -> bridge with Nagle", both_nagle_s))


if __name__ == "__main__":
    main()
