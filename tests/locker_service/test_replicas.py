"""Service replicas on one database and one broker: each kiosk is handled by the replica that
holds its lease (ADR 0044), timers are claimed by whichever replica sees them due, any replica
serves HTTP, and every step of the story still happens once and in order, also when a replica
leaves, dies or sleeps through its lease."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.publish as paho_publish
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link import KioskLink
from locker_service.kiosk_link import asks as asks_module
from locker_service.kiosk_link import link as link_module
from locker_service.kiosk_link.lease_keeper import LeaseKeeper
from locker_service.kiosk_link.leases import owner_of
from locker_service.main import create_app
from locker_service.models import (
    Compartment,
    KioskEvent,
    NotificationOutbox,
    Order,
    OrderEvent,
    TemperatureReading,
)
from locker_service.runtime import COLLECTOR
from tests.locker_service.conftest import make_settings
from tests.locker_service.world import World, seed
from tests.support.mosquitto import MosquittoProcess
from tests.support.pools import main_pool_taken
from tests.support.rounds import within_rounds
from tests.support.scripted_kiosk import ScriptedKiosk

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(120)]

# Short leases, so that a death is noticed in seconds; still several renewals per TTL, so a
# replica slowed by a loaded host does not lose its kiosks.
LEASE_TTL_S = 3.0
LEASE_RENEW_S = 0.3
# Bounds counted in the lease keeper's own rounds, so a starved host (fewer rounds) cannot
# break them. A clean handover: the others see the leaver gone at their next round, the new
# owner listens and takes the freed lease at the round after (rounds a quarter period apart
# while it waits).
HANDOVER_ROUNDS = 3 + 4
# A death: the heartbeat goes stale after the TTL's worth of rounds, then the same handover.
TAKEOVER_ROUNDS = 4 * math.ceil(LEASE_TTL_S / LEASE_RENEW_S) + HANDOVER_ROUNDS


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> float:
    """Seconds until `predicate` held; fails after `timeout_s`."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@dataclass
class Replica:
    app: FastAPI
    stack: contextlib.AsyncExitStack  # its own, so a test can stop one replica

    @property
    def ctx(self) -> ServiceContext:
        ctx: ServiceContext = self.app.state.ctx
        return ctx

    @property
    def link(self) -> KioskLink:
        link: KioskLink = self.app.state.runtime.link
        return link

    @property
    def leases(self) -> LeaseKeeper:
        keeper: LeaseKeeper = self.app.state.runtime.leases
        return keeper

    @property
    def replica_id(self) -> str:
        return self.link.replica_id

    def handled(self, kiosk: ScriptedKiosk) -> int:
        return self.link.counters.handled_events.get(kiosk.kiosk_id, 0)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=f"http://{self.replica_id}")


@pytest.fixture
async def start_replica(
    database_url: str, private_mosquitto: MosquittoProcess
) -> AsyncIterator[Callable[..., Any]]:
    replicas: list[Replica] = []

    async def start(name: str, **overrides: object) -> Replica:
        values: dict[str, object] = {
            "kiosk_link_enabled": True,
            "timers_enabled": True,
            "mqtt_url": private_mosquitto.url,
            "replica_id": f"{name}-{uuid.uuid4().hex[:6]}",
            "disinfection_s": 2.0,
            "cleaning_s": 1.0,
            "timer_poll_s": 0.1,
            "lease_ttl_s": LEASE_TTL_S,
            "lease_renew_s": LEASE_RENEW_S,
            **overrides,
        }
        app = create_app(make_settings(database_url, **values))
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(app.router.lifespan_context(app))
        replica = Replica(app, stack)
        replicas.append(replica)
        await until(lambda: replica.link.ready, 30, f"replica {name} ready")
        return replica

    try:
        yield start
    finally:
        for replica in reversed(replicas):
            await replica.stack.aclose()


@pytest.fixture
def kiosks(private_mosquitto: MosquittoProcess) -> Iterator[Callable[[str], ScriptedKiosk]]:
    started: list[ScriptedKiosk] = []

    def start(code: str) -> ScriptedKiosk:
        kiosk = ScriptedKiosk(private_mosquitto.host, private_mosquitto.port, code, compartments=4)
        started.append(kiosk.start())
        return kiosk

    yield start
    for kiosk in started:
        with contextlib.suppress(Exception):
            kiosk.stop()


def code_owned_by(owner: Replica, replicas: list[Replica]) -> str:
    """A fresh kiosk code that the assignment gives to `owner` among `replicas`."""
    return code_owned_by_id(owner.replica_id, [r.replica_id for r in replicas])


def code_owned_by_id(owner_id: str, replica_ids: list[str]) -> str:
    while True:
        code = f"rep-{uuid.uuid4().hex[:8]}"
        if owner_of(code, replica_ids) == owner_id:
            return code


async def held_by(replica: Replica, kiosk: ScriptedKiosk, timeout_s: float = 10) -> float:
    return await until(
        lambda: kiosk.kiosk_id in replica.leases.held(),
        timeout_s,
        f"kiosk {kiosk.kiosk_id} held by {replica.replica_id}",
    )


async def taken_by(replica: Replica, kiosk: ScriptedKiosk, rounds: int) -> None:
    """The kiosk's lease taken by `replica` within `rounds` of its keeper's rounds (counted in
    its own rounds: a starved host runs fewer of them, never more per handover)."""
    await within_rounds(
        replica.leases,
        rounds,
        lambda: kiosk.kiosk_id in replica.leases.held(),
        f"kiosk {kiosk.kiosk_id} taken by {replica.replica_id}",
    )


async def keepers_settled(*replicas: Replica) -> None:
    """Two more rounds of every replica's lease keeper: each has settled the new kiosks and
    follows kiosks one by one (a replica that was alone followed every kiosk), so a burst
    reaches its holder alone."""
    wanted = [(r, r.leases.rounds + 2) for r in replicas]
    for r, rounds in wanted:
        await until(lambda r=r, n=rounds: r.leases.rounds >= n, 10, f"{r.replica_id} settled")


async def handled_in_order(replica: Replica, world: World, kiosk: ScriptedKiosk) -> None:
    """Every event the kiosk sent was handled once, in the order sent."""

    async def recorded() -> list[str]:
        async with replica.ctx.sessionmaker() as session:
            rows = await session.scalars(
                select(KioskEvent.event_id)
                .where(KioskEvent.kiosk_id == world.kiosk_id)
                .order_by(KioskEvent.id)
            )
            return list(rows.all())

    sent = [e.event_id for e in kiosk.events]
    await until(lambda: _same_length(recorded, len(sent)), 20, "every event recorded")
    assert await recorded() == sent


async def _same_length(recorded: Callable[[], Any], length: int) -> bool:
    return len(await recorded()) >= length


def door_burst(kiosk: ScriptedKiosk, n: int, rounds: int) -> None:
    """Events that only make sense in order: open, put in, shut, open, take out, shut..."""
    for _ in range(rounds):
        kiosk.open_door(n, force=True)
        kiosk.place_item(n)
        kiosk.close_door(n)
        kiosk.open_door(n, force=True)
        kiosk.remove_item(n)
        kiosk.close_door(n)


async def run_story(
    http: Replica, db: Replica, world: World, kiosk: ScriptedKiosk, ref: str
) -> None:
    """An order from creation to a cleaned, free compartment, every request through `http`."""
    async with http.client() as client:
        order = (
            await client.post(
                "/api/v1/orders", json=world.order_body(ref), headers=world.merchant()
            )
        ).json()
        dropped = await client.post(
            "/api/v1/kiosk/dropoff",
            json={"courier_code": world.courier_code, "pin": world.courier_pin, "order_ref": ref},
            headers=world.kiosk(),
        )
        assert dropped.status_code == 200, dropped.text
        n = dropped.json()["compartment"]
        kiosk.open_door(n)
        kiosk.place_item(n)
        kiosk.close_door(n)

        async def state() -> str:
            async with db.ctx.sessionmaker() as session:
                found = await session.get(Order, uuid.UUID(order["id"]))
                return found.state if found else "missing"

        await until(lambda: _is(state, "ready"), 30, "ready")
        token = order["purchaser_url"].rsplit("/p/", 1)[1]
        code = (await client.get(f"/api/v1/p/{token}")).json()["fallback_code"]
        picked = await client.post(
            "/api/v1/kiosk/pickup", json={"code": code}, headers=world.kiosk()
        )
        assert picked.status_code == 200, picked.text
    kiosk.open_door(n)
    kiosk.remove_item(n)
    kiosk.close_door(n)
    await until(lambda: _is(state, "picked_up"), 20, "picked up")

    async def free_again() -> bool:
        async with db.ctx.sessionmaker() as session:
            found = await session.scalar(
                select(Compartment.state).where(
                    Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
                )
            )
            return found == "available"

    await until(free_again, 20, "the compartment cleaned and free")
    async with db.ctx.sessionmaker() as session:
        trail = Counter(
            (
                await session.scalars(
                    select(OrderEvent.action).where(OrderEvent.order_id == uuid.UUID(order["id"]))
                )
            ).all()
        )
        outbox = (
            await session.scalars(
                select(NotificationOutbox.kind).where(
                    NotificationOutbox.order_id == uuid.UUID(order["id"])
                )
            )
        ).all()
    for step in ("create", "assign", "deposit", "start_cycle", "complete_cycle", "pick_up"):
        assert trail[step] == 1, trail
    assert outbox == ["ready"]


async def _is(state: Callable[[], Any], wanted: str) -> bool:
    return bool(await state() == wanted)


async def test_two_replicas_run_the_story_once(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(a, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(a, kiosk)

    # The replica without the kiosk serves every request; the holder handles every message.
    await run_story(b, a, world, kiosk, "two")
    cycles = [
        c.command
        for c in kiosk.received
        if isinstance(c.command, contract.StartDisinfectionCommand) and not c.duplicate
    ]
    # one holding cycle (2 s), one cleaning cycle (1 s): neither started twice
    assert [c.args.duration_s for c in cycles] == [2, 1]
    await handled_in_order(a, world, kiosk)
    assert a.handled(kiosk) == len(kiosk.events) and b.handled(kiosk) == 0
    assert b.link.counters.dropped_not_held == 0  # it never even received the kiosk's events
    assert kiosk.kiosk_id not in b.leases.held()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_replica_whose_main_pool_is_taken_keeps_its_kiosks(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    """Every connection of the holder's main pool taken (its handlers in a storm of reports)
    for longer than the lease's TTL: its keeper renews on connections of its own (ADR 0097), so
    the other replica never takes the kiosk. PostgreSQL: SQLite has one pool."""
    a, b = await start_replica("a"), await start_replica("b")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(a, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(a, kiosk)
    await keepers_settled(a, b)
    fence = a.leases.fence(kiosk.kiosk_id)
    assert fence is not None
    # The pool taken is as configured (LOCKER_DB_POOL_SIZE, LOCKER_DB_MAX_OVERFLOW: the suite's
    # 4 and 6, tests/conftest.py), so replicas of tests side by side fit the server.
    pool = a.ctx.engine.pool
    settings = a.ctx.settings
    assert (pool.size(), pool._max_overflow) == (settings.db_pool_size, settings.db_max_overflow)  # type: ignore[attr-defined]
    async with main_pool_taken(a.ctx):
        # Rounds enough for b to take it, had a stopped renewing; and a's rounds go on.
        rounds = (a.leases.rounds, b.leases.rounds)
        await until(lambda: b.leases.rounds > rounds[1] + TAKEOVER_ROUNDS, 90, "b's rounds go on")
        assert a.leases.rounds > rounds[0] + 2
        assert kiosk.kiosk_id not in b.leases.held()
        renewed = a.leases.fence(kiosk.kiosk_id)
        assert renewed is not None and renewed.epoch == fence.epoch
        assert renewed.valid_until > fence.valid_until


async def test_kiosks_on_two_replicas_each_apply_a_burst_in_order(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    worlds = {
        r.replica_id: await seed(
            a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(r, [a, b])
        )
        for r in (a, b)
    }
    on = {r.replica_id: kiosks(worlds[r.replica_id].kiosk_code) for r in (a, b)}
    await held_by(a, on[a.replica_id])
    await held_by(b, on[b.replica_id])
    await keepers_settled(a, b)

    for kiosk in on.values():  # both at once: each replica busy with its own kiosk
        door_burst(kiosk, 1, rounds=5)
    for r in (a, b):
        kiosk, other = on[r.replica_id], on[(b if r is a else a).replica_id]
        await handled_in_order(r, worlds[r.replica_id], kiosk)
        assert r.handled(kiosk) == len(kiosk.events) == 30
        assert r.handled(other) == 0
        async with r.ctx.sessionmaker() as session:
            door_open, occupied = (
                await session.execute(
                    select(Compartment.door_open, Compartment.occupied).where(
                        Compartment.kiosk_id == worlds[r.replica_id].kiosk_id,
                        Compartment.number == 1,
                    )
                )
            ).one()
        assert (door_open, occupied) == (False, False)


async def test_a_replica_stopped_cleanly_hands_its_kiosks_over_at_once(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(b, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(b, kiosk)
    await keepers_settled(a, b)
    door_burst(kiosk, 1, rounds=1)
    await until(lambda: b.handled(kiosk) == 6, 10, "the first burst handled by b")

    # A deploy: b leaves, freeing each lease once a listens. The handover is timed from the
    # start of the shutdown to a's taking the lease, not to the end of b's whole shutdown.
    leaving = asyncio.create_task(b.stack.aclose())
    await taken_by(a, kiosk, HANDOVER_ROUNDS)
    await leaving

    await run_story(a, a, world, kiosk, "after-stop")
    await handled_in_order(a, world, kiosk)
    assert a.handled(kiosk) == len(kiosk.events) - 6


async def test_a_replica_that_dies_has_its_kiosks_taken_after_the_ttl(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    a = await start_replica("a")
    b = await start_replica("b", timers_enabled=False)
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(b, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(b, kiosk)

    # Death: no release, no goodbye; its heartbeat stops and its connection drops.
    await b.leases.halt()
    await b.link.stop()
    died = time.monotonic()
    await taken_by(a, kiosk, TAKEOVER_ROUNDS)
    took_s = time.monotonic() - died
    assert took_s >= LEASE_TTL_S - LEASE_RENEW_S, took_s  # never before the TTL

    await run_story(a, a, world, kiosk, "after-death")
    await handled_in_order(a, world, kiosk)
    assert a.handled(kiosk) == len(kiosk.events)


async def held_by_the_second(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> tuple[Replica, Replica, World, ScriptedKiosk]:
    """Replicas a and b (b without timers) and a kiosk held by b, both settled: a no longer
    follows the kiosk, so whatever b stops hearing nobody hears."""
    a = await start_replica("a")
    b = await start_replica("b", timers_enabled=False)
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(b, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(b, kiosk)
    await keepers_settled(a, b)
    return a, b, world, kiosk


async def test_events_sent_while_no_replica_listened_are_recorded_in_order_by_the_next(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    """The kiosk's holder dies; the door events the kiosk sends before another replica takes
    it reach nobody (a broker keeps nothing for a topic nobody subscribes to). The new holder
    asks for the events after its record (ADR 0092) and starts the kiosk's order just after
    it: they are recorded, in the order sent, before those sent once it listens, even when
    the kiosk answers only after those."""
    a, b, world, kiosk = await held_by_the_second(start_replica, kiosks)
    door_burst(kiosk, 1, rounds=1)
    await handled_in_order(b, world, kiosk)

    kiosk.script("report_state", "later")
    await b.leases.halt()  # death, as in the test above
    await b.link.stop()
    door_burst(kiosk, 2, rounds=1)  # heard by nobody
    await taken_by(a, kiosk, TAKEOVER_ROUNDS)
    door_burst(kiosk, 3, rounds=1)
    await until(
        lambda: any(r.command.action == "report_state" and r.handled for r in kiosk.received),
        20,
        "the new holder's report_state, kept to be answered later",
    )
    await until(
        lambda: a.link.counters.events_held_for_order or a.handled(kiosk),
        20,
        "the new holder given the events sent once it listened",
    )
    assert kiosk.answer_later() == 1
    await handled_in_order(a, world, kiosk)
    asked = [r.command for r in kiosk.received if r.command.action == "report_state"]
    assert [c.args.events_after for c in asked if isinstance(c, contract.ReportStateCommand)][
        -1
    ] == 6


async def test_a_kiosk_whose_event_comes_while_its_ask_waits_its_turn_is_asked_at_once(
    start_replica: Callable[..., Any],
    kiosks: Callable[[str], ScriptedKiosk],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ADR 0105: a takeover's state asks take turns, and a kiosk's events may wait for those
    its ask has it send again (ADR 0092), so a kiosk whose event comes while its ask waits is
    asked at once. Here no ask has a turn at all: the only one is the one its event brings."""
    monkeypatch.setattr(asks_module, "ASKS_AT_ONCE", 0)
    a, b, world, kiosk = await held_by_the_second(start_replica, kiosks)
    door_burst(kiosk, 1, rounds=1)
    await handled_in_order(b, world, kiosk)

    await b.leases.halt()  # death
    await b.link.stop()
    door_burst(kiosk, 2, rounds=1)  # heard by nobody
    asked_before = sum(r.command.action == "report_state" for r in kiosk.received)
    await taken_by(a, kiosk, TAKEOVER_ROUNDS)
    assert kiosk.kiosk_id in a.link._state_asks.waiting()  # taken, its ask waiting its turn
    door_burst(kiosk, 3, rounds=1)
    await until(
        lambda: sum(r.command.action == "report_state" for r in kiosk.received) > asked_before,
        20,
        "the new holder's report_state, sent at the kiosk's first event",
    )
    assert kiosk.kiosk_id not in a.link._state_asks.waiting()
    # What nobody heard comes again, and everything is recorded in the order sent.
    await handled_in_order(a, world, kiosk)


async def stored_batches(replica: Replica, world: World) -> Counter[Any]:
    """How many readings are stored per batch stamp of the kiosk."""
    async with replica.ctx.sessionmaker() as session:
        rows = await session.execute(
            select(TemperatureReading.ts, func.count())
            .where(TemperatureReading.kiosk_id == world.kiosk_id)
            .group_by(TemperatureReading.ts)
        )
        return Counter({ts: n for ts, n in rows})


async def test_telemetry_sent_while_no_replica_listened_is_stored_once_by_the_next(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    """The kiosk's holder dies; the telemetry the kiosk publishes (QoS 0) before another
    replica takes it reaches nobody. The new holder asks for the readings after the newest
    stored (ADR 0098): every batch is stored, each once, the one it also heard live
    included."""
    a, b, world, kiosk = await held_by_the_second(start_replica, kiosks)
    heard = kiosk.publish_telemetry()
    await until(lambda: _has(stored_batches(b, world), heard.ts), 20, "the first batch stored by b")

    kiosk.script("report_state", "later")  # answered once the test has sent a live batch
    await b.leases.halt()  # death, as above
    await b.link.stop()
    unheard = [kiosk.publish_telemetry(), kiosk.publish_telemetry()]
    await taken_by(a, kiosk, TAKEOVER_ROUNDS)
    await until(
        lambda: any(r.command.action == "report_state" for r in kiosk.received),
        20,
        "the new holder's report_state",
    )
    live = kiosk.publish_telemetry()  # heard by a, and sent again with the others
    await until(lambda: _has(stored_batches(a, world), live.ts), 20, "the live batch stored")
    assert kiosk.answer_later() == 1
    published = [heard, *unheard, live]
    each = len(heard.readings)
    await until(
        lambda: _all_stored(stored_batches(a, world), [t.ts for t in published]),
        20,
        "every batch stored",
    )
    asked = [
        r.command for r in kiosk.received if isinstance(r.command, contract.ReportStateCommand)
    ]
    assert asked[-1].args.readings_after == heard.ts
    ingest = a.app.state.runtime.ingest
    await ingest.flush()  # nothing left to store twice
    assert ingest.counters.resent_stored == 2 and ingest.counters.resent_repeated == 1
    assert await stored_batches(a, world) == Counter({t.ts: each for t in published})


async def _has(batches: Any, ts: Any) -> bool:
    return ts in await batches


async def _all_stored(batches: Any, stamps: list[Any]) -> bool:
    stored = await batches
    return all(ts in stored for ts in stamps)


async def test_a_replica_that_slept_through_its_lease_changes_nothing(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    """SIGSTOP, then SIGCONT: the sleeper still believes it holds the kiosk and still receives
    its events and telemetry, but every transaction it tries is fenced out by the new epoch,
    and it stores none of the readings the new holder stores (ADR 0103)."""
    a, b = await start_replica("a"), await start_replica("b")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(b, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(b, kiosk)
    await b.leases.halt()  # asleep as far as the database can tell
    old = b.leases.fence(kiosk.kiosk_id)
    assert old is not None
    await taken_by(a, kiosk, TAKEOVER_ROUNDS)
    assert b.leases.fence(kiosk.kiosk_id) == old  # it has not noticed

    door_burst(kiosk, 1, rounds=2)
    await handled_in_order(a, world, kiosk)
    assert a.handled(kiosk) == len(kiosk.events) == 12
    await until(lambda: b.link.counters.dropped_not_held >= 12, 10, "the sleeper fenced out")
    assert b.handled(kiosk) == 0
    async with a.ctx.sessionmaker() as session:
        recorded = await session.scalar(
            select(func.count())
            .select_from(KioskEvent)
            .where(KioskEvent.kiosk_id == world.kiosk_id)
        )
    assert recorded == 12

    sleeper, holder = b.app.state.runtime.ingest, a.app.state.runtime.ingest
    heard, had = b.link.counters.received.get("telemetry", 0), holder.counters.stored
    batch = kiosk.publish_telemetry()  # both hear it: the sleeper has not unsubscribed
    await until(lambda: b.link.counters.received.get("telemetry", 0) > heard, 10, "it heard")
    await until(lambda: holder.counters.stored >= had + len(batch.readings), 10, "a stored it")

    async def stored() -> int:
        async with a.ctx.sessionmaker() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(TemperatureReading)
                .where(
                    TemperatureReading.kiosk_id == world.kiosk_id,
                    TemperatureReading.ts == batch.ts,
                )
            )
        return int(count or 0)

    await sleeper.flush()  # its lease lapsed: held back, not written
    assert await stored() == len(batch.readings)  # once each
    assert sleeper.buffered_rows == len(batch.readings) and sleeper.counters.lease_waits > 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_replica_handed_an_old_retained_snapshot_learns_the_kiosks_state_from_it(
    start_replica: Callable[..., Any],
    kiosks: Callable[[str], ScriptedKiosk],
    private_mosquitto: MosquittoProcess,
) -> None:
    """A clustered broker's node may hand a new subscriber a retained copy older than the
    kiosk's last (its nodes copy them to each other asynchronously): played here by an old
    copy put back in Mosquitto's retained store. The kiosk publishes a compartment's snapshot
    only when it changes, so only asking it (`report_state`, ADR 0091) brings the food in
    compartment 2 to the service's notice."""
    code = f"rep-{uuid.uuid4().hex[:8]}"
    kiosk = kiosks(code)
    food_in_compartment_2(kiosk)
    old = (
        kiosk.compartments[2]
        .snapshot()
        .model_copy(update={"occupied": False, "ts": contract.utcnow() - timedelta(minutes=5)})
    )
    await asyncio.to_thread(
        paho_publish.single,
        kiosk.topics.compartment_state(2),
        old.to_json(),
        qos=1,
        retain=True,
        hostname=private_mosquitto.host,
        port=private_mosquitto.port,
    )
    a = await start_replica("a")
    handled = snapshots_handled(a)
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code)
    await held_by(a, kiosk)

    await until(lambda: food_seen(a, world, 2), 30, "the food in compartment 2 seen by the service")
    asked = [r.command for r in kiosk.received if r.command.action == "report_state"]
    assert asked and asked[0].reply_to == a.link.reply_topic(code)
    # Every compartment reported afresh: none of the copies from before the take was handed to
    # the story on top (ADR 0093; before, each compartment was handled twice), the old one
    # included.
    await until(lambda: a.link.counters.state_asks >= 1, 30, "the ask for its state ended")
    await until(lambda: len(handled) == len(kiosk.compartments), 30, "every report handled")
    assert handled == Counter(dict.fromkeys(kiosk.compartments, 1))
    assert a.link.counters.snapshots_replayed == 0


def snapshots_handled(replica: Replica) -> Counter[int]:
    """From now on, how many snapshots of each compartment the replica's story is handed."""
    story = replica.app.state.runtime.story
    handled: Counter[int] = Counter()
    on_snapshots = story.on_snapshots

    async def counting(kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]) -> None:
        handled.update(snap.n for snap in snaps)
        await on_snapshots(kiosk_id, snaps)

    story.on_snapshots = counting
    return handled


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    "answer",
    [("failed", "board offline"), ("succeeded", None)],
    ids=["its board offline", "its reports lost"],
)
async def test_a_kiosk_that_does_not_report_its_state_is_judged_by_its_retained_snapshots(
    start_replica: Callable[..., Any],
    kiosks: Callable[[str], ScriptedKiosk],
    monkeypatch: pytest.MonkeyPatch,
    answer: tuple[str, str | None],
) -> None:
    """A new holder asks the kiosk for its state as it takes the lease (ADR 0091), and hands
    the story the retained snapshots of the compartments it does not report afresh (ADR 0093):
    here the kiosk answers `failed` (its board offline), or `succeeded` with its snapshots never
    coming (the broker's queue for the replica dropped them in a large takeover; handed on once
    the wait for them is over). Either way the retained copies tell of the food."""
    monkeypatch.setattr(link_module, "REPORTED_SNAPSHOTS_WAIT_S", 0.5)
    code = f"rep-{uuid.uuid4().hex[:8]}"
    kiosk = kiosks(code)
    food_in_compartment_2(kiosk)
    kiosk.script("report_state", *answer)  # nothing published
    a = await start_replica("a")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code)
    await held_by(a, kiosk)

    await until(lambda: food_seen(a, world, 2), 30, "the food in compartment 2 seen")
    await until(lambda: a.link.counters.state_asks >= 1, 30, "the ask for its state ended")
    assert a.link.counters.snapshots_replayed == len(kiosk.compartments)
    assert [r.status for r in kiosk.replies][-1] == answer[0]
    assert a.link.counters.state_reported == (answer[0] == "succeeded")  # the service had it


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_replica_serves_its_api_while_its_first_lease_round_waits(
    database_url: str, private_mosquitto: MosquittoProcess
) -> None:
    """ADR 0099: a replica whose first round waits on a take (here a row lock; in a restart,
    hundreds of takes) has started all the same: it answers /healthz and its API, says it is
    not ready, and is once the round has ended."""
    settings = make_settings(
        database_url,
        kiosk_link_enabled=True,
        mqtt_url=private_mosquitto.url,
        replica_id=f"a-{uuid.uuid4().hex[:6]}",
        lease_ttl_s=LEASE_TTL_S,
        lease_renew_s=LEASE_RENEW_S,
    )
    engine = create_engine(database_url)
    world = await seed(create_sessionmaker(engine), settings)
    app = create_app(settings)
    stack = contextlib.AsyncExitStack()
    starting: asyncio.Task[Any] | None = None
    try:
        async with engine.connect() as blocker:
            lease = {"kiosk": world.kiosk_code}
            await blocker.execute(
                text(
                    "INSERT INTO kiosk_leases (kiosk_code, holder, epoch, expires_at, standby) "
                    "VALUES (:kiosk, NULL, 0, now(), NULL)"
                ),
                lease,
            )
            await blocker.commit()
            await blocker.execute(
                text("SELECT 1 FROM kiosk_leases WHERE kiosk_code = :kiosk FOR UPDATE"), lease
            )
            starting = asyncio.create_task(
                stack.enter_async_context(app.router.lifespan_context(app))
            )
            await until(starting.done, 30, "the service started while its take waits")
            starting.result()
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://replica"
            ) as client:
                assert (await client.get("/healthz")).status_code == 200
                waiting = await client.get("/readyz")
                assert waiting.status_code == 503
                assert waiting.json()["checks"] == {"database": True, "mqtt": True, "leases": False}
                alerts = await client.get("/api/v1/operator/alerts", headers=world.operator())
                assert alerts.status_code == 200
                keeper: LeaseKeeper = app.state.runtime.leases
                assert not keeper.settled and world.kiosk_code not in keeper.held()
                await blocker.rollback()  # the take goes on
                await until(
                    lambda: _status(client, "/readyz", 200), 30, "ready once the round ended"
                )
                assert world.kiosk_code in keeper.held()
    finally:
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        await stack.aclose()
        await engine.dispose()


async def _status(client: httpx.AsyncClient, path: str, wanted: int) -> bool:
    return (await client.get(path)).status_code == wanted


async def test_a_replica_can_command_a_kiosk_from_its_first_take(
    start_replica: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kiosk taken in a replica's first round is handled at once (ADR 0093), before the round
    has taken the others: a scan's unlock must find the kiosk link there to send it."""
    commander_at_start: list[bool] = []
    start = LeaseKeeper.start

    async def starting(keeper: LeaseKeeper, *, wait: bool = True) -> None:
        [runtime] = [r for r in list(COLLECTOR._runtimes) if r.leases is keeper]
        commander_at_start.append(runtime.ctx.commander is not None)
        await start(keeper, wait=wait)

    monkeypatch.setattr(LeaseKeeper, "start", starting)
    await start_replica("a")
    assert commander_at_start == [True]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_kiosk_last_heard_offline_is_judged_by_its_retained_snapshots_at_the_take(
    start_replica: Callable[..., Any],
    kiosks: Callable[[str], ScriptedKiosk],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kiosk whose last status says offline is not waited for (ADR 0093): its retained
    snapshots are all there is, and they are handed on as the lease is taken."""
    monkeypatch.setattr(link_module, "REPORT_STATE_TIMEOUT_S", 3600.0)  # never, in a test
    code = f"rep-{uuid.uuid4().hex[:8]}"
    kiosk = kiosks(code)
    kiosk.publish_status("offline")  # before the snapshot the helper waits for, on one socket
    food_in_compartment_2(kiosk)
    kiosk.go_silent()
    a = await start_replica("a")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code)
    await held_by(a, kiosk)

    await until(lambda: food_seen(a, world, 2), 30, "the food in compartment 2 seen at the take")
    assert a.link.counters.snapshots_replayed == len(kiosk.compartments)
    assert a.link.counters.state_asks == 0  # the ask still waits for an answer


def food_in_compartment_2(kiosk: ScriptedKiosk) -> None:
    """Food put in compartment 2 (its snapshot, retained, says so when this returns)."""
    kiosk.open_door(2, force=True)
    kiosk.place_item(2)
    kiosk.close_door(2)
    kiosk.set_temperature(2, 21.5)  # on return the broker holds the kiosk's last snapshot


async def food_seen(replica: Replica, world: World, n: int) -> bool:
    """The service's record says compartment `n` holds something."""
    async with replica.ctx.sessionmaker() as session:
        occupied = await session.scalar(
            select(Compartment.occupied).where(
                Compartment.kiosk_id == world.kiosk_id, Compartment.number == n
            )
        )
    return bool(occupied)


async def test_two_replicas_share_kiosks_on_a_broker_without_shared_subscriptions(
    start_replica: Callable[..., Any], tmp_path: Path
) -> None:
    """The embedded amqtt broker of `lockerctl up`: MQTT 3.1.1, no `$share`, an account per
    kiosk and for the service. Plain per-kiosk subscriptions are all the leases need."""
    from locker_service.stack.broker import EmbeddedBroker
    from locker_service.stack.broker_auth import SERVICE_ACCOUNT
    from locker_service.stack.up import BROKER_PASSWORD_FILE, broker_accounts
    from tests.support.mosquitto import free_port

    started: list[ScriptedKiosk] = []
    replicas: list[Replica] = []
    # The kiosk codes must be known before the broker's accounts are made: pick two codes that
    # the two replica ids share out one each, then start the replicas under those ids.
    ids = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("a", "b")}
    codes = {
        name: code_owned_by_id(replica_id, list(ids.values())) for name, replica_id in ids.items()
    }
    accounts = broker_accounts(tmp_path, list(codes.values()))
    broker = EmbeddedBroker(tmp_path / BROKER_PASSWORD_FILE, "127.0.0.1", free_port())
    await broker.start()
    try:
        on_amqtt = {
            "mqtt_url": broker.url,
            "mqtt_protocol": "3.1.1",
            "mqtt_username": SERVICE_ACCOUNT,
            "mqtt_password": accounts.service_password,
        }
        for name in ("a", "b"):
            replicas.append(await start_replica(name, replica_id=ids[name], **on_amqtt))
        a, b = replicas
        worlds = {
            r.replica_id: await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=codes[name])
            for name, r in zip(("a", "b"), (a, b), strict=True)
        }
        for r in (a, b):
            code = worlds[r.replica_id].kiosk_code
            kiosk = await asyncio.to_thread(
                ScriptedKiosk(
                    broker.host,
                    broker.port,
                    code,
                    compartments=2,
                    username=code,
                    password=accounts.kiosk_passwords[code],
                    client_id=f"locker-bridge-{code}",
                ).start
            )
            started.append(kiosk)
            await held_by(r, kiosk)
            door_burst(kiosk, 1, rounds=2)
        for r, kiosk in zip((a, b), started, strict=True):
            await handled_in_order(r, worlds[r.replica_id], kiosk)
            assert r.handled(kiosk) == len(kiosk.events) == 12
    finally:
        for kiosk in started:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(kiosk.stop)
        for replica in reversed(replicas):  # before their broker goes
            await replica.stack.aclose()
        await broker.stop()


async def _live_event_ids(subscription: Any, kiosk_id: str, wanted: int) -> list[str]:
    """The ids of the kiosk's events a live stream got, until `wanted` came (or 20 s of quiet)."""
    seen: list[str] = []
    while len(seen) < wanted:
        message = await subscription.next(20)
        assert message is not None, f"only {len(seen)} of {wanted} events reached the stream"
        if message.kind == "event" and message.data.get("kiosk") == kiosk_id:
            seen.append(message.data["event_id"])
    return seen


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_dashboard_on_either_replica_sees_every_event_once(
    start_replica: Callable[..., Any], kiosks: Callable[[str], ScriptedKiosk]
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    world = await seed(a.ctx.sessionmaker, a.ctx.settings, kiosk_code=code_owned_by(a, [a, b]))
    kiosk = kiosks(world.kiosk_code)
    await held_by(a, kiosk)
    await keepers_settled(a, b)
    with a.ctx.hub.subscription() as on_a, b.ctx.hub.subscription() as on_b:
        door_burst(kiosk, 1, rounds=2)  # handled by a alone
        sent = [e.event_id for e in kiosk.events]
        assert sorted(await _live_event_ids(on_b, kiosk.kiosk_id, len(sent))) == sorted(sent)
        assert sorted(await _live_event_ids(on_a, kiosk.kiosk_id, len(sent))) == sorted(sent)
        await handled_in_order(a, world, kiosk)
        # No copy more: a's own changes do not come back to it, nor go twice to b.
        for subscription in (on_a, on_b):
            while (extra := await subscription.next(0.5)) is not None:
                assert not (extra.kind == "event" and extra.data.get("kiosk") == kiosk.kiosk_id)
    assert b.handled(kiosk) == 0

    # b's listening connection is cut (a database failover, a proxy's idle timeout): it
    # listens again on a new one, and its streams see a's changes again.
    relay = b.app.state.runtime.relay
    assert relay is not None and relay.listens == 1
    watching = b.ctx.hub.subscription().__enter__()  # a dashboard open through the cut
    async with b.ctx.engine.connect() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": relay.backend_pid}
        )
    await until(lambda: relay.listens == 2, 30, "b listening again")
    assert watching.dropped >= 1  # told to re-read: what came meanwhile was missed
    watching.__exit__(None, None, None)
    with b.ctx.hub.subscription() as on_b:
        kiosk.events.clear()
        door_burst(kiosk, 1, rounds=1)
        sent = [e.event_id for e in kiosk.events]
        assert sorted(await _live_event_ids(on_b, kiosk.kiosk_id, len(sent))) == sorted(sent)
