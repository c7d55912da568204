"""The write path of new orders: group commit.

Creating an order writes three rows in one transaction: the order, its `create` audit event and
its expiry timer (and an `order.accepted` delivery for each of the merchant's webhook endpoints
that wants one). Committing each request's rows alone cost a transaction (and, on PostgreSQL,
half a dozen round trips) per order. Here requests hand their order to the process's
`OrderWriter` and wait; a lane writes whatever has gathered as one batch in one transaction, then
the next. Nothing waits for a batch to fill: an order that arrives while a lane is free is
written at once, and orders arriving while every lane is writing make the next batch.

- Idempotency stays with the database: each order is `INSERT ... ON CONFLICT (merchant_id,
  external_ref) DO NOTHING`, and only the orders actually inserted get their event and timer. An
  order whose reference exists (written before, by a racing replica, or earlier in the same
  batch) is answered `False`, and its request reads the order that holds the reference.
- A batch that fails is written again one order per transaction, so one bad order fails alone.
- On PostgreSQL a batch is one statement (`unnest` of column arrays into a CTE that inserts the
  orders, then the events and timers of those inserted) on the raw asyncpg connection: a single
  statement is its own transaction, so the three rows are written all or none without BEGIN and
  COMMIT round trips. Elsewhere (SQLite) a batch is one transaction of per-order statements.
- Two lanes (connections) may write at once, so a batch need not wait for the one before it to
  commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from locker_service.errors import ServiceUnavailable
from locker_service.orders import repository, webhooks
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)

LANES = 2  # batches in flight at once: one commits while the next one's requests are handled
LANE_LINGER_S = 1.0  # a lane keeps its connection this long after its last order
MAX_BATCH = 256  # bounds one statement's size and latency when a backlog has built up

# Every column a new order is written with, and its PostgreSQL type for the `unnest` arrays.
ORDER_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "merchant_id": "integer",
    "external_ref": "text",
    "request_hash": "text",
    "site_id": "integer",
    "purchaser_name": "text",
    "purchaser_contact": "text",
    "purchaser_language": "text",
    "size": "text",
    "temperature_class": "text",
    "state": "text",
    "token_salt": "text",
    "pickup_token_hash": "text",
    "code_hash": "text",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "expires_at": "timestamptz",
    "version": "integer",
    "cooked_at": "timestamptz",
}


# The rows written with each new order, only if the order itself is new: its `create` audit
# event and its expiry timer, with their PostgreSQL types. `follow_up_rows` builds their values
# for both write paths; the column lists must match its keys (a test checks).
EVENT_COLUMNS: dict[str, str] = {
    "at": "timestamptz",
    "actor_type": "text",
    "actor_id": "text",
    "action": "text",
    "detail": "json",
}
TIMER_COLUMNS: dict[str, str] = {
    "kind": "text",
    "due_at": "timestamptz",
    "compartment_id": "integer",
    "state": "text",
    "attempts": "integer",
    "created_at": "timestamptz",
}


def follow_up_rows(row: dict[str, Any], site_code: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit event and the expiry timer of the new order `row`, each as every column it is
    written with (`order_id` included), stamped with the order's own creation time."""
    event = repository.event_values(
        row["id"],
        "merchant",
        str(row["merchant_id"]),
        "create",
        {"site": site_code},
        at=row["created_at"],
    )
    timer = timers.pending_values(TimerKind.ORDER_EXPIRY, row["expires_at"], order_id=row["id"])
    timer["created_at"] = row["created_at"]
    return event, timer


def _postgres_batch_insert() -> str:
    given = {
        **ORDER_COLUMNS,
        **{f"event_{name}": kind for name, kind in EVENT_COLUMNS.items()},
        **{f"timer_{name}": kind for name, kind in TIMER_COLUMNS.items()},
        "accepted_payload": "json",  # `order.accepted`, for each endpoint that wants it
    }
    arrays = ", ".join(f"${n}::{t}[]" for n, t in enumerate(given.values(), start=1))
    order_names = ", ".join(ORDER_COLUMNS)
    event_names = ", ".join(EVENT_COLUMNS)
    timer_names = ", ".join(TIMER_COLUMNS)
    event_given = ", ".join(f"g.event_{name}" for name in EVENT_COLUMNS)
    timer_given = ", ".join(f"g.timer_{name}" for name in TIMER_COLUMNS)
    return f"""
WITH given AS (
    SELECT * FROM unnest({arrays}) AS g({", ".join(given)})
), new_orders AS (
    INSERT INTO orders ({order_names})
    SELECT {order_names} FROM given
    ON CONFLICT (merchant_id, external_ref) DO NOTHING
    RETURNING id
), new_events AS (
    INSERT INTO order_events (order_id, {event_names})
    SELECT n.id, {event_given} FROM new_orders n JOIN given g ON g.id = n.id
), new_timers AS (
    INSERT INTO timers (order_id, {timer_names})
    SELECT n.id, {timer_given} FROM new_orders n JOIN given g ON g.id = n.id
), new_deliveries AS (
    INSERT INTO webhook_deliveries (endpoint_id, order_id, message_id, event_type, payload,
        status, attempts, next_attempt_at, created_at)
    SELECT e.id, n.id, 'msg_' || md5(n.id::text || '/{webhooks.ACCEPTED}/' || e.id::text),
        '{webhooks.ACCEPTED}', g.accepted_payload, 'pending', 0, g.created_at, g.created_at
    FROM new_orders n JOIN given g ON g.id = n.id
    JOIN webhook_endpoints e ON e.merchant_id = g.merchant_id AND e.enabled
    WHERE e.events::jsonb ? '{webhooks.ACCEPTED}'
)
SELECT id FROM new_orders
"""


POSTGRES_BATCH_INSERT = _postgres_batch_insert()
_order_values = operator.itemgetter(*ORDER_COLUMNS)  # a row's values in column order
_event_values = operator.itemgetter(*EVENT_COLUMNS)
_timer_values = operator.itemgetter(*TIMER_COLUMNS)


@dataclass
class PendingOrder:
    row: dict[str, Any]  # every column in ORDER_COLUMNS
    site_code: str  # named in the audit event
    written: asyncio.Future[bool]


class OrderWriter:
    """Writes new orders with their audit event and expiry timer, batched (group commit)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        lanes: int = LANES,
    ) -> None:
        self._engine = engine
        self._sessionmaker = sessionmaker
        self._postgres = engine.dialect.name == "postgresql"
        self._lanes = lanes
        self._queue: list[PendingOrder] = []
        self._arrived = asyncio.Event()
        self._running = 0  # lanes holding a connection
        self._idle = 0  # of which waiting for orders
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, row: dict[str, Any], site_code: str) -> bool:
        """True once the order, its event and timer are committed; False if the merchant had
        already used the order's reference (nothing of this order is written)."""
        pending = PendingOrder(row, site_code, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._arrived.set()
        if self._idle == 0 and self._running < self._lanes:
            self._start_lane()
        return await pending.written

    async def close(self) -> None:
        """Stop the lanes (at shutdown, once requests are done): their connections go back to
        the pool before it is disposed of."""
        lanes = list(self._tasks)
        for task in lanes:
            task.cancel()
        for task in lanes:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_lane(self) -> None:
        self._running += 1
        task = asyncio.create_task(self._lane(), name="order-writer")
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def _lane(self) -> None:
        """Write batches on one connection while orders keep coming: the pool checks it out
        (and pings it) once per burst of orders rather than once per batch."""
        batch: list[PendingOrder] = []
        counted = True  # in `_running`
        try:
            async with self._engine.connect() as connection:
                while True:
                    if not self._queue:
                        if await self._wait_for_orders():
                            continue
                        counted = False
                        break
                    batch = self._queue[:MAX_BATCH]
                    del self._queue[:MAX_BATCH]
                    if not await self._write_batch(connection, batch):
                        break  # the connection may be broken: this lane ends
                    batch = []
        except BaseException as exc:
            # Cancelled at shutdown, or no connection to be had (the database is down): no
            # request may wait for ever, and no lane may spin on connecting. This batch and
            # every order still queued fail now (503); a merchant's retry is idempotent.
            failure: BaseException = exc
            if isinstance(exc, Exception):
                failure = ServiceUnavailable(
                    f"orders cannot be stored now: {type(exc).__name__}: {exc}",
                    code="database_unavailable",
                )
                log.error("order writer: %s", failure)
            for pending in batch + self._queue:
                _settle(pending, error=failure)
            self._queue = []
            if not isinstance(exc, Exception):
                raise
        finally:
            if counted:
                self._running -= 1
        if self._queue and self._idle == 0 and self._running < self._lanes:
            self._start_lane()  # orders came while this lane gave its connection back

    async def _wait_for_orders(self) -> bool:
        """Wait for an order; False, and this lane no longer counts as running, after
        LANE_LINGER_S without one."""
        self._idle += 1
        self._arrived.clear()
        try:
            async with asyncio.timeout(LANE_LINGER_S):
                await self._arrived.wait()
        except TimeoutError:
            if not self._queue:
                # Stops counting before the connection is given back (an await): an order
                # queued from now on starts a lane of its own.
                self._running -= 1
                return False
        finally:
            self._idle -= 1
        return True

    async def _write_batch(self, connection: AsyncConnection, batch: list[PendingOrder]) -> bool:
        """Write `batch` in one transaction; False if that failed and each order was written
        again alone (so one bad order fails alone), on fresh connections."""
        try:
            inserted = await self._insert(connection, batch)
        except Exception:
            await connection.invalidate()  # perhaps PostgreSQL restarted; perhaps not
            for pending in batch:
                await self._write_alone(pending)
            return False
        for pending in batch:
            _settle(pending, written=pending.row["id"] in inserted)
        return True

    async def _write_alone(self, pending: PendingOrder) -> None:
        try:
            async with self._engine.connect() as connection:
                inserted = await self._insert(connection, [pending])
        except Exception as exc:
            _settle(pending, error=exc)
        else:
            _settle(pending, written=pending.row["id"] in inserted)

    async def _insert(
        self, connection: AsyncConnection, batch: list[PendingOrder]
    ) -> set[uuid.UUID]:
        """The ids of the orders inserted, all in one transaction."""
        if self._postgres:
            # One statement is its own transaction: run on the driver's connection, outside
            # SQLAlchemy's transaction, it needs no BEGIN and COMMIT round trips.
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            rows = []
            for pending in batch:
                event, timer = follow_up_rows(pending.row, pending.site_code)
                event["detail"] = json.dumps(event["detail"])  # asyncpg takes json as text
                accepted = webhooks.accepted_payload(pending.row, pending.site_code)
                rows.append(
                    (
                        *_order_values(pending.row),
                        *_event_values(event),
                        *_timer_values(timer),
                        json.dumps(accepted),
                    )
                )
            columns = zip(*rows, strict=True)
            return {row[0] for row in await driver.fetch(POSTGRES_BATCH_INSERT, *columns)}
        inserted: set[uuid.UUID] = set()
        async with self._sessionmaker(bind=connection) as session, session.begin():
            for pending in batch:
                order_id = await repository.insert_if_new(session, pending.row)
                if order_id is None:
                    continue
                inserted.add(order_id)
                event, timer = follow_up_rows(pending.row, pending.site_code)
                await repository.insert_event_values(session, event)
                await timers.schedule_values(session, timer)
                await webhooks.enqueue_accepted(session, pending.row, pending.site_code)
        return inserted


def _settle(
    pending: PendingOrder, *, written: bool = False, error: BaseException | None = None
) -> None:
    if pending.written.done():  # its request was cancelled (client gone): nobody to tell
        return
    if error is not None:
        pending.written.set_exception(error)
    else:
        pending.written.set_result(written)
