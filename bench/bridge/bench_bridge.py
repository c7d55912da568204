"""Bridge latency and memory, against a 48-compartment simulated bank on a real pty.

    /work/venv/bin/python bench/bridge/bench_bridge.py [--samples 200] [--baud 115200]

Measures, in one run and on the same machine:
- unlock: a `cmd` published at the broker -> the UNLOCK frame (with the report flag, whose
  answer carries the latch: docs/adr/0024) on the wire -> the `succeeded` reply at the
  publisher; with the bridge polling every 150 ms and every 1 s, and against a board of
  protocol revision 1, which the bridge still asks with a STATUS after the UNLOCK;
- the floor, on the same pty against the same simulator, with no bridge and no broker: a bare
  board client doing the UNLOCK exchange on an idle line, and a bare poller that polls the bank
  in the bridge's pages at the bridge's period and serves unlocks between pages as the bridge
  does. Unlocks reach the bridge and the poller after the same pauses, spread over a poll
  period, so both meet a STATUS page already on the wire equally often (stop-and-wait cannot
  cut a page short: at p99 a command has waited out most of one);
- the wire time of the exchange and of one page at the configured baud: the simulator hands
  answers over at the baud rate's pace, so the floor already contains them;
- scan: a line typed by the scanner -> its `scan` event at a subscriber of the broker, beside
  one MQTT publish -> receive through the same broker;
- the resident memory of the bridge process (its own process, 48 compartments, after the run);
- TCP_NODELAY before and after: the unlock again with the bridge's broker socket left with
  Nagle's algorithm on, and the unlock as the service sends it (`locker_service.kiosk_link`,
  its real MQTT link) with and without TCP_NODELAY on the service's sockets.

Bridge overhead = the bridge's p50 (p99) minus the bare poller's p50 (p99) at the same poll
period: the two broker hops, the request cache, the tracker and the threads. The goal is a
p99 under 5 ms at 115200 baud; the p99 above the worst wire time (one page, then the exchange)
is printed too.

Figures (115200 baud, 500 samples, a shared two-core machine at load 1.5-2, 2026-11-26):
bridge polling 150 ms p50 7.3 / p99 16.8 ms against the bare poller's 4.9 / 14.0 ms: overhead
p50 2.3, p99 2.8 ms (goal < 5 ms; runs of 200 samples gave 2.7 and 3.4); 4.4 ms above the worst
wire time of 12.4 ms. Polling every 1 s: 5.9 / 12.7 ms against 4.5 / 12.4 ms. The same bridge
with a revision 1 board (UNLOCK + STATUS): 9.6 / 18.8 ms. Scan p50 1.3 / p99 6.7 ms (one broker
hop 0.2 / 0.7 ms); memory 40.8 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
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

from firmware_bridge import contract  # noqa: E402
from firmware_bridge.board import BoardClient  # noqa: E402
from firmware_bridge.bridge import status_page_size  # noqa: E402
from firmware_bridge.contract import client as mqtt_setup  # noqa: E402
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
    PROTOCOL_REVISION,
    CompartmentFlags,
    StatusAnswer,
    StatusRequest,
    UnlockAnswer,
    UnlockRequest,
    wire_time_s,
)
from hardware.simulator import Simulator  # noqa: E402
from locker_service.kiosk_link import KioskLink  # noqa: E402
from locker_service.live import LiveHub  # noqa: E402
from tests.firmware_bridge.harness import IgnoringHandler, ServiceLinkSettings  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402

COMPARTMENTS = 48
# The bridge as `python -m firmware_bridge`, with its broker socket left as paho makes it.
BRIDGE_WITH_NAGLE = (
    "import firmware_bridge.contract.client as c; c.no_delay = lambda sock: None; "
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


def run_simulator(
    pty_dir: Path, baud: int, conn: Connection, protocol: int = PROTOCOL_REVISION
) -> None:
    """The simulated bank, in its own process: ptys out, scan texts in, None to stop."""
    with Simulator(
        compartments=COMPARTMENTS, seed=3, time_scale=1.0, baud=baud, protocol=protocol
    ) as sim:
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
    built_in = mqtt_setup.no_delay
    if not nodelay:
        mqtt_setup.no_delay = lambda sock: None

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
        mqtt_setup.no_delay = built_in


def status_answer(first: int, count: int) -> StatusAnswer:
    records = tuple(
        CompartmentStatus(n, CompartmentFlags(0), 220, None, 0, FaultCode.NONE, 0, 0)
        for n in range(first, first + count)
    )
    return StatusAnswer(1, BoardFlags(0), records)


def wire_bytes(*frames: Frame) -> int:
    return sum(len(encode_frame(f)) for f in frames)


def unlock_wire_bytes() -> int:
    """The bridge's unlock on a revision 2 board: UNLOCK with report, answer with the state."""
    return wire_bytes(
        Frame(1, FrameType.REQ, 1, Command.UNLOCK, UnlockRequest(1, 500, report=True).pack()),
        Frame(
            1, FrameType.RESP, 1, Command.UNLOCK, UnlockAnswer(1, 500, status_answer(1, 1)).pack()
        ),
    )


def first_edition_wire_bytes() -> int:
    """The unlock on a revision 1 board: UNLOCK, then a one-record STATUS."""
    return wire_bytes(
        Frame(1, FrameType.REQ, 1, Command.UNLOCK, UnlockRequest(1, 500).pack()),
        Frame(1, FrameType.RESP, 1, Command.UNLOCK, UnlockAnswer(1, 500).pack()),
        Frame(1, FrameType.REQ, 2, Command.STATUS, StatusRequest(1, 1).pack()),
        Frame(1, FrameType.RESP, 2, Command.STATUS, status_answer(1, 1).pack()),
    )


def page_wire_bytes(page: int) -> int:
    """One STATUS page of the poll, request and answer."""
    return wire_bytes(
        Frame(1, FrameType.REQ, 1, Command.STATUS, StatusRequest(1, page).pack()),
        Frame(1, FrameType.RESP, 1, Command.STATUS, status_answer(1, page).pack()),
    )


def unlock_pauses(samples: int) -> list[float]:
    """Pauses between unlocks, the same for every run: spread over a poll period of 150 ms, so
    commands arrive at every point of the poll cycle (a fixed pause locks them to one phase of
    it, and the phase then differs between runs whose replies take different times)."""
    rng = random.Random(2026)
    return [rng.uniform(0.01, 0.16) for _ in range(samples)]


def bare_unlocks(board_path: str, baud: int, samples: int) -> list[float]:
    """The bridge's unlock exchange by a bare board client on the same pty, line idle."""
    transport = SerialTransport(board_path, baud)
    transport.open()
    client = BoardClient(transport, 1, answer_margin_s=0.2)
    client.hello()
    taken: list[float] = []
    try:
        for i in range(samples):
            t0 = time.perf_counter()
            client.unlock(i % COMPARTMENTS + 1, 500, report=True)
            taken.append(time.perf_counter() - t0)
            time.sleep(0.005)
    finally:
        transport.close()
    return taken


def bare_poller_unlocks(
    board_path: str, baud: int, samples: int, poll_period_s: float
) -> list[float]:
    """The floor of a polling master: a bare board client polls the bank in the bridge's pages
    at the bridge's period and serves unlocks between pages, as the bridge does; unlocks
    arrive after the same pauses as those sent to the bridge. No broker, request cache or
    tracker: what is left is the wire, the simulator, stop-and-wait and a thread handing over
    a command. Timed from the hand-over to the UNLOCK answer."""
    transport = SerialTransport(board_path, baud)
    transport.open()
    client = BoardClient(transport, 1, answer_margin_s=0.2)
    compartments = client.hello().compartment_count
    page = status_page_size(baud)
    commands: queue.Queue[tuple[int, float] | None] = queue.Queue()
    pauses = unlock_pauses(samples)
    taken: list[float] = []
    done = threading.Event()

    def serve(deadline: float) -> bool:
        """Unlock as commands come until `deadline`; False once told to stop."""
        while True:
            try:
                item = commands.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return True
            if item is None:
                return False
            n, t0 = item
            client.unlock(n, 500, report=True)
            taken.append(time.perf_counter() - t0)
            done.set()

    def poll_loop() -> None:
        next_poll = time.monotonic()
        while serve(next_poll):
            next_poll = time.monotonic() + poll_period_s
            for first in range(1, compartments + 1, page):
                client.status(first, min(page, compartments - first + 1))
                if not serve(0.0):
                    return

    poller = threading.Thread(target=poll_loop, daemon=True)
    poller.start()
    try:
        for i in range(samples):
            done.clear()
            commands.put((i % COMPARTMENTS + 1, time.perf_counter()))
            if not done.wait(5.0):
                raise SystemExit("the bare poller's unlock went unanswered")
            time.sleep(pauses.pop())
    finally:
        commands.put(None)
        poller.join(5.0)
        transport.close()
    return taken


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

    def start_simulator(
        name: str, protocol: int
    ) -> tuple[multiprocessing.process.BaseProcess, Connection, str, str]:
        # In a process of its own: its physics would otherwise hold this process's GIL and
        # delay the timestamps taken here.
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=run_simulator, args=(work / name, args.baud, theirs, protocol), daemon=True
        )
        process.start()
        board, scanner = ours.recv()
        return process, ours, board, scanner

    sim_process, ours, board_path, scanner_path = start_simulator("dev", PROTOCOL_REVISION)
    sim = RemoteScanner(ours)
    kiosk_id = f"bench{uuid.uuid4().hex[:8]}"
    topics = contract.Topics(kiosk_id)
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

    def start_bridge(
        poll_period_s: float, nagle: bool = False, **more_env: str
    ) -> subprocess.Popen[bytes]:
        command = ["-c", BRIDGE_WITH_NAGLE] if nagle else ["-m", "firmware_bridge"]
        return subprocess.Popen(
            [sys.executable, *command],
            env={**env, "BRIDGE_POLL_PERIOD_S": str(poll_period_s), **more_env},
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

    def wait_up(bridge: subprocess.Popen[bytes], scanner: RemoteScanner = sim) -> None:
        """The bridge's first scan event says it is up on both sides."""
        deadline = time.monotonic() + 30
        while True:
            tag = f"warmup-{uuid.uuid4().hex[:6]}"
            scanner.world.scan(tag)
            try:
                events.wait(tag, 1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline or bridge.poll() is not None:
                    raise SystemExit("the bridge did not come up; see " + str(work)) from None

    def measure_unlocks(tag: str) -> list[float]:
        samples: list[float] = []
        pauses = unlock_pauses(args.samples)
        for i in range(args.samples):
            cmd = contract.UnlockCommand(
                request_id=f"{tag}{i}",
                compartment=i % COMPARTMENTS + 1,
                expires_at=contract.utcnow() + timedelta(seconds=30),
                reply_to=reply_to,
            )
            payload = cmd.to_json()
            t0 = time.perf_counter()
            publisher.publish(topics.cmd, payload, qos=1)
            samples.append(replies.wait(cmd.request_id) - t0)
            time.sleep(pauses.pop())
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
    # A board of the first edition (protocol revision 1): the unlock is UNLOCK, then a STATUS.
    old_process, old_conn, old_board, old_scanner = start_simulator("dev-r1", 1)
    bridge = start_bridge(
        0.15,
        BRIDGE_BOARD_URL=old_board,
        BRIDGE_SCANNER_URL=old_scanner,
        BRIDGE_DATA_DIR=str(work / "data-r1"),
    )
    try:
        wait_up(bridge, RemoteScanner(old_conn))
        first_edition_s = measure_unlocks("r")
    finally:
        bridge.terminate()
        bridge.wait(10)
        old_conn.send(None)
        old_process.join(10)
        for sub in (events, replies, probe):
            sub.stop()
        publisher.loop_stop()

    # The floor: the same serial work by a bare client on the same pty, the bridge gone.
    alone_s = bare_unlocks(board_path, args.baud, args.samples)
    poller_s = bare_poller_unlocks(board_path, args.baud, args.samples, 0.15)
    quiet_poller_s = bare_poller_unlocks(board_path, args.baud, args.samples, 1.0)
    ours.send(None)
    sim_process.join(10)
    broker.__exit__(None, None, None)

    page = status_page_size(args.baud)
    unlock_wire_s = wire_time_s(unlock_wire_bytes(), args.baud)
    page_wire_s = wire_time_s(page_wire_bytes(page), args.baud)
    scan_floor_s = wire_time_s(len("scan-100\r\n"), 9600)
    print(
        f"bridge bench: {COMPARTMENTS} compartments, {args.samples} samples, {args.baud} baud, "
        f"broker set_tcp_nodelay {'off' if args.broker_nagle else 'on'}"
    )
    print("measured: cmd unlock at the broker -> succeeded at the publisher")
    print(line("bridge, polling every 150 ms", unlock_s))
    print(line("bridge, polling every 1 s", quiet_s))
    print(line("bridge, revision 1 board (UNLOCK + STATUS), 150 ms", first_edition_s))
    print("floor: same run, same simulator and pty, a bare board client, no bridge, no broker")
    print(line("UNLOCK with report, line idle", alone_s))
    print(line("polling every 150 ms, unlock between pages", poller_s))
    print(line("polling every 1 s, unlock between pages", quiet_poller_s))
    print(
        f"  wire time at {args.baud} baud: the UNLOCK exchange {unlock_wire_bytes()} bytes "
        f"{unlock_wire_s * 1000:.2f} ms (revision 1, UNLOCK + STATUS: "
        f"{wire_time_s(first_edition_wire_bytes(), args.baud) * 1000:.2f} ms); "
        f"a {page}-record poll page {page_wire_s * 1000:.2f} ms, which a command arriving "
        f"during it waits out: {(unlock_wire_s + page_wire_s) * 1000:.2f} ms at worst"
    )
    for name, samples, floor in (
        ("polling 150 ms", unlock_s, poller_s),
        ("polling 1 s", quiet_s, quiet_poller_s),
    ):
        print(
            f"bridge overhead, unlock, {name}: "
            f"p50 {(pct(samples, 50) - pct(floor, 50)) * 1000:.2f} ms, "
            f"p99 {(pct(samples, 99) - pct(floor, 99)) * 1000:.2f} ms above the bare poller "
            f"(goal: p99 < 5 ms); p99 {(pct(samples, 99) - unlock_wire_s - page_wire_s) * 1000:.2f}"
            f" ms above the worst wire time"
        )
    print("baselines (same run, no bridge in the path)")
    print(line("MQTT publish -> receive (one broker hop)", mqtt_s))
    print(line("scan line -> scan event at subscriber", scan_s))
    print(f"  wire time of a scanner line at 9600 baud: {scan_floor_s * 1000:.2f} ms")
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
