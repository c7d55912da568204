"""A fleet of virtual kiosks speaking the MQTT contract, thousands from one process.

Each virtual kiosk is one MQTT 3.1.1 connection (its own client id, `locker-bridge-<kiosk>`) and
does what a bridge does, with payloads built by the contract's own models:
- on connect, and again when a replica that took the kiosk asks (`report_state`, ADR 0091):
  its retained `status` (online) and one retained snapshot per compartment;
- a telemetry batch (a reading per compartment, QoS 0) every 10 s, the starts spread over the
  first period;
- the lunch peak: 12 drop-offs and 12 pickups per kiosk per hour (each a Poisson stream), as
  the door and item events and scans a bridge sends (QoS 1, numbered by `seq`, ADR 0066);
- commands on its `cmd` topic answered like a bridge: `accepted`, then `succeeded`, on the
  command's `reply_to`; a `report_state` that asks for them sends its last events again first,
  as the bridge's outbox does (ADR 0092): a scan without its code; one that asks for the
  readings after a time sends its telemetry batches stamped after it again, marked `resent`,
  as the bridge does with those it keeps (ADR 0098).

The MQTT client is a few dozen lines of asyncio streams (CONNECT, SUBSCRIBE, PUBLISH at QoS 0
and 1, PUBACK, no keep-alive pings), so one process holds ten thousand connections where paho
would need a thread per client. A probe client plays the service: it sends `unlock` commands to
random kiosks and times each reply.

It prints, for a baseline fleet and the fleet asked for, both in the same run against a
private Mosquitto: the time to connect every kiosk, messages sent per second, the generator's
CPU seconds per kiosk-minute, its memory, and the command round trip (median, p95). The goal:
10,000 kiosks from one process with the generator's CPU under one core.

    python bench/fleet/kiosks.py [--kiosks 10000] [--baseline 200] [--seconds 60]

Measured here (2 cores shared with the broker, load 0.8, 60 s each, the same run):

       500 kiosks  connect 0.3 s    71 msg/s  CPU 0.04 cores (4.88 ms per kiosk-minute)
                   RSS 45 MB   command round trip median 0.8 ms, p95 2.2 ms
    10,000 kiosks  connect 5.5 s  1208 msg/s  CPU 0.54 cores (3.27 ms per kiosk-minute)
                   RSS 230 MB  command round trip median 1.6 ms, p95 193.5 ms

So one process carries 10,000 kiosks on half a core. What one service node carries behind
them (the service subscribed to these kiosks, with the database) is not measured yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import struct
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from firmware_bridge import contract
from firmware_bridge.mqtt import kept_once_sent
from tests.support.mosquitto import MosquittoProcess

COMPARTMENTS = 12
TELEMETRY_EVERY_S = 10.0
PICKUPS_PER_HOUR = 12.0
DROPOFFS_PER_HOUR = 12.0
KEPT_EVENTS = 200  # a bridge keeps 1,000 numbers; a virtual kiosk's last hours are enough
# A bridge keeps 10 minutes of telemetry sent; 2 minutes cover a takeover here, at a tenth of
# the memory across 10,000 kiosks.
KEPT_TELEMETRY = 12

# -- a minimal MQTT 3.1.1 client ----------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str) -> bytes:
    variable = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)  # clean, no keep-alive
    return _packet(0x10, variable + _utf8(client_id))


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(first, body)


def subscribe_packet(topic: str, packet_id: int) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + _utf8(topic) + bytes([1]))


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


class Client:
    """One connection: publish at QoS 0 or 1, deliver received PUBLISHes to `on_message`."""

    def __init__(self, client_id: str, on_message: object = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self._ids = 0
        self.sent = 0
        self.acked = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def connect(self, host: str, port: int) -> None:
        reader, self._writer = await asyncio.open_connection(host, port)
        self._writer.write(connect_packet(self.client_id))
        first, body = await read_packet(reader)
        if first >> 4 != 2 or body[1] != 0:
            raise ConnectionError(f"{self.client_id}: CONNACK {body!r}")
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    def _next_id(self) -> int:
        self._ids = self._ids % 65535 + 1
        return self._ids

    async def subscribe(self, topic: str) -> None:
        assert self._writer is not None
        self._writer.write(subscribe_packet(topic, self._next_id()))
        await self._subscribed.wait()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        assert self._writer is not None
        self._writer.write(publish_packet(topic, payload, qos, retain, self._next_id()))
        self.sent += 1

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first, body = await read_packet(reader)
                kind = first >> 4
                if kind == 3:  # PUBLISH
                    qos = (first >> 1) & 3
                    (topic_len,) = struct.unpack("!H", body[:2])
                    topic = body[2 : 2 + topic_len].decode()
                    start = 2 + topic_len
                    if qos:
                        packet_id = body[start : start + 2]
                        start += 2
                        assert self._writer is not None
                        self._writer.write(bytes([0x40, 2]) + packet_id)
                    if callable(self.on_message):
                        self.on_message(topic, body[start:])
                elif kind == 4:  # PUBACK
                    self.acked += 1
                elif kind == 9:  # SUBACK
                    self._subscribed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.write(bytes([0xE0, 0]))
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


# -- a virtual kiosk ----------------------------------------------------------------------------


@dataclass
class VirtualKiosk:
    kiosk_id: str
    rng: random.Random
    topics: contract.Topics = field(init=False)
    client: Client = field(init=False)
    seq: int = 0
    temps: list[float] = field(default_factory=lambda: [64.0] * COMPARTMENTS)
    commands: int = 0
    reports: int = 0  # `report_state` commands answered
    resent: int = 0  # events sent again at a new holder's asking
    readings_resent: int = 0  # telemetry batches sent again likewise (ADR 0098)
    # Its last compartments hold hot food for purchasers (the service's held orders, their
    # food checked each minute): reported occupied, and its door events go to the others.
    held: int = 0
    # Its last telemetry batches: stamp, and the batch as published.
    sent_readings: deque[tuple[datetime, bytes]] = field(
        default_factory=lambda: deque(maxlen=KEPT_TELEMETRY)
    )
    # Its last events, as a bridge's outbox keeps them to send again (docs/adr/0092).
    kept: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=KEPT_EVENTS))

    def __post_init__(self) -> None:
        self.topics = contract.Topics(self.kiosk_id)
        self.client = Client(f"locker-bridge-{self.kiosk_id}", self._on_message)

    async def start(self, host: str, port: int) -> None:
        await self.client.connect(host, port)
        await self.client.subscribe(self.topics.cmd)
        self._report()

    def _report(self) -> None:
        """Its status and every compartment's snapshot, retained: on connecting, and when a
        replica that has just taken the kiosk asks (`report_state`)."""
        status = contract.KioskStatus(
            state="online", boot_id="0badf00d", fw="fleet-1", compartments=COMPARTMENTS,
            board_online=True,
        )  # fmt: skip
        self.client.publish(self.topics.status, status.to_json(), qos=1, retain=True)
        for n in range(1, COMPARTMENTS + 1):
            self.client.publish(
                self.topics.compartment_state(n), self._snapshot(n).to_json(), qos=1, retain=True
            )

    def _snapshot(self, n: int) -> contract.CompartmentSnapshot:
        return contract.CompartmentSnapshot(
            n=n, door_open=False, lock_released=False, occupied=n > self.free,
            heater_on=True,
            uv_on=False, disinfecting=False, disinfect_remaining_s=0,
            temp_c=self.temps[n - 1], setpoint_c=65.0,
        )  # fmt: skip

    def telemetry(self) -> None:
        readings = []
        for i in range(COMPARTMENTS):
            self.temps[i] += self.rng.uniform(-0.2, 0.2)
            readings.append(
                contract.Reading(
                    n=i + 1, temp_c=round(self.temps[i], 1), setpoint_c=65.0, heater=True
                )
            )
        self.publish_telemetry(contract.Telemetry(readings=readings))

    def publish_telemetry(self, batch: contract.Telemetry) -> None:
        payload = batch.to_json()
        self.sent_readings.append((batch.ts, payload))
        self.client.publish(self.topics.telemetry, payload)

    def event(self, type_: str, n: int | None, **data: object) -> None:
        self.seq += 1
        event = contract.Event(
            event_id=uuid.uuid4().hex,
            type=type_,
            compartment=n,
            data=data,
            seq=self.seq,
        )
        payload = event.to_json()
        self.kept.append((self.seq, kept_once_sent(payload) if type_ == "scan" else payload))
        self.client.publish(self.topics.events, payload, qos=1)

    @property
    def free(self) -> int:
        """Compartments 1 to `free` hold no order: the lunch peak's door events go there."""
        return max(COMPARTMENTS - self.held, 1)

    def dropoff(self) -> None:
        n = self.rng.randint(1, self.free)
        self.event("door_opened", n)
        self.event("item_placed", n)
        self.event("door_closed", n, occupied=True)

    def pickup(self) -> None:
        n = self.rng.randint(1, self.free)
        self.event("scan", None, text=f"https://lockers.example.com/p/{uuid.uuid4().hex}")
        self.event("door_opened", n)
        self.event("item_removed", n)
        self.event("door_closed", n, occupied=False)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic != self.topics.cmd:
            return
        try:
            command = contract.command_from_json(payload)
        except ValueError:
            return  # as the bridge: a malformed command is logged and dropped
        self.commands += 1
        if isinstance(command, contract.ReportStateCommand):
            after = command.args.events_after
            for seq, payload in self.kept if after is not None else ():
                if seq > after:
                    self.client.publish(self.topics.events, payload, qos=1)
                    self.resent += 1
            since = command.args.readings_after
            for ts, payload in self.sent_readings if since is not None else ():
                if ts > since:  # marked `resent` only now: a resend is rare, publishing is not
                    again = contract.Telemetry.model_validate_json(payload)
                    self.client.publish(
                        self.topics.telemetry, again.model_copy(update={"resent": True}).to_json()
                    )
                    self.readings_resent += 1
            self._report()  # before its answer, as the bridge
            self.reports += 1
        for status in ("accepted", "succeeded"):
            reply = contract.Reply(request_id=command.request_id, status=status)
            self.client.publish(command.reply_to, reply.to_json(), qos=1)


async def _peak(kiosk: VirtualKiosk, per_hour: float, act: str, stop: asyncio.Event) -> None:
    rate_s = per_hour / 3600.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), kiosk.rng.expovariate(rate_s))
        except TimeoutError:
            getattr(kiosk, act)()


async def _telemetry(kiosk: VirtualKiosk, stop: asyncio.Event) -> None:
    await asyncio.sleep(kiosk.rng.uniform(0, TELEMETRY_EVERY_S))
    while not stop.is_set():
        kiosk.telemetry()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TELEMETRY_EVERY_S)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    kiosks: int
    connect_s: float
    seconds: float
    sent: int
    cpu_s: float
    rss_mb: float
    round_trips_ms: list[float]

    def line(self) -> str:
        per_kiosk_minute_ms = 1000 * self.cpu_s / (self.kiosks * self.seconds / 60)
        rtt = sorted(self.round_trips_ms)
        p95 = rtt[int(0.95 * (len(rtt) - 1))] if rtt else float("nan")
        return (
            f"{self.kiosks:>6} kiosks  connect {self.connect_s:6.1f} s  "
            f"{self.sent / self.seconds:8.0f} msg/s  CPU {self.cpu_s / self.seconds:5.2f} cores "
            f"({per_kiosk_minute_ms:6.2f} ms per kiosk-minute)  RSS {self.rss_mb:6.0f} MB  "
            f"command round trip median {statistics.median(rtt) if rtt else float('nan'):6.1f} "
            f"ms, p95 {p95:6.1f} ms ({len(rtt)} commands)"
        )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_fleet(host: str, port: int, kiosks: int, seconds: float, seed: int) -> Figures:
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:6]
    fleet = [
        VirtualKiosk(f"fleet-{tag}-{i:05d}", random.Random(rng.random())) for i in range(kiosks)
    ]
    started = time.perf_counter()
    connecting = asyncio.Semaphore(200)  # the broker's listen backlog is not endless

    async def start(kiosk: VirtualKiosk) -> None:
        async with connecting:
            await kiosk.start(host, port)

    await asyncio.gather(*(start(k) for k in fleet))
    connect_s = time.perf_counter() - started

    replies: dict[str, float] = {}
    round_trips: list[float] = []
    probe_topic = contract.Topics.wildcard(f"replies/fleet-probe-{tag}")

    def on_reply(_topic: str, payload: bytes) -> None:
        reply = contract.Reply.model_validate_json(payload)
        sent_at = replies.pop(reply.request_id, None) if reply.status == "succeeded" else None
        if sent_at is not None:
            round_trips.append(1000 * (time.perf_counter() - sent_at))

    probe = Client(f"fleet-probe-{tag}", on_reply)
    await probe.connect(host, port)
    await probe.subscribe(probe_topic)

    stop = asyncio.Event()
    cpu_before, sent_before, t0 = _cpu_s(), sum(k.client.sent for k in fleet), time.perf_counter()
    tasks = [asyncio.create_task(_telemetry(k, stop)) for k in fleet]
    tasks += [asyncio.create_task(_peak(k, DROPOFFS_PER_HOUR, "dropoff", stop)) for k in fleet]
    tasks += [asyncio.create_task(_peak(k, PICKUPS_PER_HOUR, "pickup", stop)) for k in fleet]
    while time.perf_counter() - t0 < seconds:
        kiosk = rng.choice(fleet)
        request_id = uuid.uuid4().hex
        command = contract.UnlockCommand(
            request_id=request_id,
            compartment=1,
            args=contract.UnlockArgs(),
            expires_at=contract.utcnow() + timedelta(seconds=30),
            reply_to=f"{kiosk.topics.prefix}/replies/fleet-probe-{tag}",
        )
        replies[request_id] = time.perf_counter()
        probe.publish(kiosk.topics.cmd, command.to_json(), qos=1)
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = _cpu_s() - cpu_before
    sent = sum(k.client.sent for k in fleet) - sent_before
    await asyncio.gather(*(k.client.close() for k in fleet), probe.close())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Figures(kiosks, connect_s, elapsed, sent, cpu, rss_mb, round_trips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosks", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    wanted = options.kiosks * 2 + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    # Queues and connections uncapped, TCP_NODELAY as in docs/deploy/mosquitto/mosquitto.conf.
    broker = MosquittoProcess(
        extra_config="max_queued_messages 100000\nmax_connections -1\nset_tcp_nodelay true\n"
    )
    broker.start()
    try:
        print(f"load: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for kiosks in (options.baseline, options.kiosks):
            figures = asyncio.run(
                run_fleet(broker.host, broker.port, kiosks, options.seconds, options.seed)
            )
            print(figures.line(), flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
