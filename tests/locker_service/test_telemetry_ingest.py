"""Telemetry reaches temperature_readings in batches, on SQLite and PostgreSQL, and is queryable
through the operator endpoint; hot-holding findings reach the alerts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from firmware_bridge import contract
from locker_service.context import ServiceContext
from locker_service.credentials import store as keys
from locker_service.db import create_engine, create_sessionmaker
from locker_service.kiosk_link import KioskLink
from locker_service.kiosk_link.directory import KioskDirectory
from locker_service.kiosk_link.fencing import Fence
from locker_service.live import LiveHub
from locker_service.models import (
    Alert,
    Compartment,
    Kiosk,
    KioskLease,
    Operator,
    Site,
    TemperatureMinute,
    TemperatureReading,
)
from locker_service.models.people import operator_sites
from locker_service.telemetry import repository as telemetry_repository
from locker_service.telemetry.ingest import TelemetryIngest, TemperatureAlerts
from locker_service.telemetry.monitor import Finding, HoldingMonitor, dedupe_key
from locker_service.telemetry.repository import readings_between
from tests.locker_service.test_kiosk_link import LinkTestSettings, RecordingHandler
from tests.support.mosquitto import MosquittoProcess
from tests.support.row_locks import first_of
from tests.support.scripted_kiosk import ScriptedKiosk

# Both backends in the everyday selection too (tests/conftest.py, ADR 0127): the subject is
# SQL written per backend, the readings' and kept buckets' inserts.
POSTGRES_EVERY_DAY = True


@dataclass
class Seeded:
    site_id: int
    other_site_id: int
    kiosk_id: int
    kiosk_code: str
    compartment_ids: dict[int, int]
    operator_token: str
    stranger_token: str


async def seed(sessionmaker: async_sessionmaker[AsyncSession], compartments: int = 4) -> Seeded:
    tag = uuid.uuid4().hex[:8]
    async with sessionmaker() as session, session.begin():
        site = Site(code=f"site-{tag}", name="Tower A")
        other = Site(code=f"other-{tag}", name="Tower B")
        session.add_all([site, other])
        await session.flush()
        kiosk = Kiosk(
            site_id=site.id,
            code=f"kiosk-{tag}",
            name="Lobby",
        )
        session.add(kiosk)
        await session.flush()
        rows = [
            Compartment(kiosk_id=kiosk.id, number=n, size="M") for n in range(1, compartments + 1)
        ]
        session.add_all(rows)
        operator = Operator(name="Olga", role="operator")
        stranger = Operator(name="Sam", role="operator")
        session.add_all([operator, stranger])
        await session.flush()
        session.add_all(
            [
                keys.row_for(keys.Owner("kiosk", kiosk.id), f"kt-{tag}"),
                keys.row_for(keys.Owner("operator", operator.id), f"op-{tag}"),
                keys.row_for(keys.Owner("operator", stranger.id), f"st-{tag}"),
            ]
        )
        await session.execute(
            operator_sites.insert(),
            [
                {"operator_id": operator.id, "site_id": site.id},
                {"operator_id": stranger.id, "site_id": other.id},
            ],
        )
        return Seeded(
            site.id,
            other.id,
            kiosk.id,
            kiosk.code,
            {c.number: c.id for c in rows},
            f"op-{tag}",
            f"st-{tag}",
        )


class RecordingAlerts:
    def __init__(self) -> None:
        self.applied: list[tuple[Finding, int, int]] = []

    async def apply(self, findings: Sequence[tuple[Finding, int, int]]) -> None:
        self.applied.extend(findings)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def telemetry(
    ts: datetime, temps: dict[int, float | None], setpoint: float | None = 65.0
) -> contract.Telemetry:
    return contract.Telemetry(
        ts=ts,
        readings=[
            contract.Reading(n=n, temp_c=t, setpoint_c=setpoint, heater=t is not None and t < 65)
            for n, t in temps.items()
        ],
    )


async def watched(engine: AsyncEngine) -> tuple[Seeded, TelemetryIngest, RecordingAlerts]:
    """A seeded kiosk and an ingest whose watch (floor 60 °C, ceiling 80 °C, 30 s of grace)
    hands its findings to the alerts returned."""
    sessionmaker = create_sessionmaker(engine)
    alerts = RecordingAlerts()
    ingest = TelemetryIngest(
        engine,
        KioskDirectory(sessionmaker),
        monitor=HoldingMonitor(floor_c=60, ceiling_c=80, grace_s=30),
        alerts=alerts,
    )
    return await seed(sessionmaker), ingest, alerts


async def lease_in_database(
    sessionmaker: async_sessionmaker[AsyncSession], kiosk_code: str, holder: str, epoch: int
) -> None:
    """The kiosk's lease row as a lease keeper leaves it: held by `holder` at `epoch`."""
    async with sessionmaker() as session, session.begin():
        await session.merge(
            KioskLease(
                kiosk_code=kiosk_code,
                holder=holder,
                epoch=epoch,
                expires_at=datetime.now(UTC) + timedelta(seconds=10),
            )
        )


async def count_readings(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count(TemperatureReading.id)))).scalar_one()
        )


async def test_a_fleet_asking_at_once_is_looked_up_in_a_few_queries(engine: AsyncEngine) -> None:
    """Thousands of kiosks connecting at once each send a status and a snapshot per
    compartment, and each message asks the directory which kiosk and site it is: the kiosks
    asked for together are one query (per 500), a kiosk asked for twice once, and the answers
    are cached (ten thousand kiosks asking one query each ran the pool out of connections)."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    directory = KioskDirectory(sessionmaker)
    statements: list[str] = []

    def count(*args: Any) -> None:
        if "kiosks" in str(args[2]):
            statements.append(str(args[2]))

    sqlalchemy_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        codes = [seeded.kiosk_code] * 50 + [f"stranger-{i}" for i in range(600)]
        answers = await asyncio.gather(*(directory.lookup(code) for code in codes))
        assert {a.id if a else None for a in answers[:50]} == {seeded.kiosk_id}
        assert answers[0] is not None and answers[0].site_id == seeded.site_id
        assert all(a is None for a in answers[50:])
        assert len(statements) == 2, len(statements)  # 601 kiosks: 500, then 101
        assert await directory.site_of(seeded.kiosk_code) == seeded.site_id
        assert await directory.lookup("stranger-7") is None
        assert len(statements) == 2  # from the cache
    finally:
        sqlalchemy_event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_a_failed_lookup_reaches_every_caller_and_the_next_asks_again(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    directory = KioskDirectory(sessionmaker)
    real_query = directory._query
    failures = [OSError("the database went away")]

    async def query_once_failing(codes: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_query(codes)

    directory._query = query_once_failing  # type: ignore[method-assign]
    answers = await asyncio.gather(
        *(directory.lookup(seeded.kiosk_code) for _ in range(3)), return_exceptions=True
    )
    assert [type(a) for a in answers] == [OSError] * 3
    found = await directory.lookup(seeded.kiosk_code)  # not cached as unknown: asked again
    assert found is not None and found.id == seeded.kiosk_id


async def test_a_fleet_s_first_readings_are_looked_up_past_what_one_statement_binds(
    engine: AsyncEngine,
) -> None:
    """A start or a takeover sees every compartment of thousands of kiosks at once: 20,000
    compartments are 40,000 alert keys, past the 32,767 values one statement may bind; their
    history is read a slice at a time, and what the last slice holds is found."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    now = datetime.now(UTC)
    sights = [
        telemetry_repository.FirstSight(seeded.kiosk_id, f"fleet-{i // 12}", i % 12 + 1, now, False)
        for i in range(20_000)
    ]
    last = sights[-1]
    raised = now - timedelta(minutes=3)
    async with sessionmaker() as session, session.begin():
        session.add(
            Alert(
                kind="above_ceiling",
                site_id=seeded.site_id,
                severity="warning",
                message="too hot",
                dedupe_key=dedupe_key("above_ceiling", last.kiosk_code, last.number),
                raised_at=raised,
                last_raised_at=raised,
            )
        )
        compartment = await session.get(Compartment, seeded.compartment_ids[2])
        assert compartment is not None
        compartment.state = "awaiting_pickup"
    carried = await telemetry_repository.carried_watches(engine, sights, 60.0, 61.0)
    assert len(carried) == 20_000
    assert carried[(last.kiosk_code, last.number)].ceiling_raised
    assert not carried[("fleet-0", 1)].ceiling_raised

    wanted = {(kiosk_id, n) for kiosk_id in range(1, 40_001) for n in (1, 2)}
    wanted.add((seeded.kiosk_id, 2))
    found = await telemetry_repository.compartments_with_food(engine, wanted)
    assert found == {(seeded.kiosk_id, 2)}


async def test_batches_are_stored_in_order_and_unknown_kiosks_dropped(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    t0 = datetime.now(UTC).replace(microsecond=0)
    for i in range(50):
        ingest.submit(
            seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {1: 60 + i * 0.1, 2: None})
        )
    ingest.submit("kiosk-nobody", telemetry(t0, {1: 50.0}))
    ingest.submit(seeded.kiosk_code, contract.Telemetry(readings=[]))
    assert ingest.buffered_rows == 101
    assert await ingest.flush() == 100
    assert ingest.counters.batches == 1 and ingest.counters.dropped_unknown_kiosk == 1
    async with sessionmaker() as session:
        rows = await readings_between(session, seeded.kiosk_id, 1, t0, t0 + timedelta(minutes=1))
        faulted = await readings_between(session, seeded.kiosk_id, 2, t0, t0 + timedelta(minutes=1))
    assert [r.ts for r in rows] == [t0 + timedelta(seconds=i) for i in range(50)]
    assert rows[10].temp_c == pytest.approx(61.0) and rows[10].setpoint_c == 65.0
    assert rows[10].heater is True
    assert len(faulted) == 50 and all(r.temp_c is None for r in faulted)
    assert await count_readings(engine) == 100


async def test_batches_sent_again_for_a_new_holder_are_stored_once(engine: AsyncEngine) -> None:
    """ADR 0098: a batch sent again is stored unless stored already or heard live (still in the
    buffer, written first), once if sent twice; the minutes count each reading once; the lag
    observer, which times publish to queryable, never sees one."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    lags: list[float] = []
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), lag_observer=lags.append)
    # Stamps to the microsecond, as a bridge's; sent again in another zone's notation.
    t0 = datetime.now(UTC).replace(second=0, microsecond=123456) - timedelta(minutes=1)
    batches = [telemetry(t0 + timedelta(seconds=10 * i), {1: 63.0 + i, 2: 64.0}) for i in range(4)]
    for batch in batches[:2]:
        ingest.submit(seeded.kiosk_code, batch)
    assert await ingest.flush() == 4
    ingest.submit(seeded.kiosk_code, batches[2])  # heard live, still buffered
    elsewhere = timezone(timedelta(hours=2))
    for batch in (*batches[1:], batches[3]):  # sent again, the last twice
        again = batch.model_copy(update={"resent": True, "ts": batch.ts.astimezone(elsewhere)})
        ingest.submit(seeded.kiosk_code, contract.Telemetry.model_validate_json(again.to_json()))
    ingest.submit("kiosk-nobody", batches[3].model_copy(update={"resent": True}))
    assert await ingest.flush() == 4  # the live one and the one nobody had heard
    assert ingest.counters.resent_stored == 1 and ingest.counters.resent_repeated == 3
    assert ingest.counters.dropped_unknown_kiosk == 2
    async with sessionmaker() as session:
        rows = await readings_between(session, seeded.kiosk_id, 1, t0, t0 + timedelta(minutes=1))
        minute = await session.scalar(
            select(func.sum(TemperatureMinute.readings)).where(
                TemperatureMinute.kiosk_id == seeded.kiosk_id, TemperatureMinute.number == 1
            )
        )
    assert [(r.ts, r.temp_c) for r in rows] == [(b.ts, b.readings[0].temp_c) for b in batches]
    assert minute == 4
    assert len(lags) == 3  # the three live batches only
    assert await ingest.flush() == 0


async def test_a_holder_writes_a_kiosk_s_batches_only_while_its_lease_is_current(
    engine: AsyncEngine,
) -> None:
    """ADR 0103: a batch of a kiosk whose lease has not been renewed within its TTL (the
    replica frozen, or cut off from the database) waits; once renewed it is written, and once
    found lost it is dropped (the next holder has it: it asked the kiosk for it), even if the
    lease came back meanwhile at a new epoch."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    code = seeded.kiosk_code
    await lease_in_database(sessionmaker, code, "replica-a", 1)
    fences: dict[str, Fence] = {}
    ingest.fence_with(fences.get)

    def lease(valid_for_s: float, epoch: int = 1) -> None:
        fences[code] = Fence(code, "replica-a", epoch, time.monotonic() + valid_for_s)

    t0 = datetime.now(UTC).replace(microsecond=0)
    batches = [telemetry(t0 + timedelta(seconds=10 * i), {1: 63.0 + i, 2: 64.0}) for i in range(6)]
    lease(-1.0)  # woken from a freeze: not renewed within its TTL
    ingest.submit(code, batches[0])
    ingest.submit(code, batches[1].model_copy(update={"resent": True}))
    assert await ingest.flush() == 0 and await count_readings(engine) == 0
    assert ingest.buffered_rows == 4 and ingest.counters.lease_waits == 1
    ingest.submit(code, batches[2])  # heard meanwhile: written after those waiting
    lease(10.0)  # renewed: still ours
    assert await ingest.flush() == 6
    async with sessionmaker() as session:
        rows = await readings_between(session, seeded.kiosk_id, 1, t0, t0 + timedelta(minutes=1))
    assert [r.ts for r in rows] == [b.ts for b in batches[:3]]
    lease(-1.0)
    ingest.submit(code, batches[3])
    assert await ingest.flush() == 0
    del fences[code]  # found taken over: the next holder has it
    assert await ingest.flush() == 0 and ingest.buffered_rows == 0
    assert ingest.counters.dropped_not_held == 2 and await count_readings(engine) == 6
    ingest.submit(code, batches[4])  # not held: not even queued
    assert ingest.buffered_rows == 0 and ingest.counters.dropped_not_held == 4
    lease(-1.0, epoch=2)  # taken back later, and lapsed at once
    ingest.submit(code, batches[5])
    assert await ingest.flush() == 0 and ingest.buffered_rows == 2
    lease(10.0, epoch=3)  # lost and taken back again while it waited: its epoch is gone
    assert await ingest.flush() == 0 and ingest.buffered_rows == 0
    assert ingest.counters.dropped_not_held == 6 and await count_readings(engine) == 6


async def test_a_write_stores_nothing_of_a_kiosk_whose_lease_was_taken_since_its_judgement(
    engine: AsyncEngine,
) -> None:
    """ADR 0106: the replica's own account says the lease is ours and current (it was, when
    judged; or the replica was paused between the judgement and the write), but the lease row
    names another holder: the write's transaction leaves that kiosk's batches out, live and sent
    again, rollups and all, and counts them dropped; the other kiosk's, whose lease row agrees,
    are stored."""
    sessionmaker = create_sessionmaker(engine)
    taken, ours = await seed(sessionmaker), await seed(sessionmaker)
    lags: list[float] = []
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), lag_observer=lags.append)
    valid = time.monotonic() + 60.0
    fences = {
        taken.kiosk_code: Fence(taken.kiosk_code, "replica-a", 1, valid),
        ours.kiosk_code: Fence(ours.kiosk_code, "replica-a", 4, valid),
    }
    ingest.fence_with(fences.get)
    await lease_in_database(sessionmaker, taken.kiosk_code, "replica-b", 2)
    await lease_in_database(sessionmaker, ours.kiosk_code, "replica-a", 4)
    t0 = datetime.now(UTC).replace(microsecond=0)
    ingest.submit(taken.kiosk_code, telemetry(t0, {1: 63.0, 2: 64.0}))
    ingest.submit(ours.kiosk_code, telemetry(t0, {1: 62.0, 2: 61.0, 3: 60.5}))
    ingest.submit(taken.kiosk_code, telemetry(t0 + timedelta(seconds=10), {1: 63.5, 2: 64.0}))
    earlier = telemetry(t0 - timedelta(seconds=10), {1: 63.0, 2: 64.0})
    ingest.submit(taken.kiosk_code, earlier.model_copy(update={"resent": True}))
    assert await ingest.flush() == 3
    assert ingest.counters.dropped_not_held == 6 and ingest.counters.stored == 3
    assert ingest.counters.resent_stored == 0 and ingest.counters.resent_repeated == 0
    assert ingest.buffered_rows == 0 and len(lags) == 1
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                select(TemperatureReading.kiosk_id, func.count()).group_by(
                    TemperatureReading.kiosk_id
                )
            )
        ).all()
        minutes = await session.scalar(
            select(func.sum(TemperatureMinute.readings)).where(
                TemperatureMinute.kiosk_id == taken.kiosk_id
            )
        )
    assert dict(stored) == {ours.kiosk_id: 3}
    assert minutes is None


@contextlib.asynccontextmanager
async def fenced_kiosk(
    pg_database_url: str,
) -> AsyncIterator[tuple[AsyncEngine, str, TelemetryIngest]]:
    """A kiosk whose lease replica-a holds at epoch 1, by the database and by the ingest's
    account, and a batch of two of its readings submitted."""
    engine = create_engine(pg_database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        code = (await seed(sessionmaker)).kiosk_code
        await lease_in_database(sessionmaker, code, "replica-a", 1)
        ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
        ingest.fence_with({code: Fence(code, "replica-a", 1, time.monotonic() + 60.0)}.get)
        ingest.submit(code, telemetry(datetime.now(UTC), {1: 63.0, 2: 64.0}))
        yield engine, code, ingest
    finally:
        await engine.dispose()


# What a take does to the lease row: lock it, then hand it to replica-b at epoch 2.
TAKE_LOCK = "SELECT epoch FROM kiosk_leases WHERE kiosk_code = :k FOR UPDATE"
TAKE_HAND_ON = "UPDATE kiosk_leases SET holder = 'replica-b', epoch = 2 WHERE kiosk_code = :k"


async def test_a_telemetry_write_waits_for_a_take_in_flight_and_then_stores_nothing_of_it(
    pg_database_url: str,
) -> None:
    """ADR 0106, PostgreSQL: a take locks the lease row FOR UPDATE, changes holder and epoch,
    and commits. A write that proves the lease while the take's transaction is open waits for
    it, then finds the lease taken and stores nothing of the kiosk: the taker asked the kiosk
    for the readings after those stored, and stores these itself."""
    async with fenced_kiosk(pg_database_url) as (engine, code, ingest):
        async with engine.connect() as take:
            await take.execute(text(TAKE_LOCK), {"k": code})
            writing = asyncio.create_task(ingest.flush())
            assert await first_of(engine, writing) == "waiting"
            await take.execute(text(TAKE_HAND_ON), {"k": code})
            await take.commit()
        assert await writing == 0
        assert ingest.counters.dropped_not_held == 2 and await count_readings(engine) == 0


async def test_a_telemetry_write_locks_no_lease_row_while_it_copies(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0106, PostgreSQL: the proof comes after the COPY. A replica frozen in the middle of
    a COPY keeps its session active, which no idle timeout ends; had it locked the lease rows
    first, its kiosks' takes would wait for as long as it is frozen. Here the take locks the
    row at once (NOWAIT) while the COPY is held, and commits; the write then finds the lease
    taken and rolls back what it copied."""
    async with fenced_kiosk(pg_database_url) as (engine, code, ingest):
        copied, resume = asyncio.Event(), asyncio.Event()
        copy = telemetry_repository._write_pg

        async def frozen_after_copying(*args: Any) -> None:
            await copy(*args)
            copied.set()
            await resume.wait()

        monkeypatch.setattr(telemetry_repository, "_write_pg", frozen_after_copying)
        writing = asyncio.create_task(ingest.flush())
        await copied.wait()
        async with engine.connect() as take:  # the row free at once: NOWAIT
            await take.execute(text(TAKE_LOCK + " NOWAIT"), {"k": code})
            await take.execute(text(TAKE_HAND_ON), {"k": code})
            await take.commit()
        resume.set()
        assert await writing == 0
        assert ingest.counters.dropped_not_held == 2 and await count_readings(engine) == 0
        async with engine.connect() as connection:
            minutes = select(func.count()).select_from(TemperatureMinute)
            assert await connection.scalar(minutes) == 0


async def test_readings_waiting_for_their_lease_do_not_make_the_ingest_flush_early(
    engine: AsyncEngine,
) -> None:
    """The ingest flushes before its period once `batch_rows` readings wait; those held back
    for their lease do not count, or a frozen replica's backlog would have it flush (and look
    at every held batch again) for every message."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), batch_rows=4)
    code = seeded.kiosk_code
    fences = {code: Fence(code, "replica-a", 1, time.monotonic() - 1.0)}  # lapsed
    ingest.fence_with(fences.get)
    woken = ingest._loop._wake
    t0 = datetime.now(UTC).replace(microsecond=0)
    batches = [telemetry(t0 + timedelta(seconds=10 * i), {1: 63.0, 2: 64.0}) for i in range(4)]
    for batch in batches[:2]:
        ingest.submit(code, batch)
    assert woken.is_set()  # four readings: flush now
    woken.clear()
    assert await ingest.flush() == 0 and ingest.buffered_rows == 4  # held back
    ingest.submit(code, batches[2])
    assert not woken.is_set()  # two new readings, four waiting: not yet
    ingest.submit(code, batches[3])
    assert woken.is_set()  # four new ones


async def test_a_batch_sent_again_whose_live_copy_came_meanwhile_is_left_to_it(
    engine: AsyncEngine,
) -> None:
    """The live copy of a batch may come while the buffer before it is being written, and its
    copy sent again just after: the one sent again finds nothing stored, but the live one
    waits in the buffer, and is the one stored."""
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    batch = telemetry(datetime.now(UTC), {1: 63.0, 2: 64.0})
    ingest.submit(seeded.kiosk_code, batch)
    ingest.submit(seeded.kiosk_code, batch.model_copy(update={"resent": True}))
    # What a flush does once the buffer's earlier batches are written: the batches sent again.
    assert await ingest._resent.write_all(ingest._write_resent) == 0
    assert ingest.counters.resent_repeated == 1
    assert await ingest.flush() == 2
    assert await count_readings(engine) == 2


async def test_readings_sent_again_reach_the_watch_though_newer_ones_were_judged(
    engine: AsyncEngine,
) -> None:
    """A dip while nobody heard the kiosk, sent again after the new holder judged a live
    reading in range: raised, as readings received late (ADR 0098)."""
    seeded, ingest, alerts = await watched(engine)
    t0 = datetime.now(UTC) - timedelta(minutes=2)
    ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=90), {1: 65.0, 2: 66.0}))
    await ingest.flush()
    for s in range(0, 50, 10):
        dip = telemetry(t0 + timedelta(seconds=s), {1: 55.0, 2: 66.0})
        ingest.submit(seeded.kiosk_code, dip.model_copy(update={"resent": True}))
    await ingest.flush()
    [(finding, kiosk_id, _)] = alerts.applied
    assert (finding.kind, finding.action, finding.number, finding.resent) == (
        "below_floor",
        "raise",
        1,
        True,
    )
    assert (finding.since, finding.at, kiosk_id) == (
        t0,
        t0 + timedelta(seconds=30),
        seeded.kiosk_id,
    )


async def test_the_background_loop_flushes_and_stop_writes_the_rest(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), flush_interval_s=0.05)
    await ingest.start()
    ingest.submit(seeded.kiosk_code, telemetry(datetime.now(UTC), {1: 65.0, 2: 64.0}))
    deadline = time.monotonic() + 10
    while await count_readings(engine) < 2:
        assert time.monotonic() < deadline, "the loop never flushed"
        await asyncio.sleep(0.05)
    ingest.submit(seeded.kiosk_code, telemetry(datetime.now(UTC), {3: 65.0}))
    await ingest.stop()
    assert await count_readings(engine) == 3


async def test_a_failed_write_keeps_the_readings_for_the_next_try(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    directory = KioskDirectory(sessionmaker)
    await directory.lookup(seeded.kiosk_code)  # cached, so the failure is the insert itself
    broken = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    ingest = TelemetryIngest(broken, directory)
    ingest.submit(seeded.kiosk_code, telemetry(datetime.now(UTC), {1: 65.0}))
    with pytest.raises(OSError):
        await ingest.flush()
    await broken.dispose()
    assert ingest.buffered_rows == 1
    ingest._engine = engine  # the database is back
    assert await ingest.flush() == 1
    assert await count_readings(engine) == 1


async def test_the_buffer_is_bounded_and_drops_the_oldest(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker), max_buffered_rows=10)
    t0 = datetime.now(UTC)
    for i in range(8):
        ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {1: 60.0, 2: 61.0}))
    assert ingest.buffered_rows == 10 and ingest.counters.dropped_overflow == 6
    await ingest.flush()
    async with sessionmaker() as session:
        rows = await readings_between(session, seeded.kiosk_id, 1, t0, t0 + timedelta(minutes=1))
    assert [r.ts for r in rows] == [t0 + timedelta(seconds=i) for i in range(3, 8)]


async def test_holding_below_the_floor_past_grace_reaches_the_alerts(engine: AsyncEngine) -> None:
    seeded, ingest, alerts = await watched(engine)
    t0 = datetime.now(UTC)
    for i in range(0, 40, 10):
        ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {1: 55.0, 2: 66.0}))
    await ingest.flush()
    [(finding, kiosk_id, site_id)] = alerts.applied
    assert (finding.kind, finding.action, finding.kiosk, finding.number) == (
        "below_floor",
        "raise",
        seeded.kiosk_code,
        1,
    )
    assert (kiosk_id, site_id) == (seeded.kiosk_id, seeded.site_id)


async def test_operator_history_endpoint(
    app_client: httpx.AsyncClient, service: ServiceContext
) -> None:
    ctx = service
    seeded = await seed(ctx.sessionmaker)
    ingest = TelemetryIngest(ctx.engine, KioskDirectory(ctx.sessionmaker))
    now = datetime.now(UTC)
    for i in range(120):  # two hours, one reading a minute
        ts = now - timedelta(minutes=119 - i)
        ingest.submit(seeded.kiosk_code, telemetry(ts, {2: 60.0 + i % 10}))
    await ingest.flush()
    url = f"/api/v1/operator/compartments/{seeded.compartment_ids[2]}/temperatures"
    auth = {"Authorization": f"Bearer {seeded.operator_token}"}

    answer = await app_client.get(url, params={"hours": 1}, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["kiosk"], body["number"], body["readings_total"]) == (seeded.kiosk_code, 2, 60)
    assert len(body["points"]) == 60
    assert body["points"][-1]["temp_c"] == 60.0 + 119 % 10

    # More readings than points: averaged per time slice in the database.
    answer = await app_client.get(url, params={"hours": 3, "max_points": 12}, headers=auth)
    body = answer.json()
    assert body["readings_total"] == 120 and 6 <= len(body["points"]) <= 12
    temps = [p["temp_c"] for p in body["points"]]
    assert all(60.0 <= t <= 69.0 for t in temps) and 62 < sum(temps) / len(temps) < 67
    stamps = [p["ts"] for p in body["points"]]
    assert stamps == sorted(stamps) and any(p["heater"] for p in body["points"])
    assert datetime.fromisoformat(stamps[-1]) == now  # the last slice ends at the last reading

    other = f"/api/v1/operator/compartments/{seeded.compartment_ids[3]}/temperatures"
    assert (await app_client.get(other, headers=auth)).json()["points"] == []

    answer = await app_client.get(url, headers={"Authorization": f"Bearer {seeded.stranger_token}"})
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
    answer = await app_client.get(url)
    assert answer.status_code == 401
    answer = await app_client.get(url, params={"hours": 0}, headers=auth)
    assert answer.status_code == 422 and answer.json()["error"] == "validation_error"
    answer = await app_client.get(url, params={"hours": 10_000}, headers=auth)
    assert answer.status_code == 422
    answer = await app_client.get("/api/v1/operator/compartments/999999/temperatures", headers=auth)
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


@pytest.mark.mosquitto
async def test_published_telemetry_becomes_queryable_through_the_link(
    engine: AsyncEngine, private_mosquitto: MosquittoProcess
) -> None:
    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    directory = KioskDirectory(sessionmaker)
    ingest = TelemetryIngest(engine, directory, flush_interval_s=0.1)
    await ingest.start()
    hub = LiveHub()
    link = KioskLink(
        LinkTestSettings(private_mosquitto.url),
        RecordingHandler(),
        hub,
        telemetry=ingest,
        sites=directory,
    )
    await link.start()
    kiosk = ScriptedKiosk(
        private_mosquitto.host, private_mosquitto.port, seeded.kiosk_code, compartments=4
    ).start()
    try:
        kiosk.set_temperature(4, 63.5)
        started = time.monotonic()
        sent = kiosk.publish_telemetry()
        while await count_readings(engine) < 4:
            assert time.monotonic() - started < 10, "telemetry never became queryable"
            await asyncio.sleep(0.02)
        async with sessionmaker() as session:
            rows = await readings_between(
                session,
                seeded.kiosk_id,
                4,
                sent.ts - timedelta(seconds=1),
                sent.ts + timedelta(seconds=1),
            )
        assert [(r.temp_c, r.ts) for r in rows] == [(63.5, sent.ts)]
    finally:
        kiosk.stop()
        await link.stop()
        await ingest.stop()


async def test_floor_alerts_are_raised_once_and_resolved_in_the_alerts_table(
    engine: AsyncEngine,
) -> None:
    from locker_service.models import Alert
    from locker_service.telemetry.alerts import AlertServiceSink

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    hub = LiveHub()
    ingest = TelemetryIngest(
        engine,
        KioskDirectory(sessionmaker),
        monitor=HoldingMonitor(floor_c=60, ceiling_c=80, grace_s=60),
        alerts=AlertServiceSink(sessionmaker, hub),
    )
    t0 = datetime.now(UTC)
    for i in range(0, 130, 10):  # two minutes at 52 °C while holding at 65
        ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {3: 52.0, 4: 90.0}))
    await ingest.flush()
    async with sessionmaker() as session:
        alerts = {a.kind: a for a in (await session.scalars(select(Alert))).all()}
    assert set(alerts) == {"below_floor", "above_ceiling"}
    low = alerts["below_floor"]
    assert (low.state, low.count, low.severity) == ("open", 1, "critical")
    assert (low.site_id, low.kiosk_id, low.compartment_id) == (
        seeded.site_id,
        seeded.kiosk_id,
        seeded.compartment_ids[3],
    )
    assert low.message == (
        f"compartment 3 of kiosk {seeded.kiosk_code} has held food below the 60 °C floor "
        "for 1 min (now 52.0 °C)"
    )
    ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=140), {3: 64.0, 4: 70.0}))
    await ingest.flush()
    async with sessionmaker() as session:
        states = {a.kind: a.state for a in (await session.scalars(select(Alert))).all()}
    assert states == {"below_floor": "resolved", "above_ceiling": "resolved"}


@pytest.mark.parametrize(
    ("profile", "temp_c", "floor_c"),
    [("uk-fsa", 61.5, 63.0), ("us-fda", 58.0, 57.0), ("custom", 58.0, 60.0)],
)
async def test_each_site_s_alerts_judge_by_its_profile_s_floor(
    engine: AsyncEngine, profile: str, temp_c: float, floor_c: float
) -> None:
    """uk-fsa's 63 °C floor alerts at 61.5 °C, where the service's own 60 °C would not; us-fda's
    57 °C does not at 58 °C, where 60 °C would; custom is the service's settings."""
    from locker_service.models import Alert
    from locker_service.telemetry.alerts import AlertServiceSink
    from locker_service.telemetry.site_monitors import SiteMonitors
    from tests.locker_service.conftest import make_settings

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    async with sessionmaker() as session, session.begin():
        site = await session.get(Site, seeded.site_id)
        assert site is not None
        site.food_safety_profile = profile
    settings = make_settings("sqlite+aiosqlite://", hold_floor_grace_s=60.0)
    ingest = TelemetryIngest(
        engine,
        KioskDirectory(sessionmaker),
        monitor=SiteMonitors(settings),
        alerts=AlertServiceSink(sessionmaker, LiveHub()),
    )
    grace_s = 60.0 if profile == "custom" else 15 * 60.0  # the built-in profiles' door recovery
    t0 = datetime.now(UTC)
    for i in range(0, int(grace_s) + 30, 10):  # past the grace, holding at 65
        ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {3: temp_c}))
    await ingest.flush()
    async with sessionmaker() as session:
        alerts = (await session.scalars(select(Alert))).all()
    if temp_c >= floor_c:
        assert alerts == []
        return
    [low] = alerts
    assert low.kind == "below_floor" and f"below the {floor_c:g} °C floor" in low.message


async def test_a_heater_fault_with_food_inside_keeps_the_floor_alert_open(
    engine: AsyncEngine,
) -> None:
    from locker_service.models import Alert
    from locker_service.telemetry.alerts import AlertServiceSink

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    async with sessionmaker() as session, session.begin():
        food = await session.get(Compartment, seeded.compartment_ids[3])
        assert food is not None
        food.state = "awaiting_pickup"
    ingest = TelemetryIngest(
        engine,
        KioskDirectory(sessionmaker),
        monitor=HoldingMonitor(floor_c=60, ceiling_c=80, grace_s=60),
        alerts=AlertServiceSink(sessionmaker, LiveHub()),
    )

    async def floor_alerts() -> list[tuple[int | None, str]]:
        async with sessionmaker() as session:
            rows = await session.scalars(select(Alert).where(Alert.kind == "below_floor"))
            return sorted((a.compartment_id, a.state) for a in rows)

    t0 = datetime.now(UTC) - timedelta(minutes=10)
    for i in range(0, 130, 10):  # 3 with food and 1 empty, both held at 65 and cooling
        ingest.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {1: 52.0, 3: 52.0}))
    await ingest.flush()
    ids = seeded.compartment_ids
    assert await floor_alerts() == sorted([(ids[1], "open"), (ids[3], "open")])
    # The heaters fail: the board drops both setpoints.
    for i in range(140, 260, 10):
        at = t0 + timedelta(seconds=i)
        ingest.submit(seeded.kiosk_code, telemetry(at, {1: 45.0, 3: 45.0}, setpoint=None))
    await ingest.flush()
    # Food still in 3: its alert stays open. Compartment 1 holds nothing (the food left): over.
    assert await floor_alerts() == sorted([(ids[1], "resolved"), (ids[3], "open")])


def restarted(engine: AsyncEngine, alerts: TemperatureAlerts, grace_s: float) -> TelemetryIngest:
    """A fresh ingest and monitor, as a restarted service (or another replica) has."""
    return TelemetryIngest(
        engine,
        KioskDirectory(create_sessionmaker(engine)),
        monitor=HoldingMonitor(floor_c=60, ceiling_c=80, grace_s=grace_s),
        alerts=alerts,
    )


async def test_a_restart_does_not_restart_the_grace_period(engine: AsyncEngine) -> None:
    seeded = await seed(create_sessionmaker(engine))
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    before = restarted(engine, RecordingAlerts(), grace_s=60)
    # 61 °C (fine), then below the floor from t0+10 s; the process dies 40 s into the grace.
    before.submit(seeded.kiosk_code, telemetry(t0, {1: 61.0, 2: 61.0}))
    for i in range(10, 50, 10):
        before.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {1: 55.0, 2: 61.0}))
    await before.flush()
    alerts = RecordingAlerts()
    after = restarted(engine, alerts, grace_s=60)
    after.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=70), {1: 55.0, 2: 58.0}))
    await after.flush()
    # Compartment 1 has been below since t0+10 s: past its grace. Compartment 2 only just dropped.
    [(finding, _, _)] = alerts.applied
    assert (finding.kind, finding.action, finding.number) == ("below_floor", "raise", 1)
    assert finding.since == t0 + timedelta(seconds=10)


async def test_an_alert_left_open_by_a_restart_is_resolved_on_recovery(engine: AsyncEngine) -> None:
    from locker_service.models import Alert
    from locker_service.telemetry.alerts import AlertServiceSink

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    sink = AlertServiceSink(sessionmaker, LiveHub())

    async def alerts() -> Sequence[Alert]:
        async with sessionmaker() as session:
            query = select(Alert).where(Alert.kiosk_id == seeded.kiosk_id)
            return (await session.scalars(query)).all()

    t0 = datetime.now(UTC) - timedelta(minutes=5)
    before = restarted(engine, sink, grace_s=30)
    for i in range(0, 40, 10):
        before.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=i), {3: 50.0, 4: 95.0}))
    await before.flush()
    after = restarted(engine, sink, grace_s=30)
    after.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=50), {3: 50.0, 4: 95.0}))
    await after.flush()
    assert sorted((a.kind, a.state, a.count) for a in await alerts()) == [
        ("above_ceiling", "open", 1),  # carried over as raised: not raised a second time
        ("below_floor", "open", 1),
    ]
    after.submit(seeded.kiosk_code, telemetry(t0 + timedelta(seconds=60), {3: 64.0, 4: 70.0}))
    await after.flush()
    assert sorted((a.kind, a.state) for a in await alerts()) == [
        ("above_ceiling", "resolved"),
        ("below_floor", "resolved"),
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL drops partitions
async def test_readings_past_retention_are_pruned_in_chunks(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from locker_service.telemetry import retention

    sessionmaker = create_sessionmaker(engine)
    seeded = await seed(sessionmaker)
    ingest = TelemetryIngest(engine, KioskDirectory(sessionmaker))
    now = datetime.now(UTC)
    for days in (45, 40, 31):
        for i in range(10):
            ts = now - timedelta(days=days, minutes=i)
            ingest.submit(seeded.kiosk_code, telemetry(ts, {1: 65.0}))
    for i in range(5):
        ingest.submit(seeded.kiosk_code, telemetry(now - timedelta(days=29, minutes=i), {1: 65.0}))
    await ingest.flush()
    monkeypatch.setattr(retention, "PRUNE_CHUNK_ROWS", 7)
    assert await retention.prune_before(engine, now - timedelta(days=30)) == 30
    assert await count_readings(engine) == 5
    assert await retention.prune_before(engine, now - timedelta(days=30)) == 0
