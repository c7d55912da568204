"""Three replicas as real processes (`lockerctl serve`) on one PostgreSQL, on Mosquitto and on a
three-node NATS cluster (kiosks on one node, replicas on the others), with scripted kiosks
(issue: a fleet; ADR 0044).

- Each kiosk's events, sent in bursts that only make sense in order (open, put in, shut, open,
  take out, shut), are recorded once each and in the order sent, while all three replicas work.
- A replica SIGKILLed mid-story: its kiosks move to the others once its lease runs out (the
  time is printed; that a lease is never taken before it expires is the lease keeper's test,
  test_lease_keeper.py); the courier shut the door while nobody held
  the kiosk, and the story still completes with each step once.
- A replica frozen (SIGSTOP) mid-story: its kiosk moves; the door shut while it slept reaches
  it too when it wakes (SIGCONT), and it changes nothing for it: the new epoch fences it out,
  and no command goes out twice.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from firmware_bridge import contract
from locker_service.config import Settings
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link.leases import owner_of
from locker_service.models import (
    Compartment,
    KioskEvent,
    KioskLease,
    NotificationOutbox,
    Order,
    OrderEvent,
)
from tests.locker_service.conftest import make_settings
from tests.locker_service.test_replicas import door_burst
from tests.locker_service.test_sigkill import ServiceProcess
from tests.locker_service.world import World, seed
from tests.support.mosquitto import MosquittoProcess, free_port
from tests.support.nats_cluster import NatsCluster
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(600)]

REPLICAS = 3
KIOSKS_EACH = 2  # kiosks whose lease each replica is given
LEASE_TTL_S = 3.0
LEASE_RENEW_S = 0.3
IDLE_IN_TRANSACTION_S = 2.0  # a frozen replica's locks are freed after this
WAIT_S = 90.0  # generous: three services, a broker and PostgreSQL on two busy cores
# Counters of a replica's /metrics that count kiosk events let go without recording them.
_LET_GO = (
    "locker_kiosk_events_not_held",
    "locker_kiosk_events_stale",
    "locker_kiosk_event_gaps_skipped",
    "locker_kiosk_handler_errors",
)


@dataclass
class Rig:
    kiosk_broker: tuple[str, int]  # where the kiosks connect
    replica_urls: list[str]  # each replica's broker URL


@pytest.fixture(params=["mosquitto", "nats"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if request.param == "mosquitto":
        with MosquittoProcess() as broker:
            yield Rig((broker.host, broker.port), [broker.url] * REPLICAS)
        return
    with NatsCluster() as cluster:
        kiosks = cluster.node("n1")
        yield Rig(
            ("127.0.0.1", kiosks.mqtt_port),
            [cluster.url(["n2", "n3"]), cluster.url(["n3", "n2"]), cluster.url(["n2", "n3"])],
        )


class Replica(ServiceProcess):
    def __init__(self, replica_id: str, env: dict[str, str], port: int, log_path: Path) -> None:
        super().__init__(env, port, log_path)
        self.replica_id = replica_id
        self.frozen = False

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    @property
    def answers(self) -> bool:
        """Running and not frozen: its /metrics can be asked."""
        return self.proc is not None and self.proc.poll() is None and not self.frozen

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not in /metrics")


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def codes_for(replica_ids: list[str], tag: str) -> dict[str, list[str]]:
    """Kiosk codes, KIOSKS_EACH for each replica as the assignment gives them among all."""
    given: dict[str, list[str]] = {r: [] for r in replica_ids}
    while any(len(codes) < KIOSKS_EACH for codes in given.values()):
        code = f"fl-{tag}-{uuid.uuid4().hex[:6]}"
        owner = owner_of(code, replica_ids)
        assert owner is not None
        if len(given[owner]) < KIOSKS_EACH:
            given[owner].append(code)
    return given


def replica_env(
    database_url: str, broker_url: str, replica_id: str, port: int, settings: Settings
) -> dict[str, str]:
    return {
        **os.environ,
        "LOCKER_ENVIRONMENT": "test",
        "LOCKER_DATABASE_URL": database_url,
        "LOCKER_SECRET_KEY": settings.secret_key,
        "LOCKER_NOTIFY_CONTACT_SCHEMES": ",".join(settings.notify_contact_schemes),
        "LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS": ",".join(
            settings.notify_contact_allowed_networks
        ),
        "LOCKER_MQTT_URL": broker_url,
        "LOCKER_REPLICA_ID": replica_id,
        "LOCKER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOCKER_LEASE_TTL_S": str(LEASE_TTL_S),
        "LOCKER_LEASE_RENEW_S": str(LEASE_RENEW_S),
        "LOCKER_DB_IDLE_IN_TRANSACTION_S": str(IDLE_IN_TRANSACTION_S),
        "LOCKER_DISINFECTION_S": "2",
        "LOCKER_CLEANING_S": "1",
        "LOCKER_TIMER_POLL_S": "0.1",
        "LOCKER_TIMER_LEASE_S": "3",
        "LOCKER_COMMAND_TIMEOUT_S": "5",
        "LOCKER_NOTIFY_ENABLED": "false",
        # These kiosks send no telemetry: the food's watch would find it unknown.
        "LOCKER_FOOD_UNKNOWN_LIMIT_S": str(30 * 24 * 3600),
    }


class Fleet:
    """The replicas, the kiosks and their worlds, and what the database says."""

    def __init__(self, database_url: str, replicas: list[Replica]) -> None:
        self.engine = create_engine(database_url)
        self.sessionmaker = create_sessionmaker(engine=self.engine)
        self.replicas = replicas
        self.kiosks: dict[str, ScriptedKiosk] = {}
        self.worlds: dict[str, World] = {}

    async def holders(self) -> dict[str, tuple[str | None, str | None, int]]:
        """kiosk code -> (holder, standby, epoch)."""
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(KioskLease.kiosk_code, KioskLease.holder, KioskLease.standby,
                       KioskLease.epoch).where(KioskLease.kiosk_code.in_(list(self.kiosks)))
            )  # fmt: skip
            return {code: (holder, standby, epoch) for code, holder, standby, epoch in rows}

    async def held_as_assigned(self, alive: list[Replica]) -> bool:
        """Every kiosk held by the replica the assignment names among `alive`, no handover
        under way."""
        ids = [r.replica_id for r in alive]
        held = await self.holders()
        return len(held) == len(self.kiosks) and all(
            held[code][0] == owner_of(code, ids) and held[code][1] is None for code in self.kiosks
        )

    async def recorded(self, code: str) -> list[str]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(KioskEvent.event_id)
                .where(KioskEvent.kiosk_id == self.worlds[code].kiosk_id)
                .order_by(KioskEvent.id)
            )
            return list(rows.all())

    async def explain(self, code: str | None = None) -> str:
        """What a wait that ran out needs told: of kiosk `code` (else of the leases), its events
        sent and recorded and its lease, each replica's counters of events let go, and what each
        logged of the kiosk (else of the leases), with every warning."""
        holders = await self.holders()
        if code is None:
            told = [f"leases (holder, standby, epoch) {holders}"]
            about = "lease"
        else:
            kinds = {e.event_id: f"#{e.seq} {e.type}" for e in self.kiosks[code].events}
            recorded = [kinds.get(e, e) for e in await self.recorded(code)]
            told = [
                f"{code}: sent {list(kinds.values())}",
                f"recorded {recorded}",
                f"lease (holder, standby, epoch) {holders.get(code)}",
            ]
            about = code
        for replica in self.replicas:
            counters = []
            for name in _LET_GO if replica.answers else ():
                try:
                    counters.append(f"{name} {await replica.metric(name)}")
                except (httpx.HTTPError, AssertionError):
                    counters.append(f"{name} ?")
            log = replica.log_path.read_text(errors="replace").splitlines()
            said = [line for line in log if about in line or "WARNING" in line or "ERROR" in line]
            told += [f"--- {replica.replica_id}: {', '.join(counters)}", *said[-40:]]
        return "\n".join(told)

    async def order_state(self, order_id: str) -> str:
        async with self.sessionmaker() as session:
            found = await session.get(Order, uuid.UUID(order_id))
            return found.state if found else "missing"

    async def compartment_free(self, code: str, n: int) -> bool:
        async with self.sessionmaker() as session:
            state = await session.scalar(
                select(Compartment.state).where(
                    Compartment.kiosk_id == self.worlds[code].kiosk_id, Compartment.number == n
                )
            )
            return state == "available"

    async def trail(self, order_id: str) -> tuple[Counter[str], list[str]]:
        async with self.sessionmaker() as session:
            steps = Counter(
                (
                    await session.scalars(
                        select(OrderEvent.action).where(OrderEvent.order_id == uuid.UUID(order_id))
                    )
                ).all()
            )
            outbox = (
                await session.scalars(
                    select(NotificationOutbox.kind).where(
                        NotificationOutbox.order_id == uuid.UUID(order_id)
                    )
                )
            ).all()
        return steps, list(outbox)


async def until_told(
    fleet: Fleet, predicate: Callable[[], Any], what: str, code: str | None = None
) -> None:
    """`until`, and if it runs out, what the fleet can tell of kiosk `code` (else the leases)."""
    try:
        await until(predicate, what)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}\n{await fleet.explain(code)}") from None


async def settled(fleet: Fleet, alive: list[Replica], what: str) -> None:
    """Wait until every kiosk is held as the assignment among `alive` says."""
    await until_told(fleet, lambda: fleet.held_as_assigned(alive), what)


async def drop_off(fleet: Fleet, via: Replica, code: str) -> tuple[str, str, int]:
    """An order created and its door unlocked for the courier, through `via`: (order id, its
    purchaser token, the compartment)."""
    world = fleet.worlds[code]
    async with httpx.AsyncClient(base_url=via.url, timeout=30) as client:
        created = await client.post(
            "/api/v1/orders", json=world.order_body(), headers=world.merchant()
        )
        assert created.status_code == 201, created.text
        order = created.json()
        dropped = await client.post(
            "/api/v1/kiosk/dropoff",
            json=world.dropoff_body(order["external_ref"]),
            headers=world.kiosk(),
        )
        assert dropped.status_code == 200, dropped.text
    return order["id"], order["purchaser_url"].rsplit("/p/", 1)[1], dropped.json()["compartment"]


async def collect(fleet: Fleet, via: Replica, code: str, order_id: str, token: str, n: int) -> None:
    """Ready, then picked up with her typed code through `via`, then cleaned and free."""
    world, kiosk = fleet.worlds[code], fleet.kiosks[code]
    await until_told(
        fleet, lambda: _is(fleet.order_state(order_id), "ready"), f"{code}'s order ready", code
    )
    async with httpx.AsyncClient(base_url=via.url, timeout=30) as client:
        typed = (await client.get(f"/api/v1/p/{token}")).json()["fallback_code"]
        picked = await client.post(
            "/api/v1/kiosk/pickup", json={"code": typed}, headers=world.kiosk()
        )
        assert picked.status_code == 200, picked.text
    kiosk.open_door(n)
    kiosk.remove_item(n)
    kiosk.close_door(n)
    await until_told(
        fleet, lambda: _is(fleet.order_state(order_id), "picked_up"), f"{code} picked up", code
    )
    await until_told(
        fleet, lambda: fleet.compartment_free(code, n), f"{code}/{n} cleaned and free", code
    )


async def _is(state: Any, wanted: str) -> bool:
    return bool(await state == wanted)


async def once_each(fleet: Fleet, code: str, order_id: str, n: int) -> None:
    """Every step of the order once; the kiosk unlocked the door twice (courier, purchaser)
    and ran one holding and one cleaning cycle: no command acted on twice."""
    steps, outbox = await fleet.trail(order_id)
    for step in ("create", "assign", "deposit", "start_cycle", "complete_cycle", "pick_up"):
        assert steps[step] == 1, (code, steps)
    assert outbox == ["ready"]
    acted = [
        c.command
        for c in fleet.kiosks[code].received
        if contract.compartment_of(c.command) == n and not c.duplicate
    ]
    unlocks = [c for c in acted if isinstance(c, contract.UnlockCommand)]
    cycles = [c.args.duration_s for c in acted if isinstance(c, contract.StartDisinfectionCommand)]
    assert len(unlocks) == 2, (code, acted)
    assert cycles == [2, 1], (code, acted)


async def test_three_replicas_keep_each_kiosks_order_through_a_kill_and_a_freeze(
    rig: Rig, pg_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(pg_database_url)
    tag = uuid.uuid4().hex[:6]
    ids = [f"r{i}-{tag}" for i in range(REPLICAS)]
    replicas: list[Replica] = []
    for i, replica_id in enumerate(ids):
        port = free_port()
        env = replica_env(pg_database_url, rig.replica_urls[i], replica_id, port, settings)
        replicas.append(Replica(replica_id, env, port, tmp_path / f"{replica_id}.log"))
    fleet = Fleet(pg_database_url, replicas)
    given = codes_for(ids, tag)
    for codes in given.values():
        for code in codes:
            fleet.worlds[code] = await seed(
                fleet.sessionmaker, settings, layout="M:4", kiosk_code=code
            )
    host, port = rig.kiosk_broker
    try:
        for replica in replicas:
            await replica.start()
        for code in fleet.worlds:
            fleet.kiosks[code] = ScriptedKiosk(host, port, code, compartments=4).start()
        await settled(fleet, replicas, "every kiosk held as assigned")

        # 1. Bursts at every kiosk at once: each recorded once, in the order sent.
        for kiosk in fleet.kiosks.values():
            door_burst(kiosk, 1, rounds=3)
        for code, kiosk in fleet.kiosks.items():
            sent = [e.event_id for e in kiosk.events]
            await until_told(fleet, partial(_has, fleet, code, len(sent)), f"{code}'s events", code)
            assert await fleet.recorded(code) == sent, await fleet.explain(code)

        # 2. SIGKILL mid-story: the door is shut while nobody holds the kiosk.
        dead, frozen, survivor = replicas
        killed_code = given[dead.replica_id][0]
        kiosk_a = fleet.kiosks[killed_code]
        story_a = len(kiosk_a.events)
        order_a, token_a, n_a = await drop_off(fleet, survivor, killed_code)
        await kiosk_a.wait_for_command("unlock", n_a, timeout_s=WAIT_S)
        kiosk_a.open_door(n_a)
        kiosk_a.place_item(n_a)
        epoch_before = (await fleet.holders())[killed_code][2]
        dead.kill()
        killed_at = time.monotonic()
        kiosk_a.close_door(n_a)
        alive = [frozen, survivor]
        await settled(fleet, alive, "the dead replica's kiosks taken")
        moved_s = time.monotonic() - killed_at
        print(f"a SIGKILLed replica's kiosks moved in {moved_s:.1f} s (TTL {LEASE_TTL_S} s)")
        assert (await fleet.holders())[killed_code][2] > epoch_before
        taken_a = len(kiosk_a.events)
        await collect(fleet, frozen, killed_code, order_a, token_a, n_a)
        await once_each(fleet, killed_code, order_a, n_a)
        await recorded_but(fleet, killed_code, story_a, taken_a)

        # 3. SIGSTOP mid-story: the door is shut while its holder sleeps.
        slept_code = next(c for c in given[frozen.replica_id] if c != killed_code)
        assert (await fleet.holders())[slept_code][0] == frozen.replica_id
        kiosk_b = fleet.kiosks[slept_code]
        story_b = len(kiosk_b.events)
        order_b, token_b, n_b = await drop_off(fleet, survivor, slept_code)
        await kiosk_b.wait_for_command("unlock", n_b, timeout_s=WAIT_S)
        kiosk_b.open_door(n_b)
        kiosk_b.place_item(n_b)
        fenced_before = await dropped_unrecorded(frozen)
        frozen.freeze()
        try:
            frozen_at = time.monotonic()
            kiosk_b.close_door(n_b)  # reaches the sleeper's connection, unread
            await settled(fleet, [survivor], "the sleeper's kiosks taken")
            taken_b = len(kiosk_b.events)
            print(f"a frozen replica's kiosks moved in {time.monotonic() - frozen_at:.1f} s")
            await collect(fleet, survivor, slept_code, order_b, token_b, n_b)
        finally:
            frozen.thaw()
        # Awake, it reads the door's events it slept through: fenced out, or dropped as stale if
        # it got the kiosk back first (ADR 0080), they change nothing.
        await until(
            lambda: _above(dropped_unrecorded(frozen), fenced_before),
            "the sleeper fenced out of what it slept through",
        )
        await settled(fleet, [frozen, survivor], "the sleeper back")
        await once_each(fleet, slept_code, order_b, n_b)
        await recorded_but(fleet, slept_code, story_b, taken_b)
    finally:
        for kiosk in fleet.kiosks.values():
            kiosk.stop()
        for replica in replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.thaw()
                replica.kill()
        await fleet.engine.dispose()


async def recorded_but(fleet: Fleet, code: str, story: int, taken: int) -> None:
    """The kiosk's events recorded once each and in the order sent. Those that reached only the
    holder that died or slept may be missing: any it had received and not yet handled, and
    those sent while it was gone unless another replica already listened (from the story's
    start at `story`); never one sent before the story, nor after the new holder took the
    kiosk (`taken`). The state they report reached the new holder in the kiosk's retained
    snapshots (ADR 0037), which is how the story went on; the event record lacks them (ADR
    0044, Consequences: "A replica that dies or freezes...")."""
    events = fleet.kiosks[code].events
    sent = [e.event_id for e in events]
    recorded = await fleet.recorded(code)
    missing = [e for e in sent if e not in recorded]
    kinds = {e.event_id: f"#{e.seq} {e.type}" for e in events}
    told = f"{code}: sent {[kinds[e] for e in sent]}, recorded {[kinds.get(e) for e in recorded]}"
    assert recorded == [e for e in sent if e in recorded], told  # in order, each once
    assert set(missing) <= set(sent[story:taken]), told  # none before the story, none after


async def dropped_unrecorded(replica: Replica) -> float:
    """Events the replica let go without recording: its lease not held, lost, or gone past."""
    not_held = await replica.metric("locker_kiosk_events_not_held")
    return not_held + await replica.metric("locker_kiosk_events_stale")


async def _has(fleet: Fleet, code: str, length: int) -> bool:
    return len(await fleet.recorded(code)) >= length


async def _above(value: Any, floor: float) -> bool:
    return bool(await value > floor)
