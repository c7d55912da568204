"""Kiosk leases on a real database (SQLite and PostgreSQL): sharing, handover, expiry, fencing.

The keepers here drive a `Subscriptions` that records what they ask of the link (the MQTT side
is tested with real brokers in test_replicas.py); the leases, heartbeats and fences are the
real rows and the real transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from firmware_bridge import contract
from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.kiosk_link import lease_keeper
from locker_service.kiosk_link.fencing import CURRENT_FENCE, Fence, LeaseLost, check_fence
from locker_service.kiosk_link.lease_keeper import LeaseKeeper
from locker_service.kiosk_link.leases import assign
from locker_service.kiosk_link.sequencer import RecordedUpTo
from locker_service.kiosks.repository import kiosk_by_code, record_event_if_new
from locker_service.models import Kiosk, KioskLease, TemperatureReading
from locker_service.sites import service as admin
from tests.support.rounds import within_rounds
from tests.support.row_locks import first_of

pytestmark = pytest.mark.timeout(60)

TTL_S = 1.5
RENEW_S = 0.2
# Bounds counted in the keepers' own rounds, never the wall's: a starved host runs fewer rounds,
# never more per handover. A death: the heartbeat goes stale after the TTL's worth of rounds
# (four times as many while a kiosk waits for its lease), then the handover's.
TAKEOVER_ROUNDS = 4 * math.ceil(TTL_S / RENEW_S) + 3
# A newcomer settles in: the holder sees it, waits for it to listen, frees; the newcomer
# takes. Counted in the rounds both made.
SHARE_ROUNDS = 25


class Subscriptions:
    """The link's side of the keeper's protocol: remembers what is followed, in order."""

    def __init__(self) -> None:
        self.followed: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.recorded: dict[str, RecordedUpTo] = {}  # each kiosk's record when last taken
        self.readings_after: dict[str, datetime | None] = {}  # and its readings' (ADR 0098)
        self.every = False

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        self.followed.add(kiosk_id)
        self.calls.append(("follow", kiosk_id))
        return True

    async def unfollow_kiosk(self, kiosk_id: str) -> None:
        self.followed.discard(kiosk_id)
        self.calls.append(("unfollow", kiosk_id))

    async def drain_kiosk(self, kiosk_id: str) -> None:
        self.calls.append(("drain", kiosk_id))

    def reconcile_kiosk(
        self, kiosk_id: str, recorded: RecordedUpTo, readings_after: datetime | None = None
    ) -> None:
        self.calls.append(("reconcile", kiosk_id))
        self.recorded[kiosk_id] = recorded
        self.readings_after[kiosk_id] = readings_after

    async def follow_every_kiosk(self, every: bool) -> bool:
        self.every = every
        return True


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine = create_engine(database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def make_kiosks(sessionmaker: async_sessionmaker[AsyncSession], count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    codes = [f"k{i}-{tag}" for i in range(count)]
    async with session_scope(sessionmaker) as session:
        await admin.create_site(session, f"site-{tag}", "Tower")
        for code in codes:
            await admin.create_kiosk(session, f"site-{tag}", code, "Lobby", "M:1")
    return codes


def bare_keeper(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, ttl_s: float = TTL_S
) -> LeaseKeeper:
    """A keeper not yet bound to a link (the test binds its own)."""
    return LeaseKeeper(sessionmaker, f"{name}-{uuid.uuid4().hex[:6]}", ttl_s=ttl_s, renew_s=RENEW_S)


def keeper(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, ttl_s: float = TTL_S
) -> LeaseKeeper:
    k = bare_keeper(sessionmaker, name, ttl_s)
    k.bind(Subscriptions())
    return k


def sharing(
    sessionmaker: async_sessionmaker[AsyncSession],
    kiosks: list[str],
    names: tuple[str, ...],
    ttl_s: float = TTL_S,
    least: int = 1,
) -> tuple[LeaseKeeper, ...]:
    """Keepers whose random ids give each of them at least `least` of the kiosks: ids drawn
    at random put all 12 kiosks on one of two replicas once in 4,096 tests, and a test of
    their sharing would then wait for a handover the assignment never asks for."""
    while True:
        keepers = tuple(keeper(sessionmaker, name, ttl_s) for name in names)
        owners = Counter(assign(kiosks, [k.replica_id for k in keepers]).values())
        if all(owners[k.replica_id] >= least for k in keepers):
            return keepers


def subscriptions(k: LeaseKeeper) -> Subscriptions:
    link = k._link
    assert isinstance(link, Subscriptions)
    return link


async def holders(
    sessionmaker: async_sessionmaker[AsyncSession], column: Any = KioskLease.holder
) -> dict[str, str | None]:
    """Each lease's holder (or the replica `column` names: `KioskLease.standby`)."""
    async with sessionmaker() as session:
        rows = await session.execute(select(KioskLease.kiosk_code, column))
        return {code: name for code, name in rows}


async def test_one_replica_holds_every_kiosk_and_picks_up_a_new_one_within_a_period(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    kiosks = await make_kiosks(sessionmaker, 3)
    alone = keeper(sessionmaker, "alone")
    await alone.start()
    try:
        assert alone.settled and alone.held() == set(kiosks)
        assert subscriptions(alone).every  # alone: the wildcards, no kiosk is missed
        assert await holders(sessionmaker) == dict.fromkeys(kiosks, alone.replica_id)
        [late] = await make_kiosks(sessionmaker, 1)  # `lockerctl create-kiosk` while it runs
        # The round under way may have read the kiosks before; the next one takes the new one.
        await within_rounds(alone, 2, lambda: late in alone.held(), "the new kiosk held")
        assert ("reconcile", late) in subscriptions(alone).calls
    finally:
        await alone.stop()
    # A clean stop frees the leases at once: nobody has to wait for them to expire.
    assert await holders(sessionmaker) == dict.fromkeys([*kiosks, late], None)


@contextlib.asynccontextmanager
async def first_round_under_way(
    taker: LeaseKeeper, gated: GatedSubscriptions
) -> AsyncIterator[asyncio.Task[None]]:
    """The keeper's start (its first round) running in a task, its subscriptions waiting at
    `gated`'s gate; on the way out the gate opens, the round ends and the keeper stops."""
    taker.bind(gated)
    starting = asyncio.create_task(taker.start())
    try:
        yield starting
    finally:
        gated.gate.set()
        await starting
        await taker.stop()


class GatedSubscriptions(Subscriptions):
    """Subscribing waits until the test opens the gate (a busy broker or event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_at_once = 0

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        self.waiting += 1
        self.most_at_once = max(self.most_at_once, self.waiting)
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().follow_kiosk(kiosk_id)


def takes_sent(sessionmaker: async_sessionmaker[AsyncSession]) -> list[str]:
    """The statements that take leases, as they are sent from here on (each holds one or more)."""
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE kiosk_leases SET holder = "):
            sent.append(statement)

    engine = sessionmaker.kw["bind"]
    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return sent


async def test_a_round_subscribes_to_several_kiosks_at_once_and_takes_them_together(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A replica taking over many kiosks does not wait for each in turn (ADR 0092's takeover
    measure): `SUBSCRIBING_AT_ONCE` subscriptions are under way together, no more, and the kiosks
    subscribed meanwhile are taken in one statement (ADR 0105), not one each."""
    kiosks = await make_kiosks(sessionmaker, 10)
    taker, gated = bare_keeper(sessionmaker, "taker"), GatedSubscriptions()
    takes = takes_sent(sessionmaker)
    async with first_round_under_way(taker, gated) as starting:
        deadline = time.monotonic() + 30
        while gated.waiting < lease_keeper.SUBSCRIBING_AT_ONCE:
            assert time.monotonic() < deadline, f"{gated.waiting} takes under way at once"
            assert not starting.done()
            await asyncio.sleep(0.01)
        gated.gate.set()
        await starting
        assert taker.held() == set(kiosks)
        assert gated.most_at_once == lease_keeper.SUBSCRIBING_AT_ONCE
        # The gate opened on all of them at once: one take, or two if it began between them.
        assert 1 <= len(takes) <= 2, takes


class GatedAfterOne(GatedSubscriptions):
    """The first kiosk is subscribed at once; the others wait at the gate."""

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        if not self.followed:
            return await Subscriptions.follow_kiosk(self, kiosk_id)
        return await super().follow_kiosk(kiosk_id)


@contextlib.asynccontextmanager
async def alive(
    sessionmaker: async_sessionmaker[AsyncSession], replica_id: str
) -> AsyncIterator[None]:
    """Another replica's heartbeat, renewed every RENEW_S while the block runs: a single one
    lasts a TTL only, which a first round on a busy machine can outlive."""

    async def beat() -> None:
        while True:
            async with session_scope(sessionmaker) as session:
                await lease_keeper.heartbeat(session, replica_id)
            await asyncio.sleep(RENEW_S)

    async with session_scope(sessionmaker) as session:
        await lease_keeper.heartbeat(session, replica_id)
    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def first_take(taker: LeaseKeeper) -> str:
    """The first kiosk the keeper takes (the others wait at a gate), waited for."""
    deadline = time.monotonic() + 30
    while not taker.held():
        assert time.monotonic() < deadline, "no kiosk taken"
        await asyncio.sleep(0.01)
    [first] = taker.held()
    return first


async def test_a_kiosk_taken_in_the_first_round_is_held_before_the_round_ends(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A replica taking hundreds of kiosks in its first round handles each as soon as it is
    taken (its messages, and its answer to `report_state`, ADR 0093), not once the last is."""
    kiosks = await make_kiosks(sessionmaker, 6)
    taker, gated = bare_keeper(sessionmaker, "taker"), GatedAfterOne()
    async with first_round_under_way(taker, gated) as starting:
        first = await first_take(taker)
        assert not taker.settled  # the others wait at the gate
        assert taker.standing(first) == "held"
        assert taker.fence(first) is not None
        assert {taker.standing(k) for k in kiosks if k != first} == {"unsettled"}
        # A command to it (from the API or a timer) goes at once, not after a lease period:
        # the round under way is the first, and what it would wait for is there (ADR 0099).
        settling = asyncio.create_task(taker.settle(first))
        for _ in range(3):
            await asyncio.sleep(0)
        assert settling.done()
        gated.gate.set()
        await starting
        assert taker.held() == set(kiosks)


async def test_a_command_during_the_first_round_to_a_kiosk_it_holds_goes_at_once(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """ADR 0099: beside another live replica (no wildcards), a kiosk taken in the first round
    is commanded at once, not after a lease period, while the round goes on."""
    kiosks = await make_kiosks(sessionmaker, 12)
    # A taker that owns at least two of the kiosks beside the other replica: owning one only
    # (one random id in about 340), its first round takes it and, with nothing left at the
    # gate, ends before the command is asked for.
    while True:
        taker = bare_keeper(sessionmaker, "taker")
        owners = Counter(assign(kiosks, [taker.replica_id, "another-replica"]).values())
        if owners[taker.replica_id] >= 2:
            break
    gated = GatedAfterOne()
    async with alive(sessionmaker, "another-replica"), first_round_under_way(taker, gated):
        first = await first_take(taker)
        assert not taker.settled and not taker._alone
        settling = asyncio.create_task(taker.settle(first))
        for _ in range(3):
            await asyncio.sleep(0)
        assert settling.done()


class FencesAtTheTake(GatedAfterOne):
    """Records until when each kiosk's fence was valid as the keeper reconciled it."""

    def __init__(self) -> None:
        super().__init__()
        self.keeper: LeaseKeeper | None = None
        self.valid_until: dict[str, float] = {}

    def reconcile_kiosk(
        self, kiosk_id: str, recorded: RecordedUpTo, readings_after: datetime | None = None
    ) -> None:
        super().reconcile_kiosk(kiosk_id, recorded, readings_after)
        assert self.keeper is not None
        fence = self.keeper.fence(kiosk_id)
        assert fence is not None
        self.valid_until[kiosk_id] = fence.valid_until


async def test_a_kiosk_taken_late_in_a_long_round_can_be_acted_for_at_once(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A fence runs from its own take, not from the round's start: a round of hundreds of
    takes outlasts the TTL, and a kiosk taken late in it must not refuse its first unlock."""
    kiosks = await make_kiosks(sessionmaker, 3)
    taker, fences = bare_keeper(sessionmaker, "taker"), FencesAtTheTake()
    fences.keeper = taker
    async with first_round_under_way(taker, fences) as starting:
        first = await first_take(taker)
        await asyncio.sleep(TTL_S * 1.5)  # the round outlasts the TTL (at least: a lower bound)
        opened = time.monotonic()
        fences.gate.set()
        await starting
        late = {kiosk: until for kiosk, until in fences.valid_until.items() if kiosk != first}
        assert late.keys() == set(kiosks) - {first}
        # Taken after the gate opened: a TTL from then at least (from the round's start, the
        # fence had ended before the kiosk was taken).
        assert all(until >= opened + TTL_S for until in late.values()), late


class FailingOnce(Subscriptions):
    """Subscribing to one kiosk fails once (a broker that dropped the connection meanwhile)."""

    def __init__(self, kiosk_id: str) -> None:
        super().__init__()
        self.failing = kiosk_id

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        self.calls.append(("asked", kiosk_id))
        await asyncio.sleep(0)  # the other subscriptions get under way meanwhile
        if kiosk_id == self.failing:
            self.failing = ""
            self.calls.append(("failed", kiosk_id))
            raise ConnectionError("the broker went away")
        return await super().follow_kiosk(kiosk_id)


async def test_a_take_that_fails_lets_the_others_under_way_finish_and_is_tried_again(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    kiosks = await make_kiosks(sessionmaker, 12)
    taker = bare_keeper(sessionmaker, "taker")
    bad = sorted(kiosks)[lease_keeper.SUBSCRIBING_AT_ONCE - 1]
    failing = FailingOnce(bad)
    taker.bind(failing)
    await taker.start()  # its first round fails on the last of the first subscriptions
    try:
        calls = failing.calls
        failed_at = calls.index(("failed", bad))
        asked = {kiosk for kind, kiosk in calls if kind == "asked"}
        assert not any(kind == "asked" for kind, _ in calls[failed_at:])  # no new one began
        assert asked < set(kiosks)  # so the round ended before it had asked for every kiosk
        # The subscriptions under way ended well, and each kiosk subscribed was taken.
        taken = {kiosk for kind, kiosk in calls if kind == "reconcile"}
        assert taken == {kiosk for kind, kiosk in calls if kind == "follow"}
        assert taken == asked - {bad}
        await within_rounds(taker, 3, lambda: taker.held() == set(kiosks), "every kiosk held")
    finally:
        await taker.stop()


async def test_two_replicas_share_the_kiosks_as_the_assignment_says_and_hand_over_cleanly(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    kiosks = await make_kiosks(sessionmaker, 12)
    # Leases that cannot run out meanwhile: on a host starved past the TTL the newcomer would
    # take some by expiry, undrained, and this test is of the handover.
    first, second = sharing(sessionmaker, kiosks, ("a", "b"), ttl_s=60.0)
    await first.start()
    assert first.held() == set(kiosks)
    await second.start()
    try:
        want = assign(kiosks, [first.replica_id, second.replica_id])
        mine = {r: {k for k, o in want.items() if o == r} for r in want.values()}
        await within_rounds(
            (first, second),
            SHARE_ROUNDS,
            lambda: (
                first.held() == mine[first.replica_id] and second.held() == mine[second.replica_id]
            ),
            "the kiosks shared",
        )
        assert await holders(sessionmaker) == want
        # The holder let go only after the newcomer listened, and drained before freeing.
        for kiosk in mine[second.replica_id]:
            calls = subscriptions(first).calls
            assert calls.index(("unfollow", kiosk)) < calls.index(("drain", kiosk))
            assert ("follow", kiosk) in subscriptions(second).calls
        assert not subscriptions(first).every and not subscriptions(second).every
        await second.stop()
        # The survivor sees the leaver gone at its next round, and takes at the one after.
        await within_rounds(first, 3, lambda: first.held() == set(kiosks), "the kiosks back")
    finally:
        await second.stop()
        await first.stop()


class SlowSubscriptions(Subscriptions):
    """A broker that takes `slow_s` to grant a subscription (a clustered broker's node making a
    replicated consumer per subscription, on a busy host)."""

    def __init__(self, slow_s: float) -> None:
        super().__init__()
        self.slow_s = slow_s
        self.slow = False
        self.waited = asyncio.Event()

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        if self.slow:  # the next subscription only
            self.slow = False
            await asyncio.sleep(self.slow_s)
            self.waited.set()
        return await super().follow_kiosk(kiosk_id)


async def test_a_replica_waiting_long_on_its_broker_keeps_its_kiosks(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A round stuck for three TTLs on one subscription: the heartbeat and the leases already
    held are still renewed every period, so the other replica never takes it for dead."""
    kiosks = await make_kiosks(sessionmaker, 6)
    slow = bare_keeper(sessionmaker, "slow")
    link = SlowSubscriptions(3 * TTL_S)
    slow.bind(link)
    other = keeper(sessionmaker, "other")
    await slow.start()
    await other.start()
    try:
        ids = [slow.replica_id, other.replica_id]
        while slow.replica_id not in assign(kiosks, ids).values():
            kiosks += await make_kiosks(sessionmaker, 1)
        want = assign(kiosks, ids)
        await within_rounds(
            (slow, other),
            SHARE_ROUNDS,
            lambda: all(
                k in (slow if o == slow.replica_id else other).held() for k, o in want.items()
            ),
            "the kiosks shared",
        )
        before = {k: v for k, v in (await lease_epochs(sessionmaker)).items() if k in kiosks}
        link.slow = True
        while True:  # a new kiosk of the slow replica's: its round waits on the broker
            [new] = await make_kiosks(sessionmaker, 1)
            if assign([new], ids)[new] == slow.replica_id:
                break
        while not link.waited.is_set():  # every lease as it was, all along
            now = await lease_epochs(sessionmaker)
            assert {k: now[k] for k in before} == before
            await asyncio.sleep(RENEW_S / 2)
        await within_rounds(slow, 3, lambda: new in slow.held(), "the new kiosk taken")
        assert {
            k: v for k, v in (await lease_epochs(sessionmaker)).items() if k in before
        } == before
    finally:
        await other.stop()
        await slow.stop()


class SlowDrain(Subscriptions):
    """A kiosk's queue that takes `slow_s` to drain (a scan waiting on its unlock's reply);
    notes whether its lease was still current when the drain ended."""

    def __init__(self, slow_s: float) -> None:
        super().__init__()
        self.slow_s = slow_s
        self.keeper: LeaseKeeper | None = None
        self.current_after: dict[str, bool] = {}

    async def drain_kiosk(self, kiosk_id: str) -> None:
        await super().drain_kiosk(kiosk_id)
        await asyncio.sleep(self.slow_s)
        assert self.keeper is not None
        fence = self.keeper.fence(kiosk_id)
        self.current_after[kiosk_id] = fence is not None and fence.valid_now()


@pytest.mark.slow  # a drain of twice the TTL, in real seconds
async def test_a_drain_that_outlasts_the_ttl_on_leaving_keeps_its_lease_current(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Leaving, the leases not yet freed are renewed: a kiosk whose queue drains for longer
    than the TTL is still this replica's when the drain ends, and its telemetry is written
    then (ADR 0103), and no other replica takes it meanwhile."""
    [kiosk] = await make_kiosks(sessionmaker, 1)
    # The TTL of the other tests: a renewal a renew period old leaves most of it for a starved
    # loop to reach the check at the drain's end.
    lone = bare_keeper(sessionmaker, "leaving")
    link = SlowDrain(2 * lone.ttl_s)
    link.keeper = lone
    lone.bind(link)
    await lone.start()
    await within_rounds(lone, 3, lambda: kiosk in lone.held(), "the kiosk taken")
    await lone.stop()
    assert link.current_after == {kiosk: True}
    assert (await holders(sessionmaker))[kiosk] is None  # then freed


async def lease_epochs(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> dict[str, tuple[str, int]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(KioskLease.kiosk_code, KioskLease.holder, KioskLease.epoch)
        )
        return {row.kiosk_code: (row.holder, row.epoch) for row in rows}


async def test_a_dead_replicas_kiosks_move_after_the_ttl_with_a_new_epoch(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    kiosks = await make_kiosks(sessionmaker, 12)
    first, second = sharing(sessionmaker, kiosks, ("a", "b"))
    await first.start()
    await second.start()
    try:
        await within_rounds(
            (first, second),
            SHARE_ROUNDS,
            lambda: bool(second.held()),
            "the second replica holding some",
        )
        theirs = set(second.held())
        epochs = {k: second.fence(k).epoch for k in theirs}  # type: ignore[union-attr]
        await second.halt()  # dies: no release, no goodbye, its heartbeat stops
        died = time.monotonic()
        await within_rounds(
            first, TAKEOVER_ROUNDS, lambda: first.held() == set(kiosks), "the dead's kiosks"
        )
        # Never before the TTL (a busy host only makes it later).
        assert time.monotonic() - died >= TTL_S - 0.3, time.monotonic() - died
        for kiosk in theirs:
            fence = first.fence(kiosk)
            assert fence is not None and fence.epoch == epochs[kiosk] + 1
    finally:
        await second.stop()
        await first.stop()


async def test_a_replica_whose_lease_was_taken_cannot_commit_for_the_kiosk(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    [kiosk] = await make_kiosks(sessionmaker, 1)
    sleeper, survivor = keeper(sessionmaker, "sleeper"), keeper(sessionmaker, "survivor")
    await sleeper.start()
    old = sleeper.fence(kiosk)
    assert old is not None
    await sleeper.halt()  # SIGSTOP: it still believes it holds the kiosk
    await survivor.start()
    try:
        await within_rounds(
            survivor, TAKEOVER_ROUNDS, lambda: kiosk in survivor.held(), "the takeover"
        )
        assert sleeper.fence(kiosk) == old and not old.valid_now()  # its own clock knows

        # SIGCONT: the sleeper handles a message it had received, under its old fence.
        token = CURRENT_FENCE.set(old)
        try:
            with pytest.raises(LeaseLost):
                async with session_scope(sessionmaker) as session:
                    await check_fence(session, kiosk)
                    await session.execute(
                        update(Kiosk).where(Kiosk.code == kiosk).values(name="changed by sleeper")
                    )
        finally:
            CURRENT_FENCE.reset(token)
        # The holder's own fence passes, in a transaction that does commit.
        token = CURRENT_FENCE.set(survivor.fence(kiosk))
        try:
            async with session_scope(sessionmaker) as session:
                await check_fence(session, kiosk)
                await session.execute(
                    update(Kiosk).where(Kiosk.code == kiosk).values(name="changed by holder")
                )
        finally:
            CURRENT_FENCE.reset(token)
        async with sessionmaker() as session:
            assert await session.scalar(select(Kiosk.name).where(Kiosk.code == kiosk)) == (
                "changed by holder"
            )
    finally:
        await survivor.stop()
        await sleeper.stop()


async def record(session: AsyncSession, kiosk: str, *events: tuple[int, str]) -> None:
    """Record events of the kiosk as its holder's story does: `(seq, type)` in that order."""
    found = await kiosk_by_code(session, kiosk)
    assert found is not None
    for seq, type_ in events:
        event = contract.Event(event_id=uuid.uuid4().hex, type=type_, compartment=1, seq=seq)
        assert await record_event_if_new(session, event, found.id)


async def test_a_new_holder_learns_how_far_each_lane_of_the_kiosks_record_goes(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """ADR 0080: per lane (a scan may be recorded ahead of an earlier door event), none from
    before an outbox that started again."""
    overtaken, restarted, blank = await make_kiosks(sessionmaker, 3)
    async with session_scope(sessionmaker) as session:
        await record(session, overtaken, (5, "door_opened"), (6, "item_removed"), (8, "scan"))
        await record(session, overtaken, (7, "door_closed"))
        await record(session, restarted, (400, "scan"), (401, "door_closed"))
        await record(session, restarted, (1, "door_opened"), (2, "door_closed"))
    taker = keeper(sessionmaker, "taker")
    await taker.start()
    try:
        assert subscriptions(taker).recorded == {
            overtaken: RecordedUpTo(scans=8, others=7, complete_to=8),
            restarted: RecordedUpTo(scans=None, others=2, complete_to=2),
            blank: RecordedUpTo(),
        }
    finally:
        await taker.stop()


async def test_a_new_holder_learns_how_far_the_kiosks_readings_go(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """ADR 0098: the stamp of the kiosk's newest stored reading, which the new holder asks
    the kiosk's telemetry after; with none in what a bridge keeps (10 minutes), the start of
    that, so that everything it keeps comes."""
    heard, long_ago, blank, other = await make_kiosks(sessionmaker, 4)
    now = datetime.now(UTC)
    stamps = {
        heard: [now - timedelta(seconds=90), now - timedelta(seconds=30)],
        long_ago: [now - timedelta(minutes=20)],
        other: [now - timedelta(seconds=5)],
    }
    async with session_scope(sessionmaker) as session:
        for code, times in stamps.items():
            found = await kiosk_by_code(session, code)
            assert found is not None
            for ts in times:
                session.add(TemperatureReading(kiosk_id=found.id, number=1, ts=ts, temp_c=63.0))
    taker = keeper(sessionmaker, "taker")
    started = datetime.now(UTC)
    await taker.start()
    try:
        asked = subscriptions(taker).readings_after
        assert asked[heard] == now - timedelta(seconds=30)
        assert asked[other] == now - timedelta(seconds=5)
        window = timedelta(seconds=lease_keeper.READINGS_ASKED_S)
        for code in (long_ago, blank):
            since = asked[code]
            assert since is not None and started - window <= since <= datetime.now(UTC) - window
    finally:
        await taker.stop()


@dataclass
class Halted:
    """PostgreSQL: a kiosk whose lease `holder` took and then stopped renewing (a halt)."""

    engine: AsyncEngine
    sm: async_sessionmaker[AsyncSession]
    kiosk: str
    holder: LeaseKeeper
    fence: Fence
    others: list[str]  # more kiosks it held, if asked for


@contextlib.asynccontextmanager
async def halted_holder(pg_database_url: str, others: int = 0) -> AsyncIterator[Halted]:
    engine = create_engine(pg_database_url)
    sm = create_sessionmaker(engine)
    try:
        kiosk, *more = await make_kiosks(sm, 1 + others)
        holder = keeper(sm, "holder")
        await holder.start()
        fence = holder.fence(kiosk)
        assert fence is not None
        await holder.halt()
        yield Halted(engine, sm, kiosk, holder, fence, more)
        await holder.stop()
    finally:
        await engine.dispose()


async def expire_every_lease(sm: async_sessionmaker[AsyncSession]) -> None:
    """The leases and the heartbeats expired now, as if their holder had been paused past
    its TTL."""
    async with session_scope(sm) as session:
        await session.execute(
            text("UPDATE kiosk_leases SET expires_at = now() - interval '1 second'")
        )
        await session.execute(
            text("UPDATE service_replicas SET heartbeat_at = now() - interval '1 hour'")
        )


@contextlib.asynccontextmanager
async def fenced_transaction_open(h: Halted) -> AsyncIterator[asyncio.Event]:
    """The halted holder's transaction for `h.kiosk`, past its fence and open until the
    event yielded is set; it records event 41 of the kiosk."""
    in_fence = asyncio.Event()
    finish = asyncio.Event()

    async def holders_transaction() -> None:
        token = CURRENT_FENCE.set(h.fence)
        try:
            async with session_scope(h.sm) as session:
                await check_fence(session, h.kiosk)
                await record(session, h.kiosk, (41, "door_closed"))
                in_fence.set()
                await finish.wait()
        finally:
            CURRENT_FENCE.reset(token)

    work = asyncio.create_task(holders_transaction())
    await in_fence.wait()
    try:
        yield finish
    finally:
        finish.set()
        await work


async def test_a_takeover_waits_for_the_holders_transaction_in_flight(
    pg_database_url: str,
) -> None:
    """PostgreSQL: the fence reads the lease row FOR KEY SHARE and the take locks it FOR UPDATE,
    so the takeover waits until the holder's transaction is over, and the holder's change
    commits before the new holder handles anything."""
    async with halted_holder(pg_database_url) as h:
        sm, kiosk = h.sm, h.kiosk
        await expire_every_lease(sm)
        taker = keeper(sm, "taker")
        async with fenced_transaction_open(h) as finish:
            taking = asyncio.create_task(taker.start())
            # As the database says, not after a second of the wall's: the take waits its turn.
            waited = await first_of(h.engine, taking)
            assert waited == "waiting", "the takeover did not wait for the transaction in flight"
            finish.set()
        await taking
        assert kiosk in taker.held()
        # It goes on after the event the old holder committed while the take waited.
        assert subscriptions(taker).recorded[kiosk] == RecordedUpTo(others=41, complete_to=41)
        await taker.stop()


async def test_a_takeover_takes_the_other_kiosks_while_one_waits_for_its_holders_transaction(
    pg_database_url: str,
) -> None:
    """ADR 0105: the kiosks taken together skip a lease row the old holder's transaction in
    flight holds, rather than wait for it with the others, and its take of its own holds up
    no later batch: the others are held at once, and that one once the transaction is over.
    The locked kiosk is subscribed first, alone, so the others come in a later batch."""
    async with halted_holder(pg_database_url, others=5) as h:
        await expire_every_lease(h.sm)
        assert h.kiosk == min(h.kiosk, *h.others)  # subscribed first
        taker, gated = bare_keeper(h.sm, "taker"), GatedAfterOne()
        taker.bind(gated)
        async with fenced_transaction_open(h) as finish:
            taking = asyncio.create_task(taker.start())
            # Its own take waits for the holder's transaction; only then come the others.
            assert await first_of(h.engine, taking) == "waiting"
            gated.gate.set()
            await within_rounds(
                taker, 2, lambda: set(h.others) <= taker.held(), "the other kiosks held"
            )
            assert h.kiosk not in taker.held()
            assert not taking.done()  # its own take waits
            finish.set()
        await taking
        assert taker.held() == {h.kiosk, *h.others}
        assert subscriptions(taker).recorded[h.kiosk] == RecordedUpTo(others=41, complete_to=41)
        await taker.stop()


async def test_renewals_and_fence_checks_never_wait_for_each_other(pg_database_url: str) -> None:
    """ADR 0100: a renewal of the replica's leases does not wait for its handlers' fenced
    transactions in flight, nor a fence check for a renewal in flight. Before, a renewal of
    hundreds of leases waited for the slowest handler while holding the rows before it, and
    every scan's fence check of those kiosks waited behind it."""
    async with halted_holder(pg_database_url) as h:  # the test renews by hand
        engine, sm, kiosk, holder, fence = h.engine, h.sm, h.kiosk, h.holder, h.fence
        token = CURRENT_FENCE.set(fence)
        try:
            async with session_scope(sm) as handler:
                await check_fence(handler, kiosk)  # a handler's transaction, still open

                async def renewal() -> dict[str, int]:
                    async with session_scope(sm) as session:
                        return await lease_keeper.renew(session, holder.replica_id, [kiosk], TTL_S)

                renewing = asyncio.create_task(renewal())
                assert await first_of(engine, renewing) == "done"
                assert renewing.result() == {kiosk: fence.epoch}
            async with session_scope(sm) as keeper_session:
                await lease_keeper.renew(keeper_session, holder.replica_id, [kiosk], TTL_S)

                async def fenced() -> None:
                    async with session_scope(sm) as session:
                        await check_fence(session, kiosk)

                checking = asyncio.create_task(fenced())
                assert await first_of(engine, checking) == "done"
                checking.result()
        finally:
            CURRENT_FENCE.reset(token)


async def test_a_release_waits_for_the_holders_fenced_transaction_in_flight(
    pg_database_url: str,
) -> None:
    """ADR 0100: the fence's FOR KEY SHARE holds back no plain UPDATE, so a release locks the
    lease row FOR UPDATE first: it waits for a transaction of its own replica that passed the
    fence (a message handled after the drain), whose change is then in the record the next
    holder reads, and the fence lets nothing through after it."""
    async with halted_holder(pg_database_url) as h:
        engine, sm, kiosk, holder, fence = h.engine, h.sm, h.kiosk, h.holder, h.fence

        async def releasing() -> bool:
            async with session_scope(sm) as session:
                return await lease_keeper.release(session, kiosk, holder.replica_id, fence.epoch)

        token = CURRENT_FENCE.set(fence)
        try:
            async with session_scope(sm) as handler:
                await check_fence(handler, kiosk)
                await record(handler, kiosk, (41, "door_closed"))
                freeing = asyncio.create_task(releasing())
                assert await first_of(engine, freeing) == "waiting"
            assert await freeing  # once the handler's transaction committed
            with pytest.raises(LeaseLost):
                async with session_scope(sm) as late:
                    await check_fence(late, kiosk)
        finally:
            CURRENT_FENCE.reset(token)
        async with sm() as session:
            assert await lease_keeper.recorded(session, [kiosk]) == {
                kiosk: RecordedUpTo(others=41, complete_to=41)
            }


async def test_a_halt_lets_the_round_under_way_end_and_never_cancels_it_mid_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A round cancelled inside its transaction can leave the connection open with its locks
    (on SQLite the one write lock, and every other writer then waits out its busy timeout):
    a halt or a stop ends the loop between rounds."""
    await make_kiosks(sessionmaker, 1)
    k = keeper(sessionmaker, "halting")
    await k.start()
    inside, go, ended = asyncio.Event(), asyncio.Event(), []
    real_round = k._round

    async def slow_round() -> None:
        inside.set()
        await go.wait()  # the round's transaction would be open here
        await real_round()
        ended.append(True)

    k._round = slow_round  # type: ignore[method-assign]
    k.wake()
    await inside.wait()
    halting = asyncio.create_task(k.halt())
    for _ in range(20):  # the halt waits for the round, however many turns it is given
        await asyncio.sleep(0)
    assert not halting.done()
    go.set()
    await halting
    assert ended == [True]


async def test_a_replica_that_stops_waiting_for_a_lease_withdraws_its_standby_mark(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A replica marked the standby of leases another holds; then the live replicas it sees
    change (one more joins), and some of those kiosks are no longer its own: its mark on them
    goes, the others keep it, and leaving takes the rest. A mark left behind would show a
    handover under way that is not (and fleet tests wait for none)."""
    kiosks = await make_kiosks(sessionmaker, 12)
    # Leases that outlive this test's rounds: the holder, halted, frees nothing meanwhile. The
    # waiter is to await at least two kiosks, so that a newcomer can take some but not all
    # (with one, once in about 340 tests, no newcomer ever could, and the test never ended).
    holder, waiter = sharing(sessionmaker, kiosks, ("a", "b"), ttl_s=60.0, least=2)
    await holder.start()
    await holder.halt()
    try:
        assert holder.held() == set(kiosks)
        await waiter._locked_round()  # one round, no loop: the test says when the next runs
        ids = [holder.replica_id, waiter.replica_id]
        awaited = {k for k, owner in assign(kiosks, ids).items() if owner == waiter.replica_id}
        marked = await holders(sessionmaker, KioskLease.standby)
        assert {k for k, s in marked.items() if s} == awaited
        # A third replica joins (its heartbeat only), taking some of the awaited kiosks.
        while True:
            newcomer = f"c-{uuid.uuid4().hex[:6]}"
            now_theirs = assign(kiosks, [*ids, newcomer])
            moved = {k for k in awaited if now_theirs[k] != waiter.replica_id}
            if moved and moved != awaited:
                break
        async with session_scope(sessionmaker) as session:
            await lease_keeper.heartbeat(session, newcomer)
        await waiter._locked_round()
        marks = await holders(sessionmaker, KioskLease.standby)
        assert {k for k, s in marks.items() if s == waiter.replica_id} == awaited - moved
        assert all(marks[k] is None for k in moved), marks
        assert all(("unfollow", k) in subscriptions(waiter).calls for k in moved)
        await waiter.stop()
        assert not any((await holders(sessionmaker, KioskLease.standby)).values())
    finally:
        await waiter.stop()
        await holder.stop()


async def test_a_round_s_renewal_and_the_keep_alive_s_never_run_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both renew this replica's lease rows, which the database locks in no set order: at ten
    thousand kiosks a round's renewal and the keep-alive's (due while the round ran long)
    deadlocked on PostgreSQL. Each round's renewal here takes two periods, so the keep-alive falls
    due during every one: it waits for it instead of renewing beside it. The keep-alive's own
    renewals stay quick: slow too, they followed one another without a pause (always due), and
    on SQLite the round's next transaction waited out the database's 30 s busy timeout behind
    them, which no keeper's real renewal (milliseconds) does."""
    await make_kiosks(sessionmaker, 4)
    real = lease_keeper.renew
    at_once = [0, 0, 0]  # now, at most, renewals made

    async def slow_renew(session: AsyncSession, *args: Any) -> dict[str, int]:
        at_once[0] += 1
        at_once[1] = max(at_once[1], at_once[0])
        try:
            task = asyncio.current_task()
            if task is None or task.get_name() != "kiosk-leases-alive":
                await asyncio.sleep(2 * RENEW_S)
            return await real(session, *args)
        finally:
            at_once[0] -= 1
            at_once[2] += 1

    monkeypatch.setattr(lease_keeper, "renew", slow_renew)
    k = keeper(sessionmaker, "one")
    await k.start()
    try:
        await within_rounds(k, 20, lambda: at_once[2] >= 6, "six renewals")
        assert at_once[1] == 1
        assert len(k.held()) == 4  # kept all along
    finally:
        await k.stop()
