"""The story's reactions to what kiosks report: the `KioskHandler` the kiosk link calls.

Every event is handled once: its `event_id` is inserted in the same transaction as the changes
it causes, so a redelivered event (MQTT is at-least-once) finds it and does nothing, and a crash
mid-way rolls both back and the redelivery does the work.

A report that would move an order is first checked against the service's own knowledge
(`checks`, ADR 0037): one that cannot be true raises an `impossible_report` alert and changes
nothing. Every snapshot is compared with its compartment's state; one that disagrees reconciles
the order with the board (a deposit or a pickup whose events were lost), or raises an alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.alerts.service import raise_alert, raise_compartment_alert, resolve_alerts
from locker_service.cache import TtlCache
from locker_service.compartments import openings
from locker_service.compartments import repository as compartments
from locker_service.compartments import service as doors
from locker_service.compartments.lifecycle import FOOD_INSIDE, CompartmentState, CompartmentTrigger
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import Conflict, ServiceError
from locker_service.kiosk_link.fencing import check_fence
from locker_service.kiosk_link.metrics import SCAN_DECISION_S
from locker_service.kiosks import checks, repository, scans
from locker_service.kiosks.story import Story
from locker_service.metrics import KIOSK_EVENTS, SCANS_IGNORED
from locker_service.models import Compartment, DoorOpening, Kiosk, Order, utcnow
from locker_service.orders import codes
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import OrderState, OrderTrigger
from locker_service.pickup import offline as pickup_offline
from locker_service.pickup import repository as pickup_repository
from locker_service.pickup import service as pickup_service
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)


class StoryHandler:
    """Implements `locker_service.kiosk_link.KioskHandler`."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.story = Story(ctx)
        # Events and snapshots read only a kiosk's fixed fields (id, code, site, name), so a
        # copy kept for `credential_cache_s` spares a query on every message; status writes
        # to the row and reads it fresh.
        self._kiosks: TtlCache[Kiosk] = TtlCache(ctx.settings.credential_cache_s)

    async def _kiosk(self, session: AsyncSession, code: str) -> Kiosk | None:
        kiosk = await repository.kiosk_by_code(session, code)
        if kiosk is None:
            log.warning("message from unknown kiosk %s ignored", code)
        return kiosk

    async def _known_kiosk(self, session: AsyncSession, code: str) -> Kiosk | None:
        async def load() -> Kiosk | None:
            kiosk = await self._kiosk(session, code)
            if kiosk is not None:
                # Cached detached from the start: were it left in this session, a rollback
                # of this transaction would expire it, and every later message of the kiosk
                # would fail on the expired copy until the cache let it go.
                session.expunge(kiosk)
            return kiosk

        return await self._kiosks.get(code, load)

    # -- status -----------------------------------------------------------------------------

    async def on_status(self, kiosk_id: str, status: contract.KioskStatus) -> None:
        async with session_scope(self.ctx.sessionmaker) as session:
            await check_fence(session, kiosk_id)  # first: a lost lease changes nothing
            kiosk = await self._kiosk(session, kiosk_id)
            if kiosk is None:
                return
            # No staleness check on `ts`: the last will ("offline") was composed when the
            # bridge connected, so it always carries an old stamp; MQTT keeps one topic in order.
            online = status.state == "online"
            kiosk.online = online
            if kiosk.last_seen_at is None or status.ts > kiosk.last_seen_at:
                kiosk.last_seen_at = status.ts
            if status.boot_id:
                kiosk.boot_id = status.boot_id
            if status.fw:
                kiosk.fw = status.fw
            offline_key = f"kiosk_offline:{kiosk.id}"
            board_key = f"board_offline:{kiosk.id}"
            if not online:
                with_food = await compartments.count_with_food(session, kiosk.id)
                # With offline pickups on, its bridge opens ready orders by QR while its PC runs
                # (docs/adr/0077); whether the PC runs, the service cannot tell from here.
                collect = (
                    "purchasers of ready orders can still open with their QR codes if its PC "
                    "is running; deliveries wait until it is back"
                    if self.ctx.settings.offline_supply_refresh_s > 0
                    else "nobody can collect until it is back"
                )
                food = (
                    f" with food in {with_food} compartment{'s' if with_food != 1 else ''}: "
                    f"its board keeps it hot; {collect}"
                    if with_food
                    else ""
                )
                await raise_alert(
                    session,
                    kind="kiosk_offline",
                    severity="critical",
                    message=f"kiosk {kiosk.code} ({kiosk.name}) is offline{food}",
                    dedupe_key=offline_key,
                    site_id=kiosk.site_id,
                    kiosk_id=kiosk.id,
                    hub=self.ctx.hub,
                )
                return
            await resolve_alerts(session, offline_key, self.ctx.hub)
            if status.board_online:
                await resolve_alerts(session, board_key, self.ctx.hub)
            else:
                await raise_alert(
                    session,
                    kind="board_offline",
                    severity="critical",
                    message=f"kiosk {kiosk.code}: the locker bank board does not answer",
                    dedupe_key=board_key,
                    site_id=kiosk.site_id,
                    kiosk_id=kiosk.id,
                    hub=self.ctx.hub,
                )

    # -- snapshots --------------------------------------------------------------------------

    async def on_snapshot(self, kiosk_id: str, snap: contract.CompartmentSnapshot) -> None:
        """One snapshot: `on_snapshots` with one."""
        await self.on_snapshots(kiosk_id, [snap])

    async def on_snapshots(
        self, kiosk_id: str, snaps: Sequence[contract.CompartmentSnapshot]
    ) -> None:
        """A kiosk's snapshots, in the order received, in one transaction: its report of every
        compartment costs one fence check, one query for the compartments and one commit, not
        one of each per compartment (ADR 0095). Each is handled as if it came alone."""
        async with session_scope(self.ctx.sessionmaker) as session:
            await check_fence(session, kiosk_id)  # first: a lost lease changes nothing
            kiosk = await self._known_kiosk(session, kiosk_id)
            if kiosk is None:
                return
            found = await compartments.by_numbers(session, kiosk.id, (s.n for s in snaps))
            for snap in snaps:
                c = found.get(snap.n)
                if c is None:
                    log.warning("snapshot of unknown compartment %s/%s", kiosk_id, snap.n)
                else:
                    await self._snapshot(session, kiosk, c, snap)
        if self.ctx.timers is not None and timers.scheduled_due_now(session):
            self.ctx.timers.wake()  # a deposit schedules the cycle start, due now

    async def _snapshot(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        snap: contract.CompartmentSnapshot,
    ) -> None:
        if c.snapshot_at is not None and snap.ts < c.snapshot_at:
            return
        if c.lock_released and not snap.lock_released and not snap.door_open:
            # The latch sprang back with the door shut: a pickup whose door never opened
            # gives its code back now rather than when the authorisation runs out. The
            # compartment is locked (read again) before the order that gives it back: a
            # door event on the other lane takes them in that order.
            await session.refresh(c, with_for_update={"key_share": True})
            if c.lock_released:
                await pickup_service.give_back_unopened(session, kiosk, c, snap.ts)
        shut = c.door_open and not snap.door_open  # though its event may be lost
        c.door_open = snap.door_open
        c.lock_released = snap.lock_released
        c.occupied = snap.occupied
        c.heater_on = snap.heater_on
        c.uv_on = snap.uv_on
        c.temp_c = snap.temp_c
        c.setpoint_c = snap.setpoint_c
        c.disinfect_remaining_s = snap.disinfect_remaining_s
        c.snapshot_at = snap.ts
        if shut:
            # Written (and so locked) before the door's alert is looked for, as the door's
            # own event does: a door timer raising it meanwhile commits first and is seen.
            await session.flush()
            await self._door_shut_at_last(session, c)
        await self._fault(session, kiosk, c, snap.fault)
        if snap.uv_on and snap.disinfecting:  # the lamp on: in case its event was lost
            await self.story.cycle_confirmed(session, kiosk, c)
        mismatch = checks.look_at_snapshot(c.state, snap.door_open, snap.occupied)
        if mismatch is None:
            return
        try:
            async with session.begin_nested():
                await self._reconcile(session, kiosk, c, mismatch, snap.ts)
        except Conflict as exc:
            # The door's own event (on the other lane) moved the order first; the snapshot
            # copy above still stands.
            log.info("snapshot of %s/%s: reconciled elsewhere (%s)", kiosk.code, snap.n, exc)

    async def _reconcile(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        mismatch: checks.Mismatch,
        snapshot_at: datetime,
    ) -> None:
        """Bring the compartment's order where the board says the food is (idempotent: once
        moved, the state agrees with the snapshot and the next one costs no query)."""
        if mismatch is checks.Mismatch.FOOD_IN_FREE:
            found = await repository.timed_out_dropoff(session, c.id)
            order = found[0] if found else None
            facts = checks.OrderFacts(
                order.state if order else None, found[1] if found else None, None
            )
        else:
            order = await orders.active_in_compartment(session, c.id)
            if order is None and mismatch is checks.Mismatch.FOOD_GONE:
                order = await orders.expired_in_compartment(session, c.id)
            facts = await self._facts(session, order, mismatch)
        repair = checks.reconcile(mismatch, snapshot_at, facts)
        log.info(
            "snapshot of %s/%s (%s) against %s order %s: %s",
            kiosk.code,
            c.number,
            mismatch,
            facts.state,
            order.id if order else None,
            repair,
        )
        if repair is checks.Repair.WAIT:
            return
        if repair is checks.Repair.ALERT or order is None:
            await self._unexplained(session, kiosk, c, mismatch, facts)
            return
        detail = {"reconciled": "snapshot", "snapshot_at": snapshot_at.isoformat()}
        orders.add_event(session, order.id, "kiosk", kiosk.code, "reconciled", detail)
        if repair is checks.Repair.REDEPOSIT:
            # The door timer released this drop-off before the kiosk's word reached us: the
            # food behind the shut door is its food. Reserved again, then deposited.
            await orders.transition(
                session,
                order,
                OrderTrigger.ASSIGN,
                actor_type="kiosk",
                actor_id=kiosk.code,
                detail={"compartment": c.number, "kiosk": kiosk.code, **detail},
                compartment_id=c.id,
                assigned_at=facts.since,
            )
            await compartments.transition(session, c, CompartmentTrigger.RESERVE)
            await resolve_alerts(session, f"item_in_free_compartment:{c.id}", self.ctx.hub)
        if repair in (checks.Repair.DEPOSIT, checks.Repair.REDEPOSIT):
            await self.story.deposit(session, kiosk, c, order)
        else:  # picked up, or taken out during the hold: as the door's closing would have
            await self.story.emptied(session, kiosk, c, await self._last_opener(session, c))

    async def _facts(
        self, session: AsyncSession, order: Order | None, mismatch: checks.Mismatch
    ) -> checks.OrderFacts:
        if order is None:
            return checks.OrderFacts(state=None, since=None, unlocked_at=None)
        if mismatch is checks.Mismatch.FOOD_IN_RESERVED:
            return checks.OrderFacts(order.state, order.assigned_at, None)
        since = {
            OrderState.READY: order.ready_at,
            OrderState.EXPIRED: order.closed_at,
        }.get(OrderState(order.state), order.deposited_at)
        unlocked = (
            await repository.unlocked_for_order(session, order.id, since)
            if since is not None
            else None
        )
        return checks.OrderFacts(order.state, since, unlocked)

    async def _unexplained(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        mismatch: checks.Mismatch,
        facts: checks.OrderFacts,
    ) -> None:
        if mismatch is checks.Mismatch.FOOD_IN_FREE:
            await raise_compartment_alert(
                session,
                self.ctx.hub,
                kiosk,
                c,
                kind="item_in_free_compartment",
                severity="warning",
                what="something is inside a free compartment",
                dedupe_key=f"item_in_free_compartment:{c.id}",
            )
            return
        shows = "food inside" if mismatch is checks.Mismatch.FOOD_IN_RESERVED else "it empty"
        order = f"its order is {facts.state}" if facts.state else "no order is in it"
        unlock = (
            ", no unlock for it on record"
            if mismatch is checks.Mismatch.FOOD_GONE and facts.state and not facts.unlocked_at
            else ""
        )
        await raise_compartment_alert(
            session,
            self.ctx.hub,
            kiosk,
            c,
            kind="snapshot_unexplained",
            severity="critical",
            what=f"the board shows {shows} behind a shut door while the compartment is "
            f"{c.state} and {order}{unlock}: nothing was changed",
            dedupe_key=f"snapshot_unexplained:{c.id}:{mismatch}",
        )

    async def _fault(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, fault: str | None
    ) -> None:
        key = f"compartment_fault:{c.id}"
        if fault is not None and fault != c.fault:
            if c.state in FOOD_INSIDE:
                await self.story.fault_with_food(session, kiosk, c, fault)
            else:
                await raise_compartment_alert(
                    session,
                    self.ctx.hub,
                    kiosk,
                    c,
                    kind="compartment_fault",
                    severity="critical",
                    what=fault,
                    dedupe_key=key,
                )
        elif (
            fault is None
            and c.fault is not None
            and not await self.story.fault_cleared_with_food(session, kiosk, c, c.fault)
        ):
            await resolve_alerts(session, key, self.ctx.hub)
        c.fault = fault
        # A free compartment with a fault leaves the pool until the board clears it; one with
        # food keeps its state (its order's story goes on, the alert tells the operator).
        if fault is not None and c.state == CompartmentState.AVAILABLE:
            await compartments.transition(session, c, CompartmentTrigger.FAULT)
        elif fault is None and c.state == CompartmentState.FAULTED:
            await compartments.transition(session, c, CompartmentTrigger.CLEAR_FAULT)

    # -- events -----------------------------------------------------------------------------

    async def on_event(self, kiosk_id: str, event: contract.Event) -> None:
        started = time.perf_counter()
        decision: pickup_service.Claim | ServiceError | None = None
        scan = event.type == "scan"
        # A purchaser waits on a scan: it has connections of its own (ADR 0094).
        sessions = self.ctx.attended_sessions if scan else self.ctx.sessionmaker
        async with session_scope(sessions) as session:
            await check_fence(session, kiosk_id)  # first: a lost lease changes nothing
            kiosk = await self._known_kiosk(session, kiosk_id)
            secret_key = self.ctx.settings.secret_key
            if not await repository.record_event_if_new(
                session,
                event,
                kiosk.id if kiosk else None,
                scans.stored_scan(secret_key, event.data) if scan else None,
            ):
                log.debug("event %s seen before: ignored", event.event_id)
                return
            KIOSK_EVENTS.labels(event.type).inc()
            if kiosk is None:
                return
            if scan:
                # The scan's decision shares this transaction: one commit before the unlock.
                decision = await self._scan(session, kiosk, event)
                if decision is not None:  # stored as ignored until it came to something
                    outcome = decision.code if isinstance(decision, ServiceError) else scans.CLAIMED
                    await repository.set_event_data(
                        session, event.event_id, scans.stored_scan(secret_key, event.data, outcome)
                    )
            elif event.compartment is not None:
                c = await compartments.by_number(session, kiosk.id, event.compartment)
                if c is None:
                    log.warning("event for unknown compartment %s/%s", kiosk_id, event.compartment)
                    return
                await self._compartment_event(session, kiosk, c, event)
            elif event.type == "offline_code_refused":
                await pickup_service.offline_code_refused(session, self.ctx, kiosk, event.ts)
            elif event.type == "board_rebooted":
                # A board starts with every heater off: the food it holds is heated again.
                for order_id, compartment_id in await orders.hot_food_in_kiosk(session, kiosk.id):
                    timers.schedule(
                        session,
                        TimerKind.REHEAT,
                        utcnow(),
                        order_id=order_id,
                        compartment_id=compartment_id,
                    )
                await raise_alert(
                    session,
                    kind="board_rebooted",
                    severity="info",
                    message=f"kiosk {kiosk.code}: the locker bank board restarted",
                    dedupe_key=f"board_rebooted:{kiosk.id}",
                    site_id=kiosk.site_id,
                    kiosk_id=kiosk.id,
                    hub=self.ctx.hub,
                )
        if decision is not None and kiosk is not None:
            SCAN_DECISION_S.observe(time.perf_counter() - started)
            await self._open(kiosk, decision)
            return
        if self.ctx.timers is not None and timers.scheduled_due_now(session):
            self.ctx.timers.wake()  # a step scheduled a command due now (heat, cycle)

    async def _compartment_event(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, event: contract.Event
    ) -> None:
        kind = event.type
        if kind == "door_opened":
            c.door_open = True
            if c.state != CompartmentState.RESERVED:  # a drop-off has its own, longer timer
                await timers.cancel(session, [TimerKind.DOOR_LEFT_OPEN], compartment_id=c.id)
                timers.schedule(
                    session,
                    TimerKind.DOOR_LEFT_OPEN,
                    utcnow()
                    + timedelta(
                        seconds=self.ctx.settings.scaled(self.ctx.settings.door_left_open_s)
                    ),
                    compartment_id=c.id,
                )
            opening = await doors.explain_opening(session, self.ctx, c, event.ts)
            if opening is None:
                session.add(
                    DoorOpening(
                        compartment_id=c.id,
                        at=event.ts,
                        who=openings.UNKNOWN,
                        why="no command behind this opening",
                        request_id=None,
                        door_opened_at=event.ts,
                    )
                )
                await raise_compartment_alert(
                    session,
                    self.ctx.hub,
                    kiosk,
                    c,
                    kind="door_opened_unexplained",
                    severity="critical",
                    what="door opened with no command",
                    dedupe_key=f"door_unexplained:{c.id}",
                )
            elif opening.order_id is not None:
                orders.add_event(
                    session,
                    opening.order_id,
                    "kiosk",
                    kiosk.code,
                    "door_opened",
                    {"who": opening.who},
                )
        elif kind in ("item_placed", "item_removed"):
            # A report older than the last snapshot does not overwrite what the board showed
            # since: the snapshot is what later reports are checked against.
            if c.snapshot_at is None or event.ts >= c.snapshot_at:
                c.occupied = kind == "item_placed"
        elif kind == "door_closed":
            seen = event.data.get("occupied")
            # The bridge says what was inside as the door shut (ADR 0023); an older bridge's
            # closing leaves it to the item events and snapshots before it.
            claimed = seen if isinstance(seen, bool) else c.occupied
            board = checks.BoardView(c.door_open, c.occupied, c.snapshot_at)
            impossible = await self._judge_closing(session, c, claimed, event.ts, board)
            if impossible is not None:
                await self._impossible(session, kiosk, c, event, impossible)
                return
            c.door_open = False
            c.occupied = claimed
            # Written (and so locked) before its order, the order every path takes them in (the
            # drop-off door timer locks both so): the other way round they could deadlock.
            await session.flush()
            await self._door_closed(session, kiosk, c)
        elif kind == "disinfection_completed":
            if c.state in (CompartmentState.DISINFECTING, CompartmentState.CLEANING):
                cycle = await self.story.running_cycle(session, c)
                impossible = checks.cycle_completion(
                    self.ctx.clock(),
                    cycle.started_at if cycle else None,
                    cycle.ends_at if cycle else None,
                    tolerance_s=self.ctx.settings.scaled(self.ctx.settings.cycle_end_tolerance_s),
                )
                if impossible is not None:
                    await self._impossible(session, kiosk, c, event, impossible)
                    return
            await self.story.cycle_completed(session, kiosk, c, event.data)
        elif kind == "disinfection_started":
            await self.story.cycle_confirmed(session, kiosk, c)
        elif kind == "disinfection_aborted":
            await self.story.cycle_aborted(session, kiosk, c, event.data)
        elif kind == "fault_raised":
            fault = event.data.get("fault")
            await self._fault(session, kiosk, c, str(fault) if fault else "unknown")
        elif kind == "fault_cleared":
            await self._fault(session, kiosk, c, None)
        elif kind == "offline_pickup":
            await pickup_offline.replay(session, self.ctx, kiosk, c, event)
        elif kind == "offline_pickup_failed":
            await pickup_offline.unlock_refused(session, self.ctx, kiosk, c, event)

    async def _judge_closing(
        self,
        session: AsyncSession,
        c: Compartment,
        claimed_occupied: bool,
        at: datetime,
        board: checks.BoardView,
    ) -> checks.Impossible | None:
        """Is this closing possible, given the openings on record and the board's snapshot?"""
        state = c.state
        if state == CompartmentState.RESERVED:
            return (checks.deposit if claimed_occupied else checks.emptied)(at, board)
        if state not in (
            CompartmentState.OCCUPIED,
            CompartmentState.DISINFECTING,
            CompartmentState.AWAITING_PICKUP,
        ):
            return None
        if claimed_occupied:
            return checks.deposit(at, board)  # the food still inside: a later snapshot agrees
        order = await orders.active_in_compartment(session, c.id)
        if order is not None and order.state == OrderState.READY and order.ready_at:
            # A pickup: the door opened through an opening commanded for this order since it
            # became ready (the courier's opening for the drop-off does not count).
            opened = await repository.door_opened_for_order(session, order.id, order.ready_at)
            return checks.removal(at, board, opened, who=f"order {order.external_ref}")
        if order is not None and order.deposited_at is not None:
            # Taken out during the hold: through some opening on record, forced ones included.
            opened = await repository.door_opened_in_compartment(session, c.id, order.deposited_at)
            return checks.removal(at, board, opened, who="this compartment since the deposit")
        return checks.emptied(at, board)

    async def _impossible(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        event: contract.Event,
        impossible: checks.Impossible,
    ) -> None:
        log.warning(
            "impossible report %s from %s/%s: %s", event.event_id, kiosk.code, c.number, impossible
        )
        await raise_compartment_alert(
            session,
            self.ctx.hub,
            kiosk,
            c,
            kind="impossible_report",
            severity="critical",
            what=impossible.message(event.type),
            dedupe_key=f"impossible_report:{c.id}:{event.type}",
        )

    async def _door_shut_at_last(self, session: AsyncSession, c: Compartment) -> None:
        await timers.cancel(session, [TimerKind.DOOR_LEFT_OPEN], compartment_id=c.id)
        await resolve_alerts(session, f"door_left_open:{c.id}", self.ctx.hub)

    async def _door_closed(self, session: AsyncSession, kiosk: Kiosk, c: Compartment) -> None:
        await self._door_shut_at_last(session, c)
        state = c.state
        if state == CompartmentState.AVAILABLE and c.occupied:
            await raise_compartment_alert(
                session,
                self.ctx.hub,
                kiosk,
                c,
                kind="item_in_free_compartment",
                severity="warning",
                what="something is inside a free compartment",
                dedupe_key=f"item_in_free_compartment:{c.id}",
            )
        elif state == CompartmentState.RESERVED:
            order = await orders.active_in_compartment(session, c.id)
            if order is None or order.state != OrderState.ASSIGNED:
                return
            if c.occupied:
                await self.story.deposit(session, kiosk, c, order)
            else:
                await self.story.release_empty(session, kiosk, c, order, "shut with nothing inside")
        elif state in (
            CompartmentState.OCCUPIED,
            CompartmentState.DISINFECTING,
            CompartmentState.AWAITING_PICKUP,
        ):
            if not c.occupied:
                last = await self._last_opener(session, c)
                await self.story.emptied(session, kiosk, c, last)
                return
            order = await orders.active_in_compartment(session, c.id)
            if (
                order is not None
                and order.state == OrderState.READY
                and order.code_used_at is not None
            ):
                await self.story.left_inside(session, kiosk, order)

    async def _last_opener(self, session: AsyncSession, c: Compartment) -> openings.Opener | None:
        last = await pickup_repository.last_opening(session, c.id)
        return openings.Opener.of(last.who, last.purpose) if last is not None else None

    async def _scan(
        self, session: AsyncSession, kiosk: Kiosk, event: contract.Event
    ) -> pickup_service.Claim | ServiceError | None:
        """A code held to the kiosk's scanner: the decision to open (or not) that order's
        compartment, made in the event's transaction; None when the scan opens nothing and
        needs no answer (a stale or replayed scan)."""
        text = event.data.get("text")
        if not isinstance(text, str):
            return None
        token = codes.token_from_scan(text)
        code = None if token else codes.normalise_code(text)
        if not await self._fresh_scan(session, kiosk, event, code=code, token=token):
            return None
        if token is None and code is None:
            return pickup_service.InvalidCode("not a pickup code")
        kind = pickup_repository.QR_SOURCE if token else pickup_repository.SCANNER_SOURCE
        return await pickup_service.claim(
            session, self.ctx, kiosk, source=f"{kind}{kiosk.code}", code=code, token=token
        )

    async def _fresh_scan(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        event: contract.Event,
        *,
        code: str | None,
        token: str | None,
    ) -> bool:
        """True if the scan is a person at the kiosk now; otherwise count it and note it on the
        order it names (the event row itself is already recorded) and open nothing."""
        settings = self.ctx.settings
        age = scans.judge(
            event.ts,
            utcnow(),
            max_age_s=settings.scan_max_age_s,
            clock_skew_s=settings.scan_clock_skew_s,
        )
        if age.verdict == "fresh":
            return True
        SCANS_IGNORED.labels(age.verdict).inc()
        log.warning(
            "scan %s at kiosk %s ignored: %s (stamped %.1f s %s the service clock)",
            event.event_id,
            kiosk.code,
            age.verdict,
            abs(age.age_s),
            "before" if age.age_s >= 0 else "after",
        )
        found = await pickup_service.find_order(
            session, settings.secret_key, kiosk, code=code, token=token
        )
        if found is not None:
            orders.add_event(
                session,
                found[0].id,
                "kiosk",
                kiosk.code,
                "scan_ignored",
                {"reason": age.verdict, "age_s": round(age.age_s, 3), "event_id": event.event_id},
            )
        return False

    async def _open(self, kiosk: Kiosk, decision: pickup_service.Claim | ServiceError) -> None:
        """Unlock a committed claim, or refuse; the kiosk screen hears either way."""
        outcome: dict[str, object] = {"kiosk": kiosk.code}
        try:
            result = await pickup_service.complete(self.ctx, kiosk, decision)
            outcome.update(ok=True, compartment=result.compartment.number)
        except ServiceError as exc:
            log.info("scan at kiosk %s refused: %s", kiosk.code, exc)
            outcome.update(ok=False, error=exc.code, message=exc.message)
        self.ctx.hub.publish("pickup", outcome, kiosk.site_id)
