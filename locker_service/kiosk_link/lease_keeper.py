"""Kiosk leases kept in the database: the heartbeat, the rebalance and the handover (ADR 0044).

Every `renew_s` each replica writes its heartbeat, reads the live replicas (heartbeat younger
than `ttl_s`, by the database's clock) and the kiosks, and computes with `leases.assign` which
kiosks are its own. For a kiosk that is its own it subscribes to the kiosk's events and telemetry
first (the messages wait, unacknowledged, in the kiosk's queue), then marks itself the lease's
standby and takes the lease as soon as it is free or expired. A holder whose kiosk now belongs
to another replica waits until that replica is the standby (it listens already), then stops
taking the kiosk's messages, unsubscribes, drains the kiosk's queue and frees the lease. So at
every moment at least one replica is subscribed to each kiosk and at most one handles it, and
a handover loses nothing and keeps the order (the new holder drops the overlap by `event_id`).
A replica whose kiosk is no longer its own before it took the lease (the live replicas it sees
changed) withdraws its standby mark, then unsubscribes; one that leaves withdraws all of its marks:
a lease names a standby only while that replica waits for it.

A round waits on the broker for each subscription, and some brokers take long (a NATS cluster
creates a replicated consumer per QoS 1 subscription: about a second each on two busy cores). So
while a round runs longer than a period, a second task keeps the heartbeat and the held leases
renewed every period: a replica busy subscribing is never taken for dead, nor loses its kiosks.
A round asks for up to `SUBSCRIBING_AT_ONCE` subscriptions at a time and takes the leases of the
kiosks subscribed meanwhile together, in one transaction (ADR 0105): a takeover's hundreds of
kiosks are a few transactions, not hundreds each waited on the busy event loop.

All times in the lease rows are the database's (`now()` on PostgreSQL, `strftime('now')` on
SQLite), so replica clocks may disagree. Leases are wall-clock infrastructure, not story time:
`LOCKER_TIME_SCALE` does not apply to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_bridge import contract
from locker_service.background import wait_or_wake
from locker_service.db import session_scope
from locker_service.kiosk_link.fencing import Fence
from locker_service.kiosk_link.leases import assign, owner_of
from locker_service.kiosk_link.sequencer import RECORDED_WINDOW, RecordedUpTo, recorded_up_to
from locker_service.models import Compartment, Kiosk, TemperatureReading

log = logging.getLogger(__name__)

# A replica whose heartbeat is this old is forgotten altogether (its row deleted): long past
# any TTL, so it only keeps the table from growing with the ids of replicas that never return.
FORGET_REPLICA_AFTER_S = 24 * 3600.0

# Subscriptions a round asks for at once, each waiting for its SUBACK (a NATS cluster makes a
# replicated consumer for each, about a second apart on two busy cores); they were the takes
# themselves, four at once, before ADR 0105.
SUBSCRIBING_AT_ONCE = 4
# Leases one transaction takes, at most: those subscribed since the last take (ADR 0105).
TAKEN_TOGETHER = 50

# How far back a new holder looks for the kiosk's newest stored reading: what a bridge keeps of
# the telemetry it published (ADR 0098).
READINGS_ASKED_S = contract.TELEMETRY_KEPT_SENT_S

# How a replica stands towards one kiosk:
# - "unsettled": the first round has not ended, and has not taken this kiosk; messages wait (the
#   broker may deliver what it kept in the persistent session before the replica knows which
#   kiosks are its own);
# - "awaited": its own by the assignment and subscribed, the lease not yet free; messages wait;
# - "held": it holds the lease and handles the kiosk's messages;
# - "releasing": giving the lease up; it still handles what it had received, nothing new;
# - "foreign": another replica's kiosk; events are dropped, status and snapshots feed the hub.
Standing = Literal["unsettled", "awaited", "held", "releasing", "foreign"]


class KioskSubscriptions(Protocol):
    """What the keeper asks of the kiosk link (implemented by `KioskLink`)."""

    async def follow_kiosk(self, kiosk_id: str) -> bool:
        """Subscribe to the kiosk's events and telemetry; True once the broker granted it."""
        ...

    async def unfollow_kiosk(self, kiosk_id: str) -> None:
        """Unsubscribe; returns when the broker confirmed (nothing more arrives after)."""
        ...

    async def drain_kiosk(self, kiosk_id: str) -> None:
        """Return when every message of the kiosk received so far has been handled."""
        ...

    def reconcile_kiosk(
        self, kiosk_id: str, recorded: RecordedUpTo, readings_after: datetime | None = None
    ) -> None:
        """Held now, with the kiosk's record `recorded` so far (older events are stale) and its
        readings stored up to `readings_after`; queue the last retained status seen for the
        kiosk for handling, and ask the kiosk for its state (the snapshots it does not report
        afresh are handed on after, ADR 0093) and the telemetry after that (ADR 0098)."""
        ...

    async def follow_every_kiosk(self, every: bool) -> bool:
        """Subscribe to every kiosk's events and telemetry (a replica alone) or only to the
        followed kiosks'; True once the broker granted the new subscriptions."""
        ...


# -- repository -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseRow:
    kiosk_id: str
    holder: str | None
    epoch: int
    standby: str | None


def _on_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _locks_rows(session: AsyncSession) -> bool:
    """PostgreSQL, whose row locks order a take or a release after the fenced transactions in
    flight (ADR 0100); SQLite's transactions never interleave (ADR 0033)."""
    return not _on_sqlite(session)


def _clock(session: AsyncSession, offset_param: str | None = None) -> str:
    """SQL for the database's current time, plus `:offset_param` seconds when given."""
    if _on_sqlite(session):
        # Milliseconds padded to the microseconds SQLAlchemy writes, so that the stored text
        # of both compares in time order.
        if offset_param is None:
            return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
        return (
            "(strftime('%Y-%m-%d %H:%M:%f', 'now', "
            f"printf('%+.3f seconds', :{offset_param})) || '000')"
        )
    if offset_param is None:
        return "now()"
    return f"(now() + make_interval(secs => :{offset_param}))"


async def heartbeat(session: AsyncSession, replica_id: str) -> None:
    now = _clock(session)
    await session.execute(
        text(
            "INSERT INTO service_replicas (replica_id, started_at, heartbeat_at) "
            f"VALUES (:replica, {now}, {now}) "
            "ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        ),
        {"replica": replica_id},
    )
    await session.execute(
        text(f"DELETE FROM service_replicas WHERE heartbeat_at < {_clock(session, 'forget')}"),
        {"forget": -FORGET_REPLICA_AFTER_S},
    )


async def leave(session: AsyncSession, replica_id: str) -> None:
    await session.execute(
        text("DELETE FROM service_replicas WHERE replica_id = :replica"), {"replica": replica_id}
    )
    await session.execute(
        text("UPDATE kiosk_leases SET standby = NULL WHERE standby = :replica"),
        {"replica": replica_id},
    )


async def withdraw_standby(session: AsyncSession, replica_id: str, kiosks: Iterable[str]) -> None:
    """This replica no longer waits for these kiosks' leases (the replicas it sees changed):
    its standby marks go, so that no lease shows a handover under way that is not."""
    codes = sorted(kiosks)
    if not codes:
        return
    await session.execute(
        text(
            "UPDATE kiosk_leases SET standby = NULL "
            "WHERE standby = :replica AND kiosk_code IN :kiosks"
        ).bindparams(bindparam("kiosks", expanding=True)),
        {"replica": replica_id, "kiosks": codes},
    )


async def live_replicas(session: AsyncSession, ttl_s: float) -> set[str]:
    rows = await session.scalars(
        text(
            f"SELECT replica_id FROM service_replicas WHERE heartbeat_at > {_clock(session, 'ttl')}"
        ),
        {"ttl": -ttl_s},
    )
    return set(rows)


async def kiosk_ids(session: AsyncSession) -> set[str]:
    return set(await session.scalars(text("SELECT code FROM kiosks")))


async def lease_rows(session: AsyncSession) -> dict[str, LeaseRow]:
    rows = await session.execute(
        text("SELECT kiosk_code, holder, epoch, standby FROM kiosk_leases")
    )
    return {
        row.kiosk_code: LeaseRow(row.kiosk_code, row.holder, row.epoch, row.standby) for row in rows
    }


async def renew(
    session: AsyncSession, replica_id: str, held: Iterable[str], ttl_s: float
) -> dict[str, int]:
    """Push the expiry of the leases this replica holds; returns those still its own."""
    kiosks = sorted(held)
    if not kiosks:
        return {}
    result = await session.execute(
        text(
            f"UPDATE kiosk_leases SET expires_at = {_clock(session, 'ttl')} "
            "WHERE holder = :replica AND kiosk_code IN :kiosks RETURNING kiosk_code, epoch"
        ).bindparams(bindparam("kiosks", expanding=True)),
        {"ttl": ttl_s, "replica": replica_id, "kiosks": kiosks},
    )
    return {row.kiosk_code: row.epoch for row in result}


async def take(session: AsyncSession, kiosk_id: str, replica_id: str, ttl_s: float) -> int | None:
    """Take the kiosk's lease if it is free, expired or (from a previous run under the same
    replica id) already ours: the new epoch, or None after marking this replica the standby."""
    now = _clock(session)
    await session.execute(
        text(
            "INSERT INTO kiosk_leases (kiosk_code, holder, epoch, expires_at, standby) "
            f"VALUES (:kiosk, NULL, 0, {now}, NULL) ON CONFLICT (kiosk_code) DO NOTHING"
        ),
        {"kiosk": kiosk_id},
    )
    takeable = f"(holder IS NULL OR holder = :replica OR expires_at < {now})"
    locked = True
    if _locks_rows(session):
        # The fence reads the row FOR KEY SHARE, which an UPDATE of its other columns does not
        # wait for (ADR 0100): the take locks it FOR UPDATE first, so it waits out every
        # transaction of the old holder that passed its fence (ADR 0080), and changes only a
        # row it locked so (one freed between the two statements is taken next round).
        locked = bool(
            await session.scalar(
                text(
                    f"SELECT true FROM kiosk_leases WHERE kiosk_code = :kiosk AND {takeable} "
                    "FOR UPDATE"
                ),
                {"kiosk": kiosk_id, "replica": replica_id},
            )
        )
    if locked:
        epoch = await session.scalar(
            text(
                "UPDATE kiosk_leases SET holder = :replica, epoch = epoch + 1, "
                f"expires_at = {_clock(session, 'ttl')}, standby = NULL "
                f"WHERE kiosk_code = :kiosk AND {takeable} RETURNING epoch"
            ),
            {"kiosk": kiosk_id, "replica": replica_id, "ttl": ttl_s},
        )
        if epoch is not None:
            return int(epoch)
    await session.execute(
        text(
            "UPDATE kiosk_leases SET standby = :replica "
            "WHERE kiosk_code = :kiosk AND (standby IS NULL OR standby <> :replica)"
        ),
        {"kiosk": kiosk_id, "replica": replica_id},
    )
    return None


async def take_together(
    session: AsyncSession, kiosks: Iterable[str], replica_id: str, ttl_s: float
) -> dict[str, int]:
    """Take, in one statement, every lease of `kiosks` that is free, expired or already ours
    and that no transaction in flight has locked: their new epochs (ADR 0105). The others are
    left as they are, for `take`, which waits for a lock and marks the standby."""
    codes = sorted(kiosks)
    if not codes:
        return {}
    now = _clock(session)
    # Only the rows missing (a kiosk never taken): an insert that meets an existing row waits
    # for a transaction in flight that changed it (a paused holder's renewal). Sorted, so that
    # two replicas creating the same rows never wait for each other in turn.
    existing = set(
        await session.scalars(
            text("SELECT kiosk_code FROM kiosk_leases WHERE kiosk_code IN :kiosks").bindparams(
                bindparam("kiosks", expanding=True)
            ),
            {"kiosks": codes},
        )
    )
    missing = [code for code in codes if code not in existing]
    if missing:
        await session.execute(
            text(
                "INSERT INTO kiosk_leases (kiosk_code, holder, epoch, expires_at, standby) "
                f"VALUES (:kiosk, NULL, 0, {now}, NULL) ON CONFLICT (kiosk_code) DO NOTHING"
            ),
            [{"kiosk": code} for code in missing],
        )
    takeable = f"(holder IS NULL OR holder = :replica OR expires_at < {now})"
    if _locks_rows(session):
        # As `take`'s lock, but a row another transaction holds (the old holder's fence, a
        # renewal) is skipped rather than waited for: `take` waits for it alone, and no batch
        # holds rows while it waits for another (two could wait for each other).
        codes = list(
            await session.scalars(
                text(
                    "SELECT kiosk_code FROM kiosk_leases "
                    f"WHERE kiosk_code IN :kiosks AND {takeable} "
                    "ORDER BY kiosk_code FOR UPDATE SKIP LOCKED"
                ).bindparams(bindparam("kiosks", expanding=True)),
                {"kiosks": codes, "replica": replica_id},
            )
        )
        if not codes:
            return {}
    rows = await session.execute(
        text(
            "UPDATE kiosk_leases SET holder = :replica, epoch = epoch + 1, "
            f"expires_at = {_clock(session, 'ttl')}, standby = NULL "
            f"WHERE kiosk_code IN :kiosks AND {takeable} RETURNING kiosk_code, epoch"
        ).bindparams(bindparam("kiosks", expanding=True)),
        {"kiosks": codes, "replica": replica_id, "ttl": ttl_s},
    )
    return {row.kiosk_code: int(row.epoch) for row in rows}


async def recorded(session: AsyncSession, kiosks: Iterable[str]) -> dict[str, RecordedUpTo]:
    """How far each kiosk's record goes (`sequencer.recorded_up_to`): read in the take's
    transaction, once its lock of the lease rows has waited out every transaction of the old
    holder that passed its fence (ADR 0080, 0100)."""
    codes = sorted(kiosks)
    newest: dict[str, list[tuple[int | None, bool]]] = {code: [] for code in codes}
    if not codes:
        return {}
    if not _on_sqlite(session):
        # PostgreSQL: each kiosk's window is one backward step of the (kiosk, id) index.
        rows = await session.execute(
            text(
                "SELECT k.code, e.seq, e.type FROM kiosks k CROSS JOIN LATERAL "
                "(SELECT seq, type, id FROM kiosk_events WHERE kiosk_id = k.id "
                "ORDER BY id DESC LIMIT :window) e "
                "WHERE k.code IN :kiosks ORDER BY k.code, e.id DESC"
            ).bindparams(bindparam("kiosks", expanding=True)),
            {"kiosks": codes, "window": RECORDED_WINDOW},
        )
        for row in rows:
            newest[row.code].append((row.seq, row.type == "scan"))
    else:  # SQLite has no LATERAL: one kiosk at a time
        for code in codes:
            rows = await session.execute(
                text(
                    "SELECT e.seq, e.type FROM kiosk_events e JOIN kiosks k ON k.id = e.kiosk_id "
                    "WHERE k.code = :kiosk ORDER BY e.id DESC LIMIT :window"
                ),
                {"kiosk": code, "window": RECORDED_WINDOW},
            )
            newest[code] = [(row.seq, row.type == "scan") for row in rows]
    return {code: recorded_up_to(events) for code, events in newest.items()}


async def readings_to(session: AsyncSession, kiosks: Iterable[str]) -> dict[str, datetime]:
    """For each kiosk, the stamp after which a new holder asks it for its telemetry again
    (ADR 0098): its newest reading stored, or, with none within what a bridge keeps
    (`READINGS_ASKED_S`), the start of that. Read in the take's transaction, before any
    reading the new holder receives is stored: those it hears live are sent again too, and
    stored once."""
    codes = sorted(kiosks)
    since = datetime.now(UTC) - timedelta(seconds=READINGS_ASKED_S)
    if not codes:
        return {}
    # Per compartment, so that each is one backward step of the (kiosk, number, ts) index
    # rather than a scan of the kiosk's whole day.
    each = (
        select(func.max(TemperatureReading.ts))
        .where(
            TemperatureReading.kiosk_id == Compartment.kiosk_id,
            TemperatureReading.number == Compartment.number,
            TemperatureReading.ts > since,
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Kiosk.code, func.max(each))
        .select_from(Compartment)
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .where(Kiosk.code.in_(codes))
        .group_by(Kiosk.code)
    )
    newest: dict[str, datetime | None] = dict.fromkeys(codes)
    newest.update({code: stamp for code, stamp in rows})
    return {code: stamp if stamp is not None else since for code, stamp in newest.items()}


async def release(session: AsyncSession, kiosk_id: str, replica_id: str, epoch: int) -> bool:
    """Free the lease at once (expired now), if still ours at `epoch`. On PostgreSQL the row
    is locked FOR UPDATE first, as by a take (ADR 0100): the release waits for this replica's
    own transactions that passed the kiosk's fence (a message handled after the drain), and a
    fence check meanwhile waits for it and then finds the lease gone."""
    if _locks_rows(session):
        await session.execute(
            text(
                "SELECT 1 FROM kiosk_leases "
                "WHERE kiosk_code = :kiosk AND holder = :replica AND epoch = :epoch FOR UPDATE"
            ),
            {"kiosk": kiosk_id, "replica": replica_id, "epoch": epoch},
        )
    result = await session.execute(
        text(
            f"UPDATE kiosk_leases SET holder = NULL, expires_at = {_clock(session)} "
            "WHERE kiosk_code = :kiosk AND holder = :replica AND epoch = :epoch "
            "RETURNING epoch"
        ),
        {"kiosk": kiosk_id, "replica": replica_id, "epoch": epoch},
    )
    return result.first() is not None


# -- the keeper -------------------------------------------------------------------------------


async def _end_between(task: asyncio.Task[None] | None, lock: asyncio.Lock) -> None:
    """Cancel a loop `task` once the step it runs under `lock` (a transaction) has ended."""
    if task is None:
        return
    async with lock:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LeaseKeeper:
    """One replica's leases: the loop, its view of every kiosk, and the fences it hands out."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        replica_id: str,
        *,
        ttl_s: float,
        renew_s: float,
    ) -> None:
        if not 0 < renew_s < ttl_s:
            raise ValueError(
                f"the lease renew period ({renew_s} s) must be below its TTL ({ttl_s} s)"
            )
        self._sessionmaker = sessionmaker
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._link: KioskSubscriptions | None = None
        self._held: dict[str, Fence] = {}
        self._awaited: set[str] = set()
        self._releasing: set[str] = set()
        self._known: set[str] = set()  # the kiosks of the last round
        # Kiosks unknown to the last round that woke the loop, and when (monotonic): a stranger
        # publishing on our topics wakes it once per lease period at most.
        self._noticed: dict[str, float] = {}
        # Ids noticed and then found to be no kiosk of ours: their events are dropped, not kept
        # waiting (unacknowledged, they would fill the broker's in-flight window).
        self._strangers: set[str] = set()
        self._alone = False  # no other live replica: this one subscribes to every kiosk
        self._settled = False
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._lock = asyncio.Lock()  # one round (or the leaving) at a time
        self._task: asyncio.Task[None] | None = None
        # The renewal a long round cannot make (see the module's docstring), and when the last
        # renewal of either kind started (monotonic).
        self._alive_lock = asyncio.Lock()
        self._alive_task: asyncio.Task[None] | None = None
        self._in_round = False
        self._renewed_at = time.monotonic()
        self._releases: set[asyncio.Task[None]] = set()
        self._finished = False
        self.rounds = 0

    def bind(self, link: KioskSubscriptions) -> None:
        self._link = link

    # -- what the link asks ---------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """The first round has run: every known kiosk is held, awaited or someone else's."""
        return self._settled

    def standing(self, kiosk_id: str) -> Standing:
        if kiosk_id in self._releasing:
            return "releasing"
        if kiosk_id in self._held:
            return "held"  # taken in the first round too: its messages need not wait for the rest
        if not self._settled:
            return "unsettled"
        if kiosk_id in self._awaited:
            return "awaited"
        if self._alone and kiosk_id not in self._known and kiosk_id not in self._strangers:
            # Alone, every kiosk is ours: one created since the last round waits for the next
            # (woken by `noticed`), which takes its lease, or finds it is no kiosk of ours.
            return "awaited"
        return "foreign"

    def fence(self, kiosk_id: str) -> Fence | None:
        return self._held.get(kiosk_id)

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def changed(self) -> None:
        """Return at the next change of any kiosk's standing."""
        await self._changed.wait()

    def noticed(self, kiosk_id: str) -> None:
        """A message came from a kiosk the last round did not know (created since): look now,
        rather than within a lease period."""
        if not self._settled or kiosk_id in self._known:
            return
        now = time.monotonic()
        last = self._noticed.get(kiosk_id)
        if last is None or now - last >= self.renew_s:
            self._noticed[kiosk_id] = now
            self._wake.set()

    async def settle(self, kiosk_id: str) -> None:
        """Before a command to a kiosk the last round did not know: wait for a round (at most
        one lease period), so that the events the command causes find a subscription. Not for
        a kiosk held or awaited here, nor, during the first round, for any kiosk of a replica
        alone (its wildcards hear them all): that round may take tens of seconds (ADR 0099)."""
        if self._settled and kiosk_id in self._known:
            return
        if kiosk_id in self._held or kiosk_id in self._awaited:
            return
        if self._alone and not self._settled:
            return
        done = self._round_done
        self._wake.set()
        await wait_or_wake(done, self.renew_s)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Run the first round (so the link knows its kiosks), then keep renewing. With `wait`
        false the first round runs in the loop's task too, and this returns at once: a replica
        that restarts with hundreds of kiosks to take serves its API and runs its timers
        meanwhile, and is not `settled` (nor ready) until the round has ended (ADR 0099)."""
        loop = asyncio.get_running_loop()
        self._alive_task = loop.create_task(self._keep_alive(), name="kiosk-leases-alive")
        if wait:
            await self._first_round()
            self._task = loop.create_task(self._run(), name="kiosk-leases")
        else:
            self._task = loop.create_task(self._first_then_run(), name="kiosk-leases")

    async def _first_round(self) -> None:
        try:
            await self._locked_round()
        except Exception:
            log.exception("the first lease round failed; retrying every %s s", self.renew_s)

    async def _first_then_run(self) -> None:
        await self._first_round()
        await self._run()

    async def stop(self) -> None:
        """A clean shutdown: leave the live replicas, hand every lease over, free the rest."""
        if self._finished:
            return
        self._finished = True
        await self._cancel(keep_alive_last=True)
        async with self._lock:
            try:
                async with session_scope(self._sessionmaker) as session:
                    await leave(session, self.replica_id)
                await self._hand_over()
            except Exception:
                log.exception("leaving the live replicas failed; leases expire in %s s", self.ttl_s)

    async def halt(self) -> None:
        """Stop renewing without releasing anything, as a replica that died (for tests and
        for a shutdown that must not touch the database)."""
        self._finished = True
        await self._cancel(keep_alive_last=False)
        for task in list(self._releases):
            task.cancel()

    def wake(self) -> None:
        """Run a round now (a handler found its lease gone)."""
        self._wake.set()

    async def _cancel(self, *, keep_alive_last: bool) -> None:
        """End the loop between rounds, never inside one: a round cancelled mid-transaction
        can leave its connection open with the transaction's locks (on SQLite, the database's
        one write lock: every other writer then waits out its busy timeout). Leaving cleanly
        (`keep_alive_last`), a long round under way is still kept alive until it ends, so its
        kiosks are handed over rather than left to expire; a halt stops renewing at once."""
        if not keep_alive_last:
            await self._cancel_keep_alive()
        task, self._task = self._task, None
        await _end_between(task, self._lock)  # a round under way ends first
        await self._cancel_keep_alive()  # before leaving: it would write the heartbeat back

    async def _cancel_keep_alive(self) -> None:
        alive, self._alive_task = self._alive_task, None
        await _end_between(alive, self._alive_lock)  # a renewal under way ends first

    async def _locked_round(self) -> None:
        async with self._lock:
            self._in_round = True  # the keep-alive renews while this runs long
            try:
                await self._round()
            finally:
                self._in_round = False

    async def _run(self) -> None:
        while True:
            # While a kiosk waits for its lease, look four times as often: the holder frees it
            # within its own round, and the kiosk's messages wait meanwhile.
            period_s = self.renew_s / 4 if self._awaited else self.renew_s
            await wait_or_wake(self._wake, period_s)
            self._wake.clear()
            try:
                await self._locked_round()
            except Exception:
                log.exception("lease round failed; retrying in %s s", self.renew_s)

    async def _keep_alive(self) -> None:
        """Every period in which a round is still under way (waiting on the broker), write the
        heartbeat and renew the leases held: only pushing expiries, never changing what is
        held (the round judges a lease found taken over)."""
        while True:
            # Due a period after the last renewal of either kind.
            await asyncio.sleep(max(0.0, self._renewed_at + self.renew_s - time.monotonic()))
            if time.monotonic() - self._renewed_at < self.renew_s:
                continue  # the round renewed meanwhile
            if not self._in_round:
                await asyncio.sleep(self.renew_s)  # no round under way: the next one renews
                continue
            async with self._alive_lock:
                if time.monotonic() - self._renewed_at < self.renew_s:
                    continue  # the round renewed while this waited for it
                started = time.monotonic()
                held = dict(self._held)
                try:
                    async with session_scope(self._sessionmaker) as session:
                        await heartbeat(session, self.replica_id)
                        renewed = await renew(session, self.replica_id, held, self.ttl_s)
                except Exception:
                    log.exception("renewing the leases during a long round failed")
                    renewed = None
                if renewed is not None:
                    self._extend(held, renewed, started)
                    self._renewed_at = started
            if renewed is None:
                await asyncio.sleep(self.renew_s)  # the database is out of reach: try next period

    # -- one round ------------------------------------------------------------------------------

    async def _round(self) -> None:
        started = time.monotonic()
        asked = set(self._noticed)
        async with session_scope(self._sessionmaker) as session:
            await heartbeat(session, self.replica_id)
        async with session_scope(self._sessionmaker) as session:
            live = await live_replicas(session, self.ttl_s)
            kiosks = await kiosk_ids(session)
            rows = await lease_rows(session)
        live.add(self.replica_id)
        await self._follow_every_kiosk(live == {self.replica_id})
        owners = assign(kiosks, live)
        mine = {kiosk for kiosk, owner in owners.items() if owner == self.replica_id}

        await self._renew(started, mine)
        for kiosk, orphan in rows.items():
            if orphan.holder == self.replica_id and kiosk not in self._held and kiosk not in mine:
                # Held under our id by a previous run (killed before it could free it).
                async with session_scope(self._sessionmaker) as session:
                    await release(session, kiosk, self.replica_id, orphan.epoch)
        for kiosk in list(self._held):
            row = rows.get(kiosk)
            owner = owners.get(kiosk)
            if kiosk in mine:
                continue
            # Only once the next owner listens, so that no event falls between the two.
            if owner is None or (row is not None and row.standby == owner):
                self._start_release(kiosk)
        given_up = sorted(self._awaited - mine)
        if given_up:
            # The mark first: the holder must not free a lease for this replica meanwhile.
            async with session_scope(self._sessionmaker) as session:
                await withdraw_standby(session, self.replica_id, given_up)
        for kiosk in given_up:
            self._awaited.discard(kiosk)
            self._notify()
            await self._unfollow(kiosk)
        await self._take_all(sorted(mine - set(self._held)))

        self._known = kiosks
        self._strangers = (self._strangers | asked) - kiosks
        # Kept a period past this round's start, so one noticed during the round is asked next.
        self._noticed = {
            kiosk: at for kiosk, at in self._noticed.items() if started - at < self.renew_s
        }
        self._settled = True
        self.rounds += 1
        self._notify()
        done, self._round_done = self._round_done, asyncio.Event()
        done.set()

    async def _follow_every_kiosk(self, alone: bool) -> None:
        """Alone, a replica subscribes to every kiosk's events, as before leases: a kiosk created
        while it runs loses no event before the next round takes its lease. With others it
        subscribes kiosk by kiosk (first the new subscriptions, then it drops the old)."""
        if alone == self._alone or self._link is None:
            return
        if await self._link.follow_every_kiosk(alone):
            self._alone = alone
            self._notify()

    async def _renew(self, started: float, mine: set[str]) -> None:
        if not self._held:
            return
        # Never beside the keep-alive's renewal: both lock this replica's lease rows, in no set
        # order, and at thousands of kiosks they deadlocked (one failed, its expiries unpushed).
        async with self._alive_lock, session_scope(self._sessionmaker) as session:
            renewed = await renew(session, self.replica_id, self._held, self.ttl_s)
        self._renewed_at = max(self._renewed_at, started)
        for kiosk in list(self._held):
            fence = self._held.get(kiosk)  # as it is now: the loop awaits below
            if fence is None:
                continue  # freed meanwhile by its release task
            if renewed.get(kiosk) == fence.epoch:
                # Never shorter than a renewal the keep-alive made meanwhile.
                until = max(fence.valid_until, started + self.ttl_s)
                self._held[kiosk] = replace(fence, valid_until=until)
                continue
            if kiosk in self._releasing:
                continue  # freed by its release task meanwhile, which tidies up itself
            # Taken over while this replica was not looking (paused past the TTL): its
            # messages are fenced out already; stop listening unless it comes back to us.
            log.warning("lease of kiosk %s was taken over (epoch %s)", kiosk, fence.epoch)
            del self._held[kiosk]
            self._notify()
            if kiosk in mine:
                self._awaited.add(kiosk)
            else:
                await self._unfollow(kiosk)

    async def _take_all(self, wanted: list[str]) -> None:
        """Subscribe to each kiosk of `wanted` (`SUBSCRIBING_AT_ONCE` at a time) and take the leases
        of those subscribed, as many together as have been subscribed since the last take
        (ADR 0105): a takeover's hundreds of kiosks in a few transactions, while a broker that
        grants subscriptions slowly (a NATS cluster) has each kiosk taken as it is granted.

        A kiosk the batch could not take (its row locked by a transaction in flight, or the
        lease not free yet) is taken on its own (`take`: it waits for that transaction, or
        marks this replica the standby), up to `SUBSCRIBING_AT_ONCE - 1` at once beside the batches:
        one that waits long holds up neither the batches nor the others.

        A subscription or take that fails ends the round once those under way have ended,
        never cancelled mid-transaction: after a failed subscription the kiosks subscribed
        meanwhile are taken first; after a failed take nothing more is taken. A stop or a halt
        takes nothing more either. The next round tries the rest again."""
        kiosks = iter(wanted)
        ready: list[str] = []
        more = asyncio.Event()  # a kiosk subscribed, or the subscribing over
        following = True
        failed: list[Exception] = []  # subscriptions' and takes'
        take_failed: list[Exception] = []  # takes' alone
        alone = asyncio.Semaphore(SUBSCRIBING_AT_ONCE - 1)  # each its own lease connection
        singles: list[asyncio.Task[None]] = []

        def taking() -> bool:
            return not take_failed and not self._finished

        async def single(kiosk: str) -> None:
            async with alone:
                if not taking():
                    return
                try:
                    await self._take(kiosk)
                except Exception as exc:
                    failed.append(exc)
                    take_failed.append(exc)

        async def follower() -> None:
            for kiosk in kiosks:  # shared: each follows the next kiosk not yet followed
                if failed or self._finished:  # a stop: no more takes, only what is under way
                    return
                try:
                    if await self._follow(kiosk):
                        ready.append(kiosk)
                        more.set()
                except Exception as exc:
                    failed.append(exc)

        async def followers() -> None:
            nonlocal following
            try:
                await asyncio.gather(*(follower() for _ in range(SUBSCRIBING_AT_ONCE)))
            finally:
                following = False
                more.set()

        async def taker() -> None:
            while following or ready:
                await more.wait()
                more.clear()
                while ready and taking():
                    batch, ready[:] = ready[:TAKEN_TOGETHER], ready[TAKEN_TOGETHER:]
                    try:
                        rest = await self._take_together(batch)
                    except Exception as exc:
                        failed.append(exc)
                        take_failed.append(exc)
                        return
                    singles.extend(asyncio.create_task(single(kiosk)) for kiosk in rest)
                if not taking():
                    return

        await asyncio.gather(followers(), taker())
        await asyncio.gather(*singles)
        for exc in failed[1:]:
            log.warning("a lease take also failed in this round: %r", exc)
        if failed:
            raise failed[0]

    async def _follow(self, kiosk: str) -> bool:
        """Listen first: from here on the kiosk's messages wait in its queue. False while the
        link is not connected (the next round tries again)."""
        if kiosk in self._awaited:
            return True
        if self._link is None or not await self._link.follow_kiosk(kiosk):
            return False
        self._awaited.add(kiosk)
        self._notify()
        return True

    async def _take_together(self, kiosks: list[str]) -> list[str]:
        """Take the leases of `kiosks`, subscribed already, that are free and unlocked, in one
        transaction (`take_together`); the others, left for a take of their own."""
        # From before the take was sent, so the fence ends no later than the database's expiry;
        # not from the round's start: a round of hundreds of takes outlasts the TTL.
        taken_at = time.monotonic()
        async with session_scope(self._sessionmaker) as session:
            epochs = await take_together(session, kiosks, self.replica_id, self.ttl_s)
            records = await recorded(session, epochs)
            readings = await readings_to(session, epochs)
        for kiosk in sorted(epochs):
            self._held_now(kiosk, epochs[kiosk], taken_at, records[kiosk], readings[kiosk])
        return [kiosk for kiosk in kiosks if kiosk not in epochs]

    async def _take(self, kiosk: str) -> None:
        taken_at = time.monotonic()
        async with session_scope(self._sessionmaker) as session:
            epoch = await take(session, kiosk, self.replica_id, self.ttl_s)
            if epoch is None:
                return  # marked the standby: committed on the way out
            records = await recorded(session, [kiosk])
            readings = await readings_to(session, [kiosk])
        self._held_now(kiosk, epoch, taken_at, records[kiosk], readings[kiosk])

    def _held_now(
        self, kiosk: str, epoch: int, taken_at: float, record: RecordedUpTo, readings: datetime
    ) -> None:
        """Taken at `epoch` by a take sent at `taken_at` (monotonic): the kiosk's messages are
        handled from here on, the story goes on from its `record`, and the kiosk is asked for
        its state and what the record lacks."""
        self._held[kiosk] = Fence(kiosk, self.replica_id, epoch, taken_at + self.ttl_s)
        self._awaited.discard(kiosk)
        log.info("took the lease of kiosk %s (epoch %s, %s)", kiosk, epoch, record)
        if self._link is not None:
            self._link.reconcile_kiosk(kiosk, record, readings)
        self._notify()

    def _start_release(self, kiosk: str) -> None:
        """Release in a task of its own: draining waits for the kiosk's handlers (a scan waits
        for its unlock's reply, up to the command timeout), and the heartbeat and the renewal
        of the other leases must not wait for that. The lease is renewed until it is freed."""
        if kiosk in self._releasing:
            return
        self._releasing.add(kiosk)
        self._notify()
        task = asyncio.get_running_loop().create_task(
            self._release(kiosk), name=f"kiosk-lease-release-{kiosk}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, kiosk: str) -> None:
        """Stop taking the kiosk's messages, unsubscribe, handle what came, free the lease."""
        fence = self._held[kiosk]
        try:
            await self._unfollow(kiosk)
            if self._link is not None:
                await self._link.drain_kiosk(kiosk)
            async with session_scope(self._sessionmaker) as session:
                await release(session, kiosk, self.replica_id, fence.epoch)
            log.info("released the lease of kiosk %s (epoch %s)", kiosk, fence.epoch)
        except Exception:
            log.exception("releasing kiosk %s failed; it expires in %s s", kiosk, self.ttl_s)
        finally:
            self._held.pop(kiosk, None)
            self._releasing.discard(kiosk)
            self._notify()

    async def _unfollow(self, kiosk: str) -> None:
        if self._link is not None:
            await self._link.unfollow_kiosk(kiosk)

    async def _renew_leaving(self, held: dict[str, Fence], started: float) -> None:
        try:
            async with session_scope(self._sessionmaker) as session:
                renewed = await renew(session, self.replica_id, held, self.ttl_s)
        except Exception:
            log.exception("renewing the leases while handing them over failed")
            return
        self._extend(held, renewed, started)
        self._renewed_at = started

    def _extend(self, held: dict[str, Fence], renewed: dict[str, int], started: float) -> None:
        """The fences of `held` that a renewal sent at `started` found still ours (`renewed`)
        are good for a TTL from then; never shortened."""
        for kiosk, fence in held.items():
            if renewed.get(kiosk) == fence.epoch and self._held.get(kiosk) is fence:
                until = max(fence.valid_until, started + self.ttl_s)
                self._held[kiosk] = replace(fence, valid_until=until)

    async def _hand_over(self) -> None:
        """On leaving: free each lease once its next owner listens (bounded by two renew
        periods, the time the others need to see this replica gone); free the rest then. The
        leases not yet freed are renewed meanwhile: a kiosk's drain (waiting on a scan's unlock)
        may outlast the TTL, and its telemetry is written only under a current lease (ADR
        0103). For at most three TTLs past the hand-over's own bound: a drain that hangs does
        not keep its kiosk from the other replicas for longer."""
        deadline = time.monotonic() + 2 * self.renew_s
        renew_until = deadline + 3 * self.ttl_s
        while self._held:
            started, held = time.monotonic(), dict(self._held)
            if started - self._renewed_at >= self.renew_s and started < renew_until:
                await self._renew_leaving(held, started)
            async with session_scope(self._sessionmaker) as session:
                others = await live_replicas(session, self.ttl_s)
                rows = await lease_rows(session)
            others.discard(self.replica_id)
            late = time.monotonic() >= deadline
            for kiosk in sorted(self._held):
                row = rows.get(kiosk)
                successor = owner_of(kiosk, others)
                if late or successor is None or (row is not None and row.standby == successor):
                    self._start_release(kiosk)
            if self._releases:
                await asyncio.wait(set(self._releases), timeout=self.renew_s / 4)
            elif self._held:
                await asyncio.sleep(self.renew_s / 4)
        for kiosk in sorted(self._awaited):
            await self._unfollow(kiosk)
        self._awaited.clear()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
