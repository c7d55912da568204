"""Offline pickup: a scanned QR code to the lock released, with the kiosk cut off, beside online.

    /work/venv/bin/python bench/offline/offline_pickup.py [--rounds 10]

One bridge (in this process, polling its board every 150 ms as in production), a simulated
12-compartment board on a real pty at 115200 baud, a private Mosquitto. This script plays the
service: it supplies the bridge with 12 ready orders (`OfflineSupply`, docs/adr/0077), then
per round:
- online: each order's QR line is typed at the scanner; the bridge publishes the scan, and a
  responder on the broker answers it with the unlock command at once, leaving out the service's
  own decision (one PostgreSQL transaction, 1-3 ms: bench/journey/scan_to_unlock.py measures the
  whole path). So the online figure is a floor of the real one;
- offline: the broker is stopped, and the same 12 QR lines are decided by the bridge itself.
Timed from the line written to the scanner pty to the moment the simulated board executes the
UNLOCK. Rounds alternate, so both modes meet the same machine. Prints the table; nothing is
asserted (goal: offline faster than online, p99 under 10 ms).

Figures (115200 baud, 10 rounds, a shared two-core machine at load 2, 2026-12-04): offline
p50 0.94 / p99 9.2 ms against the online floor's 2.0 / 43.4 ms (n=120 each). The offline path
journals the pickup (one SQLite commit) and caches the command (another) before the UNLOCK.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from firmware_bridge import contract  # noqa: E402
from firmware_bridge.bridge import Bridge  # noqa: E402
from firmware_bridge.config import BridgeSettings  # noqa: E402
from firmware_bridge.contract.codes import code_mac, token_from_scan, token_hash  # noqa: E402
from firmware_bridge.contract.offline import encode_key  # noqa: E402
from hardware.simulator import Simulator  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402

COMPARTMENTS = 12
BAUD = 115200
WAIT_S = 20.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"  {name:<46} p50 {pct(ms, 50):7.2f} ms   p99 {pct(ms, 99):7.2f} ms   "
        f"mean {statistics.fmean(ms):6.2f} ms   n={len(ms)}"
    )


def wait_until(ok: object, what: str, timeout_s: float = WAIT_S, step_s: float = 0.0005) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(step_s)


class Responder:
    """Stands for the service online: answers a scan of a known token with its unlock."""

    def __init__(self, broker: MosquittoProcess, kiosk_id: str) -> None:
        self.topics = contract.Topics(kiosk_id)
        self.compartment_of: dict[str, int] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(self.topics.events, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        event = json.loads(msg.payload)
        if event.get("type") != "scan":
            return
        token = token_from_scan(event["data"]["text"])
        n = self.compartment_of.get(token or "")
        if n is None:
            return
        cmd = contract.UnlockCommand(
            request_id=uuid.uuid4().hex,
            compartment=n,
            expires_at=contract.utcnow() + timedelta(seconds=10),
            reply_to=self.topics.replies("bench"),
        )
        client.publish(self.topics.cmd, cmd.to_json(), qos=1)

    def supply(self, orders: dict[str, int]) -> None:
        key = secrets.token_bytes(32)
        supply = contract.OfflineSupply(
            supply_id=uuid.uuid4().hex,
            refresh_s=30.0,
            code_key=encode_key(key),
            orders=[
                contract.OfflineOrder(
                    order_id=f"bench-{n}-{token[:6]}",
                    compartment=n,
                    token_sha256=token_hash(token),
                    code_mac=code_mac(key, f"{secrets.randbelow(10**8):08d}"),
                    deadline=contract.utcnow() + timedelta(hours=1),
                )
                for token, n in orders.items()
            ],
        )
        self.compartment_of = dict(orders)
        self.client.publish(self.topics.offline, supply.to_json(), qos=0)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help=f"{COMPARTMENTS} scans per mode")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-offline-"))
    broker = MosquittoProcess()
    broker.start()
    sim = Simulator(compartments=COMPARTMENTS, time_scale=1.0, baud=BAUD, name="bench")
    sim.start()
    released_at: dict[int, float] = {}
    pulse = sim.model.pulse_lock

    def timed_pulse(n: int, pulse_ms: int) -> None:
        released_at[n] = time.perf_counter()
        pulse(n, pulse_ms)

    sim.model.pulse_lock = timed_pulse  # type: ignore[method-assign]
    board_path, scanner_path = sim.open_pty(work / "dev")
    kiosk_id = f"bench{uuid.uuid4().hex[:8]}"
    bridge = Bridge(
        BridgeSettings(
            kiosk_id=kiosk_id,
            broker_url=broker.url,
            board_url=board_path,
            scanner_url=scanner_path,
            data_dir=work / "bridge",
            baud=BAUD,
        )
    )
    bridge.start()
    responder = Responder(broker, kiosk_id)
    online: list[float] = []
    offline: list[float] = []

    def scan_all(tokens: dict[str, int], into: list[float]) -> None:
        for token, n in tokens.items():
            released_at.pop(n, None)
            time.sleep(0.05 + secrets.randbelow(150) / 1000)  # anywhere in a poll period
            t0 = time.perf_counter()
            sim.world.scan(token)
            wait_until(lambda n=n: n in released_at, f"the unlock of {n}")
            into.append((released_at[n] - t0) * 1000)

    try:
        wait_until(lambda: bridge.link.connected.is_set() and bridge.info.online, "the bridge")
        for i in range(args.rounds):
            tokens = {secrets.token_urlsafe(32): n for n in range(1, COMPARTMENTS + 1)}
            wait_until(lambda: responder.client.is_connected(), "the responder", step_s=0.01)
            responder.supply(tokens)
            wait_until(
                lambda: bool(bridge.offline.knows_codes) and not bridge.cut_off(),
                "the supply taken",
                step_s=0.01,
            )
            scan_all(tokens, online)
            wait_until(lambda: bridge.store.event_count() == 0, "the scans sent", step_s=0.01)
            broker.stop()
            wait_until(bridge.cut_off, "the bridge to see the broker gone", step_s=0.01)
            scan_all(tokens, offline)
            broker.start()
            wait_until(lambda: bridge.store.event_count() == 0, "the journal sent", step_s=0.01)
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
    finally:
        responder.stop()
        bridge.stop()
        sim.stop()
        broker.__exit__(None, None, None)
    print(f"\nQR scan line at the bridge -> lock released at the board, {BAUD} baud, ms")
    print(row("online floor: scan event -> unlock command", online))
    print(row("offline: decided by the bridge", offline))
    print("goal: offline faster than online, p99 under 10 ms")


if __name__ == "__main__":
    main()
