"""The timer loop: claim due timers, run their handlers, mark them done or due again.

Runs in every replica. A claim is a lease (`locked_until`): if this process dies mid-handler the
timer becomes claimable again when the lease ends. On PostgreSQL the claim uses
`FOR UPDATE SKIP LOCKED`, so replicas never wait on or double-claim each other's timers.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import update

from locker_service.alerts.service import raise_alert
from locker_service.background import BackgroundLoop
from locker_service.context import ServiceContext
from locker_service.db import is_sqlite, session_scope
from locker_service.models import Order, Timer
from locker_service.timer_loop.handlers import (
    BATCHED,
    HANDLERS,
    RECURRING,
    BatchHandler,
    BatchOutcome,
)
from locker_service.timers import service

log = logging.getLogger(__name__)

CLAIM_BATCH = 20
MAX_ATTEMPTS = 50  # about half an hour of nominal retries; then an operator must look


class TimerLoop:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.skip_locked = not is_sqlite(ctx.settings.database_url)
        self.runs = 0
        self._loop = BackgroundLoop(
            "timers",
            self._round,
            period_s=ctx.settings.timer_poll_s,
            log=log,
            failure="timer loop iteration failed",
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        """Look for due timers now (a step just scheduled one due at once)."""
        self._loop.wake()

    async def _round(self) -> bool:
        return await self.run_due() > 0

    async def run_due(self) -> int:
        lease = timedelta(seconds=self.ctx.settings.timer_lease_s)
        async with session_scope(self.ctx.sessionmaker) as session:
            claimed = await service.claim_due(
                session,
                lease=lease,
                limit=CLAIM_BATCH,
                skip_locked=self.skip_locked,
                tail_kinds=BATCHED,  # only kinds run together gain from a whole instant
            )
            session.expunge_all()
        # In the order they fell due; a kind's batch runs where its first timer falls (a food
        # check due before its order's hold expiry still runs first).
        batches: dict[str, list[Timer]] = {}
        for timer in claimed:
            if timer.kind in BATCHED:
                batches.setdefault(timer.kind, []).append(timer)
        for timer in claimed:
            if timer.kind not in BATCHED:
                await self._run(timer)
            elif (batch := batches.pop(timer.kind, None)) is not None:
                await self._run_batch(BATCHED[timer.kind], batch)
        return len(claimed)

    async def _run_batch(self, handler: BatchHandler, batch: list[Timer]) -> None:
        """Timers claimed together that run as one (a kiosk's food checks, ADR 0104); if the
        batch fails, each runs on its own, so that one timer that cannot run holds up no other."""
        try:
            outcomes = await handler(self.ctx, batch)
        except Exception:
            log.exception(
                "%d %s timers run together failed; each runs alone", len(batch), batch[0].kind
            )
            for timer in batch:
                await self._run(timer)
            return
        by_again: dict[datetime | None, list[Timer]] = {}
        for timer in batch:
            if timer.id not in outcomes:  # a handler's bug: not run, so not done either
                outcome: BatchOutcome = LookupError(f"{handler.__name__} left timer {timer.id} out")
            else:
                outcome = outcomes[timer.id]
            if isinstance(outcome, Exception):
                await self._failed(timer, outcome)  # its own step failed, not the batch's
            else:
                self.runs += 1
                by_again.setdefault(outcome, []).append(timer)
        for again, timers in by_again.items():
            await self._settle(timers, again)

    async def _run(self, timer: Timer) -> None:
        handler = HANDLERS.get(timer.kind)
        if handler is None:
            log.error("timer %s of unknown kind %s dropped", timer.id, timer.kind)
            await self._finish(timer, "failed")
            return
        try:
            again = await handler(self.ctx, timer)
        except Exception as e:
            await self._failed(timer, e)
            return
        self.runs += 1
        await self._settle([timer], again)

    async def _failed(self, timer: Timer, error: Exception) -> None:
        """A run that raised: retried once its lease ends, until it has been tried too often."""
        log.error(
            "timer %s (%s) failed; retried after its lease",
            timer.id,
            timer.kind,
            exc_info=(type(error), error, error.__traceback__),
        )
        if timer.attempts >= MAX_ATTEMPTS:
            await self._finish(timer, "failed")

    async def _settle(self, timers: list[Timer], again: datetime | None) -> None:
        """Timers that ran: done (`again` None), or due again at `again` unless they have been
        tried too often (a recurring timer that ran has succeeded: its count starts again)."""
        if again is None:
            async with session_scope(self.ctx.sessionmaker) as session:
                await service.finish_all(session, [t.id for t in timers])
            return
        due_again: list[int] = []
        for timer in timers:
            if timer.attempts >= MAX_ATTEMPTS and timer.kind not in RECURRING:
                log.error(
                    "timer %s (%s) gave up after %s attempts", timer.id, timer.kind, timer.attempts
                )
                await self._finish(timer, "failed")
            else:
                due_again.append(timer.id)
        if not due_again:
            return
        recurring = timers[0].kind in RECURRING  # timers settled together are of one kind
        async with session_scope(self.ctx.sessionmaker) as session:
            await session.execute(
                update(Timer)
                .where(Timer.id.in_(due_again), Timer.state == "pending")
                .values(due_at=again, locked_until=None)
                .values(**({"attempts": 0} if recurring else {}))
            )

    async def _finish(self, timer: Timer, state: str) -> None:
        async with session_scope(self.ctx.sessionmaker) as session:
            await service.finish(session, timer.id, state)
            if state == "failed":
                # A step of the story will not happen by itself any more: a person must look.
                order = await session.get(Order, timer.order_id) if timer.order_id else None
                await raise_alert(
                    session,
                    kind="timer_failed",
                    severity="critical",
                    message=f"{timer.kind} gave up after {timer.attempts} attempts"
                    + (f" (order {order.external_ref})" if order else ""),
                    dedupe_key=f"timer_failed:{timer.id}",
                    site_id=order.site_id if order else None,
                    compartment_id=timer.compartment_id,
                    hub=self.ctx.hub,
                )
