"""The service behind a fleet: virtual kiosks, `lockerctl serve` replicas, PostgreSQL and a
private Mosquitto, all on this machine; beside the same generator against the bare broker.

For each size of fleet (`--sizes`) and each number of replicas (`--replicas`), in one run:
1. a fresh migrated PostgreSQL database: the kiosks (12 compartments each, one site per 100),
   on `--probes` kiosks a ready order in every compartment (rows as a drop-off leaves them),
   and on the others the lunch peak's food waiting for its purchasers: a hot order ready in
   each of their last `--held` compartments (6 by default; 12 pickups an hour and about half
   an hour's wait), its food checked every minute by the replicas' timers (ADR 0104), and the
   kiosks' door events on their other compartments;
2. the replicas start and take the kiosks' leases; the fleet connects (`kiosks.py`: statuses,
   retained snapshots, telemetry every 10 s, the lunch peak's drop-offs as door events on the
   kiosks without probes) and is measured once every kiosk is online in the database and the
   snapshot storm has passed;
3. for `--seconds`: the lunch peak's pickups, 12 per kiosk per hour across the fleet (at least
   one a second; `--rate` to set another), every one a real one: a probe kiosk's purchaser
   scans her ready order's QR code, timed from the kiosk publishing the scan to it receiving
   the unlock; then the door opens, the food is taken, the door shuts;
   telemetry lag: a batch of `--lag-sample` kiosks, from its timestamp to its readings being
   queryable in PostgreSQL (polled every 50 ms);
   CPU of the replicas, PostgreSQL and the broker (from /proc), in cores.
Baseline, same generator and size: the bare broker with a responder process that answers each
scan with an unlock at once (the floor of scan -> unlock), and telemetry timed to a plain
subscriber. The knee: the smallest size at which scan -> unlock p99 passes 50 ms.

    python bench/fleet/service.py [--sizes 1000,2500,5000,10000] [--replicas 1,2]
                                  [--seconds 60] [--rate PICKUPS_PER_S] [--gc-baseline]

Each replica's garbage collections while measured are printed under its line (from its
`/metrics`); `--gc-baseline` also runs each replica count with CPython's own collector settings
(ADR 0084), in the same run.

Goals (issue 15): at 10,000 kiosks, telemetry lag p99 under 2 s and scan -> unlock p99 under
50 ms. Nothing is asserted; the figures are printed.

With the lunch peak's held food (`--held 6`, ADR 0104; `--replicas 1 --seconds 60`, same
session, one run each; scan -> unlock median / p99 / the slowest):

    kiosks  held food   food checks           cores: replica, PostgreSQL   scan -> unlock
      1000  none        -                     0.24, 0.11                   10.0 / 26.8 / 35.1 ms
      1000  6 a kiosk   each on its own       0.60, 0.26                   13.0 / 52.8 / 60.6 ms
                        (before ADR 0104)
      1000  6 a kiosk   a kiosk's together    0.33, 0.16                   11.2 / 43.2 / 45.5 ms
      2000  6 a kiosk   a kiosk's together    0.64, 0.23                   11.9 / 64.8 / 84.8 ms

4,800 held orders at 1,000 kiosks (the 200 probe kiosks hold the pickups' orders) are 80
checks a second; at 2,000 kiosks 10,800 are 180. With held food the knee of one replica is
between 1,000 and 2,000 kiosks. The line before ADR 0104 is the service of 4f37d21 behind
this bench, its first checks due at a random second of the minute for each kiosk (that code
has no `slot_after`). The figures below were measured before `--held` existed, so without
held food (as `--held 0`).

Measured here after ADR 0084 and 0085 (`--sizes 2000 --replicas 1 --seconds 90 --gc-baseline`,
one run, load 0.1 at its start; scan -> unlock median / p99 / the slowest of about 600 pickups):

    kiosks  bare broker              1 replica, gc default         1 replica
      2000  0.8 / 1.6 / 86.8 ms      12.3 / 132.6 / 248.2 ms       11.6 / 39.2 / 51.8 ms
            full collections:        6, 1,003 ms in all,           none; young ones
                                     each up to 250 ms             233 + 44 ms in all

so one replica now carries 2,000 kiosks under the 50 ms goal (telemetry lag p99 0.28-0.30 s,
0.32-0.33 cores per 1,000 kiosks with its database and broker, either way). At 1,000 kiosks
(`--seconds 45`) the two were 10.7 / 27.8 and 10.7 / 35.1 ms: two full collections of 110 ms
in 45 s happened to meet no pickup. At 4,000 kiosks (`--seconds 90`, load 0.6) one replica's
event loop is saturated (0.86 cores): 50.1 / 466.0 / 816.7 ms, telemetry lag p99 1.07 s, and
its heap is large enough for full collections again (3 in 90 s, up to 500 ms). So the knee of
one replica is now between 2,000 and 4,000 kiosks.

Before ADR 0084 (`--sizes 500,1000,2000 --seconds 45`, one run, load 0.7 at its start, after
ADR 0081 and the relay's one executemany; scan -> unlock median / p99 with the pickups timed,
telemetry lag p50 / p99, cores used):

    kiosks  bare broker          1 replica                          2 replicas
       500  1.2 /   6.3 ms (75)   8.3 /  26.6 ms, 0.14 / 0.24 s,      9.9 /  26.8 ms, 0.14 / 0.25 s,
                                  replica 0.13, PostgreSQL 0.08      replicas 0.18, PostgreSQL 0.09
      1000  0.8 /   1.4 ms (150)  9.8 / 136.5 ms, 0.15 / 0.27 s,      8.9 /  37.8 ms, 0.13 / 0.25 s,
                                  replica 0.26, PostgreSQL 0.12      replicas 0.25, PostgreSQL 0.12
      2000  0.6 /   3.9 ms (299) 11.5 / 244.9 ms, 0.16 / 0.46 s,      9.0 /  58.8 ms, 0.15 / 0.27 s,
                                  replica 0.48, PostgreSQL 0.12      replicas 0.44, PostgreSQL 0.18

The knee (p99 past 50 ms): one replica between 500 and 1,000 kiosks, two between 1,000 and
2,000; the bare broker never (p99 under 7 ms). A lone 1,000-kiosk run the same hour gave one
replica 11.5 / 67.8 ms: its p99 is the run's few slowest pickups and moves run to run. The
service with its database and broker takes 0.31-0.43 cores per 1,000 kiosks with one replica
(0.32-0.56 with two).

Before (the previous revision, `--sizes 500,1000,2000,4000`): one replica's p99 165.5 / 223.0 /
642.4 ms at 500 / 1,000 / 2,000 kiosks, two replicas' 36.5 / 57.2 / 237.5 ms, 0.44-0.66 cores
per 1,000 kiosks with one replica; 4,000 kiosks with one replica were not steady after 18 min.
A profile then put a fifth of the replica's event loop in the offline supply's look at every
held kiosk each second (now 8%: ADR 0081) and a sixth in the live relay's NOTIFY per batch
(now a tenth: ADR 0069).

One replica is one event loop: near one core it queues, so the goal (10,000 kiosks on these
two cores, beside the generator and the broker) is still not met by a wide margin. What is left
is spread over the per-message work (profiled at 1,000 kiosks, shares of the event loop): the
story's events through the ORM 23%, telemetry flushes 17%, message validation 11%, timers 10%,
the relay 10%, the supply 8%, the leases 6%. The drop-offs here
are door events without an authorised opening: they raise alerts, more work than a real
drop-off's events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.fleet.kiosks import (
    COMPARTMENTS,
    DROPOFFS_PER_HOUR,
    PICKUPS_PER_HOUR,
    Client,
    VirtualKiosk,
    _cpu_s,
    _peak,
    _telemetry,
)
from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.orders import codes
from locker_service.timers import service as timers
from migrations import upgrade
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.mosquitto import MosquittoProcess, free_port

SECRET_KEY = "bench-fleet-" + "k" * 32
# The replicas' own period between food checks (they inherit this environment), in real seconds.
FOOD_CHECK_S = float(
    os.environ.get("LOCKER_FOOD_CHECK_S", Settings.model_fields["food_check_s"].default)
) / float(os.environ.get("LOCKER_TIME_SCALE", Settings.model_fields["time_scale"].default))
GOAL_MS = 50.0
SITE_SIZE = 100  # kiosks per site
LAG_POLL_S = 0.05
READY_TIMEOUT_S = 1800.0  # a big fleet's leases and snapshot storm on two shared cores
DOOR_PAUSE_S = 0.3  # the purchaser's hand after the latch clicks
UNANSWERED_S = 10.0  # a probe scan with no unlock by then counts as unanswered
TAKEOVER_CAP_S = 600.0  # a takeover not over by then is printed as such
REPORT_MESSAGES = 1 + COMPARTMENTS + 2  # status, snapshots, `accepted` and `succeeded`
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the database -------------------------------------------------------------------------------


@dataclass
class Probe:
    kiosk: str
    tokens: dict[int, str]  # compartment -> the ready order's QR token


async def seed(
    database_url: str, kiosks: int, probes: int, held: int
) -> tuple[list[str], list[Probe]]:
    """`kiosks` kiosks (offline until their status comes), ready orders on `probes` of them,
    and on the others a hot order held in each of their last `held` compartments."""
    conn = await _connect(database_url)
    tag = uuid.uuid4().hex[:6]
    codes_ = [f"bf-{tag}-{i:05d}" for i in range(kiosks)]
    try:
        async with conn.transaction():
            sites = (kiosks + SITE_SIZE - 1) // SITE_SIZE
            await conn.execute(
                "INSERT INTO sites (code, name, timezone, kill_switch_engaged, created_at) "
                "SELECT $1 || g, 'Site ' || g, 'UTC', false, now() "
                "FROM generate_series(1, $2::int) g",
                f"bs-{tag}-",
                sites,
            )
            await conn.execute(
                "INSERT INTO kiosks (site_id, code, name, online, created_at) "
                "SELECT s.id, $1 || lpad(g::text, 5, '0'), 'Kiosk ' || g, false, now() "
                "FROM generate_series(0, $2::int - 1) g "
                "JOIN sites s ON s.code = $3 || (g / $4 + 1)",
                f"bf-{tag}-",
                kiosks,
                f"bs-{tag}-",
                SITE_SIZE,
            )
            await conn.execute(
                "INSERT INTO compartments (kiosk_id, number, size, heated, state, door_open,"
                " lock_released, occupied, heater_on, uv_on, temp_c, disinfect_remaining_s,"
                " version) "
                "SELECT k.id, n, 'M', true, 'available', false, false, false, true, false,"
                " 64.0, 0, 1 FROM kiosks k CROSS JOIN generate_series(1, $1::int) n",
                COMPARTMENTS,
            )
            merchant = await conn.fetchval(
                "INSERT INTO merchants (name, created_at) VALUES ('Bench kitchen', now()) "
                "RETURNING id"
            )
            chosen = random.Random(7).sample(codes_, probes)
            found = []
            for code in chosen:
                found.append(Probe(code, await _ready_orders(conn, merchant, code)))
            await _held_orders(conn, merchant, [c for c in codes_ if c not in chosen], held)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return codes_, found


async def _ready_orders(conn: asyncpg.Connection, merchant: int, kiosk: str) -> dict[int, str]:
    """A hot order ready in every compartment of the kiosk, as a drop-off leaves it."""
    now = datetime.now(UTC)
    tokens: dict[int, str] = {}
    rows = await conn.fetch(
        "SELECT c.id, c.number, k.site_id FROM compartments c JOIN kiosks k ON k.id = c.kiosk_id "
        "WHERE k.code = $1",
        kiosk,
    )
    for row in rows:
        order_id, salt = uuid.uuid4(), codes.new_salt()
        token = codes.pickup_token(SECRET_KEY, order_id, salt)
        await conn.execute(
            "INSERT INTO orders (id, merchant_id, external_ref, request_hash, site_id,"
            " purchaser_name, purchaser_contact, size, temperature_class, state,"
            " compartment_id, token_salt, pickup_token_hash, code_hash, hold_until,"
            " created_at, assigned_at, deposited_at, ready_at, food_deadline, updated_at,"
            " version) VALUES ($1, $2, $3, $4, $5, 'Bench purchaser', 'mailto://b@example.com',"
            " 'M', 'hot', 'ready', $6, $7, $8, $9, $10, $11, $11, $11, $11, $12, $11, 1)",
            order_id,
            merchant,
            f"bench-{order_id.hex}",
            "0" * 64,
            row["site_id"],
            row["id"],
            salt,
            codes.token_hash(token),
            codes.code_hash(SECRET_KEY, codes.fallback_code(SECRET_KEY, token)),
            now + timedelta(hours=4),
            now - timedelta(minutes=1),
            now + timedelta(hours=3),
        )
        await conn.execute(
            "UPDATE compartments SET state = 'awaiting_pickup', occupied = true,"
            " setpoint_c = 65.0 WHERE id = $1",
            row["id"],
        )
        tokens[row["number"]] = token
    return tokens


async def _held_summary(database_url: str) -> str:
    """The held orders at the end of the run: how many are still held (the kiosks kept them
    hot, so all should be), and how many readings their food checks folded."""
    conn = await _connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS orders, count(*) FILTER (WHERE state = 'ready') AS ready,"
            " coalesce(sum((food_watch->>'readings')::int), 0) AS folded"
            " FROM orders WHERE external_ref LIKE 'held-%'"
        )
    finally:
        await conn.close()
    assert row is not None
    if not row["orders"]:
        return ""
    return (
        f"held orders: {row['ready']} of {row['orders']} still held at the end, "
        f"{row['folded']:,} readings folded by their food checks"
    )


async def _held_orders(
    conn: asyncpg.Connection, merchant: int, kiosks: list[str], held: int
) -> None:
    """The lunch peak's food waiting for its purchasers: a hot order ready in each of the last
    `held` compartments of `kiosks`, its watch started now, and its food check due at the
    kiosk's slot (ADR 0104), so the replicas check every one once a minute. Nobody collects
    them during the run; the kiosks keep them hot."""
    if held <= 0 or not kiosks:
        return
    now = datetime.now(UTC)
    watch = json.dumps({"last_ts": now.isoformat(), "readings": 0, "warmed": True})
    await conn.execute(
        "INSERT INTO orders (id, merchant_id, external_ref, request_hash, site_id,"
        " purchaser_name, purchaser_contact, size, temperature_class, state, compartment_id,"
        " token_salt, pickup_token_hash, code_hash, hold_until, created_at, assigned_at,"
        " deposited_at, ready_at, food_deadline, food_watch, updated_at, version)"
        " SELECT gen_random_uuid(), $1, 'held-' || c.id, repeat('0', 64), k.site_id,"
        " 'Bench purchaser', 'mailto://b@example.com', 'M', 'hot', 'ready', c.id,"
        # A token's hash is SHA-256 as the contract says: the offline supply sends it on.
        " md5(c.id::text), encode(sha256(('held' || c.id)::bytea), 'hex'), md5('code' || c.id),"
        " $2, $3, $3, $3, $3, $2,"
        " $4::json, $3, 1 FROM compartments c JOIN kiosks k ON k.id = c.kiosk_id"
        " WHERE k.code = ANY($5::text[]) AND c.number > $6",
        merchant,
        now + timedelta(hours=3),
        now,
        watch,
        kiosks,
        COMPARTMENTS - held,
    )
    await conn.execute(
        "UPDATE compartments c SET state = 'awaiting_pickup', occupied = true, setpoint_c = 65.0"
        " FROM kiosks k"
        " WHERE k.id = c.kiosk_id AND k.code = ANY($1::text[]) AND c.number > $2",
        kiosks,
        COMPARTMENTS - held,
    )
    ids = await conn.fetch("SELECT id FROM kiosks WHERE code = ANY($1::text[])", kiosks)
    period = timedelta(seconds=FOOD_CHECK_S)
    slots = [timers.slot_after(now, period, row["id"]) for row in ids]
    await conn.execute(
        "INSERT INTO timers (kind, due_at, order_id, compartment_id, state, attempts,"
        " created_at) SELECT 'food_check', s.due, o.id, c.id, 'pending', 0, now()"
        " FROM unnest($1::int[], $2::timestamptz[]) AS s(kiosk_id, due)"
        " JOIN compartments c ON c.kiosk_id = s.kiosk_id JOIN orders o ON o.compartment_id = c.id"
        " WHERE o.external_ref LIKE 'held-%'",
        [row["id"] for row in ids],
        slots,
    )


# -- the kiosks ---------------------------------------------------------------------------------


class ProbeKiosk(VirtualKiosk):
    """A kiosk whose purchasers hold real codes: each scan timed to its unlock, then the door."""

    tokens: dict[int, str]
    waiting: tuple[int, float] | None = None  # (compartment, when the scan left)
    timings: list[float]
    any_compartment = False  # the bare responder cannot know which compartment is hers

    def scan(self, n: int) -> None:
        self.waiting = (n, time.perf_counter())
        self.event("scan", None, text=f"https://lockers.example.com/p/{self.tokens.pop(n)}")

    def _on_message(self, topic: str, payload: bytes) -> None:
        super()._on_message(topic, payload)
        if topic != self.topics.cmd or self.waiting is None:
            return
        command = contract.command_from_json(payload)
        n, sent = self.waiting
        if isinstance(command, contract.UnlockCommand) and (
            self.any_compartment or command.compartment == n
        ):
            self.timings.append(1000 * (time.perf_counter() - sent))
            self.waiting = None
            asyncio.get_running_loop().call_later(DOOR_PAUSE_S, self._take_food, n)

    def _take_food(self, n: int) -> None:
        self.event("door_opened", n)
        self.event("item_removed", n)
        self.event("door_closed", n, occupied=False)


@dataclass
class Run:
    label: str
    kiosks: int
    scan_ms: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)
    ready_s: float = 0.0
    unanswered: int = 0  # probe scans with no unlock within UNANSWERED_S
    gc: str = ""  # the replicas' garbage collections while measured (ADR 0084)
    held: str = ""  # the held orders' food checks, at the end (`--held`)
    takeover: Takeover | None = None  # `--takeover`: after the measure, a replica killed

    def line(self) -> str:
        cpu = "  ".join(f"{k} {v:.2f}" for k, v in self.cores.items())
        per_k = sum(v for k, v in self.cores.items() if k != "generator") / self.kiosks * 1000
        return (
            f"{self.label:<23} {self.kiosks:>6} kiosks  scan->unlock median "
            f"{statistics.median(self.scan_ms) if self.scan_ms else float('nan'):6.1f} ms "
            f"p99 {_percentile(self.scan_ms, 0.99):7.1f} ms "
            f"max {max(self.scan_ms, default=float('nan')):7.1f} ms ({len(self.scan_ms)}, "
            f"{self.unanswered} unanswered)  telemetry lag p50 "
            f"{_percentile(self.lag_s, 0.5):5.2f} s "
            f"p99 {_percentile(self.lag_s, 0.99):5.2f} s ({len(self.lag_s)})  "
            f"cores: {cpu}  ({per_k:.3f} per 1,000 kiosks)  ready after {self.ready_s:.0f} s"
            + (f"\n{'':<23} {'':>6}         gc pauses while measured: {self.gc}" if self.gc else "")
            + (f"\n{'':<23} {'':>6}         {self.held}" if self.held else "")
            + (f"\n{'':<23} {'':>6}         {self.takeover.line()}" if self.takeover else "")
        )


@dataclass
class Takeover:
    """What a replica's death costs: its kiosks moved and asked for their state, and the
    pickups and telemetry of the whole fleet from the kill on."""

    replica: str = ""
    kiosks: int = 0  # the leases it held when killed
    moved_s: float | None = None  # from the kill until none is held by it
    reports: int = 0  # `report_state` commands the fleet answered since the kill
    resent: int = 0  # events they sent again (ADR 0092)
    readings_resent: int = 0  # telemetry batches they sent again (ADR 0098)
    # Snapshots from before the take handed on: no fresh report (ADR 0093); None: not read.
    replayed: int | None = None
    # In the surviving replica: snapshots received and the transactions they were handled in
    # (a kiosk's queued together share one, ADR 0095); None: not read.
    snapshots: int | None = None
    snapshot_transactions: int | None = None
    reported_s: float | None = None  # from the kill until as many as its kiosks were answered
    seconds: float = 0.0
    # The scans: those at the kiosks it held (each waits for its kiosk's take), and those at
    # the other kiosks (they meet only the load of the takeover).
    moved_ms: list[float] = field(default_factory=list)
    stayed_ms: list[float] = field(default_factory=list)
    # In the surviving replica, on average: a scan's wait for its lane's worker, and its
    # handling until the decision committed (the unlock leaves next).
    scan_wait_ms: float | None = None
    scan_decided_ms: float | None = None
    unanswered: int = 0
    lag_s: list[float] = field(default_factory=list)
    lost_readings: int = 0  # telemetry batches of the lag sample never stored
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def scan_ms(self) -> list[float]:
        """Every scan, read when printed: those still under way as the takeover's measure ends
        finish after it, and count."""
        return self.moved_ms + self.stayed_ms

    def line(self) -> str:
        cpu = "  ".join(f"{k} {v:.2f}" for k, v in self.cores.items())
        moved = f"{self.moved_s:.1f} s" if self.moved_s is not None else "not within the cap"
        asked = f"{self.reported_s:.1f} s" if self.reported_s is not None else "not within the cap"
        return (
            f"takeover: {self.replica} SIGKILLed holding {self.kiosks} kiosks; all held again "
            f"after {moved}, {self.reports} report_state answered ({self.reports * REPORT_MESSAGES}"
            f" messages, {self.resent} events and {self.readings_resent} telemetry batches "
            "sent again, "
            f"{'?' if self.replayed is None else self.replayed} snapshots handed on from before "
            f"the take) after {asked}; {self._snapshots_line()}"
            f"over the {self.seconds:.0f} s from the kill: "
            f"scan->unlock median {_percentile(self.scan_ms, 0.5):.1f} ms "
            f"p99 {_percentile(self.scan_ms, 0.99):.1f} ms max "
            f"{max(self.scan_ms, default=float('nan')):.1f} ms ({len(self.scan_ms)}, "
            f"{self.unanswered} unanswered, a scan sent again opening nothing; at its kiosks "
            f"{_spread(self.moved_ms)}, at the others {_spread(self.stayed_ms)}; in the "
            f"replica on average: waited {_ms(self.scan_wait_ms)}, decided in "
            f"{_ms(self.scan_decided_ms)}), "
            f"telemetry lag p99 {_percentile(self.lag_s, 0.99):.2f} s ({len(self.lag_s)}, "
            f"{self.lost_readings} batches never stored), cores: {cpu}"
        )

    def _snapshots_line(self) -> str:
        if self.snapshots is None or not self.snapshot_transactions:
            return ""
        return (
            f"{self.snapshots} snapshots received, handled in {self.snapshot_transactions} "
            f"transactions (about {self.snapshots / self.snapshot_transactions:.1f} each); "
        )


def _ticks(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user and system) each of `pids` has used so far."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return used


def _used_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU seconds used between two readings; a process started meanwhile (a database
    connection) counts from its start."""
    return sum(t - before.get(pid, 0.0) for pid, t in now.items())


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} ms"


def _spread(ms: list[float]) -> str:
    return f"median {_percentile(ms, 0.5):.1f} ms p99 {_percentile(ms, 0.99):.1f} ms ({len(ms)})"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, database=url.database, user=url.username
    )


async def drive(
    run: Run,
    host: str,
    port: int,
    codes_: list[str],
    probes: list[Probe],
    options: argparse.Namespace,
    processes: dict[str, Callable[[], list[int]]],
    database_url: str | None,
    metrics_urls: tuple[str, ...] = (),
    kill: Callable[[], str] | None = None,
) -> None:
    """Connect the fleet, wait until the service has it, then measure for `--seconds`; with
    `kill` (it kills a replica and says which), then the takeover of that replica's kiosks."""
    rng = random.Random(11)
    by_probe = {p.kiosk: p for p in probes}
    fleet: list[VirtualKiosk] = []
    probe_kiosks: list[ProbeKiosk] = []
    for code in codes_:
        if code in by_probe:
            kiosk = ProbeKiosk(code, random.Random(rng.random()))
            kiosk.tokens, kiosk.timings = dict(by_probe[code].tokens), run.scan_ms
            kiosk.any_compartment = database_url is None
            probe_kiosks.append(kiosk)
        else:
            kiosk = VirtualKiosk(code, random.Random(rng.random()), held=options.held)
        fleet.append(kiosk)
    connecting = asyncio.Semaphore(200)

    async def start(kiosk: VirtualKiosk) -> None:
        async with connecting:
            await kiosk.start(host, port)

    started = time.perf_counter()
    await asyncio.gather(*(start(k) for k in fleet))
    stop = asyncio.Event()
    others = [k for k in fleet if not isinstance(k, ProbeKiosk)]
    tasks = [asyncio.create_task(_telemetry(k, stop)) for k in fleet]
    tasks += [asyncio.create_task(_peak(k, DROPOFFS_PER_HOUR, "dropoff", stop)) for k in others]
    lag_kiosks = rng.sample(others, min(options.lag_sample, len(others)))
    published: dict[tuple[str, datetime], float] = {}
    for kiosk in lag_kiosks:
        kiosk.telemetry = _timed_telemetry(kiosk, published)  # type: ignore[method-assign]
    if database_url is not None:
        await _wait_online(database_url, len(fleet))
        await asyncio.sleep(options.settle)
    run.ready_s = time.perf_counter() - started

    watcher = asyncio.create_task(
        _lag_from_database(database_url, lag_kiosks, published, run.lag_s, stop)
        if database_url is not None
        else _lag_from_subscriber(host, port, lag_kiosks, published, run.lag_s, stop)
    )
    run.scan_ms.clear()
    ticks = {name: _ticks(pids()) for name, pids in processes.items()}
    pauses = await _gc_pauses(metrics_urls)
    own, t0 = _cpu_s(), time.perf_counter()
    rate = options.rate or max(1.0, len(fleet) * PICKUPS_PER_HOUR / 3600)

    async def pickups(into: Run | Takeover, until: Callable[[], bool]) -> None:
        while not until():
            for kiosk in probe_kiosks:
                waited = time.perf_counter() - kiosk.waiting[1] if kiosk.waiting else 0.0
                if waited > UNANSWERED_S:
                    into.unanswered += 1  # refused or lost: counted, and her kiosk free again
                    kiosk.waiting = None
            ready = [k for k in probe_kiosks if k.waiting is None and k.tokens]
            if ready:
                kiosk = rng.choice(ready)
                kiosk.scan(rng.choice(sorted(kiosk.tokens)))
            await asyncio.sleep(1 / rate)

    await pickups(run, lambda: time.perf_counter() - t0 >= options.seconds)
    elapsed = time.perf_counter() - t0
    run.cores = {
        name: _used_since(ticks[name], _ticks(pids())) / elapsed for name, pids in processes.items()
    }
    run.cores["generator"] = (_cpu_s() - own) / elapsed
    if metrics_urls:
        run.gc = _gc_summary(pauses, await _gc_pauses(metrics_urls))
    steady = len(run.lag_s)  # the measure's own: the takeover's lags are its line's
    if kill is not None and database_url is not None:
        run.takeover = Takeover()
        telemetry = (run.lag_s, published)
        await _take_over(
            run.takeover,
            kill,
            database_url,
            fleet,
            telemetry,
            processes,
            options,
            pickups,
            metrics_urls,
        )
    for _ in range(int(UNANSWERED_S / 0.1)):  # the scans still under way may finish
        if all(k.waiting is None for k in probe_kiosks):
            break
        await asyncio.sleep(0.1)
    run.unanswered += sum(1 for k in probe_kiosks if k.waiting is not None)
    stop.set()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    await asyncio.gather(*(k.client.close() for k in fleet))
    if run.takeover is not None:
        del run.lag_s[steady:]


async def _take_over(
    takeover: Takeover,
    kill: Callable[[], str],
    database_url: str,
    fleet: list[VirtualKiosk],
    telemetry: tuple[list[float], dict[tuple[str, datetime], float]],
    processes: dict[str, Callable[[], list[int]]],
    options: argparse.Namespace,
    pickups: Callable[[Takeover, Callable[[], bool]], Awaitable[None]],
    metrics_urls: tuple[str, ...],
) -> None:
    """A replica SIGKILLed while the pickups go on: how long until its kiosks are held again
    and have answered the new holder's `report_state` (ADR 0091), and what the purchasers and
    the telemetry meet meanwhile, until `--after-takeover` seconds after both."""
    lag_s, published = telemetry
    conn = await _connect(database_url)
    try:
        replayed_before = await _counter(metrics_urls, REPLAYED)
        snapshots_before = {name: await _counter(metrics_urls, name) for name in SNAPSHOT_SERIES}
        scans_before = {name: await _counter(metrics_urls, name) for name in SCAN_SERIES}
        asked_before = sum(k.reports for k in fleet)
        resent_before = sum(k.resent for k in fleet)
        readings_resent_before = sum(k.readings_resent for k in fleet)
        lags_before = len(lag_s)
        ticks = {name: _ticks(pids()) for name, pids in processes.items()}
        t0 = time.perf_counter()
        takeover.replica = kill()
        moved = set(
            await conn.fetchval(
                "SELECT array_agg(kiosk_code) FROM kiosk_leases WHERE holder = $1",
                takeover.replica,
            )
            or ()
        )
        takeover.kiosks = len(moved)
        for kiosk in fleet:
            if isinstance(kiosk, ProbeKiosk):
                kiosk.timings = takeover.moved_ms if kiosk.kiosk_id in moved else takeover.stayed_ms
        over = asyncio.Event()
        measuring = asyncio.create_task(pickups(takeover, over.is_set))
        while time.perf_counter() - t0 < TAKEOVER_CAP_S:
            now = time.perf_counter() - t0
            if takeover.moved_s is None and not await conn.fetchval(
                "SELECT count(*) FROM kiosk_leases WHERE holder = $1", takeover.replica
            ):
                takeover.moved_s = now
            takeover.reports = sum(k.reports for k in fleet) - asked_before
            takeover.resent = sum(k.resent for k in fleet) - resent_before
            takeover.readings_resent = (
                sum(k.readings_resent for k in fleet) - readings_resent_before
            )
            if takeover.reported_s is None and takeover.reports >= takeover.kiosks:
                takeover.reported_s = now
            done = (takeover.moved_s, takeover.reported_s)
            if None not in done and now >= max(done) + options.after_takeover:  # type: ignore[type-var]
                break
            await asyncio.sleep(0.2)
        over.set()
        await measuring
        elapsed = time.perf_counter() - t0
        takeover.seconds = elapsed
        takeover.lag_s = lag_s[lags_before:]
        # Sent at QoS 0 while nobody listened to its kiosk: never stored (checked once the
        # batches sent up to UNANSWERED_S before the end have had that long to arrive).
        end = time.perf_counter() - UNANSWERED_S
        takeover.lost_readings = sum(1 for sent in published.values() if t0 <= sent <= end)
        takeover.cores = {
            name: _used_since(ticks[name], _ticks(pids())) / elapsed
            for name, pids in processes.items()
        }
        if metrics_urls:
            scans = {name: await _counter(metrics_urls, name) for name in SCAN_SERIES}
            takeover.scan_wait_ms, takeover.scan_decided_ms = (
                _mean_ms(scans_before, scans, series) for series in ("wait", "decision")
            )
            replayed = await _counter(metrics_urls, REPLAYED)  # the survivors' only
            takeover.replayed = int(
                sum(n - replayed_before.get(url, 0) for url, n in replayed.items())
            )
            snapshots = {name: await _counter(metrics_urls, name) for name in SNAPSHOT_SERIES}
            takeover.snapshots, takeover.snapshot_transactions = (
                int(sum(n - snapshots_before[name].get(url, 0) for url, n in after.items()))
                for name, after in snapshots.items()
            )
    finally:
        await conn.close()


REPLAYED = "locker_kiosk_snapshots_replayed_total"
# The snapshots a replica received, and the transactions it handled them in.
SNAPSHOT_SERIES = (
    'locker_mqtt_messages_total{kind="snapshot"}',
    "locker_kiosk_snapshot_transactions_total",
)
# Each histogram read for a scan's mean in the replica: its sum and its count.
SCAN_MEANS = {
    "wait": (
        'locker_kiosk_message_wait_seconds_sum{lane="scans"}',
        'locker_kiosk_message_wait_seconds_count{lane="scans"}',
    ),
    "decision": ("locker_scan_decision_seconds_sum", "locker_scan_decision_seconds_count"),
}
SCAN_SERIES = tuple(name for pair in SCAN_MEANS.values() for name in pair)


def _mean_ms(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], series: str
) -> float | None:
    """A histogram's mean over the measure, in the replicas that answered both times."""
    total, count = SCAN_MEANS[series]
    sums = [after[total][url] - before[total].get(url, 0.0) for url in after[total]]
    counts = [after[count][url] - before[count].get(url, 0.0) for url in after[count]]
    return 1000 * sum(sums) / sum(counts) if sum(counts) else None


async def _counter(urls: tuple[str, ...], name: str) -> dict[str, float]:
    """A counter's value on each replica that answers (a killed one does not)."""
    values: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for url in urls:
            try:
                text = (await client.get(url)).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith(name + " "):
                    values[url] = float(line.rsplit(" ", 1)[1])
    return values


GcReading = dict[tuple[str, str], float]  # (generation, "count" | "sum" | a bucket's bound): value


async def _gc_pauses(urls: tuple[str, ...]) -> GcReading:
    """The replicas' `locker_gc_pause_seconds` histograms, summed over the replicas."""
    reading: GcReading = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for url in urls:
            for line in (await client.get(url)).text.splitlines():
                if not line.startswith("locker_gc_pause_seconds_"):
                    continue
                name, value = line.rsplit(" ", 1)
                labels = dict(
                    part.split("=", 1) for part in name[name.index("{") + 1 : -1].split(",")
                )
                what = name[len("locker_gc_pause_seconds_") : name.index("{")]
                key = (labels["generation"].strip('"'), labels.get("le", what).strip('"'))
                reading[key] = reading.get(key, 0.0) + float(value)
    return reading


def _gc_summary(before: GcReading, after: GcReading) -> str:
    """Per generation: collections, their total, and the bucket the longest fell in."""
    parts = []
    for generation in ("0", "1", "2"):
        count = after.get((generation, "count"), 0) - before.get((generation, "count"), 0)
        total = after.get((generation, "sum"), 0) - before.get((generation, "sum"), 0)
        bounds = sorted(
            (float(le), n - before.get((generation, le), 0))
            for (g, le), n in after.items()
            if g == generation and le not in ("count", "sum")
        )  # cumulative: the longest pause is under the first bound that holds them all
        under = next((le for le, n in bounds if n >= count), float("inf"))
        parts.append(
            f"gen {generation}: {count:.0f}, {1000 * total:.0f} ms in all, longest "
            f"<= {1000 * under:.0f} ms"
            if count
            else f"gen {generation}: none"
        )
    return "; ".join(parts)


def _timed_telemetry(
    kiosk: VirtualKiosk, published: dict[tuple[str, datetime], float]
) -> Callable[[], None]:
    def send() -> None:
        readings = [
            contract.Reading(n=n, temp_c=64.0, setpoint_c=65.0, heater=True)
            for n in range(1, COMPARTMENTS + 1)
        ]
        batch = contract.Telemetry(readings=readings)
        published[(kiosk.kiosk_id, batch.ts)] = time.perf_counter()
        kiosk.publish_telemetry(batch)

    return send


async def _wait_online(database_url: str, kiosks: int) -> None:
    conn = await _connect(database_url)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while await conn.fetchval("SELECT count(*) FROM kiosks WHERE online") < kiosks:
            if time.monotonic() > deadline:
                raise TimeoutError("the fleet was not online in the database in time")
            await asyncio.sleep(1)
        # And the replicas done sharing the kiosks out: every lease held, none marked for a
        # handover, twice in a row. While a kiosk moves between replicas its telemetry waits
        # for the new holder's ask (ADR 0098): timed, it would be the handover's, not the
        # steady state's.
        settled = 0
        while settled < 2:
            shared = await conn.fetchval(
                "SELECT count(*) FROM kiosk_leases WHERE holder IS NOT NULL "
                "AND expires_at > now() AND standby IS NULL"
            )
            settled = settled + 1 if shared >= kiosks else 0
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not share the fleet out in time")
            await asyncio.sleep(1)
    finally:
        await conn.close()


async def _lag_from_database(
    database_url: str | None,
    kiosks: list[VirtualKiosk],
    published: dict[tuple[str, datetime], float],
    lags: list[float],
    stop: asyncio.Event,
) -> None:
    assert database_url is not None
    conn = await _connect(database_url)
    codes_ = [k.kiosk_id for k in kiosks]
    ids = dict(await conn.fetch("SELECT code, id FROM kiosks WHERE code = ANY($1)", codes_))
    names = {v: k for k, v in ids.items()}
    published.clear()
    try:
        while not stop.is_set():
            since = datetime.now(UTC) - timedelta(seconds=60)
            rows = await conn.fetch(
                "SELECT DISTINCT kiosk_id, ts FROM temperature_readings "
                "WHERE kiosk_id = ANY($1) AND ts > $2",
                list(ids.values()),
                since,
            )
            now = time.perf_counter()
            for row in rows:
                sent = published.pop((names[row["kiosk_id"]], row["ts"]), None)
                if sent is not None:
                    lags.append(now - sent)
            await asyncio.sleep(LAG_POLL_S)
    finally:
        await conn.close()


async def _lag_from_subscriber(
    host: str,
    port: int,
    kiosks: list[VirtualKiosk],
    published: dict[tuple[str, datetime], float],
    lags: list[float],
    stop: asyncio.Event,
) -> None:
    published.clear()

    def on_message(topic: str, payload: bytes) -> None:
        batch = contract.Telemetry.model_validate_json(payload)
        sent = published.pop((_kiosk_of(topic), batch.ts), None)
        if sent is not None:
            lags.append(time.perf_counter() - sent)

    listener = Client(f"fleet-lag-{uuid.uuid4().hex[:6]}", on_message)
    await listener.connect(host, port)
    for kiosk in kiosks:
        await listener.subscribe(kiosk.topics.telemetry)
    await stop.wait()
    await listener.close()


def _kiosk_of(topic: str) -> str:
    classified = contract.classify_topic(topic)
    assert classified is not None, topic
    return classified[0]


# -- the bare responder (the baseline's service) --------------------------------------------------


async def respond(host: str, port: int) -> None:
    """Answer every scan with an unlock of its kiosk's compartment 1, at once."""
    sender = Client(f"fleet-responder-{os.getpid()}")

    def on_message(topic: str, payload: bytes) -> None:
        event = contract.Event.model_validate_json(payload)
        if event.type != "scan":
            return
        kiosk = _kiosk_of(topic)
        command = contract.UnlockCommand(
            request_id=uuid.uuid4().hex,
            compartment=1,
            args=contract.UnlockArgs(),
            expires_at=contract.utcnow() + timedelta(seconds=30),
            reply_to=f"{contract.Topics(kiosk).prefix}/replies/responder",
        )
        sender.publish(contract.Topics(kiosk).cmd, command.to_json(), qos=1)

    sender.on_message = on_message
    await sender.connect(host, port)
    await sender.subscribe(contract.Topics.wildcard("events"))
    await asyncio.Event().wait()


# -- the runs ---------------------------------------------------------------------------------


# `lockerctl serve` with CPython's own collector settings: the baseline of ADR 0084.
GC_DEFAULT = (
    "import sys; from locker_service import heap; heap.settle = lambda: None; "
    "from locker_service.cli import app; app()"
)


def start_replicas(
    database_url: str,
    broker_url: str,
    count: int,
    logs: Path,
    gc_default: bool = False,
    log_level: str = "warning",
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """`count` replicas, ready, each with the port it serves on."""
    lockerctl = [sys.executable, "-c", GC_DEFAULT] if gc_default else [
        str(Path(sys.executable).with_name("lockerctl"))
    ]  # fmt: skip
    procs = []
    ports = []
    for i in range(count):
        port = free_port()
        env = {
            **os.environ,
            "LOCKER_ENVIRONMENT": "test",
            "LOCKER_DATABASE_URL": database_url,
            "LOCKER_SECRET_KEY": SECRET_KEY,
            "LOCKER_MQTT_URL": broker_url,
            "LOCKER_REPLICA_ID": f"bench-r{i}",
            "LOCKER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "LOCKER_NOTIFY_ENABLED": "false",
        }
        with (logs / f"replica-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [*lockerctl, "serve", "--port", str(port), "--log-level", log_level],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_ready(port, procs[-1])
        ports.append(port)
    return list(zip(procs, ports, strict=True))


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "a replica ended; see its log"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError("a replica was not ready in time")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def service_run(
    size: int, replicas: int, options: argparse.Namespace, logs: Path, gc_default: bool = False
) -> Run:
    broker = MosquittoProcess(extra_config=BROKER_CONFIG).start()
    database_url = create_pg_database("bench_fleet")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(database_url)
        probes_n = min(options.probes, size // 2)
        codes_, probes = asyncio.run(seed(database_url, size, probes_n, options.held))
        started = start_replicas(
            database_url, broker.url, replicas, logs, gc_default, options.replica_log_level
        )
        procs = [proc for proc, _ in started]
        metrics = tuple(f"http://127.0.0.1:{port}/metrics" for _, port in started)
        run = Run(_label(replicas, gc_default), size)
        pids = {"replicas": lambda: [p.pid for p in procs if p.poll() is None],
                "postgres": _postgres_pids, "broker": lambda: [_pid(broker)]}  # fmt: skip

        def kill() -> str:
            procs[-1].kill()
            procs[-1].wait()
            return f"bench-r{replicas - 1}"

        takeover = kill if options.takeover and replicas > 1 else None
        measure = drive(
            run, broker.host, broker.port, codes_, probes, options, pids, database_url, metrics,
            takeover,
        )  # fmt: skip
        asyncio.run(measure)
        run.held = asyncio.run(_held_summary(database_url))
        return run
    finally:
        stop_all(procs)
        broker.stop()
        drop_pg_database(database_url)


def _label(replicas: int, gc_default: bool) -> str:
    plural = "s" if replicas > 1 else ""
    return f"{replicas} replica{plural}" + (", gc default" if gc_default else "")


def bare_run(size: int, options: argparse.Namespace) -> Run:
    broker = MosquittoProcess(extra_config=BROKER_CONFIG).start()
    responder = subprocess.Popen(
        [sys.executable, __file__, "--respond", f"{broker.host}:{broker.port}"]
    )
    try:
        time.sleep(1.0)  # its subscription made
        tag = uuid.uuid4().hex[:6]
        codes_ = [f"bb-{tag}-{i:05d}" for i in range(size)]
        probes = [
            Probe(code, {n: f"bare{n}" for n in range(1, COMPARTMENTS + 1)})
            for code in random.Random(7).sample(codes_, min(options.probes, size // 2))
        ]
        run = Run("bare broker", size)
        pids = {"responder": lambda: [responder.pid], "broker": lambda: [_pid(broker)]}
        asyncio.run(drive(run, broker.host, broker.port, codes_, probes, options, pids, None))
        return run
    finally:
        stop_all([responder])
        broker.stop()


def _pid(broker: MosquittoProcess) -> int:
    assert broker._proc is not None
    return broker._proc.pid


BROKER_CONFIG = "max_queued_messages 100000\nmax_connections -1\nset_tcp_nodelay true\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2500,5000,10000")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, help="pickups a second (default: the peak's)")
    parser.add_argument("--probes", type=int, default=200, help="kiosks with ready orders")
    parser.add_argument(
        "--held",
        type=int,
        default=6,
        choices=range(COMPARTMENTS),
        metavar=f"0-{COMPARTMENTS - 1}",
        help="hot orders held at each other kiosk, their food checked each minute (0: none)",
    )
    parser.add_argument("--lag-sample", type=int, default=100)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after all online")
    parser.add_argument(
        "--gc-baseline",
        action="store_true",
        help="also run each replica count with CPython's own collector settings (ADR 0084)",
    )
    parser.add_argument(
        "--takeover",
        action="store_true",
        help="after each run of 2 or more replicas' measure, SIGKILL one and time its kiosks' move",
    )
    parser.add_argument(
        "--after-takeover", type=float, default=20.0, help="seconds measured once they moved"
    )
    parser.add_argument(
        "--replica-log-level", default="warning", help="the replicas' (logs in the folder printed)"
    )
    parser.add_argument("--respond", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.respond:
        host, port = options.respond.rsplit(":", 1)
        asyncio.run(respond(host, int(port)))
        return
    sizes = [int(s) for s in options.sizes.split(",")]
    counts = [int(r) for r in options.replicas.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(sizes) * 2 + 500, hard), hard))
    logs = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; replica logs in {logs}")
    knee: dict[str, int | None] = {}
    for size in sizes:
        runs = [bare_run(size, options)]
        for count in counts:
            if options.gc_baseline:
                runs.append(service_run(size, count, options, logs, gc_default=True))
            runs.append(service_run(size, count, options, logs))
        for run in runs:
            print(run.line(), flush=True)
            p99 = _percentile(run.scan_ms, 0.99)
            if p99 > GOAL_MS and knee.get(run.label) is None:
                knee[run.label] = size
    defaults = (True, False) if options.gc_baseline else (False,)
    labels = [_label(count, gc_default) for count in counts for gc_default in defaults]
    for label in ["bare broker", *labels]:
        at = knee.get(label)
        said = f"p99 passes {GOAL_MS:.0f} ms at {at} kiosks" if at else "never passes it here"
        print(f"knee, {label}: scan -> unlock {said} (sizes {options.sizes})")
    print(json.dumps({"load_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
