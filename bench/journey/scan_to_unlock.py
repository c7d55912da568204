"""Scan to unlock, end to end, on Mosquitto + PostgreSQL at 115200 baud.

What is timed: from the purchaser's QR line arriving at the bridge (the simulated scanner writes
it to the bridge's scanner pty) to the lock released at the board (the simulated board executes
the UNLOCK). Between the two: the bridge publishes the scan event, the service checks the code
in PostgreSQL and commands the unlock, the bridge sends the UNLOCK frame on the board line.

Floors, measured in the same run on the same machine:
- a bare MQTT round trip on the same Mosquitto (paho publish -> echo client -> back), QoS 1;
  the path above needs two one-way hops, one round trip's worth;
- a bare UNLOCK round trip on the board line: a serial port at 115200 to a second simulated
  board, answer paced at the baud rate; and the computed wire time of the UNLOCK frames.

Also printed, to tell where the time goes: the service's own means from its /metrics, a scan's
wait in the kiosk link and its decision (one transaction, ADR 0043).

Run from the repository root (needs mosquitto and the PostgreSQL of LOCKER_BENCH_PG_URL):

    python bench/journey/scan_to_unlock.py [--rounds 4]

Prints the table; nothing is asserted (goal: p99 under 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as mqtt
import serial
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from hardware.protocol import Frame, FrameDecoder, FrameType, encode_frame
from hardware.protocol.messages import Command, UnlockAnswer, UnlockRequest, wire_time_s
from hardware.simulator import Simulator
from locker_service.stack.demo import ensure_demo_data
from migrations import upgrade_async

PG_ADMIN_URL = os.environ.get("LOCKER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BAUD = 115200
# A 30-minute disinfection in 15 s; faster would leave a courier's hands (HAND_PAUSE_S) slower
# than the service's drop-off door timeout (300 s nominal).
TIME_SCALE = 120.0
COMPARTMENTS = 12
MQTT_ROUND_TRIPS = 300
BOARD_ROUND_TRIPS = 300
HAND_PAUSE_S = 0.4  # doors and food move slower than two board polls
READY_WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout_s: float, what: str, step_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout_s} s")
        time.sleep(step_s)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"{name:<44} {len(ms):>5} {pct(ms, 50):>8.2f} {pct(ms, 99):>8.2f} "
        f"{statistics.fmean(ms):>8.2f}"
    )


# ---- the parts


class Mosquitto:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # As docs/deploy/mosquitto/mosquitto.conf: without it, Nagle's algorithm holds
            # small packets back for the peer's delayed ACK (about 40 ms a hop).
            "set_tcp_nodelay true\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_until(lambda: _listening(self.port), 10, "mosquitto")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def _pg_admin(statement: str) -> None:
    url = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def mqtt_round_trips(port: int, count: int, nodelay: bool) -> list[float]:
    """QoS 1 publish -> an echo client republishes -> back at the sender. paho leaves Nagle's
    algorithm on; `nodelay` switches it off on both clients' sockets, as a tuned client would."""
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    got = threading.Event()

    def client(name: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{name}")
        c.connect("127.0.0.1", port)
        sock = c.socket()
        if nodelay and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
        return c

    echo, probe = client("echo"), client("probe")
    echo.on_message = lambda c, _u, m: c.publish(f"{prefix}/back", m.payload, qos=1)
    probe.on_message = lambda _c, _u, _m: got.set()
    echo.subscribe(f"{prefix}/out", qos=1)
    probe.subscribe(f"{prefix}/back", qos=1)
    time.sleep(0.5)
    samples = []
    for i in range(count + 10):
        got.clear()
        t0 = time.perf_counter()
        probe.publish(f"{prefix}/out", str(i).encode(), qos=1)
        if not got.wait(5):
            raise TimeoutError("MQTT echo lost")
        if i >= 10:  # warm-up
            samples.append((time.perf_counter() - t0) * 1000)
    for c in (echo, probe):
        c.loop_stop()
        c.disconnect()
    return samples


def board_round_trips(count: int) -> list[float]:
    """UNLOCK request -> answer on a pty at 115200 with a simulated board, bare."""
    sim = Simulator(compartments=COMPARTMENTS, time_scale=1.0, baud=BAUD, name="bench-floor")
    sim.start()
    try:
        board_path, _ = sim.open_pty()
        port = serial.Serial(board_path, BAUD, timeout=1.0)
        decoder = FrameDecoder()
        samples = []
        for i in range(count + 10):
            payload = UnlockRequest(compartment=1 + i % COMPARTMENTS, pulse_ms=100).pack()
            frame = Frame(1, FrameType.REQ, i % 256, Command.UNLOCK, payload)
            t0 = time.perf_counter()
            port.write(encode_frame(frame))
            answer = None
            while answer is None:
                data = port.read(port.in_waiting or 1)
                if not data:
                    raise TimeoutError("board did not answer")
                for decoded in decoder.feed(data):
                    answer = decoded
            if i >= 10:
                samples.append((time.perf_counter() - t0) * 1000)
            sim.world.close_door(1 + i % COMPARTMENTS)  # latch it again for the next pulse
        port.close()
        return samples
    finally:
        sim.stop()


def unlock_wire_ms() -> float:
    request = Frame(1, FrameType.REQ, 0, Command.UNLOCK, UnlockRequest(1, 500).pack())
    answer = Frame(1, FrameType.RESP, 0, Command.UNLOCK, UnlockAnswer(1, 500).pack())
    return wire_time_s(len(encode_frame(request)) + len(encode_frame(answer)), BAUD) * 1000


# ---- the system


class System:
    """PostgreSQL database, service and bridge as processes, the board simulated in-process."""

    def __init__(self, broker_url: str) -> None:
        self.db_name = f"locker_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{self.db_name}"'))
        self.database_url = (
            make_url(PG_ADMIN_URL)
            .set(drivername="postgresql+asyncpg", database=self.db_name)
            .render_as_string(hide_password=False)
        )
        self.dir = Path(tempfile.mkdtemp(prefix="bench-journey-"))
        self.secret = uuid.uuid4().hex * 2
        asyncio.run(upgrade_async(self.database_url))
        self.creds = asyncio.run(
            ensure_demo_data(self.dir, self.database_url, self.secret, compartments=COMPARTMENTS)
        )
        self.sim = Simulator(
            compartments=COMPARTMENTS, time_scale=TIME_SCALE, baud=BAUD, name="bench"
        )
        self.sim.start()
        board_path, scanner_path = self.sim.open_pty()
        # The moment the board executes an UNLOCK, per compartment.
        self.released_at: dict[int, float] = {}
        pulse = self.sim.model.pulse_lock

        def timed_pulse(n: int, pulse_ms: int) -> None:
            self.released_at[n] = time.perf_counter()
            pulse(n, pulse_ms)

        self.sim.model.pulse_lock = timed_pulse  # type: ignore[method-assign]
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOCKER_TIME_SCALE": f"{TIME_SCALE:g}",
            "LOCKER_DATABASE_URL": self.database_url,
            "LOCKER_SECRET_KEY": self.secret,
            "LOCKER_MQTT_URL": broker_url,
            "LOCKER_PORT": str(self.port),
            "LOCKER_NOTIFY_CONTACT_SCHEMES": "json",  # orders name a json:// sink on this host
            "LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        ctl = [sys.executable, "-m", "locker_service"]
        self.logs = [open(self.dir / n, "w") for n in ("service.log", "bridge.log")]  # noqa: SIM115
        self.service = subprocess.Popen(
            [*ctl, "serve", "--log-level", "warning"],
            env=env,
            stdout=self.logs[0],
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _listening(self.port), 120, "the service")
        self.bridge = subprocess.Popen(
            [
                *ctl,
                "bridge",
                "--kiosk-id",
                self.creds.kiosks[0].code,
                "--broker-url",
                broker_url,
                "--board-url",
                board_path,
                "--scanner-url",
                scanner_path,
                "--baud",
                str(BAUD),
                "--data-dir",
                str(self.dir / "bridge"),
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=self.logs[1],
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        wait_until(self._kiosk_online, 60, "the kiosk online", step_s=0.2)

    def _kiosk_online(self) -> bool:
        sites = self.http.get(
            "/api/v1/operator/sites",
            headers={"Authorization": f"Bearer {self.creds.operator_token}"},
        ).json()
        return bool(sites[0]["kiosks"][0]["online"])

    def _order_state(self, order_id: str) -> str:
        r = self.http.get(
            f"/api/v1/orders/{order_id}", headers={"X-API-Key": self.creds.merchant_api_key}
        )
        return str(r.json()["state"])

    def round(self) -> list[float]:
        """Fill every compartment, wait for the orders to be ready, then time each scan."""
        world = self.sim.world
        placed: list[tuple[str, str, int]] = []  # order id, token, compartment
        for size in ["S"] * 3 + ["M"] * 6 + ["L"] * 3:
            ref = f"bench-{uuid.uuid4().hex[:10]}"
            created = self.http.post(
                "/api/v1/orders",
                json={
                    "external_ref": ref,
                    "site": self.creds.site_code,
                    "purchaser_name": "Bench",
                    "purchaser_contact": "json://127.0.0.1:9/",
                    "size": size,
                },
                headers={"X-API-Key": self.creds.merchant_api_key},
            ).json()
            dropped = self.http.post(
                "/api/v1/kiosk/dropoff",
                json={
                    "courier_code": self.creds.courier_code,
                    "pin": self.creds.courier_pin,
                    "order_ref": ref,
                },
                headers={"Authorization": f"Bearer {self.creds.kiosks[0].token}"},
            ).json()
            token = created["purchaser_url"].rsplit("/p/", 1)[1]
            n = dropped["compartment"]
            placed.append((created["id"], token, n))
            wait_until(
                lambda n=n: self.sim.truth().compartments[n - 1].lock_released,
                10,
                f"drop-off unlock of {n}",
            )
            world.open_door(n)
            time.sleep(HAND_PAUSE_S)
            world.place_item(n, mass_g=450, temp_c=70)
            time.sleep(HAND_PAUSE_S)
            world.close_door(n)
        wait_until(
            lambda: all(self._order_state(o) == "ready" for o, _, _ in placed),
            READY_WAIT_S,
            "orders ready",
            step_s=0.3,
        )
        latencies = []
        for _order_id, token, n in placed:
            self.released_at.pop(n, None)
            t0 = time.perf_counter()
            world.scan(token)
            wait_until(lambda n=n: n in self.released_at, 10, f"unlock of {n}", step_s=0.001)
            latencies.append((self.released_at[n] - t0) * 1000)
            # She takes her food, as at a real kiosk, before the next purchaser scans.
            wait_until(
                lambda n=n: self.sim.truth().compartments[n - 1].lock_released, 10, "release"
            )
            world.open_door(n)
            time.sleep(HAND_PAUSE_S)
            world.remove_item(n)
            time.sleep(HAND_PAUSE_S)
            world.close_door(n)
        wait_until(
            lambda: all(self._order_state(o) == "picked_up" for o, _, _ in placed),
            READY_WAIT_S,
            "orders picked up",
            step_s=0.3,
        )
        # The cleaning cycle (300 s nominal) frees the compartments for the next round.
        wait_until(
            lambda: not any(c.uv_on for c in self.sim.truth().compartments),
            30,
            "cleaning done",
            step_s=0.2,
        )
        time.sleep(1.0)
        return latencies

    def service_means_ms(self) -> dict[str, float]:
        """Means of the service's own scan figures, from its /metrics histograms."""
        text = self.http.get("/metrics").text
        samples = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith(("locker_scan_decision_seconds_", "locker_kiosk_message_wait")):
                samples[name] = float(value)
        means = {}
        for label, prefix in (
            (
                "service: scan wait in the kiosk link",
                'locker_kiosk_message_wait_seconds_%s{lane="scans"}',
            ),
            ("service: scan decision, one transaction", "locker_scan_decision_seconds_%s"),
        ):
            count = samples.get(prefix % "count", 0.0)
            if count:
                means[label] = samples[prefix % "sum"] / count * 1000
        return means

    def stop(self) -> None:
        for proc in (self.bridge, self.service):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.sim.stop()
        for log in self.logs:
            log.close()
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="12 pickups per round")
    args = parser.parse_args()
    broker = Mosquitto()
    system = None
    try:
        mqtt_ms = mqtt_round_trips(broker.port, MQTT_ROUND_TRIPS, nodelay=False)
        mqtt_nodelay_ms = mqtt_round_trips(broker.port, MQTT_ROUND_TRIPS, nodelay=True)
        board_ms = board_round_trips(BOARD_ROUND_TRIPS)
        system = System(broker.url)
        scan_ms: list[float] = []
        for i in range(args.rounds):
            scan_ms += system.round()
            print(f"round {i + 1}/{args.rounds}: {len(scan_ms)} pickups", file=sys.stderr)
        service_ms = system.service_means_ms()
    finally:
        if system is not None:
            system.stop()
        broker.stop()
    print(f"\nscan to unlock on Mosquitto + PostgreSQL at {BAUD} baud, ms")
    print(f"{'':<44} {'n':>5} {'p50':>8} {'p99':>8} {'mean':>8}")
    print(row("scan line at bridge -> lock released", scan_ms))
    for name, mean in service_ms.items():
        print(f"{name:<44} {'':>5} {'':>8} {'':>8} {mean:>8.2f}")
    print(row("floor: bare MQTT round trip, paho as is", mqtt_ms))
    print(row("floor: bare MQTT round trip, TCP_NODELAY", mqtt_nodelay_ms))
    print(row("floor: bare UNLOCK round trip on the line", board_ms))
    print(f"{'floor: UNLOCK request + answer wire time':<44} {'':>5} {unlock_wire_ms():>8.2f}")
    if len(scan_ms) < 100:
        print(f"(with {len(scan_ms)} pickups, p99 is their slowest one; --rounds 9 gives 108)")
    print("goal: p99 under 50 ms; the published peer prototype takes about 2000 ms")


if __name__ == "__main__":
    main()
